//! [`Connector`]: connecting accounts on a platform, the same way for every adapter, and the
//! [`ConnectedAccount`] every connection yields.

use std::fmt;

use async_trait::async_trait;

use super::manager::TokenRefresher;
use super::oauth::{AuthorizationRequest, OAuthClient};
use super::{AccountKey, Token};
use crate::error::{Error, ErrorKind, Result};

/// An account that just connected: the key to store its token under and publish with, the
/// token, and how to show it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectedAccount {
    /// The account (tenant, platform, the platform's account id).
    pub key: AccountKey,
    /// Its token. Store it (in a [`crate::TokenManager`] with `connect`); never print it.
    pub token: Token,
    /// A name to show a person: `@handle`, a channel or Page title.
    pub name: String,
    /// The account's handle, without `@`, where the platform has one.
    pub username: Option<String>,
}

impl ConnectedAccount {
    /// An account `key` with `token`, shown as `name`.
    pub fn new(key: AccountKey, token: Token, name: impl Into<String>) -> Self {
        ConnectedAccount {
            key,
            token,
            name: name.into(),
            username: None,
        }
    }

    /// Sets the handle.
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }
}

/// Connects accounts of one platform and keeps their tokens working: every adapter's connector
/// implements it, so an application connects, refreshes and revokes on every platform through
/// one interface (`Arc<dyn Connector>`, which is also the [`TokenRefresher`] a
/// [`crate::TokenManager`] takes).
///
/// The OAuth flow itself is shared ([`OAuthClient`]); an adapter supplies its platform's
/// quirks there, and [`Connector::accounts`]: who the token belongs to.
///
/// ```no_run
/// # async fn f(connector: std::sync::Arc<dyn socialpub_core::auth::Connector>) -> socialpub_core::Result<()> {
/// let request = connector.authorize("tenant-1").await?;
/// println!("send the user to {}", request.url);
/// // Your callback receives ?code=…&state=…
/// for account in connector.complete("code-from-callback", &request.state).await? {
///     println!("connected {} ({})", account.name, account.key);
/// }
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Connector: TokenRefresher + fmt::Debug {
    /// The OAuth flows, configured with the platform's quirks.
    fn oauth(&self) -> &OAuthClient;

    /// The accounts `token` gives access to, for `tenant`: the user itself, a channel, or
    /// several Pages, each with the token to publish with.
    async fn accounts(&self, tenant: &str, token: Token) -> Result<Vec<ConnectedAccount>>;

    /// Starts connecting an account for `tenant`: the URL of the platform's consent page, with
    /// a fresh single-use state (and PKCE challenge where the platform takes one).
    async fn authorize(&self, tenant: &str) -> Result<AuthorizationRequest> {
        self.oauth().authorize(tenant).await
    }

    /// Completes a connection from the callback's `code` and `state`: checks the state,
    /// exchanges the code, and discovers the accounts. Never empty: a token that reaches no
    /// account is an [`ErrorKind::Platform`] error.
    async fn complete(&self, code: &str, state: &str) -> Result<Vec<ConnectedAccount>> {
        let done = self.oauth().complete(code, state).await?;
        let accounts = self.accounts(&done.tenant, done.token).await?;
        if accounts.is_empty() {
            let platform = self.platform();
            return Err(Error::new(
                ErrorKind::Platform,
                format!("the {platform} login reaches no account to publish to"),
            )
            .with_platform(platform));
        }
        Ok(accounts)
    }
}
