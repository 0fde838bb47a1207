//! Connecting YouTube channels with Google OAuth 2.0: the authorization URL (offline access,
//! forced consent, PKCE S256, state), the code exchange, channel discovery, refresh and
//! revocation.

use async_trait::async_trait;
use secrecy::SecretString;
use socialpub_core::auth::oauth::{ClientAuth, OAuthClient, OAuthConfig};
use socialpub_core::auth::{AccountKey, ConnectedAccount, Connector, Token, TokenRefresher};
use socialpub_core::http::{Bearer, Call};
use socialpub_core::{Error, ErrorKind, Platform, Result};

use crate::api::{ChannelResource, ListResponse};
use crate::config::YouTubeConfig;

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

/// Connects YouTube channels and refreshes and revokes their tokens: the [`Connector`] (and so
/// the [`TokenRefresher`]) of YouTube. A refresh keeps the stored refresh token (Google seldom
/// sends a new one) and `invalid_grant` is [`ErrorKind::ReauthRequired`]. The account id is
/// the channel id (`UC…`); the token extras keep the `channel_title`.
///
/// ```no_run
/// # async fn f() -> socialpub_core::Result<()> {
/// use socialpub_core::auth::Connector;
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
/// let accounts = connector.complete("the-code", &request.state).await?;
/// println!("connected {}", accounts[0].key.account_id);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct YouTubeConnector {
    oauth: OAuthClient,
    config: YouTubeConfig,
}

impl YouTubeConnector {
    /// A connector for `config`, which must have a client id and a redirect URI.
    pub fn new(config: &YouTubeConfig) -> Result<Self> {
        let mut oauth = OAuthConfig::from_app(Platform::YouTube, &config.app)?
            .with_client_auth(ClientAuth::RequestBody)
            // A refresh token comes only with offline access; forcing consent makes Google
            // issue one again on every re-link (it sends one only on first consent otherwise).
            .with_authorize_param("access_type", "offline")
            .with_authorize_param("prompt", "consent")
            .with_authorize_param("include_granted_scopes", "true");
        oauth.pkce = true;
        // Google's revoke endpoint takes only `token`; the client secret is not sent.
        oauth.revoke_with_client_auth = false;
        Ok(YouTubeConnector {
            oauth: OAuthClient::new(oauth, config.api.clone())
                .with_pending_store(config.app.pending_store()),
            config: config.clone(),
        })
    }

    /// The channel of the account `access_token` belongs to (`channels.list?mine=true`). A
    /// Google account without a YouTube channel is a clear [`ErrorKind::Platform`] error with
    /// code `noChannel`.
    pub async fn discover_channel(&self, access_token: &SecretString) -> Result<Channel> {
        let url = self.config.data_url("channels")?;
        let list: ListResponse<ChannelResource> = self
            .config
            .api
            .send_json(
                Bearer::Token(access_token),
                &Call::idempotent("channels.list"),
                |http| {
                    http.get(url.clone())
                        .query(&[("part", "id,snippet"), ("mine", "true")])
                },
            )
            .await?;
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
}

#[async_trait]
impl Connector for YouTubeConnector {
    fn oauth(&self) -> &OAuthClient {
        &self.oauth
    }

    /// The channel of the Google account.
    async fn accounts(&self, tenant: &str, mut token: Token) -> Result<Vec<ConnectedAccount>> {
        if token.refresh_token.is_none() {
            tracing::warn!(
                "Google issued no refresh token: the account will need reconnecting when the access token expires"
            );
        }
        let channel = self.discover_channel(&token.access_token).await?;
        token
            .extras
            .insert("channel_title".into(), channel.title.clone().into());
        let key = AccountKey::new(tenant, Platform::YouTube, channel.id.clone());
        let name = channel.title.clone().unwrap_or_else(|| channel.id.clone());
        let mut account = ConnectedAccount::new(key, token, name);
        if let Some(handle) = &channel.custom_url {
            account = account.with_username(handle.trim_start_matches('@'));
        }
        Ok(vec![account])
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

    /// Revokes the grant at Google (revoking either token of a grant ends the whole grant).
    async fn revoke(&self, key: &AccountKey, token: &Token) -> Result<()> {
        self.oauth.revoke(key, token).await
    }
}
