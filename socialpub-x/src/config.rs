//! [`XConfig`]: the app's OAuth client, endpoints (all overridable), HTTP settings and limits.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use socialpub_core::auth::oauth::{OAuthApp, OAuthAppBuilder, OAuthDefaults};
use socialpub_core::http::{ApiClient, ClientSettings};
use socialpub_core::{Error, Platform, Result};
use url::Url;

use crate::error::XDialect;
use crate::text::MAX_WEIGHTED_LENGTH;

/// The X API host.
pub const DEFAULT_API_BASE: &str = "https://api.x.com";
/// Where users authorize the app. The OpenAPI spec names `api.x.com/2/oauth2/authorize`, but
/// X's OAuth docs and its own CLI (xurl) send browsers to `x.com/i/oauth2/authorize`.
pub const DEFAULT_AUTHORIZE_URL: &str = "https://x.com/i/oauth2/authorize";
/// Where post links point.
pub const DEFAULT_WEB_BASE: &str = "https://x.com";
/// The scopes needed to publish: post, read back, discover the account, refresh, upload media.
pub const DEFAULT_SCOPES: [&str; 5] = [
    "tweet.read",
    "tweet.write",
    "users.read",
    "offline.access",
    "media.write",
];
/// The default upload chunk: 4 MiB, as X's own CLI uses.
pub const DEFAULT_CHUNK_SIZE: usize = 4 * 1024 * 1024;
/// The largest chunk accepted in configuration: X documents APPEND segments of at most 5 MB.
pub const MAX_CHUNK_SIZE: usize = 5 * 1024 * 1024;
/// How long a request may take unless configured otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Configuration of the X adapter: build it with [`XConfig::builder`].
///
/// ```no_run
/// # fn f() -> socialpub_core::Result<()> {
/// use socialpub_x::XConfig;
///
/// let config = XConfig::builder()
///     .client_id("my-client-id")
///     .client_secret("my-client-secret")
///     .redirect_uri("https://app.example/callback/x")
///     .http_client(reqwest::Client::new())
///     .build()?;
/// # let _ = config; Ok(()) }
/// ```
#[derive(Clone)]
pub struct XConfig {
    pub(crate) app: OAuthApp,
    pub(crate) api: ApiClient,
    pub(crate) api_base: Url,
    pub(crate) web_base: Url,
    pub(crate) chunk_size: usize,
    pub(crate) max_text: usize,
    pub(crate) account_max_text: HashMap<String, usize>,
    pub(crate) processing_timeout: Duration,
    pub(crate) lookup_window: usize,
    pub(crate) lookup_pages: usize,
}

impl fmt::Debug for XConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XConfig")
            .field("app", &self.app)
            .field("api", &self.api)
            .field("api_base", &self.api_base.as_str())
            .field("web_base", &self.web_base.as_str())
            .field("chunk_size", &self.chunk_size)
            .field("max_text", &self.max_text)
            .field("account_max_text", &self.account_max_text)
            .field("processing_timeout", &self.processing_timeout)
            .field("lookup_window", &self.lookup_window)
            .field("lookup_pages", &self.lookup_pages)
            .finish()
    }
}

impl XConfig {
    /// Starts a configuration with X's real endpoints.
    pub fn builder() -> XConfigBuilder {
        XConfigBuilder {
            app: OAuthAppBuilder::new(),
            client: ClientSettings::new(),
            api_base: DEFAULT_API_BASE.to_owned(),
            web_base: DEFAULT_WEB_BASE.to_owned(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_text: MAX_WEIGHTED_LENGTH,
            account_max_text: HashMap::new(),
            processing_timeout: Duration::from_secs(15 * 60),
            lookup_window: 100,
            lookup_pages: 10,
        }
    }

    /// The OAuth app.
    pub fn app(&self) -> &OAuthApp {
        &self.app
    }

    /// The API client every request goes through.
    pub fn api_client(&self) -> &ApiClient {
        &self.api
    }

    /// The API base URL (`https://api.x.com`).
    pub fn api_base(&self) -> &Url {
        &self.api_base
    }

    /// The upload chunk size in bytes.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// The weighted text limit of `account_id` (its own setting, else the default).
    pub fn max_text_for(&self, account_id: &str) -> usize {
        self.account_max_text
            .get(account_id)
            .copied()
            .unwrap_or(self.max_text)
    }

    /// The default weighted text limit.
    pub fn max_text(&self) -> usize {
        self.max_text
    }

    pub(crate) fn api(&self, path: &str) -> Result<Url> {
        let base = self.api_base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}"))
            .map_err(|e| Error::configuration(format!("bad X API URL for {path}: {e}")))
    }

    pub(crate) fn post_url(&self, id: &str) -> String {
        format!(
            "{}/i/status/{id}",
            self.web_base.as_str().trim_end_matches('/')
        )
    }
}

/// Builds an [`XConfig`]. Every URL can be pointed elsewhere (a proxy, a mock).
///
/// With a client secret the app is a confidential client ("Web App" or "Automated App or
/// bot"): the token endpoint is then called with HTTP Basic. Without one it is a public client
/// and sends `client_id` in the form.
#[derive(Debug, Clone)]
pub struct XConfigBuilder {
    app: OAuthAppBuilder,
    client: ClientSettings,
    api_base: String,
    web_base: String,
    chunk_size: usize,
    max_text: usize,
    account_max_text: HashMap<String, usize>,
    processing_timeout: Duration,
    lookup_window: usize,
    lookup_pages: usize,
}

