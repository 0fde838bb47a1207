//! [`YouTubeConfig`]: the OAuth app, every endpoint (overridable, e.g. to point at the mock),
//! the HTTP settings, the upload chunk size, timeouts, retries and the quota cost table.

use std::fmt;
use std::time::Duration;

use socialpub_core::auth::oauth::{OAuthApp, OAuthAppBuilder, OAuthDefaults};
use socialpub_core::http::{ApiClient, ClientSettings};
use socialpub_core::{Error, Platform, Result};
use url::Url;

use crate::error::YouTubeDialect;

/// Every resumable chunk except the last must be a multiple of this (256 KiB), per Google's
/// resumable upload protocol.
pub const CHUNK_GRANULARITY: usize = 256 * 1024;

/// The default chunk size: 8 MiB.
pub const DEFAULT_CHUNK_SIZE: usize = 8 * 1024 * 1024;

/// Scope to upload videos and set thumbnails.
pub const SCOPE_UPLOAD: &str = "https://www.googleapis.com/auth/youtube.upload";
/// Scope to read the channel and the processing status (`youtube.upload` cannot call
/// `channels.list` or `videos.list`).
pub const SCOPE_READONLY: &str = "https://www.googleapis.com/auth/youtube.readonly";
/// Full management scope: needed for [`socialpub_core::Publisher::delete`].
pub const SCOPE_MANAGE: &str = "https://www.googleapis.com/auth/youtube";

const API_BASE: &str = "https://www.googleapis.com";
const AUTHORIZE_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
const TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const REVOKE_URL: &str = "https://oauth2.googleapis.com/revoke";
/// How long an API request other than a chunk upload may take unless configured otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Quota units charged per API call.
///
/// Google's pages disagree: the current quota page gives `videos.insert` its own bucket of 100
/// calls a day at 1 unit each, while the `videos.insert` reference (and most tooling) still
/// says 1600 units out of the 10,000-unit daily pool. The default follows the quota page;
/// [`QuotaCosts::legacy`] uses 1600. Set your own when your project's quota differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaCosts {
    /// `videos.insert` (charged per upload session started).
    pub videos_insert: u64,
    /// `videos.list`.
    pub videos_list: u64,
    /// `videos.delete`.
    pub videos_delete: u64,
    /// `thumbnails.set`.
    pub thumbnails_set: u64,
    /// `channels.list`.
    pub channels_list: u64,
    /// `playlistItems.list`.
    pub playlist_items_list: u64,
}

impl Default for QuotaCosts {
    fn default() -> Self {
        QuotaCosts {
            videos_insert: 1,
            videos_list: 1,
            videos_delete: 50,
            thumbnails_set: 50,
            channels_list: 1,
            playlist_items_list: 1,
        }
    }
}

impl QuotaCosts {
    /// The older table: `videos.insert` costs 1600 units of the shared daily pool.
    pub fn legacy() -> Self {
        QuotaCosts {
            videos_insert: 1600,
            ..Self::default()
        }
    }

    /// Sets the cost of `videos.insert`.
    pub fn with_videos_insert(mut self, units: u64) -> Self {
        self.videos_insert = units;
        self
    }

    /// Sets the cost of `thumbnails.set`.
    pub fn with_thumbnails_set(mut self, units: u64) -> Self {
        self.thumbnails_set = units;
        self
    }
}

/// Configuration shared by [`crate::YouTubePublisher`] and [`crate::YouTubeConnector`].
///
/// Build one with [`YouTubeConfig::builder`]. Its `Debug` hides the client secret.
#[derive(Clone)]
pub struct YouTubeConfig {
    pub(crate) app: OAuthApp,
    pub(crate) api: ApiClient,
    pub(crate) api_base: Url,
    pub(crate) upload_base: Url,
    pub(crate) chunk_size: usize,
    pub(crate) chunk_timeout: Duration,
    pub(crate) max_upload_failures: u32,
    pub(crate) max_sessions: u32,
    pub(crate) quota: QuotaCosts,
    pub(crate) lookup_settle: Duration,
}

