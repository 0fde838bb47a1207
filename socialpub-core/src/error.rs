//! The one error type of socialpub, and the class every caller acts on.
//!
//! Adapters map each platform's status codes and error bodies to an [`ErrorKind`]; the scheduler
//! decides what to do from the kind alone (retry, refresh, wait, reconcile, fail). Nothing secret
//! reaches `Display` or `Debug`: raw bodies pass through [`crate::redact`] before they are kept.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::platform::Platform;
use crate::redact;
use crate::validate::ValidationReport;

/// A `Result` whose error is socialpub's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input breaks a rule checked before any request (a bad argument, an unreadable file).
    /// Fix the input; never retry.
    InvalidInput,
    /// The post breaks one or more platform rules; the [`ValidationReport`] lists them all.
    /// No request was sent. Fix the post; never retry.
    Validation,
    /// The platform rejected the access token. Refresh once, then retry.
    Unauthorized,
    /// The account must be connected again: the refresh token is gone, revoked or expired.
    ReauthRequired,
    /// The platform throttled the call; wait [`Error::retry_after`] (or until
    /// [`Error::retry_at`]) before trying again. A wait does not use up a retry attempt.
    RateLimited,
    /// A failure before the post was created (5xx, timeout or reset before the commit).
    /// Safe to retry with backoff.
    Transient,
    /// The request that creates the post was sent and its outcome is unknown. Never retry blindly:
    /// reconcile with [`crate::publish::Publisher::lookup_recent`] first.
    Unconfirmed,
    /// A permanent refusal by the platform (policy, duplicate content, media rejected).
    Platform,
    /// The application is misconfigured (missing credentials, a client the platform forbids,
    /// a missing scope). Fix the configuration; never retry.
    Configuration,
    /// The operation is not supported by this publisher or platform.
    Unsupported,
    /// A storage backend failed (database, file system).
    Storage,
    /// A bug or an impossible state inside socialpub.
    Internal,
}

impl ErrorKind {
    /// A short stable name, e.g. `rate_limited`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Validation => "validation",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::ReauthRequired => "reauth_required",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Transient => "transient",
            ErrorKind::Unconfirmed => "unconfirmed",
            ErrorKind::Platform => "platform",
            ErrorKind::Configuration => "configuration",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Storage => "storage",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether an operation failing with this kind may be retried as it is.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::RateLimited)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most bytes of a raw platform body kept on an error.
pub const MAX_BODY_BYTES: usize = 2048;

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// socialpub's error: a [`ErrorKind`] plus everything support needs to follow it up.
///
/// Build one with [`Error::new`] and the `with_*` methods. The raw body is redacted and truncated
/// when it is attached, so `Display` and `Debug` never show a token.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    platform: Option<Platform>,
    operation: Option<Cow<'static, str>>,
    status: Option<u16>,
    code: Option<String>,
    request_id: Option<String>,
    body: Option<String>,
    retry_after: Option<Duration>,
    retry_at: Option<DateTime<Utc>>,
    validation: Option<ValidationReport>,
    not_sent: bool,
    source: Option<Source>,
}

