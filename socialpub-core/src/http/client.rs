//! [`ApiClient`]: the one authorized request path every adapter uses.
//!
//! An adapter says what to send (URL, body) and what the call is ([`Call`]): an idempotent
//! step, the commit that creates the post, or a single try. The client does the rest the same
//! way for every platform: the bearer token from the [`Bearer`] source, one refresh and resend
//! after a 401, retries of idempotent calls through the [`RetryPolicy`], the commit never
//! retried blindly, a tracing span per request with secrets masked, the configured timeout, and
//! error answers mapped through the adapter's [`Dialect`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::dialect::{Dialect, RawAnswer, error_from_answer, header_str};
use super::ratelimit::RateLimit;
use super::retry::{RetryPolicy, commit};
use super::{request_span, transport_error};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::platform::Platform;
use crate::publish::PublishContext;

/// Where a request's bearer token comes from.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum Bearer<'a> {
    /// No `Authorization` header (OAuth endpoints, public reads).
    None,
    /// A token handed in, never refreshed (account discovery right after the code exchange).
    Token(&'a SecretString),
    /// The publish context's token, refreshed once after a 401.
    Context(&'a PublishContext),
}

impl fmt::Debug for Bearer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bearer::None => "Bearer::None",
            Bearer::Token(_) => "Bearer::Token([REDACTED])",
            Bearer::Context(_) => "Bearer::Context",
        })
    }
}

impl<'a> From<&'a PublishContext> for Bearer<'a> {
    fn from(ctx: &'a PublishContext) -> Self {
        Bearer::Context(ctx)
    }
}

impl<'a> From<&'a mut PublishContext> for Bearer<'a> {
    fn from(ctx: &'a mut PublishContext) -> Self {
        Bearer::Context(ctx)
    }
}

impl<'a> From<&'a SecretString> for Bearer<'a> {
    fn from(token: &'a SecretString) -> Self {
        Bearer::Token(token)
    }
}

impl Bearer<'_> {
    async fn token(&self) -> Result<Option<SecretString>> {
        match self {
            Bearer::None => Ok(None),
            Bearer::Token(t) => Ok(Some((*t).clone())),
            Bearer::Context(ctx) => ctx.access_token().await.map(Some),
        }
    }

    async fn refresh(&self, rejected: &SecretString) -> Option<Result<SecretString>> {
        match self {
            Bearer::Context(ctx) => Some(ctx.refresh_access_token(rejected).await),
            _ => None,
        }
    }
}

/// How a call may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Idempotent,
    Commit,
    Once,
}

/// What a request is: its operation name, how it may be repeated, its timeout, and which
/// statuses outside 2xx the caller reads itself.
#[derive(Debug, Clone)]
pub struct Call {
    operation: &'static str,
    mode: Mode,
    timeout: Option<Duration>,
    accept: Accept,
}

#[derive(Debug, Clone)]
enum Accept {
    Success,
    Also(&'static [u16]),
    All,
}

impl Call {
    /// An idempotent step (a read, an upload chunk, a status poll): retried with backoff on
    /// transient failures and rate limits, as the client's [`RetryPolicy`] allows.
    pub fn idempotent(operation: &'static str) -> Call {
        Call::new(operation, Mode::Idempotent)
    }

    /// The request that creates the post. Sent once: a failure after it may have reached the
    /// platform (a timeout, a reset, a 5xx) is [`ErrorKind::Unconfirmed`], and a 2xx whose body
    /// cannot be read is too. Only a refusal that certainly created nothing is sent again: a
    /// rate limit whose wait the policy allows, and a 401 after one refresh.
    pub fn commit(operation: &'static str) -> Call {
        Call::new(operation, Mode::Commit)
    }

    /// One try (after a 401, one refresh and resend), errors returned as they are: for steps
    /// whose caller runs its own recovery (a resumable upload asks where it stands).
    pub fn once(operation: &'static str) -> Call {
        Call::new(operation, Mode::Once)
    }

    fn new(operation: &'static str, mode: Mode) -> Call {
        Call {
            operation,
            mode,
            timeout: None,
            accept: Accept::Success,
        }
    }

    /// A timeout for this call instead of the client's.
    pub fn timeout(mut self, timeout: Duration) -> Call {
        self.timeout = Some(timeout);
        self
    }

