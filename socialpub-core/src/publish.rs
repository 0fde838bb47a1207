//! The [`Publisher`] trait every adapter implements, the [`PublishContext`] it publishes in, and
//! the [`Receipt`] it returns.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::auth::{AccessTokens, AccountKey};
use crate::error::{Error, ErrorKind, Result};
use crate::http::RateLimit;
use crate::platform::{Capabilities, Platform};
use crate::post::Post;
use crate::validate::ValidationReport;

/// Where a published post stands on the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RemoteState {
    /// Live on the platform.
    Published,
    /// Accepted, but the platform is still processing it (e.g. a video); poll
    /// [`Publisher::status`].
    Processing,
    /// The platform failed or rejected it after accepting it.
    Failed {
        /// The platform's reason.
        reason: String,
    },
}

/// One post created on the platform (a thread has one per part).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePost {
    /// The platform's id, always a string.
    pub id: String,
    /// A link to it, when the platform has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What a publish produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Receipt {
    /// The platform.
    pub platform: Platform,
    /// The id of the post (the first part of a thread).
    pub remote_id: String,
    /// A link to the post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where it stands.
    pub state: RemoteState,
    /// Every part created, in order (one entry for a single post).
    #[serde(default)]
    pub parts: Vec<RemotePost>,
    /// Steps that failed after the post existed (e.g. a thumbnail): a partial success.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// API quota units the publish cost, where the platform counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_cost: Option<u64>,
    /// When the receipt was made.
    pub created_at: DateTime<Utc>,
    /// The rate limits the platform reported on the create request, when it reports them. The
    /// scheduler paces the account (or, for an application-wide window, every account of the
    /// platform) until an exhausted window resets, instead of waiting for a `429`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Box<RateLimit>>,
    /// Platform-specific details.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub extra: serde_json::Value,
}

impl Receipt {
    /// A receipt for a post `remote_id`, published, with itself as its one part.
    pub fn new(platform: Platform, remote_id: impl Into<String>, url: Option<String>) -> Self {
        let id = remote_id.into();
        Receipt {
            platform,
            parts: vec![RemotePost {
                id: id.clone(),
                url: url.clone(),
            }],
            remote_id: id,
            url,
            state: RemoteState::Published,
            warnings: Vec::new(),
            quota_cost: None,
            created_at: Utc::now(),
            rate_limit: None,
            extra: serde_json::Value::Null,
        }
    }

    /// Sets the state.
    pub fn with_state(mut self, state: RemoteState) -> Self {
        self.state = state;
        self
    }

    /// Records the rate limits reported with the create request (kept only when it reports
    /// any).
    pub fn with_rate_limit(mut self, rate_limit: RateLimit) -> Self {
        self.rate_limit = (!rate_limit.is_empty()).then(|| Box::new(rate_limit));
        self
    }
}

/// What [`Publisher::lookup_recent`] found.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LookupOutcome {
    /// The post exists: the unconfirmed publish went through.
    Found(Receipt),
    /// The post is certainly not there: publishing again posts it once.
    Absent,
    /// Some parts of a multi-part post (a thread) exist and the rest certainly do not; the
    /// receipt lists the parts found. Publishing again with the delivery's checkpoint continues
    /// after them; publishing again without it would post the found parts twice.
    Partial(Receipt),
    /// The lookup could not tell (e.g. the history it reads is too short).
    Unknown {
        /// Why it could not tell.
        reason: String,
    },
}

/// Upload progress of one media item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Which part of the post (0 = the first; thread parts follow).
    pub part: usize,
    /// Which media item of that part.
    pub media_index: usize,
    /// Bytes the platform has acknowledged so far.
    pub bytes_sent: u64,
    /// Bytes in all.
    pub total_bytes: u64,
}

impl Progress {
    /// Progress of media item `media_index` of `part`.
    pub fn new(part: usize, media_index: usize, bytes_sent: u64, total_bytes: u64) -> Self {
        Progress {
            part,
            media_index,
            bytes_sent,
            total_bytes,
        }
    }
}

/// Receives upload progress. Called from the publishing task: keep it quick.
pub trait ProgressSink: Send + Sync {
    /// Called after each chunk the platform acknowledged.
    fn progress(&self, target: &AccountKey, progress: Progress);
}

impl<F> ProgressSink for F
where
    F: Fn(&AccountKey, Progress) + Send + Sync,
{
    fn progress(&self, target: &AccountKey, progress: Progress) {
        self(target, progress)
    }
}

/// The durable record of one publish attempt, kept by whoever runs the publish (the scheduler).
///
/// [`PublishJournal::commit_point`] records that the request creating the post is about to go
/// out; [`PublishJournal::save_checkpoint`] keeps adapter state (an upload session, the ids of a
/// thread's parts) so a restarted publish resumes instead of starting over.
#[async_trait]
pub trait PublishJournal: Send + Sync {
    /// Durably records that the commit is about to be sent. If this fails, the adapter sends
    /// nothing. May be called more than once (once per thread part, say).
    async fn commit_point(&self) -> Result<()>;

