//! The platforms the app publishes to: each adapter's configuration, publisher, token refresher
//! and OAuth connector, built from the app's credentials. Endpoints are overridable so the demo
//! and the tests can point every adapter at its mock.

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::SecretString;
use socialpub_core::auth::{AccountKey, Connector, Token, TokenRefresher};
use socialpub_core::{Error, Platform, Publisher, Result};
use socialpub_x::{XConfig, XConnector, XPublisher};
use socialpub_youtube::{YouTubeConfig, YouTubeConnector, YouTubePublisher};
use url::Url;

use crate::config::{Config, Credentials};

/// The platforms this app supports, in display order.
pub const SUPPORTED: [Platform; 2] = [Platform::X, Platform::YouTube];

/// The token extra the app keeps an account's display name in.
pub const DISPLAY_NAME: &str = "display_name";

/// One adapter, built: its publisher and its connector (which is also its token refresher).
struct Adapter {
    publisher: Arc<dyn Publisher>,
    connector: Arc<dyn Connector>,
}

/// What an adapter is built from: the app's credentials, endpoint overrides, callback, client.
struct Settings<'a> {
    credentials: &'a Credentials,
    endpoints: Option<&'a Endpoints>,
    redirect_uri: &'a Url,
    http: &'a reqwest::Client,
    chunk_size: Option<usize>,
}

/// Builds one adapter from the app's settings.
type BuildAdapter = fn(&Settings<'_>) -> Result<Adapter>;

/// Every adapter this app has, by platform: the one place that names the adapter crates.
const ADAPTERS: [(Platform, BuildAdapter); 2] = [
    (Platform::X, x_adapter),
    (Platform::YouTube, youtube_adapter),
];

fn x_adapter(s: &Settings<'_>) -> Result<Adapter> {
    let mut b = XConfig::builder()
        .client_id(s.credentials.client_id.clone())
        .redirect_uri(s.redirect_uri.as_str())
        .http_client(s.http.clone());
    if let Some(secret) = &s.credentials.client_secret {
        b = b.client_secret(secret.clone());
    }
    if let Some(e) = s.endpoints {
        b = b
            .api_base(e.api_base.clone())
            .authorize_url(e.authorize_url.clone())
            .token_url(e.token_url.clone())
            .revoke_url(e.revoke_url.clone())
            .web_base(e.api_base.clone());
    }
    if let Some(n) = s.chunk_size {
        b = b.chunk_size(n.clamp(1, 4 * 1024 * 1024));
    }
    let config = b.build()?;
    Ok(Adapter {
        connector: Arc::new(XConnector::new(&config)?),
        publisher: Arc::new(XPublisher::new(config)),
    })
}

fn youtube_adapter(s: &Settings<'_>) -> Result<Adapter> {
    let mut b = YouTubeConfig::builder()
        .client_id(s.credentials.client_id.clone())
        .redirect_uri(s.redirect_uri.as_str())
        .http_client(s.http.clone());
    if let Some(secret) = &s.credentials.client_secret {
        b = b.client_secret(secret.clone());
    }
    if let Some(e) = s.endpoints {
        b = b
            .api_base(e.api_base.clone())
            .upload_base(e.api_base.clone())
            .authorize_url(e.authorize_url.clone())
            .token_url(e.token_url.clone())
            .revoke_url(e.revoke_url.clone());
    }
    if let Some(n) = s.chunk_size {
        let granule = socialpub_youtube::CHUNK_GRANULARITY;
        b = b.chunk_size((n / granule).max(1) * granule);
    }
    let config = b.build()?;
    Ok(Adapter {
        connector: Arc::new(YouTubeConnector::new(&config)?),
        publisher: Arc::new(YouTubePublisher::new(config)),
    })
}

/// Where a platform's endpoints are, when not at the platform itself (a mock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The API base (X: `https://api.x.com`; YouTube: `https://www.googleapis.com`), also used
    /// for uploads.
    pub api_base: String,
    /// The OAuth authorization page.
    pub authorize_url: String,
    /// The OAuth token endpoint.
    pub token_url: String,
    /// The OAuth revocation endpoint.
    pub revoke_url: String,
}

impl Endpoints {
    /// The endpoints of an X mock (`socialpub_x::mock::XMock`).
    pub fn x_mock(mock: &socialpub_x::mock::XMock) -> Endpoints {
        Self::mock_at(Platform::X, mock.base_url().as_str())
    }

    /// The endpoints of a YouTube mock (`socialpub_youtube::mock::YouTubeMock`).
    pub fn youtube_mock(mock: &socialpub_youtube::mock::YouTubeMock) -> Endpoints {
        Self::mock_at(Platform::YouTube, mock.base_url().as_str())
    }

    /// The endpoints of `platform`'s mock served at `base` (its `base_url`).
    pub fn mock_at(platform: Platform, base: &str) -> Endpoints {
        let base = base.trim_end_matches('/').to_owned();
        let (authorize, token, revoke) = if platform == Platform::YouTube {
            ("/o/oauth2/v2/auth", "/token", "/revoke")
        } else {
            ("/i/oauth2/authorize", "/2/oauth2/token", "/2/oauth2/revoke")
        };
        Endpoints {
            authorize_url: format!("{base}{authorize}"),
            token_url: format!("{base}{token}"),
            revoke_url: format!("{base}{revoke}"),
            api_base: base,
        }
    }
}