impl XConfigBuilder {
    socialpub_core::oauth_app_setters!(app);
    socialpub_core::client_settings_setters!(client);

    /// The API base URL (default `https://api.x.com`). The token and revoke endpoints follow
    /// it unless set on their own.
    pub fn api_base(mut self, url: impl Into<String>) -> Self {
        self.api_base = url.into();
        self
    }

    /// The web base for post links (default `https://x.com`).
    pub fn web_base(mut self, url: impl Into<String>) -> Self {
        self.web_base = url.into();
        self
    }

    /// The upload chunk size, 1 byte to 5 MiB (default 4 MiB). X takes at most 1000 segments,
    /// so the chunk size bounds the largest upload.
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// The default weighted text limit (280).
    pub fn max_text(mut self, max: usize) -> Self {
        self.max_text = max;
        self
    }

    /// A longer limit for one account (X Premium subscribers may post longer posts).
    pub fn account_max_text(mut self, account_id: impl Into<String>, max: usize) -> Self {
        self.account_max_text.insert(account_id.into(), max);
        self
    }

    /// How long to wait for X to process a video or GIF (default 15 minutes).
    pub fn processing_timeout(mut self, timeout: Duration) -> Self {
        self.processing_timeout = timeout;
        self
    }

    /// How many recent posts a reconcile reads per page (5–100, default 100).
    pub fn lookup_window(mut self, posts: usize) -> Self {
        self.lookup_window = posts;
        self
    }

    /// How many pages of recent posts a reconcile reads at most (1–32, default 10: 1,000 posts
    /// with full pages). An account that posted more since the unconfirmed publish leaves the
    /// lookup unsure.
    pub fn lookup_pages(mut self, pages: usize) -> Self {
        self.lookup_pages = pages;
        self
    }

    /// The configuration, or a [`socialpub_core::ErrorKind::Configuration`] error naming the
    /// bad setting.
    pub fn build(self) -> Result<XConfig> {
        let bad = |msg: String| Error::configuration(msg).with_platform(Platform::X);
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return Err(bad(format!(
                "the X chunk size must be 1 to {MAX_CHUNK_SIZE} bytes, not {}",
                self.chunk_size
            )));
        }
        if self.max_text == 0 {
            return Err(bad("the X text limit must be positive".to_owned()));
        }
        if !(5..=100).contains(&self.lookup_window) {
            return Err(bad(format!(
                "the X lookup window must be 5 to 100 posts, not {}",
                self.lookup_window
            )));
        }
        if !(1..=32).contains(&self.lookup_pages) {
            return Err(bad(format!(
                "the X lookup must read 1 to 32 pages, not {}",
                self.lookup_pages
            )));
        }
        let url = |what: &str, s: &str| {
            Url::parse(s).map_err(|e| bad(format!("X {what} `{s}` is not a valid URL: {e}")))
        };
        let api_base = url("API base", &self.api_base)?;
        let base = self.api_base.trim_end_matches('/');
        let app = self.app.build(
            Platform::X,
            OAuthDefaults::new(
                DEFAULT_AUTHORIZE_URL,
                format!("{base}/2/oauth2/token"),
                Some(format!("{base}/2/oauth2/revoke")),
                DEFAULT_SCOPES,
            ),
        )?;
        Ok(XConfig {
            app,
            api: self.client.build(XDialect, DEFAULT_REQUEST_TIMEOUT)?,
            api_base,
            web_base: url("web base", &self.web_base)?,
            chunk_size: self.chunk_size,
            max_text: self.max_text,
            account_max_text: self.account_max_text,
            processing_timeout: self.processing_timeout,
            lookup_window: self.lookup_window,
            lookup_pages: self.lookup_pages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = XConfig::builder()
            .client_id("cid")
            .api_base("http://127.0.0.1:9/")
            .account_max_text("42", 25_000)
            .build()
            .expect("config");
        assert_eq!(
            c.app.token_url().as_str(),
            "http://127.0.0.1:9/2/oauth2/token"
        );
        assert_eq!(
            c.app.revoke_url().map(Url::as_str),
            Some("http://127.0.0.1:9/2/oauth2/revoke")
        );
        assert_eq!(c.app.authorize_url().as_str(), DEFAULT_AUTHORIZE_URL);
        assert_eq!(c.max_text_for("42"), 25_000);
        assert_eq!(c.max_text_for("7"), 280);
        assert_eq!(
            c.api("/2/tweets").expect("url").as_str(),
            "http://127.0.0.1:9/2/tweets"
        );
    }

    #[test]
    fn bad_settings_are_configuration_errors() {
        for b in [
            XConfig::builder().client_id(""),
            XConfig::builder().chunk_size(0),
            XConfig::builder().chunk_size(MAX_CHUNK_SIZE + 1),
            XConfig::builder().api_base("not a url"),
            XConfig::builder().redirect_uri("::"),
            XConfig::builder().lookup_window(1),
            XConfig::builder().lookup_pages(0),
        ] {
            let e = b.build().expect_err("bad");
            assert_eq!(e.kind(), socialpub_core::ErrorKind::Configuration, "{e}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = XConfig::builder()
            .client_id("cid")
            .client_secret("s3cr3t-value")
            .build()
            .expect("config");
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
    }
}