    /// Answers with these statuses are returned to the caller instead of mapped to errors (a
    /// resumable upload's `308`, a session's `404`).
    pub fn accept(mut self, statuses: &'static [u16]) -> Call {
        self.accept = Accept::Also(statuses);
        self
    }

    /// Every answer is returned to the caller, whatever its status (OAuth endpoints, whose
    /// errors the caller reads itself). No 401 refresh either.
    pub fn accept_all(mut self) -> Call {
        self.accept = Accept::All;
        self
    }

    /// The operation name.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    fn accepts(&self, status: u16) -> bool {
        match self.accept {
            Accept::Success => false,
            Accept::Also(list) => list.contains(&status),
            Accept::All => true,
        }
    }
}

/// An answer read to the end.
#[derive(Debug)]
pub struct Answer {
    platform: Platform,
    operation: &'static str,
    commit: bool,
    status: u16,
    headers: HeaderMap,
    body: String,
    rate_limit: RateLimit,
}

impl Answer {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The value of header `name`, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_str(&self.headers, name)
    }

    /// The body as text.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// What the headers say about rate limits (read through the platform's dialect).
    pub fn rate_limit(&self) -> &RateLimit {
        &self.rate_limit
    }

    /// The body as `T`. An unreadable body is [`ErrorKind::Platform`], or, for the answer to a
    /// commit, [`ErrorKind::Unconfirmed`]: the platform said yes, so the post exists, but what
    /// it is cannot be read.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.body).map_err(|e| {
            let (kind, what) = if self.commit {
                (
                    ErrorKind::Unconfirmed,
                    "the post was created but the answer is unreadable",
                )
            } else {
                (ErrorKind::Platform, "unexpected answer")
            };
            Error::new(
                kind,
                format!("{}: {what} from {}: {e}", self.operation, self.platform),
            )
            .with_platform(self.platform)
            .with_operation(self.operation)
            .with_status(self.status)
            .with_body(&self.body)
        })
    }
}

