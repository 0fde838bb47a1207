//! Connecting YouTube channels with Google OAuth 2.0: the authorization URL (offline access,
//! forced consent, PKCE S256, state), the code exchange, channel discovery, refresh and
//! revocation.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use socialpub_core::auth::oauth::{
    AuthorizationRequest, ClientAuth, OAuthClient, OAuthConfig, PendingStore,
};
use socialpub_core::auth::{AccountKey, Token, TokenRefresher};
use socialpub_core::clock::{Clock, SystemClock};
use socialpub_core::http::transport_error;
use socialpub_core::{Error, ErrorKind, Platform, Result};

use crate::api::{Api, Auth, ChannelResource, ListResponse};
use crate::config::YouTubeConfig;
use crate::error::api_error;

/// A YouTube channel, as discovered after connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Channel {
    /// The channel id (`UC…`): the account id of the [`AccountKey`].
    pub id: String,
    /// The channel's title.
    pub title: Option<String>,
    /// Its handle (`@name`), if it has one.
    pub custom_url: Option<String>,
    /// The URL of its default avatar.
    pub thumbnail_url: Option<String>,
}

/// A connected channel: its account key, what it is, and its token (store it in your
/// [`socialpub_core::TokenManager`] with `connect`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectedChannel {
    /// The key to store the token under and publish with.
    pub account: AccountKey,
    /// The channel.
    pub channel: Channel,
    /// The token Google issued.
    pub token: Token,
}

/// Connects YouTube channels and refreshes and revokes their tokens.
///
/// It is the [`TokenRefresher`] to register with a [`socialpub_core::TokenManager`]: a refresh
/// keeps the stored refresh token (Google seldom sends a new one) and `invalid_grant` is
/// [`ErrorKind::ReauthRequired`].
///
/// ```no_run
/// # async fn f() -> socialpub_core::Result<()> {
/// use socialpub_youtube::{YouTubeConfig, YouTubeConnector};
///
/// let config = YouTubeConfig::builder()
///     .client_id("1234.apps.googleusercontent.com")
///     .client_secret("GOCSPX-…")
///     .redirect_uri("http://127.0.0.1:8080/callback")
///     .build()?;
/// let connector = YouTubeConnector::new(&config)?;
/// let request = connector.authorize("tenant-1").await?;
/// println!("open {}", request.url);
/// // … Google redirects to the callback with ?code=…&state=…
/// let connected = connector.complete("the-code", &request.state).await?;
/// println!("connected {}", connected.channel.id);
/// # Ok(()) }
/// ```
pub struct YouTubeConnector {
    oauth: OAuthClient,
    api: Api,
}

impl fmt::Debug for YouTubeConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YouTubeConnector")
            .field("oauth", &self.oauth)
            .finish_non_exhaustive()
    }
}

impl YouTubeConnector {
    /// A connector for `config`, which must have a client id and a redirect URI.
    pub fn new(config: &YouTubeConfig) -> Result<Self> {
        let client_id = config.client_id.clone().ok_or_else(|| {
            Error::configuration("connecting YouTube accounts needs an OAuth client id")
                .with_platform(Platform::YouTube)
        })?;
        let redirect = config.redirect_uri.clone().ok_or_else(|| {
            Error::configuration("connecting YouTube accounts needs a redirect URI")
                .with_platform(Platform::YouTube)
        })?;
        let mut oauth = OAuthConfig::new(
            Platform::YouTube,
            client_id,
            config.authorize_url.clone(),
            config.token_url.clone(),
            redirect,
        )
        .with_scopes(config.scopes.iter().cloned())
        .with_revoke_url(config.revoke_url.clone())
        .with_client_auth(ClientAuth::RequestBody)
        // A refresh token comes only with offline access; forcing consent makes Google issue
        // one again on every re-link (it sends one only on first consent otherwise).
        .with_authorize_param("access_type", "offline")
        .with_authorize_param("prompt", "consent")
        .with_authorize_param("include_granted_scopes", "true");
        oauth.pkce = true;
        if let Some(secret) = &config.client_secret {
            oauth = oauth.with_client_secret(secret.clone());
        }
        Ok(YouTubeConnector {
            oauth: OAuthClient::new(oauth, config.http.clone()),
            api: Api {
                config: Arc::new(config.clone()),
                clock: Arc::new(SystemClock),
            },
        })
    }

    /// Keeps started authorizations in `store` (share one between processes).
    pub fn with_pending_store(mut self, store: Arc<dyn PendingStore>) -> Self {
        self.oauth = self.oauth.with_pending_store(store);
        self
    }