impl fmt::Debug for YouTubeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YouTubeConfig")
            .field("app", &self.app)
            .field("api", &self.api)
            .field("api_base", &self.api_base.as_str())
            .field("upload_base", &self.upload_base.as_str())
            .field("chunk_size", &self.chunk_size)
            .field("chunk_timeout", &self.chunk_timeout)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl YouTubeConfig {
    /// Starts a configuration with Google's endpoints, an 8 MiB chunk size and the scopes
    /// `youtube.upload` and `youtube.readonly`.
    ///
    /// ```no_run
    /// use socialpub_youtube::YouTubeConfig;
    ///
    /// let config = YouTubeConfig::builder()
    ///     .client_id("1234.apps.googleusercontent.com")
    ///     .client_secret("GOCSPX-…")
    ///     .redirect_uri("http://127.0.0.1:8080/callback")
    ///     .chunk_size(16 * 1024 * 1024)
    ///     .build()?;
    /// # Ok::<(), socialpub_core::Error>(())
    /// ```
    pub fn builder() -> YouTubeConfigBuilder {
        YouTubeConfigBuilder::default()
    }

    /// The OAuth app.
    pub fn app(&self) -> &OAuthApp {
        &self.app
    }

    /// The API client every request goes through.
    pub fn api_client(&self) -> &ApiClient {
        &self.api
    }

    /// The upload chunk size in bytes.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// The quota cost table.
    pub fn quota_costs(&self) -> QuotaCosts {
        self.quota
    }

    /// The scopes requested when connecting.
    pub fn scopes(&self) -> &[String] {
        self.app.scopes()
    }

    pub(crate) fn data_url(&self, path: &str) -> Result<Url> {
        join(&self.api_base, &format!("youtube/v3/{path}"))
    }

    pub(crate) fn upload_url(&self, path: &str) -> Result<Url> {
        join(&self.upload_base, &format!("upload/youtube/v3/{path}"))
    }
}

fn join(base: &Url, path: &str) -> Result<Url> {
    let mut s = base.as_str().trim_end_matches('/').to_owned();
    s.push('/');
    s.push_str(path);
    Url::parse(&s).map_err(|e| Error::configuration(format!("bad YouTube URL {s}: {e}")))
}

/// Builds a [`YouTubeConfig`]. Every setter is optional; [`YouTubeConfigBuilder::build`] checks
/// the URLs and the chunk size.
#[derive(Debug, Default)]
pub struct YouTubeConfigBuilder {
    app: OAuthAppBuilder,
    client: ClientSettings,
    api_base: Option<String>,
    upload_base: Option<String>,
    chunk_size: Option<usize>,
    chunk_timeout: Option<Duration>,
    max_upload_failures: Option<u32>,
    max_sessions: Option<u32>,
    quota: Option<QuotaCosts>,
    lookup_settle: Option<Duration>,
}

impl YouTubeConfigBuilder {
    socialpub_core::oauth_app_setters!(app);
    socialpub_core::client_settings_setters!(client);

    /// The API host (default `https://www.googleapis.com`): the data API lives under
    /// `/youtube/v3`, uploads under `/upload/youtube/v3`. Also sets the upload host unless
    /// [`YouTubeConfigBuilder::upload_base`] is set.
    pub fn api_base(mut self, url: impl Into<String>) -> Self {
        self.api_base = Some(url.into());
        self
    }

    /// The upload host, when it differs from the API host.
    pub fn upload_base(mut self, url: impl Into<String>) -> Self {
        self.upload_base = Some(url.into());
        self
    }