/// Sends an adapter's requests: one per platform, cheap to clone.
///
/// ```no_run
/// # async fn f(ctx: &socialpub_core::PublishContext) -> socialpub_core::Result<()> {
/// use socialpub_core::http::{ApiClient, Call, GenericDialect};
/// use socialpub_core::Platform;
///
/// let api = ApiClient::new(GenericDialect(Platform::X), reqwest::Client::new());
/// let answer = api
///     .send(ctx.into(), &Call::idempotent("users.me"), |http| {
///         http.get("https://api.x.com/2/users/me")
///     })
///     .await?;
/// println!("{}", answer.body());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ApiClient {
    dialect: Arc<dyn Dialect>,
    http: reqwest::Client,
    retry: RetryPolicy,
    timeout: Option<Duration>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("platform", &self.dialect.platform())
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client speaking `dialect` over `http`, with the default [`RetryPolicy`], the HTTP
    /// client's own timeout and the system clock.
    pub fn new(dialect: impl Dialect, http: reqwest::Client) -> ApiClient {
        ApiClient {
            dialect: Arc::new(dialect),
            http,
            retry: RetryPolicy::default(),
            timeout: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Retries idempotent calls (and rate-limited commits) with `policy`.
    pub fn with_retry(mut self, policy: RetryPolicy) -> ApiClient {
        self.retry = policy;
        self
    }

    /// Gives every request `timeout` unless its [`Call`] sets one.
    pub fn with_timeout(mut self, timeout: Duration) -> ApiClient {
        self.timeout = Some(timeout);
        self
    }

    /// Reads times (rate-limit resets, error times) from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> ApiClient {
        self.clock = clock;
        self
    }

    /// The platform.
    pub fn platform(&self) -> Platform {
        self.dialect.platform()
    }

    /// The HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The platform's dialect.
    pub fn dialect(&self) -> &dyn Dialect {
        self.dialect.as_ref()
    }

    /// Sends the request `build` makes (without its `Authorization` header, which the client
    /// adds) as `call` says. `build` may run more than once: after a 401, and for each retry.
    pub async fn send<F>(&self, bearer: Bearer<'_>, call: &Call, build: F) -> Result<Answer>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync,
    {
        match call.mode {
            Mode::Once => self.send_once(bearer, call, &build).await,
            Mode::Idempotent => {
                self.retry
                    .run(|| self.send_once(bearer, call, &build))
                    .await
            }
            Mode::Commit => {
                let mut waits = 0;
                loop {
                    match commit(self.send_once(bearer, call, &build)).await {
                        Err(e) if e.kind() == ErrorKind::RateLimited => {
                            // A rate-limited create was refused: nothing exists, so it may go
                            // again once the platform's wait is over.
                            match e.retry_after() {
                                Some(wait)
                                    if wait <= self.retry.max_wait
                                        && waits < self.retry.max_retries =>
                                {
                                    waits += 1;
                                    tracing::info!(
                                        operation = call.operation,
                                        wait_ms = wait.as_millis() as u64,
                                        "rate limited before the create; waiting for the reset"
                                    );
                                    tokio::time::sleep(wait).await;
                                }
                                _ => return Err(e),
                            }
                        }
                        other => return other,
                    }
                }
            }
        }
    }

    /// [`ApiClient::send`], then the body as `T`.
    pub async fn send_json<T, F>(&self, bearer: Bearer<'_>, call: &Call, build: F) -> Result<T>
    where
        T: DeserializeOwned,
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync,
    {
        self.send(bearer, call, build).await?.json()
    }

    /// The error an answer of `status` to `operation` stands for, read through the dialect:
    /// for callers that accepted a status and then decide it is an error after all.
    pub fn error(&self, operation: &'static str, answer: &Answer) -> Error {
        let raw = RawAnswer::new(
            operation,
            answer.status,
            &answer.headers,
            &answer.body,
            self.clock.now(),
        );
        error_from_answer(self.dialect.as_ref(), &raw, self.dialect.classify(&raw))
    }

    async fn send_once<F>(&self, bearer: Bearer<'_>, call: &Call, build: &F) -> Result<Answer>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync,
    {
        // A token that cannot be had means nothing was sent: never an unconfirmed commit.
        let mut token = bearer.token().await.map_err(Error::with_not_sent)?;
        let mut refreshed = false;
        loop {
            let answer = self.exchange(call, build, token.as_ref()).await?;
            let now = self.clock.now();
            let raw = RawAnswer::new(
                call.operation,
                answer.status,
                &answer.headers,
                &answer.body,
                now,
            );
            if answer.status == 401
                && !refreshed
                && !matches!(call.accept, Accept::All)
                && self.dialect.refreshes_on(&raw)
                && let Some(rejected) = &token
                && let Some(fresh) = bearer.refresh(rejected).await
            {
                tracing::debug!(
                    operation = call.operation,
                    "the platform rejected the access token; refreshing once"
                );
                // The platform refused the request, so nothing was created whatever the refresh
                // does.
                token = Some(fresh.map_err(Error::with_not_sent)?);
                refreshed = true;
                continue;
            }
            let success = (200..300).contains(&answer.status);
            if success || call.accepts(answer.status) {
                if success && let Some(c) = self.dialect.refusal(&raw) {
                    return Err(error_from_answer(self.dialect.as_ref(), &raw, c));
                }
                return Ok(answer);
            }
            return Err(error_from_answer(
                self.dialect.as_ref(),
                &raw,
                self.dialect.classify(&raw),
            ));
        }
    }

    /// One request and its whole answer, in a span whose URL has its secrets masked.
    async fn exchange<F>(
        &self,
        call: &Call,
        build: &F,
        token: Option<&SecretString>,
    ) -> Result<Answer>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync,
    {
        let platform = self.platform();
        let commit = call.mode == Mode::Commit;
        let mut req = build(&self.http);
        if let Some(t) = token {
            req = req.bearer_auth(t.expose_secret());
        }
        if let Some(t) = call.timeout.or(self.timeout) {
            req = req.timeout(t);
        }
        let (client, request) = req.build_split();
        let request = request.map_err(|e| {
            Error::internal(format!(
                "{}: the request could not be built: {e}",
                call.operation
            ))
            .with_platform(platform)
            .with_operation(call.operation)
        })?;
        let span = request_span(
            platform,
            call.operation,
            request.method().as_str(),
            request.url(),
        );
        async {
            let resp = client
                .execute(request)
                .await
                .map_err(|e| transport_error(e, platform, call.operation, commit))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .text()
                .await
                .map_err(|e| transport_error(e, platform, call.operation, commit))?;
            tracing::debug!(status, "answered");
            let rate_limit = self.dialect.rate_limit(&headers, self.clock.now());
            Ok(Answer {
                platform,
                operation: call.operation,
                commit,
                status,
                headers,
                body,
                rate_limit,
            })
        }
        .instrument(span)
        .await
    }
}
