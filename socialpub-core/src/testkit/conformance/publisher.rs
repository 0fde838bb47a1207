//! [`PublisherSuite`]: the publish contract checked through a platform's mock, fault class by
//! fault class, the same way for every adapter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use secrecy::ExposeSecret;

use super::{RecordingJournal, assert_debug_hides, assert_error_hides};
use crate::auth::{
    AccessTokens, AccountKey, MemoryTokenStore, Token, TokenManager, TokenRefresher,
};
use crate::error::{ErrorKind, Result};
use crate::post::Post;
use crate::publish::{LookupOutcome, PublishContext, PublishJournal, Publisher, Receipt};
use crate::testkit::mock::{Counter, MockKit};

/// Makes a valid post, different for each `label` (platforms refuse a repeated text).
pub type PostFactory = Arc<dyn Fn(&str) -> Post + Send + Sync>;

/// A post whose media goes up in several chunks, for the dropped-chunk case.
#[derive(Clone)]
pub struct UploadCase {
    /// The post; its media must take at least three chunks.
    pub post: Post,
    /// The endpoint each chunk is sent to (`media.append`, `upload.chunk`).
    pub chunk_endpoint: &'static str,
    /// The media's size in bytes.
    pub file_bytes: u64,
    /// The publisher's chunk size in bytes.
    pub chunk_bytes: u64,
}

/// A publisher, its mock, and what the suite needs to drive them. Build the publisher against
/// the mock with fast retries (a wait of about two seconds allowed) and a short request timeout
/// (`request_timeout`, also for upload chunks), then call [`PublisherSuite::run`].
///
/// The cases, each on a fresh post:
///
/// 1. **validation** is local: an invalid post fails with [`ErrorKind::Validation`] and sends
///    no request; tokens never appear in `Debug` or errors.
/// 2. **commit point**: when it fails, nothing is created; otherwise it comes before the first
///    create request, and the post exists once.
/// 3. **5xx before the commit** is retried, and the post exists once.
/// 4. **429** (the platform's own answer and reset headers) is waited out, before the commit
///    and on the commit itself, and the post exists once.
/// 5. **401**: the token is refreshed once, and the post exists once.
/// 6. **5xx on the commit** is never retried blindly: the publish succeeds (the adapter could
///    tell from the platform) or is [`ErrorKind::Unconfirmed`], and the post exists at most
///    once.
/// 7. **timeout after the commit** (the platform acted, the answer is late): never sent twice;
///    the publish succeeds or is unconfirmed, and `lookup_recent` then finds the post.
/// 8. **a chunk dropped mid-request** (when there is an [`UploadCase`]): the upload resumes with
///    at most one chunk sent again.
/// 9. **`invalid_grant`**: a dead refresh token is [`ErrorKind::ReauthRequired`] and creates
///    nothing.
pub struct PublisherSuite {
    /// The publisher under test, configured against the mock.
    pub publisher: Arc<dyn Publisher>,
    /// The platform's token refresher (its connector), configured against the mock.
    pub refresher: Arc<dyn TokenRefresher>,
    /// The mock's kit: its faults, request log and OAuth server.
    pub kit: MockKit,
    /// An account the mock knows.
    pub account: AccountKey,
    /// A token the mock issued for that account, with a refresh token.
    pub token: Token,
    /// Makes a valid post.
    pub post: PostFactory,
    /// A post that breaks at least one rule.
    pub invalid_post: Post,
    /// How many posts exist on the mock.
    pub posts: Counter,
    /// The endpoint name of the request that creates the post.
    pub commit_endpoint: &'static str,
    /// An idempotent request the valid post's publish makes before the commit, if any.
    pub before_commit_endpoint: Option<&'static str>,
    /// A chunked upload, if the platform has one.
    pub upload: Option<UploadCase>,
    /// The publisher's request timeout.
    pub request_timeout: Duration,
    /// Strings that must never appear in `Debug` output or errors (tokens, client secret).
    pub secrets: Vec<String>,
}

