//! Wire types of the YouTube Data API v3 and the authorized request helper every call goes
//! through (bearer token, one refresh after a 401, retries for idempotent calls).

use std::sync::Arc;

use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use socialpub_core::clock::Clock;
use socialpub_core::http::transport_error;
use socialpub_core::{Error, ErrorKind, Platform, PublishContext, Result};

use crate::config::YouTubeConfig;
use crate::error::api_error;

/// The body of `videos.insert`: the parts `snippet` and `status`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VideoInsert {
    pub(crate) snippet: InsertSnippet,
    pub(crate) status: InsertStatus,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InsertSnippet {
    pub(crate) title: String,
    pub(crate) description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tags: Vec<String>,
    pub(crate) category_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) default_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) default_audio_language: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InsertStatus {
    pub(crate) privacy_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) publish_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) self_declared_made_for_kids: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) contains_synthetic_media: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) embeddable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) license: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) public_stats_viewable: Option<bool>,
}

/// A video resource as the API returns it (only the fields read here).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Video {
    pub(crate) id: String,
    pub(crate) snippet: Option<VideoSnippet>,
    pub(crate) status: Option<VideoStatus>,
    pub(crate) processing_details: Option<ProcessingDetails>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct VideoSnippet {
    pub(crate) title: Option<String>,
    pub(crate) published_at: Option<String>,
    pub(crate) channel_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct VideoStatus {
    pub(crate) upload_status: Option<String>,
    pub(crate) failure_reason: Option<String>,
    pub(crate) rejection_reason: Option<String>,
    pub(crate) privacy_status: Option<String>,
    pub(crate) publish_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ProcessingDetails {
    pub(crate) processing_status: Option<String>,
    pub(crate) processing_failure_reason: Option<String>,
    pub(crate) processing_progress: Option<ProcessingProgress>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ProcessingProgress {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parts_total: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parts_processed: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) time_left_ms: Option<serde_json::Value>,
}

/// A `*.list` answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListResponse<T> {
    #[serde(default = "Vec::new")]
    pub(crate) items: Vec<T>,
    #[serde(default)]
    pub(crate) next_page_token: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ChannelResource {
    pub(crate) id: String,
    pub(crate) snippet: Option<ChannelSnippet>,
    pub(crate) content_details: Option<ChannelContentDetails>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ChannelSnippet {
    pub(crate) title: Option<String>,
    pub(crate) custom_url: Option<String>,
    pub(crate) thumbnails: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ChannelContentDetails {
    pub(crate) related_playlists: Option<RelatedPlaylists>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct RelatedPlaylists {
    pub(crate) uploads: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PlaylistItem {
    pub(crate) snippet: Option<PlaylistItemSnippet>,
    pub(crate) content_details: Option<PlaylistItemContent>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PlaylistItemSnippet {
    pub(crate) published_at: Option<String>,
    pub(crate) title: Option<String>,
    pub(crate) resource_id: Option<ResourceId>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PlaylistItemContent {
    pub(crate) video_id: Option<String>,
    pub(crate) video_published_at: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ResourceId {
    pub(crate) video_id: Option<String>,
}

/// Where a call gets its bearer token: a publish context (which can refresh), or a token
/// handed in directly (account discovery right after the code exchange).
pub(crate) enum Auth<'a> {
    Ctx(&'a PublishContext),
    Token(&'a SecretString),
}

impl Auth<'_> {
    pub(crate) async fn token(&self) -> Result<SecretString> {
        match self {
            Auth::Ctx(ctx) => ctx.access_token().await,
            Auth::Token(t) => Ok((*t).clone()),
        }
    }

    pub(crate) async fn refresh(&self, rejected: &SecretString) -> Result<SecretString> {
        match self {
            Auth::Ctx(ctx) => ctx.refresh_access_token(rejected).await,
            Auth::Token(_) => Err(Error::new(
                ErrorKind::Unauthorized,
                "Google rejected the access token",
            )
            .with_platform(Platform::YouTube)),
        }
    }
}

/// A response read to the end.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
    ) -> Result<T> {
        serde_json::from_str(&self.body).map_err(|e| {
            Error::new(
                ErrorKind::Platform,
                format!("{operation}: unexpected answer from YouTube: {e}"),
            )
            .with_platform(Platform::YouTube)
            .with_operation(operation)
            .with_status(self.status)
            .with_body(&self.body)
        })
    }
}

/// Sends API calls with the configuration's client, timeouts and retry policy.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) config: Arc<YouTubeConfig>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Api {
    /// Sends one request built by `build` with a bearer token. A 401 refreshes the token once
    /// and sends again. Returns the answer whatever its status when `accept` says so, else
    /// maps a non-2xx answer to an error.
    pub(crate) async fn send_once(
        &self,
        auth: &Auth<'_>,
        operation: &'static str,
        build: &(dyn Fn(&SecretString) -> reqwest::RequestBuilder + Send + Sync),
    ) -> Result<Answer> {
        let mut token = auth.token().await?;
        let mut refreshed = false;
        loop {
            let req = build(&token)
                .bearer_auth(token.expose_secret())
                .timeout(self.config.request_timeout);
            let resp = req
                .send()
                .await
                .map_err(|e| transport_error(e, Platform::YouTube, operation, false))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .text()
                .await
                .map_err(|e| transport_error(e, Platform::YouTube, operation, false))?;
            if status == 401 && !refreshed && !is_signup_required(&body) {
                tracing::debug!(operation, "access token rejected; refreshing once");
                token = auth.refresh(&token).await?;
                refreshed = true;
                continue;
            }
            if (200..300).contains(&status) {
                return Ok(Answer {
                    status,
                    headers,
                    body,
                });
            }
            return Err(api_error(
                operation,
                status,
                &headers,
                &body,
                self.clock.now(),
            ));
        }
    }

    /// [`Api::send_once`] with retries of transient and rate-limited failures: for idempotent
    /// calls only (reads, deletes, thumbnail sets).
    pub(crate) async fn send_idempotent(
        &self,
        auth: &Auth<'_>,
        operation: &'static str,
        build: &(dyn Fn(&SecretString) -> reqwest::RequestBuilder + Send + Sync),
    ) -> Result<Answer> {
        self.config
            .retry
            .run(|| self.send_once(auth, operation, build))
            .await
    }
}

/// Whether a 401 body says the account has no channel (no refresh will help).
pub(crate) fn is_signup_required(body: &str) -> bool {
    body.contains("youtubeSignupRequired")
}
