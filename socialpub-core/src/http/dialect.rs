//! How one platform speaks HTTP, and the one place its error answers become [`Error`]s.
//!
//! An adapter supplies a [`Dialect`]: a small reading of its platform's error bodies (a code →
//! kind table, in the spirit of OpenDAL's `parse_error`) and the names of its request-id and
//! rate-limit headers. Everything else an [`Error`] carries (platform, operation, status,
//! request id, the redacted body, when to retry) is filled in here, the same way for every
//! platform, by [`error_from_answer`].

use std::cell::OnceCell;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::ratelimit::RateLimit;
use crate::error::{Error, ErrorKind};
use crate::platform::Platform;
use crate::validate::ValidationReport;

/// A platform's way of answering over HTTP. Implement it once per adapter; the
/// [`super::ApiClient`] and the OAuth helpers call it for every answer.
///
/// Only [`Dialect::platform`] and [`Dialect::classify`] are required. The defaults read the
/// generic headers: `x-request-id`, the IETF `ratelimit-*` draft and `Retry-After`.
pub trait Dialect: Send + Sync + 'static {
    /// The platform this dialect belongs to.
    fn platform(&self) -> Platform;

    /// Reads an error answer (a status outside 2xx): the platform's code, a message and, when
    /// the code decides it, the kind. What it leaves `None` is derived from the status and the
    /// headers by [`error_from_answer`].
    fn classify(&self, answer: &RawAnswer<'_>) -> Classified;

    /// The platform's request or trace id in `headers`, for support tickets.
    fn request_id(&self, headers: &HeaderMap) -> Option<String> {
        header_str(headers, "x-request-id").map(str::to_owned)
    }

    /// What `headers` say about rate limits, read against `now`.
    fn rate_limit(&self, headers: &HeaderMap, now: DateTime<Utc>) -> RateLimit {
        RateLimit::from_headers(headers, now)
    }

    /// A 2xx answer that is in truth a refusal (an error envelope, `errors[]` without `data`):
    /// its reading, or `None` for a real success.
    fn refusal(&self, answer: &RawAnswer<'_>) -> Option<Classified> {
        let _ = answer;
        None
    }

    /// Whether a 401 answer is worth one token refresh. Some platforms answer 401 for problems a
    /// new token cannot fix (an account without a channel, say).
    fn refreshes_on(&self, answer: &RawAnswer<'_>) -> bool {
        let _ = answer;
        true
    }
}

/// A dialect that knows only HTTP itself: statuses and the generic headers. For OAuth servers
/// and platforms without an adapter of their own.
#[derive(Debug, Clone, Copy)]
pub struct GenericDialect(pub Platform);

impl Dialect for GenericDialect {
    fn platform(&self) -> Platform {
        self.0
    }

    fn classify(&self, _answer: &RawAnswer<'_>) -> Classified {
        Classified::new()
    }
}

/// The value of header `name`, when it is text.
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// An answer as it arrived: what a [`Dialect`] reads.
#[derive(Debug)]
pub struct RawAnswer<'a> {
    /// The operation that was called (`tweets.create`).
    pub operation: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: &'a HeaderMap,
    /// The response body as text.
    pub body: &'a str,
    /// When it arrived.
    pub now: DateTime<Utc>,
    json: OnceCell<Value>,
}

impl<'a> RawAnswer<'a> {
    /// An answer of `status` with `headers` and `body` to `operation`, arrived at `now`.
    pub fn new(
        operation: &'static str,
        status: u16,
        headers: &'a HeaderMap,
        body: &'a str,
        now: DateTime<Utc>,
    ) -> Self {
        RawAnswer {
            operation,
            status,
            headers,
            body,
            now,
            json: OnceCell::new(),
        }
    }

    /// The body as JSON (`Null` when it is not JSON), parsed once.
    pub fn json(&self) -> &Value {
        self.json
            .get_or_init(|| serde_json::from_str(self.body).unwrap_or(Value::Null))
    }

