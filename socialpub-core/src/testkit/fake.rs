//! [`FakePublisher`]: a scripted, counting [`Publisher`] for scheduler tests. It keeps the
//! publisher contract (validation first, commit point before the create, `Unconfirmed` after
//! it) and records every post it "creates", so a test can assert that nothing was published
//! twice.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore};

use crate::auth::AccountKey;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::platform::{Capabilities, Platform, TextCounting, TextRule};
use crate::post::Post;
use crate::publish::{LookupOutcome, PublishContext, Publisher, Receipt, RemoteState};
use crate::validate::ValidationReport;

/// What one publish call of the [`FakePublisher`] does.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FakeOutcome {
    /// Passes the commit point, creates the post, answers with a published receipt.
    Publish,
    /// Passes the commit point, creates the post, answers with a published receipt that
    /// reports these rate limits (e.g. a window with nothing left).
    PublishWithLimits(crate::http::RateLimit),
    /// Passes the commit point, creates the post, answers that the platform is processing it
    /// (it becomes published after [`FakePublisher::processing_polls`] status checks).
    Processing,
    /// Fails before the commit point with this error class (e.g. `Transient`,
    /// `ReauthRequired`, `Platform`). Nothing is created.
    Fail(ErrorKind),
    /// Answers 429 before the commit point, asking to wait `retry_after`. Nothing is created.
    RateLimited(Duration),
    /// Answers 401 before the commit point. Nothing is created.
    Unauthorized,
    /// Passes the commit point, creates the post, then loses the answer: `Unconfirmed`.
    CreateThenTimeout,
    /// Passes the commit point, the create never reaches the platform, and the answer is
    /// lost all the same: `Unconfirmed`, but a lookup finds nothing.
    TimeoutWithoutCreate,
    /// Waits at `gate` before the commit point, then publishes: a slow worker.
    Gated(FakeGate),
    /// Passes the commit point, creates the post if `created`, then never answers (a worker
    /// that dies or hangs with the create out).
    Hang {
        /// Whether the post was created before the hang.
        created: bool,
    },
}

/// A point where a gated publish stops until the test releases it.
#[derive(Debug, Clone)]
pub struct FakeGate {
    entered: Arc<Notify>,
    release: Arc<Semaphore>,
}

impl Default for FakeGate {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeGate {
    /// A closed gate.
    pub fn new() -> Self {
        FakeGate {
            entered: Arc::new(Notify::new()),
            release: Arc::new(Semaphore::new(0)),
        }
    }

    /// Waits until a publish reached the gate.
    pub async fn entered(&self) {
        self.entered.notified().await;
    }

    /// Lets one waiting (or future) publish through.
    pub fn release(&self) {
        self.release.add_permits(1);
    }

    async fn pass(&self) {
        self.entered.notify_one();
        if let Ok(p) = self.release.acquire().await {
            p.forget();
        }
    }
}

/// How [`FakePublisher::lookup_recent`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FakeLookup {
    /// Searches the posts it created: found or absent.
    #[default]
    Exact,
    /// Cannot tell.
    Unknown,
    /// Has no lookup at all (`Unsupported`, like a platform without one).
    Unsupported,
}

