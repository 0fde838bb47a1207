//! [`TokenManager`]: fresh access tokens, refreshed once per account however many callers ask.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::store::TokenStore;
use super::{AccessTokens, AccountKey, Token};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::platform::Platform;

/// Refreshes and revokes tokens of one platform. Adapters implement it (usually through
/// [`super::oauth::OAuthClient`]).
#[async_trait]
pub trait TokenRefresher: Send + Sync + 'static {
    /// The platform whose tokens this refreshes.
    fn platform(&self) -> Platform;

    /// Exchanges `token`'s refresh token for a new token. A refresh token the platform no
    /// longer accepts (`invalid_grant`) is [`ErrorKind::ReauthRequired`].
    async fn refresh(&self, key: &AccountKey, token: &Token) -> Result<Token>;

    /// Revokes `token` at the platform (on disconnect).
    async fn revoke(&self, key: &AccountKey, token: &Token) -> Result<()> {
        let _ = token;
        Err(Error::unsupported(format!(
            "{} has no token revocation",
            key.platform
        )))
    }
}

fn same_secret(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret()
        .as_bytes()
        .ct_eq(b.expose_secret().as_bytes())
        .into()
}

fn same_refresh(a: &Token, b: &Token) -> bool {
    match (&a.refresh_token, &b.refresh_token) {
        (Some(x), Some(y)) => same_secret(x, y),
        (None, None) => true,
        _ => false,
    }
}