/// Each supported platform the app has credentials for, ready to build adapters.
#[derive(Debug, Clone)]
pub struct Platforms {
    credentials: BTreeMap<Platform, Credentials>,
    endpoints: BTreeMap<Platform, Endpoints>,
    redirect_uri: Url,
    http: reqwest::Client,
    /// Smaller upload chunks (the demo, so progress bars move), if set.
    chunk_size: Option<usize>,
}

impl Platforms {
    /// The platforms of `config` that have credentials, talking to the real platforms (or to
    /// the mock a platform's `mock_url` names).
    pub fn from_config(config: &Config, http: reqwest::Client) -> Result<Platforms> {
        let mut credentials = BTreeMap::new();
        let mut endpoints = BTreeMap::new();
        for p in SUPPORTED {
            if let Ok(c) = config.credentials(p) {
                if let Some(base) = &c.mock_url {
                    endpoints.insert(p, Endpoints::mock_at(p, base));
                }
                credentials.insert(p, c.clone());
            }
        }
        Ok(Platforms {
            credentials,
            endpoints,
            redirect_uri: config.redirect_uri()?,
            http,
            chunk_size: None,
        })
    }

    /// Adds (or replaces) `platform` with these credentials and endpoints.
    pub fn with_platform(
        mut self,
        platform: Platform,
        credentials: Credentials,
        endpoints: Endpoints,
    ) -> Self {
        self.credentials.insert(platform, credentials);
        self.endpoints.insert(platform, endpoints);
        self
    }

    /// Uploads in chunks of `bytes` (rounded down to what each platform accepts).
    pub fn with_chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = Some(bytes);
        self
    }

    /// The platforms configured.
    pub fn configured(&self) -> impl Iterator<Item = Platform> + '_ {
        self.credentials.keys().copied()
    }

    /// Ok when `platform` is configured here (this process can publish to it); otherwise the
    /// error says which variables to set.
    pub fn require(&self, platform: Platform) -> Result<()> {
        if self.credentials.contains_key(&platform) {
            return Ok(());
        }
        Err(missing_credentials(platform))
    }

    /// The publishers of every configured platform.
    pub fn publishers(&self) -> Result<Vec<Arc<dyn Publisher>>> {
        self.configured()
            .map(|p| Ok(self.adapter(p, &self.redirect_uri)?.publisher))
            .collect()
    }

    /// The token refreshers (the connectors) of every configured platform.
    pub fn refreshers(&self) -> Result<Vec<Arc<dyn TokenRefresher>>> {
        self.configured()
            .map(|p| {
                let refresher: Arc<dyn TokenRefresher> =
                    self.adapter(p, &self.redirect_uri)?.connector;
                Ok(refresher)
            })
            .collect()
    }

    /// The OAuth connector of `platform`, sending users back to `redirect_uri`.
    pub fn connector(&self, platform: Platform, redirect_uri: &Url) -> Result<Arc<dyn Connector>> {
        Ok(self.adapter(platform, redirect_uri)?.connector)
    }

    fn adapter(&self, platform: Platform, redirect_uri: &Url) -> Result<Adapter> {
        let build = ADAPTERS
            .iter()
            .find(|(p, _)| *p == platform)
            .map(|(_, build)| build)
            .ok_or_else(|| unsupported(platform))?;
        let credentials = self
            .credentials
            .get(&platform)
            .ok_or_else(|| missing_credentials(platform))?;
        build(&Settings {
            credentials,
            endpoints: self.endpoints.get(&platform),
            redirect_uri,
            http: &self.http,
            chunk_size: self.chunk_size,
        })
    }
}

fn missing_credentials(platform: Platform) -> Error {
    let upper = platform.as_str().to_ascii_uppercase();
    Error::configuration(format!(
        "no credentials for {platform}: set SOCIALPUB_{upper}_CLIENT_ID (and \
         SOCIALPUB_{upper}_CLIENT_SECRET); without them no worker of this app can publish to \
         {platform}"
    ))
    .with_platform(platform)
}

fn unsupported(platform: Platform) -> Error {
    let names: Vec<&str> = SUPPORTED.iter().map(|p| p.as_str()).collect();
    Error::unsupported(format!(
        "this app has no adapter for {platform}; it supports {}",
        names.join(" and ")
    ))
    .with_platform(platform)
}

/// A name to show for an account: the one kept when it connected, else its id.
pub fn display_name(key: &AccountKey, token: Option<&Token>) -> String {
    token
        .and_then(|t| t.extras.get(DISPLAY_NAME))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| key.account_id.clone())
}

/// Credentials from plain strings (the demo's mock apps).
pub fn credentials(client_id: &str, client_secret: Option<&str>) -> Credentials {
    Credentials {
        client_id: client_id.to_owned(),
        client_secret: client_secret.map(|s| SecretString::from(s.to_owned())),
        mock_url: None,
    }
}