impl Error {
    /// A new error of `kind` with a human-readable message (no secrets in it).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                platform: None,
                operation: None,
                status: None,
                code: None,
                request_id: None,
                body: None,
                retry_after: None,
                retry_at: None,
                validation: None,
                not_sent: false,
                source: None,
            }),
        }
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::Configuration`].
    pub fn configuration(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Configuration, message)
    }

    /// Shorthand for [`ErrorKind::Storage`] with a source.
    pub fn storage(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::new(ErrorKind::Storage, message).with_source(source)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Shorthand for [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// A [`ErrorKind::Validation`] error carrying every issue found.
    pub fn validation(report: ValidationReport) -> Self {
        let message = report.summary();
        let mut e = Self::new(ErrorKind::Validation, message);
        e.inner.platform = report.platform();
        e.inner.validation = Some(report);
        e
    }

    /// Sets the platform.
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.inner.platform = Some(platform);
        self
    }

    /// Sets the operation (e.g. `"media.append"`, `"tweets.create"`).
    pub fn with_operation(mut self, operation: impl Into<Cow<'static, str>>) -> Self {
        self.inner.operation = Some(operation.into());
        self
    }

    /// Sets the HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.inner.status = Some(status);
        self
    }

    /// Sets the platform's own error code or reason (e.g. `quotaExceeded`, `187`).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.inner.code = Some(code.into());
        self
    }

    /// Sets the platform's request or trace id.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.inner.request_id = Some(id.into());
        self
    }

    /// Attaches a raw response body, redacted and truncated to [`MAX_BODY_BYTES`].
    pub fn with_body(mut self, body: &str) -> Self {
        self.inner.body = Some(redact::truncate(&redact::redact_text(body), MAX_BODY_BYTES));
        self
    }

    /// Sets how long to wait before retrying.
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.inner.retry_after = Some(wait);
        self
    }

    /// Sets the instant before which a retry is pointless (e.g. a quota reset).
    pub fn with_retry_at(mut self, at: DateTime<Utc>) -> Self {
        self.inner.retry_at = Some(at);
        self
    }

    /// Sets the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.inner.source = Some(Box::new(source));
        self
    }

    /// Marks that the request certainly never reached the platform (e.g. the connection could
    /// not be made), so even a commit may be retried.
    pub fn with_not_sent(mut self) -> Self {
        self.inner.not_sent = true;
        self
    }

    /// Whether the request certainly never reached the platform.
    pub fn is_not_sent(&self) -> bool {
        self.inner.not_sent
    }

    /// Changes the kind, keeping everything else (e.g. a timeout on a commit becomes
    /// [`ErrorKind::Unconfirmed`]).
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.inner.kind = kind;
        self
    }

    /// The class a caller acts on.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The platform, if the error came from one.
    pub fn platform(&self) -> Option<Platform> {
        self.inner.platform
    }

    /// The operation that failed.
    pub fn operation(&self) -> Option<&str> {
        self.inner.operation.as_deref()
    }

    /// The HTTP status, if a response arrived.
    pub fn status(&self) -> Option<u16> {
        self.inner.status
    }

    /// The platform's error code or reason.
    pub fn code(&self) -> Option<&str> {
        self.inner.code.as_deref()
    }

    /// The platform's request id, for support tickets.
    pub fn request_id(&self) -> Option<&str> {
        self.inner.request_id.as_deref()
    }

    /// The raw response body, redacted and truncated.
    pub fn body(&self) -> Option<&str> {
        self.inner.body.as_deref()
    }

    /// Every validation issue, for [`ErrorKind::Validation`].
    pub fn validation_report(&self) -> Option<&ValidationReport> {
        self.inner.validation.as_ref()
    }

    /// Whether retrying (after [`Error::retry_after`]) may succeed.
    pub fn is_retryable(&self) -> bool {
        self.inner.kind.is_retryable()
    }

    /// How long to wait before a retry, if the platform said so.
    ///
    /// When only [`Error::retry_at`] is known, the wait is computed from the current time.
    pub fn retry_after(&self) -> Option<Duration> {
        if let Some(d) = self.inner.retry_after {
            return Some(d);
        }
        self.inner
            .retry_at
            .map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
    }

    /// The instant before which a retry is pointless, if known.
    pub fn retry_at(&self) -> Option<DateTime<Utc>> {
        self.inner.retry_at
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        if let Some(p) = i.platform {
            write!(f, "{p}: ")?;
        }
        write!(f, "{}", i.message)?;
        let mut extra = Vec::new();
        extra.push(format!("kind={}", i.kind));
        if let Some(op) = &i.operation {
            extra.push(format!("operation={op}"));
        }
        if let Some(s) = i.status {
            extra.push(format!("status={s}"));
        }
        if let Some(c) = &i.code {
            extra.push(format!("code={c}"));
        }
        if let Some(r) = &i.request_id {
            extra.push(format!("request_id={r}"));
        }
        if let Some(d) = i.retry_after {
            extra.push(format!("retry_after={}s", d.as_secs()));
        } else if let Some(at) = i.retry_at {
            extra.push(format!("retry_at={}", at.to_rfc3339()));
        }
        write!(f, " ({})", extra.join(", "))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let mut d = f.debug_struct("Error");
        d.field("kind", &i.kind)
            .field("message", &i.message)
            .field("platform", &i.platform)
            .field("operation", &i.operation)
            .field("status", &i.status)
            .field("code", &i.code)
            .field("request_id", &i.request_id)
            .field("body", &i.body)
            .field("retry_after", &i.retry_after)
            .field("retry_at", &i.retry_at);
        if let Some(v) = &i.validation {
            d.field("validation", v);
        }
        // The source is shown through its Display, redacted: a reqwest error's Display may
        // carry a URL with a token in its query string.
        let source = i
            .source
            .as_ref()
            .map(|s| redact::redact_text(&s.to_string()));
        d.field("source", &source).finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(ErrorKind::InvalidInput, format!("I/O error: {e}")).with_source(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::new(ErrorKind::Internal, format!("JSON error: {e}")).with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_redacted_and_truncated() {
        let body = format!(
            r#"{{"access_token":"abc123secret","x":"{}"}}"#,
            "y".repeat(5000)
        );
        let e = Error::new(ErrorKind::Platform, "nope").with_body(&body);
        let shown = format!("{e:?} {e}");
        assert!(!shown.contains("abc123secret"));
        assert!(e.body().is_some_and(|b| b.len() <= MAX_BODY_BYTES + 3));
    }

    #[test]
    fn retryable_classes() {
        assert!(Error::new(ErrorKind::Transient, "x").is_retryable());
        assert!(Error::new(ErrorKind::RateLimited, "x").is_retryable());
        assert!(!Error::new(ErrorKind::Unconfirmed, "x").is_retryable());
        assert!(!Error::new(ErrorKind::Validation, "x").is_retryable());
    }

    #[test]
    fn retry_after_from_retry_at() {
        let e = Error::new(ErrorKind::RateLimited, "x")
            .with_retry_at(Utc::now() + chrono::Duration::seconds(100));
        let d = e.retry_after().expect("a wait");
        assert!(d.as_secs() > 90 && d.as_secs() <= 100);
    }
}
