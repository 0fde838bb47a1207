//! Connecting X accounts: OAuth 2.0 Authorization Code with PKCE (S256), account discovery
//! through `GET /2/users/me`, refresh with rotating refresh tokens, and revocation.

use async_trait::async_trait;
use socialpub_core::auth::oauth::{ClientAuth, OAuthClient, OAuthConfig};
use socialpub_core::auth::{AccountKey, ConnectedAccount, Connector, Token, TokenRefresher};
use socialpub_core::http::{Bearer, Call};
use socialpub_core::{ErrorKind, Platform, Result};

use crate::api;
use crate::config::XConfig;

/// Connects X accounts and keeps their tokens working: the [`Connector`] (and so the
/// [`TokenRefresher`]) of X. The account id is X's numeric user id; the token extras keep the
/// `username`.
///
/// ```no_run
/// # async fn f(config: socialpub_x::XConfig) -> socialpub_core::Result<()> {
/// use std::sync::Arc;
/// use socialpub_core::auth::{Connector, MemoryTokenStore, TokenManager};
/// use socialpub_x::XConnector;
///
/// let connector = Arc::new(XConnector::new(&config)?);
/// let request = connector.authorize("tenant-1").await?;
/// println!("send the user to {}", request.url);
/// // Your callback receives ?code=…&state=… (X's code lives 30 seconds: complete promptly).
/// let accounts = connector.complete("code-from-callback", &request.state).await?;
/// let tokens = TokenManager::builder(MemoryTokenStore::new())
///     .refresher(connector)
///     .build();
/// for account in accounts {
///     tokens.connect(&account.key, &account.token).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct XConnector {
    oauth: OAuthClient,
    config: XConfig,
}

impl XConnector {
    /// A connector for `config`, which needs a client id and a redirect URI. With a client
    /// secret the app is a confidential client (HTTP Basic at the token endpoint, as X
    /// requires); without one it is a public client (`client_id` in the form).
    pub fn new(config: &XConfig) -> Result<XConnector> {
        let mut oauth = OAuthConfig::from_app(Platform::X, &config.app)?;
        // X rejects a secret in the body and fails auto-detection ("Missing valid
        // authorization header"), so the auth style follows from whether there is a secret.
        let auth = if oauth.client_secret.is_some() {
            ClientAuth::BasicHeader
        } else {
            ClientAuth::RequestBody
        };
        oauth = oauth.with_client_auth(auth);
        Ok(XConnector {
            oauth: OAuthClient::new(oauth, config.api.clone())
                .with_pending_store(config.app.pending_store()),
            config: config.clone(),
        })
    }
}

#[async_trait]
impl Connector for XConnector {
    fn oauth(&self) -> &OAuthClient {
        &self.oauth
    }

    /// The user the token belongs to (`GET /2/users/me`).
    async fn accounts(&self, tenant: &str, mut token: Token) -> Result<Vec<ConnectedAccount>> {
        let url = self.config.api("/2/users/me")?;
        let user = self
            .config
            .api
            .send_json::<api::Data<api::User>, _>(
                Bearer::Token(&token.access_token),
                &Call::idempotent("users.me"),
                |http| http.get(url.clone()),
            )
            .await?
            .data;
        token
            .extras
            .insert("username".to_owned(), serde_json::json!(user.username));
        let key = AccountKey::new(tenant, Platform::X, user.id);
        Ok(vec![
            ConnectedAccount::new(key, token, format!("@{}", user.username))
                .with_username(user.username),
        ])
    }
}

#[async_trait]
impl TokenRefresher for XConnector {
    fn platform(&self) -> Platform {
        Platform::X
    }

    /// Refreshes with the rotating refresh token; X's answer for a spent one is
    /// reauth-required.
    async fn refresh(&self, key: &AccountKey, token: &Token) -> Result<Token> {
        match self.oauth.refresh(key, token).await {
            // X answers a spent, revoked or unknown refresh token with
            // `invalid_request: Value passed for the token was invalid.` rather than
            // `invalid_grant`; either way the token is gone, and the token manager must learn
            // so (it then re-reads the store in case another process rotated it).
            Err(e)
                if e.kind() == ErrorKind::InvalidInput
                    && e.code() == Some("invalid_request")
                    && e.status().is_some_and(|s| (400..500).contains(&s)) =>
            {
                Err(e.with_kind(ErrorKind::ReauthRequired))
            }
            other => other,
        }
    }

    /// Revokes the grant at X (the refresh token when there is one, which ends it).
    async fn revoke(&self, key: &AccountKey, token: &Token) -> Result<()> {
        self.oauth.revoke(key, token).await
    }
}
