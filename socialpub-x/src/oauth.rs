//! Connecting X accounts: OAuth 2.0 Authorization Code with PKCE (S256), account discovery
//! through `GET /2/users/me`, refresh with rotating refresh tokens, and revocation.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use socialpub_core::auth::oauth::{
    AuthorizationRequest, ClientAuth, OAuthClient, OAuthConfig, PendingStore,
};
use socialpub_core::auth::{AccountKey, Token, TokenRefresher};
use socialpub_core::{Error, ErrorKind, Platform, Result};

use crate::api;
use crate::config::XConfig;
use crate::request::send_once;

/// An account that just connected: its key (tenant, `x`, user id), its token, and who it is.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Connected {
    /// The key to store the token under (the user id is X's numeric id, as a string).
    pub key: AccountKey,
    /// The token X issued (a rotating refresh token is in it when `offline.access` was
    /// granted).
    pub token: Token,
    /// The account's @handle, without the `@`.
    pub username: String,
    /// The account's display name.
    pub name: String,
}

/// Connects X accounts and keeps their tokens working.
///
/// ```no_run
/// # async fn f(config: socialpub_x::XConfig) -> socialpub_core::Result<()> {
/// use socialpub_core::auth::{MemoryTokenStore, TokenManager};
/// use socialpub_x::XConnector;
///
/// let connector = XConnector::new(&config)?;
/// let request = connector.authorize("tenant-1").await?;
/// println!("send the user to {}", request.url);
/// // Your callback receives ?code=…&state=…
/// let connected = connector.complete("code-from-callback", &request.state).await?;
/// let tokens = TokenManager::builder(MemoryTokenStore::new())
///     .refresher(connector.refresher())
///     .build();
/// tokens.connect(&connected.key, &connected.token).await?;
/// # Ok(()) }
/// ```
pub struct XConnector {
    oauth: Arc<OAuthClient>,
    config: Arc<XConfig>,
}

impl fmt::Debug for XConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XConnector")
            .field("oauth", &self.oauth)
            .finish_non_exhaustive()
    }
}

impl XConnector {
    /// A connector for `config`, which needs a redirect URI. With a client secret the app is
    /// a confidential client (HTTP Basic at the token endpoint, as X requires); without one
    /// it is a public client (`client_id` in the form).
    pub fn new(config: &XConfig) -> Result<XConnector> {
        let redirect = config.redirect_uri.clone().ok_or_else(|| {
            Error::configuration("connecting X accounts needs a redirect URI in XConfig")
                .with_platform(Platform::X)
        })?;
        let mut oauth = OAuthConfig::new(
            Platform::X,
            config.client_id.clone(),
            config.authorize_url.clone(),
            config.token_url.clone(),
            redirect,
        )
        .with_scopes(config.scopes.clone())
        .with_revoke_url(config.revoke_url.clone());
        // X rejects a secret in the body and fails auto-detection ("Missing valid
        // authorization header"), so the auth style follows from whether there is a secret.
        oauth = match &config.client_secret {
            Some(secret) => oauth
                .with_client_secret(secret.clone())
                .with_client_auth(ClientAuth::BasicHeader),
            None => oauth.with_client_auth(ClientAuth::RequestBody),
        };
        Ok(XConnector {
            oauth: Arc::new(OAuthClient::new(oauth, config.http.clone())),
            config: Arc::new(config.clone()),
        })
    }

    /// Keeps started authorizations in `store` (share one between processes of a cluster).
    pub fn with_pending_store(self, store: Arc<dyn PendingStore>) -> XConnector {
        let oauth = match Arc::try_unwrap(self.oauth) {
            Ok(client) => client.with_pending_store(store),
            Err(shared) => OAuthClient::new(shared.config().clone(), shared.http().clone())
                .with_pending_store(store),
        };
        XConnector {
            oauth: Arc::new(oauth),
            config: self.config,
        }
    }

    /// Starts a connection for `tenant`: the URL of X's consent page, with a fresh state and
    /// PKCE challenge. The code X sends back lives 30 seconds: complete promptly.
    pub async fn authorize(&self, tenant: &str) -> Result<AuthorizationRequest> {
        self.oauth.authorize(tenant).await
    }

    /// Completes a connection: checks `state`, exchanges `code` (with the PKCE verifier), then
    /// asks X who the user is.
    pub async fn complete(&self, code: &str, state: &str) -> Result<Connected> {
        let done = self.oauth.complete(code, state).await?;
        let mut token = done.token;
        let user = self.me(&token.access_token).await?;
        token
            .extras
            .insert("username".to_owned(), serde_json::json!(user.username));
        Ok(Connected {
            key: AccountKey::new(done.tenant, Platform::X, user.id),
            token,
            username: user.username,
            name: user.name,
        })
    }

    /// The refresher to register with [`socialpub_core::TokenManager`]: refreshes rotate the
    /// refresh token, and the manager stores the new one before using the access token.
    pub fn refresher(&self) -> Arc<dyn TokenRefresher> {
        Arc::new(XRefresher {
            oauth: self.oauth.clone(),
        })
    }

    /// Revokes `token` at X (the refresh token when there is one, which ends the grant).
    pub async fn revoke(&self, token: &Token) -> Result<()> {
        self.oauth.revoke(&placeholder_key(), token).await
    }

    async fn me(&self, access: &SecretString) -> Result<api::User> {
        let url = self.config.api("/2/users/me")?;
        self.config
            .retry
            .run(|| async {
                let request = self
                    .config
                    .http
                    .get(url.clone())
                    .bearer_auth(access.expose_secret());
                let answer = send_once("users.me", false, request).await?;
                Ok(answer.json::<api::Data<api::User>>("users.me")?.data)
            })
            .await
    }
}

fn placeholder_key() -> AccountKey {
    AccountKey::new("", Platform::X, "")
}

/// Refreshes X tokens, reading X's answer for a spent refresh token as reauth-required.
struct XRefresher {
    oauth: Arc<OAuthClient>,
}

#[async_trait]
impl TokenRefresher for XRefresher {
    fn platform(&self) -> Platform {
        Platform::X
    }

    async fn refresh(&self, key: &AccountKey, token: &Token) -> Result<Token> {
        match self.oauth.refresh(key, token).await {
            Ok(t) => Ok(t),
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
            Err(e) => Err(e),
        }
    }

    async fn revoke(&self, key: &AccountKey, token: &Token) -> Result<()> {
        self.oauth.revoke(key, token).await
    }
}