    /// The string at the JSON pointer `pointer` (`/error/message`), if any.
    pub fn str_at(&self, pointer: &str) -> Option<&str> {
        self.json().pointer(pointer).and_then(Value::as_str)
    }

    /// The integer at the JSON pointer `pointer`, from a number or a numeric string.
    pub fn int_at(&self, pointer: &str) -> Option<i64> {
        let v = self.json().pointer(pointer)?;
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    }
}

/// What a [`Dialect`] read in an error answer. Unset fields are derived by
/// [`error_from_answer`]: the kind from the status, the wait from the rate-limit headers.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Classified {
    /// The class, when the platform's code decides it.
    pub kind: Option<ErrorKind>,
    /// The platform's own code or reason (`duplicate-content`, `quotaExceeded`, `190`).
    pub code: Option<String>,
    /// What went wrong, in the platform's words or better (no secrets).
    pub message: Option<String>,
    /// The status the answer stands for, when it differs from the one sent (a 200 carrying a
    /// not-found error counts as 404).
    pub status: Option<u16>,
    /// How long to wait before retrying, when the body says so.
    pub retry_after: Option<Duration>,
    /// When a retry can succeed, when the body says so (a quota reset).
    pub retry_at: Option<DateTime<Utc>>,
    /// The post fields the platform refused, for answers that are validation errors.
    pub validation: Option<ValidationReport>,
}