    /// Durably replaces the adapter's checkpoint.
    async fn save_checkpoint(&self, checkpoint: &serde_json::Value) -> Result<()>;
}

/// A journal that keeps nothing: for one-off publishes outside a scheduler.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoJournal;

#[async_trait]
impl PublishJournal for NoJournal {
    async fn commit_point(&self) -> Result<()> {
        Ok(())
    }

    async fn save_checkpoint(&self, _checkpoint: &serde_json::Value) -> Result<()> {
        Ok(())
    }
}

/// Everything a publish needs besides the post: the account, its tokens, the journal, the
/// progress sink and the checkpoint of an earlier attempt.
#[derive(Clone)]
pub struct PublishContext {
    account: AccountKey,
    tokens: Arc<dyn AccessTokens>,
    journal: Arc<dyn PublishJournal>,
    progress: Option<Arc<dyn ProgressSink>>,
    checkpoint: Option<serde_json::Value>,
    attempt: u32,
    idempotency_key: Option<String>,
}

impl fmt::Debug for PublishContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishContext")
            .field("account", &self.account)
            .field("attempt", &self.attempt)
            .field("has_checkpoint", &self.checkpoint.is_some())
            .field("idempotency_key", &self.idempotency_key)
            .finish_non_exhaustive()
    }
}

impl PublishContext {
    /// A context for `account` taking tokens from `tokens`, with no journal, no progress sink
    /// and no checkpoint.
    pub fn new(account: AccountKey, tokens: Arc<dyn AccessTokens>) -> Self {
        PublishContext {
            account,
            tokens,
            journal: Arc::new(NoJournal),
            progress: None,
            checkpoint: None,
            attempt: 1,
            idempotency_key: None,
        }
    }

    /// Sets the journal.
    pub fn with_journal(mut self, journal: Arc<dyn PublishJournal>) -> Self {
        self.journal = journal;
        self
    }

    /// Sets the progress sink.
    pub fn with_progress(mut self, sink: Arc<dyn ProgressSink>) -> Self {
        self.progress = Some(sink);
        self
    }

    /// Sets the checkpoint saved by an earlier attempt.
    pub fn with_checkpoint(mut self, checkpoint: Option<serde_json::Value>) -> Self {
        self.checkpoint = checkpoint;
        self
    }

    /// Sets the attempt number (1 for the first).
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Sets a key that is the same for every attempt of one delivery, for platforms that take
    /// an idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The account published to.
    pub fn account(&self) -> &AccountKey {
        &self.account
    }

    /// The attempt number.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The idempotency key, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// A fresh access token for the account (refreshed ahead of expiry).
    pub async fn access_token(&self) -> Result<SecretString> {
        self.tokens.access_token(&self.account).await
    }

    /// A new access token after the platform rejected `rejected` with a 401. Adapters call this
    /// once per request, then give up with [`ErrorKind::Unauthorized`].
    pub async fn refresh_access_token(&self, rejected: &SecretString) -> Result<SecretString> {
        self.tokens
            .refresh_after_rejection(&self.account, rejected)
            .await
    }

    /// Records durably that the commit is about to go out. Call it right before the request
    /// that creates the post; if it fails, send nothing and return its error.
    pub async fn commit_point(&self) -> Result<()> {
        self.journal.commit_point().await
    }

    /// The checkpoint saved by an earlier attempt, if any.
    pub fn checkpoint(&self) -> Option<&serde_json::Value> {
        self.checkpoint.as_ref()
    }

    /// Saves a checkpoint durably, and keeps it for this attempt too.
    pub async fn save_checkpoint(&mut self, checkpoint: serde_json::Value) -> Result<()> {
        self.journal.save_checkpoint(&checkpoint).await?;
        self.checkpoint = Some(checkpoint);
        Ok(())
    }

    /// The checkpoint as `T`, or `None` when there is none or it is of another shape.
    pub fn checkpoint_as<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        self.checkpoint
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// Reports upload progress to the sink, if any.
    pub fn report_progress(&self, progress: Progress) {
        if let Some(sink) = &self.progress {
            sink.progress(&self.account, progress);
        }
    }
}

