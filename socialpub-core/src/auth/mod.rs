//! Accounts, tokens and OAuth: [`Token`], [`AccountKey`], token stores (plain and encrypted),
//! the refreshing [`TokenManager`], and the OAuth connect helpers in [`oauth`].

mod connect;
mod crypto;
mod manager;
pub mod oauth;
mod store;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

pub use connect::{ConnectedAccount, Connector};
pub use crypto::{EncryptedTokenStore, EncryptionKey, KeyRing};
pub use manager::{TokenManager, TokenManagerBuilder, TokenRefresher};
/// Secrets (tokens, client secrets) are `secrecy`'s `SecretString`: never shown by `Debug`.
pub use secrecy::SecretString;
pub use store::{MemorySealedStore, MemoryTokenStore, SealedToken, SealedTokenStore, TokenStore};

use crate::error::Result;
use crate::platform::Platform;

/// Which account a token belongs to: a tenant of the application, a platform, and the
/// platform's id of the account. Every store call is scoped by one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccountKey {
    /// The application's tenant (customer, workspace, user).
    pub tenant: String,
    /// The platform.
    pub platform: Platform,
    /// The platform's id of the account.
    pub account_id: String,
}

impl AccountKey {
    /// The key for `account_id` on `platform` in `tenant`.
    pub fn new(
        tenant: impl Into<String>,
        platform: Platform,
        account_id: impl Into<String>,
    ) -> Self {
        AccountKey {
            tenant: tenant.into(),
            platform,
            account_id: account_id.into(),
        }
    }
}

impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.platform, self.account_id)
    }
}

/// An OAuth token set for one account. Its secrets never appear in `Debug` and it does not
/// implement `Serialize`: it is persisted only through a [`TokenStore`] (encrypted by
/// [`EncryptedTokenStore`]).
#[derive(Clone)]
#[non_exhaustive]
pub struct Token {
    /// The access token.
    pub access_token: SecretString,
    /// The refresh token, if the platform issued one.
    pub refresh_token: Option<SecretString>,
    /// When the access token expires, if known.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the refresh token expires, if known.
    pub refresh_expires_at: Option<DateTime<Utc>>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// The token type (`bearer`), if the platform said.
    pub token_type: Option<String>,
    /// Platform extras that are not secret (e.g. `open_id`, a page name).
    pub extras: BTreeMap<String, serde_json::Value>,
    /// When the token was obtained.
    pub obtained_at: DateTime<Utc>,
}

impl Token {
    /// A token with `access_token` and nothing else known.
    pub fn new(access_token: impl Into<String>) -> Self {
        Token {
            access_token: SecretString::from(access_token.into()),
            refresh_token: None,
            expires_at: None,
            refresh_expires_at: None,
            scopes: Vec::new(),
            token_type: None,
            extras: BTreeMap::new(),
            obtained_at: Utc::now(),
        }
    }

    /// Sets the refresh token.
    pub fn with_refresh_token(mut self, refresh: impl Into<String>) -> Self {
        self.refresh_token = Some(SecretString::from(refresh.into()));
        self
    }

    /// Sets the access token's expiry.
    pub fn with_expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets the scopes.
    pub fn with_scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Whether the access token expires within `skew` of `now`.
    pub fn expires_within(&self, now: DateTime<Utc>, skew: chrono::Duration) -> bool {
        self.expires_at.is_some_and(|at| at - skew <= now)
    }

    /// Whether the refresh token has expired at `now`.
    pub fn refresh_expired(&self, now: DateTime<Utc>) -> bool {
        self.refresh_expires_at.is_some_and(|at| at <= now)
    }

    /// Takes the fields of a refresh response, keeping this token's refresh token (and its
    /// expiry) when the response has none: platforms that do not rotate omit it.
    pub fn merge_refreshed(&self, mut fresh: Token) -> Token {
        if fresh.refresh_token.is_none() {
            fresh.refresh_token = self.refresh_token.clone();
            if fresh.refresh_expires_at.is_none() {
                fresh.refresh_expires_at = self.refresh_expires_at;
            }
        }
        if fresh.scopes.is_empty() {
            fresh.scopes = self.scopes.clone();
        }
        for (k, v) in &self.extras {
            fresh.extras.entry(k.clone()).or_insert_with(|| v.clone());
        }
        fresh
    }

    pub(crate) fn to_record(&self) -> TokenRecord {
        TokenRecord {
            access_token: self.access_token.expose_secret().to_owned(),
            refresh_token: self
                .refresh_token
                .as_ref()
                .map(|s| s.expose_secret().to_owned()),
            expires_at: self.expires_at,
            refresh_expires_at: self.refresh_expires_at,
            scopes: self.scopes.clone(),
            token_type: self.token_type.clone(),
            extras: self.extras.clone(),
            obtained_at: self.obtained_at,
        }
    }

    pub(crate) fn from_record(mut r: TokenRecord) -> Token {
        Token {
            access_token: SecretString::from(std::mem::take(&mut r.access_token)),
            refresh_token: r.refresh_token.take().map(SecretString::from),
            expires_at: r.expires_at,
            refresh_expires_at: r.refresh_expires_at,
            scopes: std::mem::take(&mut r.scopes),
            token_type: r.token_type.take(),
            extras: std::mem::take(&mut r.extras),
            obtained_at: r.obtained_at,
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"[REDACTED]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_at", &self.expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("scopes", &self.scopes)
            .field("token_type", &self.token_type)
            .field("extras", &self.extras)
            .field("obtained_at", &self.obtained_at)
            .finish()
    }
}

/// The plaintext form of a token, only ever handed to the cipher (zeroized on drop).
#[derive(Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    refresh_expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    extras: BTreeMap<String, serde_json::Value>,
    obtained_at: DateTime<Utc>,
}

impl Drop for TokenRecord {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.access_token.zeroize();
        if let Some(r) = self.refresh_token.as_mut() {
            r.zeroize();
        }
    }
}

/// A source of access tokens, as a publish needs them. [`TokenManager`] is the implementation
/// that refreshes; tests can hand in a fixed token.
#[async_trait]
pub trait AccessTokens: Send + Sync {
    /// A usable access token for `key`, refreshed ahead of expiry.
    async fn access_token(&self, key: &AccountKey) -> Result<SecretString>;

    /// A new access token after the platform rejected `rejected`. Implementations refresh once
    /// (or use a token another caller refreshed meanwhile).
    async fn refresh_after_rejection(
        &self,
        key: &AccountKey,
        rejected: &SecretString,
    ) -> Result<SecretString>;
}

/// A fixed access token that is never refreshed: for tests and one-off scripts.
#[derive(Clone)]
pub struct StaticToken(pub SecretString);

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken([REDACTED])")
    }
}

#[async_trait]
impl AccessTokens for StaticToken {
    async fn access_token(&self, _key: &AccountKey) -> Result<SecretString> {
        Ok(self.0.clone())
    }

    async fn refresh_after_rejection(
        &self,
        key: &AccountKey,
        _rejected: &SecretString,
    ) -> Result<SecretString> {
        Err(crate::Error::new(
            crate::ErrorKind::Unauthorized,
            format!("the static token for {key} was rejected"),
        )
        .with_platform(key.platform))
    }
}