impl Classified {
    /// Nothing read: every field derived from the status and headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the kind.
    pub fn kind(mut self, kind: ErrorKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Sets the kind when `kind` is `Some`.
    pub fn kind_opt(mut self, kind: Option<ErrorKind>) -> Self {
        self.kind = kind.or(self.kind);
        self
    }

    /// Sets the platform's code (ignored when empty).
    pub fn code(mut self, code: impl Into<String>) -> Self {
        let code = code.into();
        if !code.is_empty() {
            self.code = Some(code);
        }
        self
    }

    /// Sets the message (ignored when empty).
    pub fn message(mut self, message: impl Into<String>) -> Self {
        let message = message.into();
        if !message.trim().is_empty() {
            self.message = Some(message);
        }
        self
    }

    /// Sets the status the answer stands for.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the wait before a retry.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// Sets the instant a retry can succeed.
    pub fn retry_at(mut self, at: DateTime<Utc>) -> Self {
        self.retry_at = Some(at);
        self
    }

    /// Makes the answer a validation error with `report`.
    pub fn validation(mut self, report: ValidationReport) -> Self {
        self.kind = Some(ErrorKind::Validation);
        self.validation = Some(report);
        self
    }
}

/// Classifies an HTTP status when the body gave nothing more specific: 401 unauthorized,
/// 429 rate limited, 408 and 5xx transient, other 4xx a permanent refusal.
pub fn kind_for_status(status: u16) -> ErrorKind {
    match status {
        401 => ErrorKind::Unauthorized,
        429 => ErrorKind::RateLimited,
        408 | 500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Platform,
    }
}

/// Turns an error answer and the dialect's reading of it into an [`Error`] carrying every
/// field: platform, operation, status, code, request id, the redacted body, and for rate limits
/// when to retry (the reading's own wait, else the rate-limit headers' reset).
pub fn error_from_answer(dialect: &dyn Dialect, answer: &RawAnswer<'_>, c: Classified) -> Error {
    let status = c.status.unwrap_or(answer.status);
    let kind = c.kind.unwrap_or_else(|| kind_for_status(status));
    let what = c.message.unwrap_or_else(|| match status {
        0 => "no answer".to_owned(),
        s => format!("HTTP {s}"),
    });
    let message = format!("{} failed: {what}", answer.operation);
    let mut e = match c.validation {
        Some(report) => Error::validation(report).with_kind(kind),
        None => Error::new(kind, message),
    }
    .with_platform(dialect.platform())
    .with_operation(answer.operation)
    .with_status(status)
    .with_body(answer.body);
    if let Some(code) = c.code {
        e = e.with_code(code);
    }
    if let Some(id) = dialect.request_id(answer.headers) {
        e = e.with_request_id(id);
    }
    let (mut retry_after, mut retry_at) = (c.retry_after, c.retry_at);
    if kind == ErrorKind::RateLimited && retry_after.is_none() && retry_at.is_none() {
        let limits = dialect.rate_limit(answer.headers, answer.now);
        retry_after = limits.wait(answer.now);
        // A 429 whose window does not read as exhausted: wait for that window's reset anyway.
        retry_at = limits
            .reset_at_exhausted()
            .or_else(|| limits.window.and_then(|w| w.reset_at));
    }
    if let Some(wait) = retry_after {
        e = e.with_retry_after(wait);
    }
    if let Some(at) = retry_at {
        e = e.with_retry_at(at);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    struct Toy;

    impl Dialect for Toy {
        fn platform(&self) -> Platform {
            Platform::X
        }

        fn classify(&self, a: &RawAnswer<'_>) -> Classified {
            let kind = match a.str_at("/code") {
                Some("slow_down") => Some(ErrorKind::RateLimited),
                Some("bad_field") => {
                    let mut report = ValidationReport::new(Platform::X);
                    report.push("text", "bad_field", "the text is refused");
                    return Classified::new().code("bad_field").validation(report);
                }
                _ => None,
            };
            Classified::new()
                .kind_opt(kind)
                .code(a.str_at("/code").unwrap_or(""))
                .message(a.str_at("/message").unwrap_or(""))
        }

        fn request_id(&self, headers: &HeaderMap) -> Option<String> {
            header_str(headers, "x-toy-trace").map(str::to_owned)
        }
    }

    #[test]
    fn every_field_is_filled_in() {
        let now = Utc::now();
        let h = headers(&[("x-toy-trace", "t-1"), ("retry-after", "30")]);
        let body = r#"{"code":"slow_down","message":"easy","access_token":"sekrit-value"}"#;
        let e = error_from_answer(&Toy, &RawAnswer::new("toy.create", 400, &h, body, now), {
            let a = RawAnswer::new("toy.create", 400, &h, body, now);
            Toy.classify(&a)
        });
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.platform(), Some(Platform::X));
        assert_eq!(e.operation(), Some("toy.create"));
        assert_eq!(e.status(), Some(400));
        assert_eq!(e.code(), Some("slow_down"));
        assert_eq!(e.request_id(), Some("t-1"));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
        assert_eq!(e.message(), "toy.create failed: easy");
        assert!(!format!("{e:?} {e}").contains("sekrit-value"));
    }

    #[test]
    fn status_decides_when_the_body_does_not() {
        let now = Utc::now();
        let h = HeaderMap::new();
        for (status, kind) in [
            (401, ErrorKind::Unauthorized),
            (429, ErrorKind::RateLimited),
            (503, ErrorKind::Transient),
            (404, ErrorKind::Platform),
        ] {
            let a = RawAnswer::new("toy.get", status, &h, "<html>", now);
            let e = error_from_answer(&Toy, &a, Toy.classify(&a));
            assert_eq!(e.kind(), kind, "{status}");
            assert_eq!(e.message(), format!("toy.get failed: HTTP {status}"));
        }
        let a = RawAnswer::new("toy.create", 400, &h, r#"{"code":"bad_field"}"#, now);
        let e = error_from_answer(&Toy, &a, Toy.classify(&a));
        assert_eq!(e.kind(), ErrorKind::Validation);
        assert_eq!(
            e.validation_report().map(|r| r.issues()[0].path.clone()),
            Some("text".to_owned())
        );
        assert_eq!(e.status(), Some(400));
    }

    #[test]
    fn json_helpers() {
        let h = HeaderMap::new();
        let a = RawAnswer::new(
            "op",
            400,
            &h,
            r#"{"error":{"code":"190","n":7}}"#,
            Utc::now(),
        );
        assert_eq!(a.int_at("/error/code"), Some(190));
        assert_eq!(a.int_at("/error/n"), Some(7));
        assert_eq!(a.str_at("/missing"), None);
        let b = RawAnswer::new("op", 500, &h, "not json", Utc::now());
        assert!(b.json().is_null());
    }
}
