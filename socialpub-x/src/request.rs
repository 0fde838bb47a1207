//! Sending one authorized request to X: bearer token from the publish context, one refresh on a
//! 401, error answers classified, 2xx answers with only `errors[]` turned into errors.

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use socialpub_core::http::{RateLimit, request_span, transport_error};
use socialpub_core::{Error, ErrorKind, Platform, PublishContext, Result};
use tracing::Instrument;

use crate::error::{classify, errors_without_data};

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    /// What the answer's headers say about rate limits.
    pub rate_limit: RateLimit,
    pub body: String,
}

impl Answer {
    pub fn json<T: DeserializeOwned>(&self, operation: &'static str) -> Result<T> {
        serde_json::from_str(&self.body).map_err(|e| {
            Error::new(
                ErrorKind::Platform,
                format!("{operation}: X answered with an unexpected body: {e}"),
            )
            .with_platform(Platform::X)
            .with_operation(operation)
            .with_status(self.status)
            .with_body(&self.body)
        })
    }
}

/// Sends the request `build` makes with a token, refreshing once on a 401. `commit` marks the
/// request that creates a post: a broken connection after sending it is then unconfirmed.
pub(crate) async fn send<F>(
    ctx: &PublishContext,
    operation: &'static str,
    commit: bool,
    build: F,
) -> Result<Answer>
where
    F: Fn(&str) -> reqwest::RequestBuilder,
{
    let token = ctx.access_token().await?;
    match send_once(operation, commit, build(token.expose_secret())).await {
        Err(e) if e.kind() == ErrorKind::Unauthorized => {
            tracing::debug!(operation, "X rejected the access token; refreshing once");
            let fresh: SecretString = ctx.refresh_access_token(&token).await?;
            send_once(operation, commit, build(fresh.expose_secret())).await
        }
        other => other,
    }
}

/// Sends one request, in a tracing span whose URL has its secrets masked.
pub(crate) async fn send_once(
    operation: &'static str,
    commit: bool,
    request: reqwest::RequestBuilder,
) -> Result<Answer> {
    let (client, request) = request.build_split();
    let request = request.map_err(|e| {
        Error::internal(format!("{operation}: the request could not be built: {e}"))
            .with_platform(Platform::X)
            .with_operation(operation)
    })?;
    let span = request_span(
        Platform::X,
        operation,
        request.method().as_str(),
        request.url(),
    );
    let resp = client
        .execute(request)
        .instrument(span)
        .await
        .map_err(|e| transport_error(e, Platform::X, operation, commit))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .text()
        .await
        .map_err(|e| transport_error(e, Platform::X, operation, commit))?;
    if !(200..300).contains(&status) {
        return Err(classify(status, &headers, &body, operation));
    }
    if let Some(e) = errors_without_data(status, &headers, &body, operation) {
        return Err(e);
    }
    Ok(Answer {
        status,
        rate_limit: RateLimit::from_headers(&headers, chrono::Utc::now()),
        body,
    })
}