/// Publishes posts to one platform.
///
/// # Contract
///
/// Implementations and callers (the scheduler, or an application publishing directly) rely on
/// these rules:
///
/// - **Validation is local.** [`Publisher::validate`] sends no request and reports every issue
///   at once. [`Publisher::publish`] validates first and fails with
///   [`ErrorKind::Validation`] before any request when the post breaks a rule.
/// - **Only the commit is special.** Uploads, status reads and lookups are idempotent and may be
///   retried (adapters retry them internally with backoff). The one request that creates the
///   post (the *commit*) must not be retried blindly.
/// - **Commit point.** Right before sending the commit, the adapter calls
///   [`PublishContext::commit_point`]; if that fails, it sends nothing and returns the error.
///   A publish that fails before its commit point published nothing.
/// - **Unconfirmed.** A timeout, reset or 5xx after the commit was sent is
///   [`ErrorKind::Unconfirmed`], never a retryable error: the platform may have published.
///   The caller settles it with [`Publisher::lookup_recent`].
/// - **Checkpoints.** Multi-step publishes save their progress with
///   [`PublishContext::save_checkpoint`] (upload sessions, the ids of a thread's parts) and a
///   later attempt resumes from [`PublishContext::checkpoint`] instead of repeating what the
///   platform already has.
/// - **Streaming.** Media is read in chunks; memory stays bounded by the chunk size whatever
///   the file size. Progress goes to [`PublishContext::report_progress`] per chunk.
/// - **Tokens.** Adapters get tokens from [`PublishContext::access_token`]; on a 401 they call
///   [`PublishContext::refresh_access_token`] once and retry that request once.
/// - **Concurrency.** A publisher is shared (`Arc<dyn Publisher>`) and may publish for many
///   accounts at once; callers keep one publish in flight per account.
#[async_trait]
pub trait Publisher: fmt::Debug + Send + Sync + 'static {
    /// The platform published to.
    fn platform(&self) -> Platform;

    /// What this publisher accepts, and which optional operations it supports.
    fn capabilities(&self) -> Capabilities;

    /// Every rule `post` breaks for this platform. No network.
    fn validate(&self, post: &Post) -> ValidationReport;

    /// Publishes `post` to the account in `ctx`. See the trait docs for the contract.
    async fn publish(&self, ctx: &mut PublishContext, post: &Post) -> Result<Receipt>;

    /// The current state of a post the platform was still processing.
    async fn status(&self, ctx: &PublishContext, receipt: &Receipt) -> Result<Receipt> {
        let _ = (ctx, receipt);
        Err(
            Error::unsupported(format!("{} has no status check", self.platform()))
                .with_platform(self.platform()),
        )
    }

    /// Whether `post`, sent by a publish whose outcome is unknown, exists on the platform.
    /// `since` is when the commit point was recorded.
    async fn lookup_recent(
        &self,
        ctx: &PublishContext,
        post: &Post,
        since: DateTime<Utc>,
    ) -> Result<LookupOutcome> {
        let _ = (ctx, post, since);
        Err(
            Error::unsupported(format!("{} cannot look up recent posts", self.platform()))
                .with_platform(self.platform()),
        )
    }

    /// Deletes a published post.
    async fn delete(&self, ctx: &PublishContext, receipt: &Receipt) -> Result<()> {
        let _ = (ctx, receipt);
        Err(
            Error::unsupported(format!("{} cannot delete posts", self.platform()))
                .with_platform(self.platform()),
        )
    }
}

/// Conveniences for every [`Publisher`].
#[async_trait]
pub trait PublisherExt: Publisher {
    /// Validates, then publishes.
    async fn validate_and_publish(&self, ctx: &mut PublishContext, post: &Post) -> Result<Receipt> {
        self.validate(post).into_result()?;
        self.publish(ctx, post).await
    }

    /// Whether an error from this publisher means the account needs reconnecting.
    fn needs_reauth(&self, error: &Error) -> bool {
        error.kind() == ErrorKind::ReauthRequired
    }
}

impl<T: Publisher + ?Sized> PublisherExt for T {}

macro_rules! forward_publisher {
    ($ty:ty) => {
        #[async_trait]
        impl<T: Publisher + ?Sized> Publisher for $ty {
            fn platform(&self) -> Platform {
                (**self).platform()
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            fn validate(&self, post: &Post) -> ValidationReport {
                (**self).validate(post)
            }
            async fn publish(&self, ctx: &mut PublishContext, post: &Post) -> Result<Receipt> {
                (**self).publish(ctx, post).await
            }
            async fn status(&self, ctx: &PublishContext, receipt: &Receipt) -> Result<Receipt> {
                (**self).status(ctx, receipt).await
            }
            async fn lookup_recent(
                &self,
                ctx: &PublishContext,
                post: &Post,
                since: DateTime<Utc>,
            ) -> Result<LookupOutcome> {
                (**self).lookup_recent(ctx, post, since).await
            }
            async fn delete(&self, ctx: &PublishContext, receipt: &Receipt) -> Result<()> {
                (**self).delete(ctx, receipt).await
            }
        }
    };
}

forward_publisher!(Arc<T>);
forward_publisher!(Box<T>);