    /// Uses `clock` for state expiry and error times.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.oauth = self.oauth.with_clock(clock.clone());
        self.api.clock = clock;
        self
    }

    /// Starts connecting a channel for `tenant`: the URL to send the user to.
    pub async fn authorize(&self, tenant: &str) -> Result<AuthorizationRequest> {
        self.oauth.authorize(tenant).await
    }

    /// Finishes connecting: checks the state, exchanges the code (with the PKCE verifier) and
    /// discovers the channel. A Google account without a YouTube channel is a clear
    /// [`ErrorKind::Platform`] error with code `noChannel`.
    pub async fn complete(&self, code: &str, state: &str) -> Result<ConnectedChannel> {
        let done = self.oauth.complete(code, state).await?;
        if done.token.refresh_token.is_none() {
            tracing::warn!(
                "Google issued no refresh token: the account will need reconnecting when the access token expires"
            );
        }
        let channel = self.discover_channel(&done.token.access_token).await?;
        let mut token = done.token;
        token
            .extras
            .insert("channel_title".into(), channel.title.clone().into());
        Ok(ConnectedChannel {
            account: AccountKey::new(done.tenant, Platform::YouTube, channel.id.clone()),
            channel,
            token,
        })
    }

    /// The channel of the account `access_token` belongs to (`channels.list?mine=true`).
    pub async fn discover_channel(&self, access_token: &SecretString) -> Result<Channel> {
        let url = self.api.config.data_url("channels")?;
        let http = self.api.config.http.clone();
        let build = move |_: &SecretString| {
            http.get(url.clone())
                .query(&[("part", "id,snippet"), ("mine", "true")])
        };
        let answer = self
            .api
            .send_idempotent(&Auth::Token(access_token), "channels.list", &build)
            .await?;
        let list: ListResponse<ChannelResource> = answer.json("channels.list")?;
        let Some(first) = list.items.into_iter().next() else {
            return Err(Error::new(
                ErrorKind::Platform,
                "this Google account has no YouTube channel: create one at https://www.youtube.com/create_channel, then connect again",
            )
            .with_platform(Platform::YouTube)
            .with_operation("channels.list")
            .with_code("noChannel"));
        };
        let snippet = first.snippet.unwrap_or_default();
        Ok(Channel {
            id: first.id,
            title: snippet.title,
            custom_url: snippet.custom_url,
            thumbnail_url: snippet
                .thumbnails
                .as_ref()
                .and_then(|t| t.get("default"))
                .and_then(|d| d.get("url"))
                .and_then(|u| u.as_str())
                .map(str::to_owned),
        })
    }

    /// Revokes a token at Google; revoking either token of a grant ends the whole grant.
    pub async fn revoke_token(&self, token: &SecretString) -> Result<()> {
        // Google's revoke endpoint takes only `token`; the client secret is not sent.
        let resp = self
            .api
            .config
            .http
            .post(self.api.config.revoke_url.clone())
            .form(&[("token", token.expose_secret())])
            .timeout(self.api.config.request_timeout)
            .send()
            .await
            .map_err(|e| transport_error(e, Platform::YouTube, "oauth.revoke", false))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let e = api_error(
            "oauth.revoke",
            status,
            &headers,
            &body,
            self.api.clock.now(),
        );
        // An already revoked or expired token is what revocation wanted.
        if body.contains("invalid_token") {
            return Ok(());
        }
        Err(e)
    }
}

#[async_trait]
impl TokenRefresher for YouTubeConnector {
    fn platform(&self) -> Platform {
        Platform::YouTube
    }

    async fn refresh(&self, key: &AccountKey, token: &Token) -> Result<Token> {
        let refresh = token.refresh_token.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::ReauthRequired,
                format!("{key} has no refresh token; connect the account again"),
            )
            .with_platform(Platform::YouTube)
        })?;
        let fresh = self.oauth.refresh_token(refresh).await.map_err(|e| {
            if e.kind() == ErrorKind::ReauthRequired {
                Error::new(
                    ErrorKind::ReauthRequired,
                    format!(
                        "Google refused the refresh token of {key} ({}): it was revoked, unused for six months, or issued to an app in testing mode (7-day tokens); connect the account again",
                        e.code().unwrap_or("invalid_grant")
                    ),
                )
                .with_platform(Platform::YouTube)
                .with_operation("oauth.refresh")
                .with_code(e.code().unwrap_or("invalid_grant").to_owned())
                .with_source(e)
            } else {
                e
            }
        })?;
        // Google seldom returns a new refresh token: keep the stored one.
        Ok(token.merge_refreshed(fresh))
    }

    async fn revoke(&self, _key: &AccountKey, token: &Token) -> Result<()> {
        let t = token.refresh_token.as_ref().unwrap_or(&token.access_token);
        self.revoke_token(t).await
    }
}
