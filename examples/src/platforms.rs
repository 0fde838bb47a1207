//! The platforms the app publishes to: each adapter's configuration, publisher, token refresher
//! and OAuth connector, built from the app's credentials. Endpoints are overridable so the demo
//! and the tests can point every adapter at its mock.

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use socialpub_core::auth::oauth::AuthorizationRequest;
use socialpub_core::auth::{AccountKey, Token, TokenRefresher};
use socialpub_core::{Error, Platform, Publisher, Result};
use socialpub_x::{XConfig, XConnector, XPublisher};
use socialpub_youtube::{YouTubeConfig, YouTubeConnector, YouTubePublisher};
use url::Url;

use crate::config::{Config, Credentials};

/// The platforms this app supports, in display order.
pub const SUPPORTED: [Platform; 2] = [Platform::X, Platform::YouTube];

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
        let base = mock.base_url().as_str().trim_end_matches('/').to_owned();
        Endpoints {
            authorize_url: format!("{base}/i/oauth2/authorize"),
            token_url: format!("{base}/2/oauth2/token"),
            revoke_url: format!("{base}/2/oauth2/revoke"),
            api_base: base,
        }
    }

    /// The endpoints of a YouTube mock (`socialpub_youtube::mock::YouTubeMock`).
    pub fn youtube_mock(mock: &socialpub_youtube::mock::YouTubeMock) -> Endpoints {
        let base = mock.base_url().as_str().trim_end_matches('/').to_owned();
        Endpoints {
            authorize_url: format!("{base}/o/oauth2/v2/auth"),
            token_url: format!("{base}/token"),
            revoke_url: format!("{base}/revoke"),
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
    /// The platforms of `config` that have credentials, talking to the real platforms.
    pub fn from_config(config: &Config, http: reqwest::Client) -> Result<Platforms> {
        let mut credentials = BTreeMap::new();
        for p in SUPPORTED {
            if let Ok(c) = config.credentials(p) {
                credentials.insert(p, c.clone());
            }
        }
        Ok(Platforms {
            credentials,
            endpoints: BTreeMap::new(),
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

    /// The publishers of every configured platform.
    pub fn publishers(&self) -> Result<Vec<Arc<dyn Publisher>>> {
        let mut out: Vec<Arc<dyn Publisher>> = Vec::new();
        for p in self.configured() {
            out.push(match p {
                Platform::X => Arc::new(XPublisher::new(self.x_config(&self.redirect_uri)?)),
                Platform::YouTube => Arc::new(YouTubePublisher::new(
                    self.youtube_config(&self.redirect_uri)?,
                )),
                other => return Err(unsupported(other)),
            });
        }
        Ok(out)
    }

    /// The token refreshers of every configured platform.
    pub fn refreshers(&self) -> Result<Vec<Arc<dyn TokenRefresher>>> {
        let mut out: Vec<Arc<dyn TokenRefresher>> = Vec::new();
        for p in self.configured() {
            out.push(match self.connector(p, &self.redirect_uri)? {
                Connector::X(c) => c.refresher(),
                Connector::YouTube(c) => Arc::new(*c),
            });
        }
        Ok(out)
    }

    /// The OAuth connector of `platform`, sending users back to `redirect_uri`.
    pub fn connector(&self, platform: Platform, redirect_uri: &Url) -> Result<Connector> {
        match platform {
            Platform::X => Ok(Connector::X(XConnector::new(
                &self.x_config(redirect_uri)?,
            )?)),
            Platform::YouTube => Ok(Connector::YouTube(Box::new(YouTubeConnector::new(
                &self.youtube_config(redirect_uri)?,
            )?))),
            other => Err(unsupported(other)),
        }
    }

    fn credentials(&self, platform: Platform) -> Result<&Credentials> {
        self.credentials.get(&platform).ok_or_else(|| {
            let upper = platform.as_str().to_ascii_uppercase();
            Error::configuration(format!(
                "no credentials for {platform}: set SOCIALPUB_{upper}_CLIENT_ID (and \
                 SOCIALPUB_{upper}_CLIENT_SECRET)"
            ))
            .with_platform(platform)
        })
    }

    fn x_config(&self, redirect_uri: &Url) -> Result<XConfig> {
        let c = self.credentials(Platform::X)?;
        let mut b = XConfig::builder(c.client_id.clone())
            .redirect_uri(redirect_uri.as_str())
            .http_client(self.http.clone());
        if let Some(s) = &c.client_secret {
            b = b.client_secret(s.clone());
        }
        if let Some(e) = self.endpoints.get(&Platform::X) {
            b = b
                .api_base(e.api_base.clone())
                .authorize_url(e.authorize_url.clone())
                .token_url(e.token_url.clone())
                .revoke_url(e.revoke_url.clone())
                .web_base(e.api_base.clone());
        }
        if let Some(n) = self.chunk_size {
            b = b.chunk_size(n.clamp(1, 4 * 1024 * 1024));
        }
        b.build()
    }

    fn youtube_config(&self, redirect_uri: &Url) -> Result<YouTubeConfig> {
        let c = self.credentials(Platform::YouTube)?;
        let mut b = YouTubeConfig::builder()
            .client_id(c.client_id.clone())
            .redirect_uri(redirect_uri.as_str())
            .http_client(self.http.clone());
        if let Some(s) = &c.client_secret {
            b = b.client_secret(s.expose_secret().to_owned());
        }
        if let Some(e) = self.endpoints.get(&Platform::YouTube) {
            b = b
                .api_base(e.api_base.clone())
                .upload_base(e.api_base.clone())
                .authorize_url(e.authorize_url.clone())
                .token_url(e.token_url.clone())
                .revoke_url(e.revoke_url.clone());
        }
        if let Some(n) = self.chunk_size {
            let granule = socialpub_youtube::CHUNK_GRANULARITY;
            b = b.chunk_size((n / granule).max(1) * granule);
        }
        b.build()
    }
}

fn unsupported(platform: Platform) -> Error {
    Error::unsupported(format!(
        "this app has no adapter for {platform}; it supports x and youtube"
    ))
    .with_platform(platform)
}

/// One platform's OAuth connector.
#[derive(Debug)]
pub enum Connector {
    /// X.
    X(XConnector),
    /// YouTube.
    YouTube(Box<YouTubeConnector>),
}

/// A newly connected account: its key, its token, and a name to show.
#[derive(Debug)]
pub struct Connected {
    /// The account.
    pub key: AccountKey,
    /// Its token (store it; never print it).
    pub token: Token,
    /// A human-readable name (`@handle`, a channel title).
    pub name: String,
}

impl Connector {
    /// Starts an authorization for `tenant`.
    pub async fn authorize(&self, tenant: &str) -> Result<AuthorizationRequest> {
        match self {
            Connector::X(c) => c.authorize(tenant).await,
            Connector::YouTube(c) => c.authorize(tenant).await,
        }
    }

    /// Completes it with the callback's `code` and `state`.
    pub async fn complete(&self, code: &str, state: &str) -> Result<Connected> {
        match self {
            Connector::X(c) => {
                let done = c.complete(code, state).await?;
                Ok(Connected {
                    name: format!("@{}", done.username),
                    key: done.key,
                    token: done.token,
                })
            }
            Connector::YouTube(c) => {
                let done = c.complete(code, state).await?;
                Ok(Connected {
                    name: done
                        .channel
                        .title
                        .clone()
                        .unwrap_or_else(|| done.channel.id.clone()),
                    key: done.account,
                    token: done.token,
                })
            }
        }
    }
}

/// A name to show for an account, from the non-secret extras its token carries.
pub fn display_name(key: &AccountKey, token: Option<&Token>) -> String {
    let extra = |k: &str| {
        token
            .and_then(|t| t.extras.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    match key.platform {
        Platform::X => extra("username").map(|u| format!("@{u}")),
        Platform::YouTube => extra("channel_title"),
        _ => None,
    }
    .unwrap_or_else(|| key.account_id.clone())
}

/// Credentials from plain strings (the demo's mock apps).
pub fn credentials(client_id: &str, client_secret: Option<&str>) -> Credentials {
    Credentials {
        client_id: client_id.to_owned(),
        client_secret: client_secret.map(|s| SecretString::from(s.to_owned())),
    }
}