/// How long the suite makes the platform wait (a 429's reset).
const RATE_LIMIT_WAIT: Duration = Duration::from_secs(2);

impl PublisherSuite {
    /// Runs every case, in order; panics on the first broken promise, naming the case.
    pub async fn run(self) {
        let secrets: Vec<String> = self
            .secrets
            .iter()
            .cloned()
            .chain([
                self.token.access_token.expose_secret().to_owned(),
                self.token
                    .refresh_token
                    .as_ref()
                    .map(|r| r.expose_secret().to_owned())
                    .unwrap_or_default(),
            ])
            .filter(|s| !s.is_empty())
            .collect();
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let tokens = self.tokens().await;
        let s = Run {
            suite: &self,
            tokens,
            secrets: &secrets,
        };
        s.validation().await;
        s.commit_point().await;
        if let Some(before) = self.before_commit_endpoint {
            s.transient_before_commit(before).await;
            s.rate_limited(before, "429 before the commit").await;
        }
        s.rate_limited(self.commit_endpoint, "429 on the commit")
            .await;
        s.refreshes_once().await;
        s.server_error_on_commit().await;
        s.timeout_after_commit().await;
        if let Some(upload) = &self.upload {
            s.dropped_chunk(upload).await;
        }
        s.reauth().await;
    }

    async fn tokens(&self) -> Arc<TokenManager> {
        let tokens = Arc::new(
            TokenManager::builder(MemoryTokenStore::new())
                .refresher(self.refresher.clone())
                .build(),
        );
        if let Err(e) = tokens.connect(&self.account, &self.token).await {
            panic!("the suite could not store the account's token: {e}");
        }
        tokens
    }
}

struct Run<'a> {
    suite: &'a PublisherSuite,
    tokens: Arc<TokenManager>,
    secrets: &'a [&'a str],
}

