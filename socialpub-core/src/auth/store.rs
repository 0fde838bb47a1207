//! Token storage traits: [`TokenStore`] (tokens) and [`SealedTokenStore`] (ciphertexts), with
//! in-memory implementations.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{AccountKey, Token};
use crate::error::{Error, Result};

/// Keeps tokens per account. Implementations must be safe to share between tasks.
///
/// Persistent stores hold only ciphertext: implement [`SealedTokenStore`] and wrap it in
/// [`super::EncryptedTokenStore`].
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// The token of `key`, if any.
    async fn get(&self, key: &AccountKey) -> Result<Option<Token>>;
    /// Stores `token` for `key`, replacing any other.
    async fn put(&self, key: &AccountKey, token: &Token) -> Result<()>;
    /// Deletes the token of `key`; whether there was one.
    async fn delete(&self, key: &AccountKey) -> Result<bool>;
    /// Every account of `tenant` with a token.
    async fn list(&self, tenant: &str) -> Result<Vec<AccountKey>>;
}

#[async_trait]
impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    async fn get(&self, key: &AccountKey) -> Result<Option<Token>> {
        (**self).get(key).await
    }
    async fn put(&self, key: &AccountKey, token: &Token) -> Result<()> {
        (**self).put(key, token).await
    }
    async fn delete(&self, key: &AccountKey) -> Result<bool> {
        (**self).delete(key).await
    }
    async fn list(&self, tenant: &str) -> Result<Vec<AccountKey>> {
        (**self).list(tenant).await
    }
}

fn poisoned() -> Error {
    Error::internal("token store lock poisoned")
}

/// Tokens in process memory: for tests and single-process tools. Nothing is written to disk.
#[derive(Debug, Default, Clone)]
pub struct MemoryTokenStore {
    inner: Arc<Mutex<BTreeMap<AccountKey, Token>>>,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn get(&self, key: &AccountKey) -> Result<Option<Token>> {
        Ok(self.inner.lock().map_err(|_| poisoned())?.get(key).cloned())
    }

    async fn put(&self, key: &AccountKey, token: &Token) -> Result<()> {
        self.inner
            .lock()
            .map_err(|_| poisoned())?
            .insert(key.clone(), token.clone());
        Ok(())
    }

    async fn delete(&self, key: &AccountKey) -> Result<bool> {
        Ok(self
            .inner
            .lock()
            .map_err(|_| poisoned())?
            .remove(key)
            .is_some())
    }

    async fn list(&self, tenant: &str) -> Result<Vec<AccountKey>> {
        Ok(self
            .inner
            .lock()
            .map_err(|_| poisoned())?
            .keys()
            .filter(|k| k.tenant == tenant)
            .cloned()
            .collect())
    }
}

/// A sealed (encrypted) token as a store keeps it: opaque bytes plus the id of the key that
/// sealed them.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedToken {
    /// The id of the encryption key (for rotation).
    pub key_id: String,
    /// Nonce, ciphertext and tag, as [`super::EncryptedTokenStore`] wrote them.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedToken")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Keeps sealed tokens: what a database-backed store implements. It never sees plaintext.
#[async_trait]
pub trait SealedTokenStore: Send + Sync + 'static {
    /// The sealed token of `key`, if any.
    async fn get_sealed(&self, key: &AccountKey) -> Result<Option<SealedToken>>;
    /// Stores a sealed token for `key`, replacing any other.
    async fn put_sealed(&self, key: &AccountKey, sealed: SealedToken) -> Result<()>;
    /// Deletes the sealed token of `key`; whether there was one.
    async fn delete_sealed(&self, key: &AccountKey) -> Result<bool>;
    /// Every account of `tenant` with a token; `None` lists every tenant's (for key rotation).
    async fn list_sealed(&self, tenant: Option<&str>) -> Result<Vec<AccountKey>>;
}

#[async_trait]
impl<T: SealedTokenStore + ?Sized> SealedTokenStore for Arc<T> {
    async fn get_sealed(&self, key: &AccountKey) -> Result<Option<SealedToken>> {
        (**self).get_sealed(key).await
    }
    async fn put_sealed(&self, key: &AccountKey, sealed: SealedToken) -> Result<()> {
        (**self).put_sealed(key, sealed).await
    }
    async fn delete_sealed(&self, key: &AccountKey) -> Result<bool> {
        (**self).delete_sealed(key).await
    }
    async fn list_sealed(&self, tenant: Option<&str>) -> Result<Vec<AccountKey>> {
        (**self).list_sealed(tenant).await
    }
}

/// Sealed tokens in process memory, e.g. to test [`super::EncryptedTokenStore`].
#[derive(Debug, Default, Clone)]
pub struct MemorySealedStore {
    inner: Arc<Mutex<BTreeMap<AccountKey, SealedToken>>>,
}

impl MemorySealedStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SealedTokenStore for MemorySealedStore {
    async fn get_sealed(&self, key: &AccountKey) -> Result<Option<SealedToken>> {
        Ok(self.inner.lock().map_err(|_| poisoned())?.get(key).cloned())
    }

    async fn put_sealed(&self, key: &AccountKey, sealed: SealedToken) -> Result<()> {
        self.inner
            .lock()
            .map_err(|_| poisoned())?
            .insert(key.clone(), sealed);
        Ok(())
    }

    async fn delete_sealed(&self, key: &AccountKey) -> Result<bool> {
        Ok(self
            .inner
            .lock()
            .map_err(|_| poisoned())?
            .remove(key)
            .is_some())
    }

    async fn list_sealed(&self, tenant: Option<&str>) -> Result<Vec<AccountKey>> {
        Ok(self
            .inner
            .lock()
            .map_err(|_| poisoned())?
            .keys()
            .filter(|k| tenant.is_none_or(|t| k.tenant == t))
            .cloned()
            .collect())
    }
}