/// A post the fake created.
#[derive(Debug, Clone, PartialEq)]
pub struct FakePost {
    /// The account.
    pub account: AccountKey,
    /// The idempotency key of the publish (the delivery id, under the scheduler).
    pub key: Option<String>,
    /// The text.
    pub text: String,
    /// The fake's id of it.
    pub remote_id: String,
    /// When it was created, by the fake's clock.
    pub at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct State {
    script: HashMap<String, VecDeque<FakeOutcome>>,
    posts: Vec<FakePost>,
    publish_calls: Vec<(AccountKey, DateTime<Utc>)>,
    polls: HashMap<String, u32>,
    inflight: HashMap<AccountKey, usize>,
    max_inflight_per_account: usize,
}

/// A scripted [`Publisher`] that counts what it creates.
///
/// - Validation: empty text, text over 280 characters, or text containing `#invalid` fail
///   validation (no request "sent").
/// - Each publish takes the next [`FakeOutcome`] scripted for its account
///   ([`FakePublisher::script`]), or [`FakeOutcome::Publish`].
/// - Every created post is recorded ([`FakePublisher::posts`]); [`FakePublisher::creates_for`]
///   counts creates per idempotency key (the delivery id), which must never exceed one.
#[derive(Debug, Clone)]
pub struct FakePublisher {
    platform: Platform,
    state: Arc<Mutex<State>>,
    lookup: Arc<Mutex<FakeLookup>>,
    polls_needed: Arc<AtomicUsize>,
    clock: Arc<dyn Clock>,
}

impl FakePublisher {
    /// A fake for `platform` on the system clock.
    pub fn new(platform: Platform) -> Self {
        FakePublisher {
            platform,
            state: Arc::new(Mutex::new(State::default())),
            lookup: Arc::new(Mutex::new(FakeLookup::Exact)),
            polls_needed: Arc::new(AtomicUsize::new(2)),
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for the times it records.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets how lookups answer.
    pub fn set_lookup(&self, lookup: FakeLookup) {
        if let Ok(mut l) = self.lookup.lock() {
            *l = lookup;
        }
    }

    /// Status checks before a processing post is published (default 2).
    pub fn processing_polls(&self, n: usize) {
        self.polls_needed.store(n, Ordering::SeqCst);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues outcomes for publishes to `account_id` (after those already queued).
    pub fn script(&self, account_id: &str, outcomes: impl IntoIterator<Item = FakeOutcome>) {
        self.state()
            .script
            .entry(account_id.to_owned())
            .or_default()
            .extend(outcomes);
    }

    /// Every post created, in order.
    pub fn posts(&self) -> Vec<FakePost> {
        self.state().posts.clone()
    }

    /// How many posts were created.
    pub fn creates(&self) -> usize {
        self.state().posts.len()
    }

    /// How many posts were created with idempotency key `key`.
    pub fn creates_for(&self, key: &str) -> usize {
        self.state()
            .posts
            .iter()
            .filter(|p| p.key.as_deref() == Some(key))
            .count()
    }

    /// Every publish call (account, time by the fake's clock), in order.
    pub fn publish_calls(&self) -> Vec<(AccountKey, DateTime<Utc>)> {
        self.state().publish_calls.clone()
    }

    /// The most publishes that were ever in flight at once for one account.
    pub fn max_inflight_per_account(&self) -> usize {
        self.state().max_inflight_per_account
    }

    fn create(&self, ctx: &PublishContext, post: &Post) -> Receipt {
        let mut s = self.state();
        let remote_id = format!("fake-{}", s.posts.len() + 1);
        s.posts.push(FakePost {
            account: ctx.account().clone(),
            key: ctx.idempotency_key().map(str::to_owned),
            text: post.text.clone(),
            remote_id: remote_id.clone(),
            at: self.clock.now(),
        });
        let mut r = Receipt::new(
            self.platform,
            remote_id.clone(),
            Some(format!("https://fake.example/{remote_id}")),
        );
        r.created_at = self.clock.now();
        r
    }

    /// The create request "on the network": the task may be dropped (a crash) before it is
    /// sent, or after the platform created the post but before the answer arrives.
    async fn send_create(&self, ctx: &PublishContext, post: &Post) -> Result<Receipt> {
        tokio::task::yield_now().await;
        let receipt = self.create(ctx, post);
        tokio::task::yield_now().await;
        Ok(receipt)
    }

    fn error(&self, kind: ErrorKind, message: &str) -> Error {
        Error::new(kind, message)
            .with_platform(self.platform)
            .with_operation("fake.create")
    }

    async fn run(&self, ctx: &mut PublishContext, post: &Post) -> Result<Receipt> {
        let report = self.validate(post);
        if !report.is_ok() {
            return Err(Error::validation(report));
        }
        let outcome = self
            .state()
            .script
            .get_mut(&ctx.account().account_id)
            .and_then(VecDeque::pop_front)
            .unwrap_or(FakeOutcome::Publish);
        // A real adapter reads its token before any request.
        ctx.access_token().await?;
        match outcome {
            FakeOutcome::Publish => {
                ctx.commit_point().await?;
                self.send_create(ctx, post).await
            }
            FakeOutcome::PublishWithLimits(limits) => {
                ctx.commit_point().await?;
                Ok(self.send_create(ctx, post).await?.with_rate_limit(limits))
            }
            FakeOutcome::Processing => {
                ctx.commit_point().await?;
                Ok(self
                    .send_create(ctx, post)
                    .await?
                    .with_state(RemoteState::Processing))
            }
            FakeOutcome::Fail(kind) => Err(self.error(kind, "scripted failure")),
            FakeOutcome::RateLimited(wait) => Err(self
                .error(ErrorKind::RateLimited, "scripted rate limit")
                .with_status(429)
                .with_retry_at(
                    self.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                )),
            FakeOutcome::Unauthorized => Err(self
                .error(ErrorKind::Unauthorized, "scripted 401")
                .with_status(401)),
            FakeOutcome::CreateThenTimeout => {
                ctx.commit_point().await?;
                self.create(ctx, post);
                Err(self.error(
                    ErrorKind::Unconfirmed,
                    "scripted timeout after the create was sent",
                ))
            }
            FakeOutcome::TimeoutWithoutCreate => {
                ctx.commit_point().await?;
                Err(self.error(
                    ErrorKind::Unconfirmed,
                    "scripted timeout; the create never arrived",
                ))
            }
            FakeOutcome::Hang { created } => {
                ctx.commit_point().await?;
                if created {
                    self.create(ctx, post);
                }
                std::future::pending().await
            }
            FakeOutcome::Gated(gate) => {
                gate.pass().await;
                ctx.save_checkpoint(serde_json::json!({"stage": "uploaded"}))
                    .await?;
                ctx.commit_point().await?;
                Ok(self.create(ctx, post))
            }
        }
    }
}

#[async_trait]
impl Publisher for FakePublisher {
    fn platform(&self) -> Platform {
        self.platform
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::new(self.platform, TextRule::new(280, TextCounting::Chars));
        c.status = true;
        c.lookup =
            *self.lookup.lock().unwrap_or_else(|p| p.into_inner()) != FakeLookup::Unsupported;
        c
    }

    fn validate(&self, post: &Post) -> ValidationReport {
        let mut r = ValidationReport::new(self.platform);
        if post.text.is_empty() {
            r.push("text", "text_empty", "the text is empty");
        }
        if post.text.chars().count() > 280 {
            r.push("text", "text_too_long", "the text is over 280 characters");
        }
        if post.text.contains("#invalid") {
            r.push("text", "invalid_marker", "the text contains #invalid");
        }
        r
    }

    async fn publish(&self, ctx: &mut PublishContext, post: &Post) -> Result<Receipt> {
        let account = ctx.account().clone();
        {
            let mut s = self.state();
            s.publish_calls.push((account.clone(), self.clock.now()));
            let n = s.inflight.entry(account.clone()).or_default();
            *n += 1;
            let n = *n;
            s.max_inflight_per_account = s.max_inflight_per_account.max(n);
        }
        // Let other tasks run while "on the network", so concurrency is real in tests.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        let result = self.run(ctx, post).await;
        if let Some(n) = self.state().inflight.get_mut(&account) {
            *n = n.saturating_sub(1);
        }
        result
    }

    async fn status(&self, _ctx: &PublishContext, receipt: &Receipt) -> Result<Receipt> {
        let needed = self.polls_needed.load(Ordering::SeqCst) as u32;
        let mut s = self.state();
        let n = s.polls.entry(receipt.remote_id.clone()).or_default();
        *n += 1;
        let state = if *n >= needed {
            RemoteState::Published
        } else {
            RemoteState::Processing
        };
        Ok(receipt.clone().with_state(state))
    }

    async fn lookup_recent(
        &self,
        ctx: &PublishContext,
        post: &Post,
        since: DateTime<Utc>,
    ) -> Result<LookupOutcome> {
        let mode = *self.lookup.lock().unwrap_or_else(|p| p.into_inner());
        match mode {
            FakeLookup::Unsupported => Err(Error::unsupported(format!(
                "{} cannot look up recent posts",
                self.platform
            ))
            .with_platform(self.platform)),
            FakeLookup::Unknown => Ok(LookupOutcome::Unknown {
                reason: "the fake was told it cannot tell".to_owned(),
            }),
            FakeLookup::Exact => {
                let s = self.state();
                let found = s
                    .posts
                    .iter()
                    .find(|p| &p.account == ctx.account() && p.text == post.text && p.at >= since);
                Ok(match found {
                    Some(p) => {
                        let mut r = Receipt::new(
                            self.platform,
                            p.remote_id.clone(),
                            Some(format!("https://fake.example/{}", p.remote_id)),
                        );
                        r.created_at = p.at;
                        LookupOutcome::Found(r)
                    }
                    None => LookupOutcome::Absent,
                })
            }
        }
    }
}
