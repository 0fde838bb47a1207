//! [`XConfig`]: the app's credentials, endpoints (all overridable), HTTP client and limits.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use socialpub_core::http::RetryPolicy;
use socialpub_core::{Error, Platform, Result};
use url::Url;

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

/// Configuration of the X adapter: build it with [`XConfig::builder`].
///
/// ```no_run
/// # fn f() -> socialpub_core::Result<()> {
/// use secrecy::SecretString;
/// use socialpub_x::XConfig;
///
/// let config = XConfig::builder("my-client-id")
///     .client_secret(SecretString::from("my-client-secret"))
///     .redirect_uri("https://app.example/callback/x")
///     .http_client(reqwest::Client::new())
///     .build()?;
/// # let _ = config; Ok(()) }
/// ```
#[derive(Clone)]
pub struct XConfig {
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<SecretString>,
    pub(crate) redirect_uri: Option<Url>,
    pub(crate) scopes: Vec<String>,
    pub(crate) api_base: Url,
    pub(crate) authorize_url: Url,
    pub(crate) token_url: Url,
    pub(crate) revoke_url: Url,
    pub(crate) web_base: Url,
    pub(crate) http: reqwest::Client,
    pub(crate) chunk_size: usize,
    pub(crate) max_text: usize,
    pub(crate) account_max_text: HashMap<String, usize>,
    pub(crate) retry: RetryPolicy,
    pub(crate) processing_timeout: Duration,
    pub(crate) lookup_window: usize,
}

impl fmt::Debug for XConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XConfig")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("redirect_uri", &self.redirect_uri.as_ref().map(Url::as_str))
            .field("scopes", &self.scopes)
            .field("api_base", &self.api_base.as_str())
            .field("authorize_url", &self.authorize_url.as_str())
            .field("token_url", &self.token_url.as_str())
            .field("revoke_url", &self.revoke_url.as_str())
            .field("chunk_size", &self.chunk_size)
            .field("max_text", &self.max_text)
            .field("account_max_text", &self.account_max_text)
            .field("retry", &self.retry)
            .field("processing_timeout", &self.processing_timeout)
            .finish_non_exhaustive()
    }
}

impl XConfig {
    /// Starts a configuration for the app `client_id` with X's real endpoints.
    pub fn builder(client_id: impl Into<String>) -> XConfigBuilder {
        XConfigBuilder {
            client_id: client_id.into(),
            client_secret: None,
            redirect_uri: None,
            scopes: DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            api_base: DEFAULT_API_BASE.to_owned(),
            authorize_url: DEFAULT_AUTHORIZE_URL.to_owned(),
            token_url: None,
            revoke_url: None,
            web_base: DEFAULT_WEB_BASE.to_owned(),
            http: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_text: MAX_WEIGHTED_LENGTH,
            account_max_text: HashMap::new(),
            retry: RetryPolicy::default(),
            processing_timeout: Duration::from_secs(15 * 60),
            lookup_window: 100,
        }
    }

    /// The app's client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
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
#[derive(Clone)]
pub struct XConfigBuilder {
    client_id: String,
    client_secret: Option<SecretString>,
    redirect_uri: Option<String>,
    scopes: Vec<String>,
    api_base: String,
    authorize_url: String,
    token_url: Option<String>,
    revoke_url: Option<String>,
    web_base: String,
    http: Option<reqwest::Client>,
    chunk_size: usize,
    max_text: usize,
    account_max_text: HashMap<String, usize>,
    retry: RetryPolicy,
    processing_timeout: Duration,
    lookup_window: usize,
}

impl fmt::Debug for XConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XConfigBuilder")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

impl XConfigBuilder {
    /// The client secret of a confidential client ("Web App" or "Automated App or bot"): the
    /// token endpoint is then called with HTTP Basic. Without one the app is a public client
    /// and sends `client_id` in the form.
    pub fn client_secret(mut self, secret: SecretString) -> Self {
        self.client_secret = Some(secret);
        self
    }

    /// The callback URL registered for the app (must match exactly). Needed to connect
    /// accounts, not to publish.
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uri = Some(uri.into());
        self
    }

    /// Replaces the scopes requested (default: [`DEFAULT_SCOPES`]).
    pub fn scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The API base URL (default `https://api.x.com`). The token and revoke endpoints follow
    /// it unless set on their own.
    pub fn api_base(mut self, url: impl Into<String>) -> Self {
        self.api_base = url.into();
        self
    }

    /// The authorization page (default `https://x.com/i/oauth2/authorize`).
    pub fn authorize_url(mut self, url: impl Into<String>) -> Self {
        self.authorize_url = url.into();
        self
    }

