//! [`YouTubeConfig`]: OAuth client credentials, every endpoint (overridable, e.g. to point at
//! the mock), the HTTP client, the upload chunk size, timeouts, retries and the quota cost table.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use socialpub_core::http::RetryPolicy;
use socialpub_core::{Error, Result};
use url::Url;

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
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<SecretString>,
    pub(crate) redirect_uri: Option<Url>,
    pub(crate) api_base: Url,
    pub(crate) upload_base: Url,
    pub(crate) authorize_url: Url,
    pub(crate) token_url: Url,
    pub(crate) revoke_url: Url,
    pub(crate) scopes: Vec<String>,
    pub(crate) http: reqwest::Client,
    pub(crate) chunk_size: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) chunk_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) max_upload_failures: u32,
    pub(crate) max_sessions: u32,
    pub(crate) quota: QuotaCosts,
    pub(crate) lookup_settle: Duration,
}

impl fmt::Debug for YouTubeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YouTubeConfig")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("redirect_uri", &self.redirect_uri.as_ref().map(Url::as_str))
            .field("api_base", &self.api_base.as_str())
            .field("upload_base", &self.upload_base.as_str())
            .field("authorize_url", &self.authorize_url.as_str())
            .field("token_url", &self.token_url.as_str())
            .field("revoke_url", &self.revoke_url.as_str())
            .field("scopes", &self.scopes)
            .field("chunk_size", &self.chunk_size)
            .field("request_timeout", &self.request_timeout)
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
        &self.scopes
    }

    /// The HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
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
#[derive(Default)]
pub struct YouTubeConfigBuilder {
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    redirect_uri: Option<String>,
    api_base: Option<String>,
    upload_base: Option<String>,
    authorize_url: Option<String>,
    token_url: Option<String>,
    revoke_url: Option<String>,
    scopes: Option<Vec<String>>,
    http: Option<reqwest::Client>,
    chunk_size: Option<usize>,
    request_timeout: Option<Duration>,
    chunk_timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    max_upload_failures: Option<u32>,
    max_sessions: Option<u32>,
    quota: Option<QuotaCosts>,
    lookup_settle: Option<Duration>,
}

impl fmt::Debug for YouTubeConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YouTubeConfigBuilder")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .finish_non_exhaustive()
    }
}

impl YouTubeConfigBuilder {
    /// The OAuth client id (needed to connect accounts and refresh tokens).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// The OAuth client secret.
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(SecretString::from(secret.into()));
        self
    }

    /// The redirect URI registered for the OAuth client.
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uri = Some(uri.into());
        self
    }

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

    /// The authorization endpoint (default `https://accounts.google.com/o/oauth2/v2/auth`).
    pub fn authorize_url(mut self, url: impl Into<String>) -> Self {
        self.authorize_url = Some(url.into());
        self
    }

    /// The token endpoint (default `https://oauth2.googleapis.com/token`).
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = Some(url.into());
        self
    }

    /// The revocation endpoint (default `https://oauth2.googleapis.com/revoke`).
    pub fn revoke_url(mut self, url: impl Into<String>) -> Self {
        self.revoke_url = Some(url.into());
        self
    }

    /// Scopes to request (default `youtube.upload` and `youtube.readonly`; add
    /// [`SCOPE_MANAGE`] to delete videos).
    pub fn scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Your own HTTP client (connection pool, proxy, TLS settings). Request timeouts are set
    /// per request by this crate.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Bytes per upload request (default 8 MiB); must be a positive multiple of 256 KiB.
    /// An upload holds at most two chunks in memory: the one being sent and the next.
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = Some(bytes);
        self
    }

    /// Timeout of each API request other than chunk uploads (default 60 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Timeout of each chunk upload request (default 10 minutes).
    pub fn chunk_timeout(mut self, timeout: Duration) -> Self {
        self.chunk_timeout = Some(timeout);
        self
    }

    /// Backoff for idempotent calls and between upload retries.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
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
        let url = |name: &str, v: Option<String>, default: &str| -> Result<Url> {
            let s = v.unwrap_or_else(|| default.to_owned());
            Url::parse(&s).map_err(|e| {
                Error::configuration(format!("the YouTube {name} `{s}` is not a URL: {e}"))
            })
        };
        let chunk_size = self.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE);
        if chunk_size == 0 || !chunk_size.is_multiple_of(CHUNK_GRANULARITY) {
            return Err(Error::configuration(format!(
                "the YouTube chunk size must be a positive multiple of 256 KiB ({CHUNK_GRANULARITY} bytes); got {chunk_size}"
            )));
        }
        let api_base = url("API base", self.api_base, API_BASE)?;
        let upload_base = match self.upload_base {
            Some(u) => url("upload base", Some(u), API_BASE)?,
            None => api_base.clone(),
        };
        let redirect_uri = match self.redirect_uri {
            Some(r) => Some(url("redirect URI", Some(r), "")?),
            None => None,
        };
        let http = match self.http {
            Some(c) => c,
            None => reqwest::Client::builder()
                .user_agent(socialpub_core::http::USER_AGENT)
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| {
                    Error::configuration(format!("cannot build the HTTP client: {e}"))
                        .with_source(e)
                })?,
        };
        Ok(YouTubeConfig {
            client_id: self.client_id,
            client_secret: self.client_secret,
            redirect_uri,
            api_base,
            upload_base,
            authorize_url: url("authorization URL", self.authorize_url, AUTHORIZE_URL)?,
            token_url: url("token URL", self.token_url, TOKEN_URL)?,
            revoke_url: url("revocation URL", self.revoke_url, REVOKE_URL)?,
            scopes: self
                .scopes
                .unwrap_or_else(|| vec![SCOPE_UPLOAD.to_owned(), SCOPE_READONLY.to_owned()]),
            http,
            chunk_size,
            request_timeout: self.request_timeout.unwrap_or(Duration::from_secs(60)),
            chunk_timeout: self.chunk_timeout.unwrap_or(Duration::from_secs(600)),
            retry: self.retry.unwrap_or_default(),
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