/// Hands out fresh access tokens, refreshing ahead of expiry.
///
/// - One refresh per account at a time (single flight): any number of concurrent callers on an
///   expired token cause one refresh request; the others wait and read the stored result.
/// - The new token is stored before it is returned, so a rotated refresh token is never lost.
/// - A refresh response without a refresh token keeps the stored one.
/// - A refresh rejected because another process rotated the token meanwhile re-reads the store
///   and uses the newer token instead of failing the account.
///
/// ```no_run
/// # async fn f(refresher: std::sync::Arc<dyn socialpub_core::auth::TokenRefresher>) -> socialpub_core::Result<()> {
/// use socialpub_core::auth::{AccountKey, MemoryTokenStore, TokenManager};
/// use socialpub_core::Platform;
///
/// let manager = TokenManager::builder(MemoryTokenStore::new())
///     .refresher(refresher)
///     .build();
/// let token = manager.access_token_for(&AccountKey::new("acme", Platform::X, "42")).await?;
/// # let _ = token; Ok(()) }
/// ```
pub struct TokenManager {
    store: Arc<dyn TokenStore>,
    refreshers: HashMap<Platform, Arc<dyn TokenRefresher>>,
    skew: chrono::Duration,
    clock: Arc<dyn Clock>,
    locks: Mutex<HashMap<AccountKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManager")
            .field("platforms", &self.refreshers.keys().collect::<Vec<_>>())
            .field("skew", &self.skew)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TokenManager`].
pub struct TokenManagerBuilder {
    store: Arc<dyn TokenStore>,
    refreshers: HashMap<Platform, Arc<dyn TokenRefresher>>,
    skew: chrono::Duration,
    clock: Arc<dyn Clock>,
}

impl TokenManagerBuilder {
    /// Adds the refresher of its platform.
    pub fn refresher(mut self, r: Arc<dyn TokenRefresher>) -> Self {
        self.refreshers.insert(r.platform(), r);
        self
    }

    /// Refresh this long before expiry (default 5 minutes).
    pub fn skew(mut self, skew: std::time::Duration) -> Self {
        self.skew = chrono::Duration::from_std(skew).unwrap_or(chrono::Duration::minutes(5));
        self
    }

    /// Uses `clock` for expiry decisions.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The manager.
    pub fn build(self) -> TokenManager {
        TokenManager {
            store: self.store,
            refreshers: self.refreshers,
            skew: self.skew,
            clock: self.clock,
            locks: Mutex::new(HashMap::new()),
        }
    }
}

impl TokenManager {
    /// Starts a manager over `store`.
    pub fn builder(store: impl TokenStore) -> TokenManagerBuilder {
        Self::builder_arc(Arc::new(store))
    }

    /// Starts a manager over a shared store.
    pub fn builder_arc(store: Arc<dyn TokenStore>) -> TokenManagerBuilder {
        TokenManagerBuilder {
            store,
            refreshers: HashMap::new(),
            skew: chrono::Duration::minutes(5),
            clock: Arc::new(SystemClock),
        }
    }

    /// The store tokens live in.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// Stores the token of a newly connected account.
    pub async fn connect(&self, key: &AccountKey, token: &Token) -> Result<()> {
        self.store.put(key, token).await
    }

    /// Revokes the account's token at the platform (best effort when unsupported) and deletes it.
    /// Returns whether a token was deleted.
    pub async fn disconnect(&self, key: &AccountKey) -> Result<bool> {
        if let Some(token) = self.store.get(key).await?
            && let Some(r) = self.refreshers.get(&key.platform)
        {
            match r.revoke(key, &token).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Unsupported => {}
                Err(e) if e.kind() == ErrorKind::ReauthRequired => {}
                Err(e) => return Err(e),
            }
        }
        self.store.delete(key).await
    }

    /// The stored token of `key`, refreshed if it expires within the skew.
    pub async fn token(&self, key: &AccountKey) -> Result<Token> {
        let tok = self.stored(key).await?;
        if !tok.expires_within(self.clock.now(), self.skew) {
            return Ok(tok);
        }
        let lock = self.lock_for(key)?;
        let _guard = lock.lock().await;
        let tok = self.stored(key).await?;
        if !tok.expires_within(self.clock.now(), self.skew) {
            return Ok(tok);
        }
        self.refresh_locked(key, tok).await
    }

    /// A fresh access token for `key`.
    pub async fn access_token_for(&self, key: &AccountKey) -> Result<SecretString> {
        Ok(self.token(key).await?.access_token)
    }

    /// Refreshes now, unless another caller replaced `rejected` meanwhile.
    pub async fn refresh_rejected(
        &self,
        key: &AccountKey,
        rejected: &SecretString,
    ) -> Result<Token> {
        let lock = self.lock_for(key)?;
        let _guard = lock.lock().await;
        let tok = self.stored(key).await?;
        if !same_secret(&tok.access_token, rejected) {
            return Ok(tok);
        }
        self.refresh_locked(key, tok).await
    }

    /// Accounts of `tenant` whose refresh token (or, without one, access token) expires before
    /// `horizon` from now: the ones to warn about.
    pub async fn expiring(
        &self,
        tenant: &str,
        horizon: chrono::Duration,
    ) -> Result<Vec<AccountKey>> {
        let limit = self.clock.now() + horizon;
        let mut out = Vec::new();
        for key in self.store.list(tenant).await? {
            if let Some(t) = self.store.get(&key).await? {
                let end = if t.refresh_token.is_some() {
                    t.refresh_expires_at
                } else {
                    t.expires_at
                };
                if end.is_some_and(|e| e <= limit) {
                    out.push(key);
                }
            }
        }
        Ok(out)
    }

    async fn stored(&self, key: &AccountKey) -> Result<Token> {
        self.store.get(key).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::ReauthRequired,
                format!("no token stored for {key}: connect the account"),
            )
            .with_platform(key.platform)
        })
    }

    fn lock_for(&self, key: &AccountKey) -> Result<Arc<tokio::sync::Mutex<()>>> {
        let mut locks = self
            .locks
            .lock()
            .map_err(|_| Error::internal("token manager lock poisoned"))?;
        Ok(locks.entry(key.clone()).or_default().clone())
    }

    async fn refresh_locked(&self, key: &AccountKey, tok: Token) -> Result<Token> {
        let refresher = self.refreshers.get(&key.platform).ok_or_else(|| {
            Error::configuration(format!(
                "no token refresher registered for {}",
                key.platform
            ))
            .with_platform(key.platform)
        })?;
        let reauth = |why: &str| {
            Error::new(
                ErrorKind::ReauthRequired,
                format!("{key}: {why}; reconnect the account"),
            )
            .with_platform(key.platform)
            .with_operation("token.refresh")
        };
        if tok.refresh_token.is_none() {
            return Err(reauth(
                "the access token expired and there is no refresh token",
            ));
        }
        if tok.refresh_expired(self.clock.now()) {
            return Err(reauth("the refresh token expired"));
        }
        tracing::debug!(account = %key, "refreshing access token");
        match refresher.refresh(key, &tok).await {
            Ok(fresh) => {
                let merged = tok.merge_refreshed(fresh);
                self.store.put(key, &merged).await?;
                Ok(merged)
            }
            Err(e) if e.kind() == ErrorKind::ReauthRequired => {
                // Another process may have rotated the refresh token under us: its token is in
                // the store and the one we sent is spent. Use the newer one rather than
                // disconnecting the account.
                let current = self.stored(key).await?;
                if same_refresh(&current, &tok) {
                    return Err(e);
                }
                tracing::info!(account = %key, "refresh token was rotated elsewhere; using the stored one");
                if !current.expires_within(self.clock.now(), self.skew) {
                    return Ok(current);
                }
                let fresh = refresher.refresh(key, &current).await?;
                let merged = current.merge_refreshed(fresh);
                self.store.put(key, &merged).await?;
                Ok(merged)
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl AccessTokens for TokenManager {
    async fn access_token(&self, key: &AccountKey) -> Result<SecretString> {
        self.access_token_for(key).await
    }

    async fn refresh_after_rejection(
        &self,
        key: &AccountKey,
        rejected: &SecretString,
    ) -> Result<SecretString> {
        Ok(self.refresh_rejected(key, rejected).await?.access_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::MemoryTokenStore;
    use chrono::Utc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Counting {
        calls: AtomicUsize,
        rotate: bool,
        fail_with: Option<ErrorKind>,
    }

    #[async_trait]
    impl TokenRefresher for Counting {
        fn platform(&self) -> Platform {
            Platform::X
        }
        async fn refresh(&self, _key: &AccountKey, _token: &Token) -> Result<Token> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(k) = self.fail_with {
                return Err(Error::new(k, "refused"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let t = Token::new(format!("access-{n}"))
                .with_expires_at(Utc::now() + chrono::Duration::hours(2));
            Ok(if self.rotate {
                t.with_refresh_token(format!("refresh-{n}"))
            } else {
                t
            })
        }
    }

    fn key() -> AccountKey {
        AccountKey::new("t", Platform::X, "1")
    }

    fn expired() -> Token {
        Token::new("old")
            .with_refresh_token("refresh-0")
            .with_expires_at(Utc::now() - chrono::Duration::minutes(1))
    }

    #[tokio::test]
    async fn keeps_refresh_token_when_response_has_none() {
        let store = MemoryTokenStore::new();
        store.put(&key(), &expired()).await.expect("put");
        let r = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            rotate: false,
            fail_with: None,
        });
        let m = TokenManager::builder(store.clone()).refresher(r).build();
        let t = m.token(&key()).await.expect("token");
        assert_eq!(t.access_token.expose_secret(), "access-1");
        let stored = store.get(&key()).await.expect("get").expect("some");
        assert_eq!(
            stored.refresh_token.expect("kept").expose_secret(),
            "refresh-0"
        );
    }

    #[tokio::test]
    async fn invalid_grant_is_reauth() {
        let store = MemoryTokenStore::new();
        store.put(&key(), &expired()).await.expect("put");
        let r = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            rotate: false,
            fail_with: Some(ErrorKind::ReauthRequired),
        });
        let m = TokenManager::builder(store).refresher(r).build();
        let e = m.token(&key()).await.expect_err("reauth");
        assert_eq!(e.kind(), ErrorKind::ReauthRequired);
    }

    #[tokio::test]
    async fn missing_token_is_reauth_and_fresh_token_is_not_refreshed() {
        let store = MemoryTokenStore::new();
        let r = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            rotate: true,
            fail_with: None,
        });
        let m = TokenManager::builder(store.clone())
            .refresher(r.clone())
            .build();
        assert_eq!(
            m.token(&key()).await.expect_err("none").kind(),
            ErrorKind::ReauthRequired
        );
        store
            .put(
                &key(),
                &Token::new("fresh").with_expires_at(Utc::now() + chrono::Duration::hours(1)),
            )
            .await
            .expect("put");
        assert_eq!(
            m.access_token_for(&key())
                .await
                .expect("ok")
                .expose_secret(),
            "fresh"
        );
        assert_eq!(r.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn rejected_token_refreshes_once_for_concurrent_callers() {
        let store = MemoryTokenStore::new();
        store
            .put(
                &key(),
                &Token::new("live")
                    .with_refresh_token("r")
                    .with_expires_at(Utc::now() + chrono::Duration::hours(1)),
            )
            .await
            .expect("put");
        let r = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            rotate: true,
            fail_with: None,
        });
        let m = Arc::new(TokenManager::builder(store).refresher(r.clone()).build());
        let rejected = SecretString::from("live");
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let m = m.clone();
            let rejected = rejected.clone();
            tasks.push(tokio::spawn(async move {
                m.refresh_rejected(&key(), &rejected).await
            }));
        }
        for t in tasks {
            t.await.expect("join").expect("refresh");
        }
        assert_eq!(r.calls.load(Ordering::SeqCst), 1);
    }
}