    /// The token endpoint (default `{api_base}/2/oauth2/token`).
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = Some(url.into());
        self
    }

    /// The revocation endpoint (default `{api_base}/2/oauth2/revoke`).
    pub fn revoke_url(mut self, url: impl Into<String>) -> Self {
        self.revoke_url = Some(url.into());
        self
    }

    /// The web base for post links (default `https://x.com`).
    pub fn web_base(mut self, url: impl Into<String>) -> Self {
        self.web_base = url.into();
        self
    }

    /// Your own HTTP client (timeouts, proxy, user agent). Default: socialpub's client with a
    /// 60-second request timeout.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
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

    /// How idempotent requests (uploads, status reads, lookups) are retried.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How long to wait for X to process a video or GIF (default 15 minutes).
    pub fn processing_timeout(mut self, timeout: Duration) -> Self {
        self.processing_timeout = timeout;
        self
    }

    /// How many recent posts a reconcile reads (5–100, default 100).
    pub fn lookup_window(mut self, posts: usize) -> Self {
        self.lookup_window = posts;
        self
    }

    /// The configuration, or a [`socialpub_core::ErrorKind::Configuration`] error naming the
    /// bad setting.
    pub fn build(self) -> Result<XConfig> {
        let url = |what: &str, s: &str| {
            Url::parse(s).map_err(|e| {
                Error::configuration(format!("X {what} `{s}` is not a valid URL: {e}"))
                    .with_platform(Platform::X)
            })
        };
        if self.client_id.trim().is_empty() {
            return Err(Error::configuration("the X client id is empty").with_platform(Platform::X));
        }
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return Err(Error::configuration(format!(
                "the X chunk size must be 1 to {MAX_CHUNK_SIZE} bytes, not {}",
                self.chunk_size
            ))
            .with_platform(Platform::X));
        }
        if self.max_text == 0 {
            return Err(Error::configuration("the X text limit must be positive")
                .with_platform(Platform::X));
        }
        if !(5..=100).contains(&self.lookup_window) {
            return Err(Error::configuration(format!(
                "the X lookup window must be 5 to 100 posts, not {}",
                self.lookup_window
            ))
            .with_platform(Platform::X));
        }
        let api_base = url("API base", &self.api_base)?;
        let base = self.api_base.trim_end_matches('/');
        let token_url = url(
            "token URL",
            &self
                .token_url
                .unwrap_or_else(|| format!("{base}/2/oauth2/token")),
        )?;
        let revoke_url = url(
            "revoke URL",
            &self
                .revoke_url
                .unwrap_or_else(|| format!("{base}/2/oauth2/revoke")),
        )?;
        let http = match self.http {
            Some(c) => c,
            None => socialpub_core::http::default_client(Duration::from_secs(60))?,
        };
        Ok(XConfig {
            client_id: self.client_id,
            client_secret: self.client_secret,
            redirect_uri: self
                .redirect_uri
                .map(|r| url("redirect URI", &r))
                .transpose()?,
            scopes: self.scopes,
            api_base,
            authorize_url: url("authorize URL", &self.authorize_url)?,
            token_url,
            revoke_url,
            web_base: url("web base", &self.web_base)?,
            http,
            chunk_size: self.chunk_size,
            max_text: self.max_text,
            account_max_text: self.account_max_text,
            retry: self.retry,
            processing_timeout: self.processing_timeout,
            lookup_window: self.lookup_window,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = XConfig::builder("cid")
            .api_base("http://127.0.0.1:9/")
            .account_max_text("42", 25_000)
            .build()
            .expect("config");
        assert_eq!(c.token_url.as_str(), "http://127.0.0.1:9/2/oauth2/token");
        assert_eq!(c.revoke_url.as_str(), "http://127.0.0.1:9/2/oauth2/revoke");
        assert_eq!(c.authorize_url.as_str(), DEFAULT_AUTHORIZE_URL);
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
            XConfig::builder(""),
            XConfig::builder("c").chunk_size(0),
            XConfig::builder("c").chunk_size(MAX_CHUNK_SIZE + 1),
            XConfig::builder("c").api_base("not a url"),
            XConfig::builder("c").redirect_uri("::"),
            XConfig::builder("c").lookup_window(1),
        ] {
            let e = b.build().expect_err("bad");
            assert_eq!(e.kind(), socialpub_core::ErrorKind::Configuration, "{e}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = XConfig::builder("cid")
            .client_secret(SecretString::from("s3cr3t-value"))
            .build()
            .expect("config");
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
    }
}
