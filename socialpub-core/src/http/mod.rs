//! HTTP plumbing shared by the adapters: the [`ApiClient`] every request goes through, the
//! [`Dialect`] an adapter supplies and the one error mapping it feeds, classification of
//! transport failures, retry with backoff for idempotent steps only, rate-limit headers,
//! chunked reading of media, and request spans with secrets redacted.

mod chunk;
mod client;
mod dialect;
mod ratelimit;
mod retry;
mod settings;

use std::time::Duration;

pub use chunk::{Chunk, ChunkReader};
pub use client::{Answer, ApiClient, Bearer, Call};
pub use dialect::{
    Classified, Dialect, GenericDialect, RawAnswer, error_from_answer, header_str, kind_for_status,
};
pub use ratelimit::{RateLimit, Window, parse_retry_after};
pub use retry::{RetryPolicy, commit};
pub use settings::ClientSettings;

use crate::error::{Error, ErrorKind};
use crate::platform::Platform;

/// The user agent socialpub sends unless the caller's client sets one.
pub const USER_AGENT: &str = concat!("socialpub/", env!("CARGO_PKG_VERSION"));

/// A `reqwest::Client` with socialpub's defaults: rustls, a user agent, a connect timeout and an
/// overall request timeout. Adapters accept the caller's own client instead.
pub fn default_client(timeout: Duration) -> crate::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .build()
        .map_err(|e| {
            Error::configuration(format!("cannot build the HTTP client: {e}")).with_source(e)
        })
}

/// Maps a transport failure (no HTTP response) to an error.
///
/// A failure to connect means nothing was sent: [`ErrorKind::Transient`] whatever the request.
/// Any other failure (timeout, reset, a body that broke off) on a request that creates a post
/// (`commit = true`) is [`ErrorKind::Unconfirmed`]: the platform may have acted on it.
pub fn transport_error(
    e: reqwest::Error,
    platform: Platform,
    operation: &'static str,
    commit: bool,
) -> Error {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "connection failed"
    };
    let kind = if commit && !e.is_connect() {
        ErrorKind::Unconfirmed
    } else {
        ErrorKind::Transient
    };
    let msg = if kind == ErrorKind::Unconfirmed {
        format!("{operation} {what} after the request was sent; the post may exist")
    } else {
        format!("{operation} {what}")
    };
    // The reqwest error carries the URL, which may hold a token in its query: keep it as the
    // source (Debug redacts it) and not in the message.
    let err = Error::new(kind, msg)
        .with_platform(platform)
        .with_operation(operation);
    let err = if e.is_connect() {
        err.with_not_sent()
    } else {
        err
    };
    err.with_source(e.without_url())
}

/// A tracing span for one request, with the URL's secret parameters masked.
pub fn request_span(
    platform: Platform,
    operation: &'static str,
    method: &str,
    url: &url::Url,
) -> tracing::Span {
    tracing::debug_span!(
        "socialpub.request",
        platform = %platform,
        operation,
        method,
        url = %crate::redact::redact_url(url),
    )
}