impl Run<'_> {
    fn ctx(&self, journal: Arc<dyn PublishJournal>) -> PublishContext {
        let tokens: Arc<dyn AccessTokens> = self.tokens.clone();
        PublishContext::new(self.suite.account.clone(), tokens).with_journal(journal)
    }

    fn posts(&self) -> usize {
        (self.suite.posts)()
    }

    fn calls(&self, endpoint: &str) -> usize {
        self.suite.kit.log().calls(endpoint)
    }

    async fn publish(&self, post: &Post) -> Result<Receipt> {
        let mut ctx = self.ctx(Arc::new(RecordingJournal::new()));
        self.suite.publisher.publish(&mut ctx, post).await
    }

    /// Publishes `post` and expects it to exist once.
    async fn publishes_once(&self, case: &str, post: &Post) -> Receipt {
        let before = self.posts();
        let receipt = match self.publish(post).await {
            Ok(r) => r,
            Err(e) => panic!("[{case}] the post must publish: {e}"),
        };
        assert_eq!(
            self.posts(),
            before + 1,
            "[{case}] the post exists exactly once"
        );
        assert!(
            !receipt.remote_id.is_empty(),
            "[{case}] the receipt has the post id"
        );
        assert_debug_hides(&receipt, self.secrets);
        receipt
    }

    async fn validation(&self) {
        let p = &self.suite.publisher;
        assert_eq!(
            p.capabilities().platform,
            p.platform(),
            "[validation] capabilities name the publisher's platform"
        );
        assert_debug_hides(p, self.secrets);
        assert_debug_hides(&self.tokens, self.secrets);
        let requests = self.suite.kit.log().requests();
        let report = p.validate(&self.suite.invalid_post);
        assert!(
            !report.is_ok(),
            "[validation] the invalid post must fail validation"
        );
        let valid = (self.suite.post)("validation");
        let report = p.validate(&valid);
        assert!(
            report.is_ok(),
            "[validation] the valid post must pass validation: {report}"
        );
        let e = self
            .publish(&self.suite.invalid_post)
            .await
            .expect_err("[validation] publishing an invalid post fails");
        assert_eq!(e.kind(), ErrorKind::Validation, "[validation] {e}");
        assert!(
            e.validation_report().is_some(),
            "[validation] a validation error carries its report"
        );
        assert_error_hides(&e, self.secrets);
        assert_eq!(
            self.suite.kit.log().requests(),
            requests,
            "[validation] validation and an invalid publish send no request"
        );
    }

    async fn commit_point(&self) {
        let commit = self.suite.commit_endpoint;
        let post = (self.suite.post)("commit point");
        let (posts, creates) = (self.posts(), self.calls(commit));
        let mut ctx = self.ctx(Arc::new(RecordingJournal::failing()));
        let e = self
            .suite
            .publisher
            .publish(&mut ctx, &post)
            .await
            .expect_err("[commit point] a failing commit point fails the publish");
        assert_eq!(
            e.kind(),
            ErrorKind::Storage,
            "[commit point] the commit point's error is returned: {e}"
        );
        assert_error_hides(&e, self.secrets);
        assert_eq!(self.posts(), posts, "[commit point] nothing was created");

        let counter = self.suite.kit.log().call_counter(commit);
        let journal = Arc::new(RecordingJournal::new().watching(counter));
        let mut ctx = self.ctx(journal.clone());
        let receipt = match self.suite.publisher.publish(&mut ctx, &post).await {
            Ok(r) => r,
            Err(e) => panic!("[commit point] the valid post must publish: {e}"),
        };
        assert!(
            journal.commit_points() >= 1,
            "[commit point] the commit point was called"
        );
        assert_eq!(
            journal.creates_at_first_commit(),
            Some(creates),
            "[commit point] the commit point comes before the first create request"
        );
        assert_eq!(
            self.posts(),
            posts + 1,
            "[commit point] the post exists once"
        );
        assert_eq!(receipt.platform, self.suite.publisher.platform());
        assert_debug_hides(&receipt, self.secrets);
        assert_debug_hides(&ctx, self.secrets);
    }

    async fn transient_before_commit(&self, endpoint: &'static str) {
        let case = "5xx before the commit";
        let calls = self.calls(endpoint);
        self.suite.kit.faults().fail_next(endpoint, 1, 503);
        self.publishes_once(case, &(self.suite.post)(case)).await;
        assert!(
            self.calls(endpoint) >= calls + 2,
            "[{case}] `{endpoint}` was tried again after its 503"
        );
    }

    async fn rate_limited(&self, endpoint: &'static str, case: &str) {
        let calls = self.calls(endpoint);
        self.suite
            .kit
            .faults()
            .rate_limit_next(endpoint, RATE_LIMIT_WAIT);
        let started = Instant::now();
        self.publishes_once(case, &(self.suite.post)(case)).await;
        assert!(
            self.calls(endpoint) >= calls + 2,
            "[{case}] `{endpoint}` was tried again after its 429"
        );
        // Reset headers in whole epoch seconds may round the wait down by up to a second.
        assert!(
            started.elapsed() >= RATE_LIMIT_WAIT - Duration::from_secs(1),
            "[{case}] the publisher waited for the reset (it took {:?})",
            started.elapsed()
        );
    }

    async fn refreshes_once(&self) {
        let case = "401";
        let oauth = self.suite.kit.oauth();
        let refreshes = oauth.refreshes();
        oauth.expire_access_tokens();
        self.publishes_once(case, &(self.suite.post)(case)).await;
        assert_eq!(
            oauth.refreshes(),
            refreshes + 1,
            "[{case}] the token was refreshed exactly once"
        );
    }

    async fn server_error_on_commit(&self) {
        let case = "5xx on the commit";
        let commit = self.suite.commit_endpoint;
        let posts = self.posts();
        let calls = self.calls(commit);
        self.suite.kit.faults().fail_next(commit, 1, 503);
        match self.publish(&(self.suite.post)(case)).await {
            Ok(_) => assert_eq!(self.posts(), posts + 1, "[{case}] the post exists once"),
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    ErrorKind::Unconfirmed,
                    "[{case}] a failed commit is unconfirmed: {e}"
                );
                assert_eq!(
                    self.calls(commit),
                    calls + 1,
                    "[{case}] an unconfirmed commit is not sent again"
                );
                assert_eq!(
                    self.posts(),
                    posts,
                    "[{case}] the refused commit created nothing"
                );
                assert_error_hides(&e, self.secrets);
            }
        }
    }

    async fn timeout_after_commit(&self) {
        let case = "timeout after the commit";
        let commit = self.suite.commit_endpoint;
        let post = (self.suite.post)(case);
        let posts = self.posts();
        let calls = self.calls(commit);
        let since = Utc::now();
        let hold = self.suite.request_timeout + Duration::from_secs(1);
        self.suite.kit.faults().delay_answer_next(commit, hold);
        let mut ctx = self.ctx(Arc::new(RecordingJournal::new()));
        let outcome = self.suite.publisher.publish(&mut ctx, &post).await;
        assert_eq!(
            self.calls(commit),
            calls + 1,
            "[{case}] the commit whose answer was late is never sent again"
        );
        assert_eq!(self.posts(), posts + 1, "[{case}] the post exists once");
        if let Err(e) = outcome {
            assert_eq!(
                e.kind(),
                ErrorKind::Unconfirmed,
                "[{case}] a late answer to the commit is unconfirmed: {e}"
            );
            assert!(!e.is_retryable(), "[{case}] unconfirmed is not retryable");
            assert_error_hides(&e, self.secrets);
            match self.suite.publisher.lookup_recent(&ctx, &post, since).await {
                Ok(LookupOutcome::Found(r)) => assert!(!r.remote_id.is_empty()),
                other => panic!("[{case}] the lookup must find the post: {other:?}"),
            }
        }
        // The late answer arrives after the client gave up; let it go before the next case.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    async fn dropped_chunk(&self, upload: &UploadCase) {
        let case = "chunk dropped mid-request";
        let endpoint = upload.chunk_endpoint;
        assert!(
            upload.file_bytes >= 3 * upload.chunk_bytes,
            "[{case}] the upload case needs a file of three chunks or more"
        );
        let bytes = self.suite.kit.log().bytes_in(endpoint);
        let faults = self.suite.kit.faults();
        faults.pass_next(endpoint, 1);
        faults.drop_next(endpoint, 1);
        self.publishes_once(case, &upload.post).await;
        let sent = self.suite.kit.log().bytes_in(endpoint) - bytes;
        let requests = self
            .suite
            .kit
            .log()
            .entries()
            .iter()
            .filter(|e| e.endpoint == endpoint)
            .count() as u64;
        // A multipart envelope costs a few hundred bytes per request.
        let envelope = 1024 * requests;
        assert!(
            sent >= upload.file_bytes,
            "[{case}] the whole file arrived ({sent} of {} bytes)",
            upload.file_bytes
        );
        assert!(
            sent <= upload.file_bytes + upload.chunk_bytes + envelope,
            "[{case}] at most one chunk was sent again: {sent} bytes for a {}-byte file in \
             chunks of {}",
            upload.file_bytes,
            upload.chunk_bytes
        );
    }

    async fn reauth(&self) {
        let case = "invalid_grant";
        let commit = self.suite.commit_endpoint;
        let oauth = self.suite.kit.oauth();
        oauth.expire_access_tokens();
        oauth.expire_refresh_tokens();
        let (posts, calls) = (self.posts(), self.calls(commit));
        let e = self
            .publish(&(self.suite.post)(case))
            .await
            .expect_err("[invalid_grant] a dead refresh token fails the publish");
        assert_eq!(
            e.kind(),
            ErrorKind::ReauthRequired,
            "[{case}] a dead refresh token means reconnecting: {e}"
        );
        assert_error_hides(&e, self.secrets);
        assert_eq!(self.posts(), posts, "[{case}] nothing was created");
        // A create refused with a 401 may have gone out; none may go out after the refresh
        // failed.
        assert!(
            self.calls(commit) <= calls + 1,
            "[{case}] no create was sent after the refresh failed"
        );
    }
}