    /// Bytes per upload request (default 8 MiB); must be a positive multiple of 256 KiB.
    /// An upload holds at most two chunks in memory: the one being sent and the next.
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = Some(bytes);
        self
    }

    /// Timeout of each chunk upload request (default 10 minutes); other requests use the
    /// request timeout (default 60 s).
    pub fn chunk_timeout(mut self, timeout: Duration) -> Self {
        self.chunk_timeout = Some(timeout);
        self
    }

    /// Consecutive failed upload requests (5xx, network errors, timeouts) tolerated without
    /// progress before the upload gives up (default 8). Any acknowledged byte resets the count.
    pub fn max_upload_failures(mut self, n: u32) -> Self {
        self.max_upload_failures = Some(n);
        self
    }

    /// Upload sessions one publish may start when Google expires them (default 3).
    pub fn max_sessions(mut self, n: u32) -> Self {
        self.max_sessions = Some(n);
        self
    }

    /// The quota cost table.
    pub fn quota_costs(mut self, costs: QuotaCosts) -> Self {
        self.quota = Some(costs);
        self
    }

    /// How long after a commit the channel's uploads list may still lag behind (default
    /// 2 minutes): a lookup that finds nothing sooner answers "unknown", not "absent".
    pub fn lookup_settle(mut self, settle: Duration) -> Self {
        self.lookup_settle = Some(settle);
        self
    }

    /// Checks the URLs and chunk size and builds the configuration.
    pub fn build(self) -> Result<YouTubeConfig> {
        let url = |name: &str, s: String| -> Result<Url> {
            Url::parse(&s).map_err(|e| {
                Error::configuration(format!("the YouTube {name} `{s}` is not a URL: {e}"))
                    .with_platform(Platform::YouTube)
            })
        };
        let chunk_size = self.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE);
        if chunk_size == 0 || !chunk_size.is_multiple_of(CHUNK_GRANULARITY) {
            return Err(Error::configuration(format!(
                "the YouTube chunk size must be a positive multiple of 256 KiB ({CHUNK_GRANULARITY} bytes); got {chunk_size}"
            ))
            .with_platform(Platform::YouTube));
        }
        let api_base = url(
            "API base",
            self.api_base.unwrap_or_else(|| API_BASE.to_owned()),
        )?;
        let upload_base = match self.upload_base {
            Some(u) => url("upload base", u)?,
            None => api_base.clone(),
        };
        let app = self.app.build(
            Platform::YouTube,
            OAuthDefaults::new(
                AUTHORIZE_URL,
                TOKEN_URL,
                Some(REVOKE_URL.to_owned()),
                [SCOPE_UPLOAD, SCOPE_READONLY],
            ),
        )?;
        Ok(YouTubeConfig {
            app,
            api: self.client.build(YouTubeDialect, DEFAULT_REQUEST_TIMEOUT)?,
            api_base,
            upload_base,
            chunk_size,
            chunk_timeout: self.chunk_timeout.unwrap_or(Duration::from_secs(600)),
            max_upload_failures: self.max_upload_failures.unwrap_or(8),
            max_sessions: self.max_sessions.unwrap_or(3).max(1),
            quota: self.quota.unwrap_or_default(),
            lookup_settle: self.lookup_settle.unwrap_or(Duration::from_secs(120)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_must_be_a_multiple_of_256_kib() {
        assert!(YouTubeConfig::builder().chunk_size(1000).build().is_err());
        assert!(YouTubeConfig::builder().chunk_size(0).build().is_err());
        let c = YouTubeConfig::builder()
            .chunk_size(3 * CHUNK_GRANULARITY)
            .build()
            .expect("valid");
        assert_eq!(c.chunk_size(), 3 * CHUNK_GRANULARITY);
    }

    #[test]
    fn urls_join_and_secret_is_hidden() {
        let c = YouTubeConfig::builder()
            .api_base("http://127.0.0.1:9/")
            .client_secret("hush-hush")
            .build()
            .expect("valid");
        assert_eq!(
            c.upload_url("videos").expect("url").as_str(),
            "http://127.0.0.1:9/upload/youtube/v3/videos"
        );
        assert_eq!(
            c.data_url("channels").expect("url").as_str(),
            "http://127.0.0.1:9/youtube/v3/channels"
        );
        assert!(!format!("{c:?}").contains("hush-hush"));
    }
}
