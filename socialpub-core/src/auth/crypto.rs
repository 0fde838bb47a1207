//! Encryption of tokens at rest: AES-256-GCM with a random nonce per write, the account bound
//! as associated data, and key ids for rotation.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::store::{SealedToken, SealedTokenStore, TokenStore};
use super::{AccountKey, Token, TokenRecord};
use crate::error::{Error, ErrorKind, Result};

const ENVELOPE_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// A 256-bit key. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct EncryptionKey(Zeroizing<[u8; 32]>);

impl EncryptionKey {
    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        EncryptionKey(Zeroizing::new(bytes))
    }

    /// A key from standard base64 of 32 bytes (e.g. `openssl rand -base64 32`).
    pub fn from_base64(encoded: &str) -> Result<Self> {
        let raw = Zeroizing::new(
            STANDARD
                .decode(encoded.trim())
                .map_err(|_| Error::configuration("the encryption key is not valid base64"))?,
        );
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
            Error::configuration(format!(
                "the encryption key must be 32 bytes; it decodes to {}",
                raw.len()
            ))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// A random key from the operating system's generator.
    pub fn generate() -> Self {
        let key = Aes256Gcm::generate_key(OsRng);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(key.as_slice());
        Self::from_bytes(bytes)
    }

    /// The key as standard base64, to put in a secret manager. Handle with care.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_slice()))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.0.as_slice()))
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey([REDACTED])")
    }
}

/// The keys tokens are sealed with: the current one encrypts, every one decrypts.
#[derive(Clone)]
pub struct KeyRing {
    current: String,
    keys: BTreeMap<String, EncryptionKey>,
}

impl KeyRing {
    /// A ring with one key, `id`, as the current key.
    pub fn new(id: impl Into<String>, key: EncryptionKey) -> Self {
        let id = id.into();
        let mut keys = BTreeMap::new();
        keys.insert(id.clone(), key);
        KeyRing { current: id, keys }
    }

    /// Adds an older key that still decrypts.
    pub fn with_old_key(mut self, id: impl Into<String>, key: EncryptionKey) -> Self {
        self.keys.insert(id.into(), key);
        self
    }

    /// Makes `id` (added before) the key that encrypts; the previous one keeps decrypting.
    pub fn rotate_to(mut self, id: impl Into<String>, key: EncryptionKey) -> Self {
        let id = id.into();
        self.keys.insert(id.clone(), key);
        self.current = id;
        self
    }

    /// The id of the key that encrypts.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    fn current(&self) -> Result<&EncryptionKey> {
        self.keys
            .get(&self.current)
            .ok_or_else(|| Error::configuration("the current encryption key is missing"))
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Binds a ciphertext to its account and key: moving it to another row fails to decrypt.
fn associated_data(key: &AccountKey, key_id: &str) -> Vec<u8> {
    let mut aad = b"socialpub/token/v1".to_vec();
    for part in [
        key.tenant.as_str(),
        key.platform.as_str(),
        key.account_id.as_str(),
        key_id,
    ] {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// A [`TokenStore`] that seals every token with AES-256-GCM before handing it to an inner
/// [`SealedTokenStore`], so the inner store (a database, a file) only ever holds ciphertext.
///
/// Each write uses a fresh random 96-bit nonce. The [`AccountKey`] and key id are associated
/// data: a ciphertext copied onto another account, tenant or key id fails to open.
///
/// ```
/// use socialpub_core::auth::{EncryptedTokenStore, EncryptionKey, KeyRing, MemorySealedStore};
///
/// let ring = KeyRing::new("2026-11", EncryptionKey::generate());
/// let store = EncryptedTokenStore::new(MemorySealedStore::new(), ring);
/// # let _ = store;
/// ```
pub struct EncryptedTokenStore<S> {
    inner: S,
    ring: KeyRing,
}

impl<S> fmt::Debug for EncryptedTokenStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedTokenStore")
            .field("ring", &self.ring)
            .finish_non_exhaustive()
    }
}

impl<S: SealedTokenStore> EncryptedTokenStore<S> {
    /// Wraps `inner`, sealing with `ring`'s current key.
    pub fn new(inner: S, ring: KeyRing) -> Self {
        EncryptedTokenStore { inner, ring }
    }

    /// The inner store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Seals `token` for `key` with the current key.
    pub fn seal(&self, key: &AccountKey, token: &Token) -> Result<SealedToken> {
        let key_id = self.ring.current_id().to_owned();
        let plaintext = Zeroizing::new(serde_json::to_vec(&token.to_record())?);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = associated_data(key, &key_id);
        let ct = self
            .ring
            .current()?
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::internal("token encryption failed"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(ENVELOPE_VERSION);
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&ct);
        Ok(SealedToken {
            key_id,
            ciphertext: out,
        })
    }

    /// Opens a sealed token of `key`. Fails for a tampered ciphertext, a ciphertext of another
    /// account, or an unknown key id.
    pub fn open(&self, key: &AccountKey, sealed: &SealedToken) -> Result<Token> {
        let enc = self.ring.keys.get(&sealed.key_id).ok_or_else(|| {
            Error::configuration(format!(
                "the token of {key} was sealed with key `{}`, which is not in the key ring",
                sealed.key_id
            ))
        })?;
        let ct = &sealed.ciphertext;
        if ct.len() < 1 + NONCE_LEN + 16 || ct[0] != ENVELOPE_VERSION {
            return Err(Error::new(
                ErrorKind::Storage,
                format!("the stored token of {key} is not a socialpub envelope"),
            ));
        }
        let nonce = Nonce::from_slice(&ct[1..1 + NONCE_LEN]);
        let aad = associated_data(key, &sealed.key_id);
        let plaintext = Zeroizing::new(
            enc.cipher()
                .decrypt(
                    nonce,
                    Payload {
                        msg: &ct[1 + NONCE_LEN..],
                        aad: &aad,
                    },
                )
                .map_err(|_| {
                    Error::new(
                        ErrorKind::Storage,
                        format!(
                            "the stored token of {key} failed to decrypt (tampered, or not this account's)"
                        ),
                    )
                })?,
        );
        let record: TokenRecord = serde_json::from_slice(&plaintext)
            .map_err(|_| Error::new(ErrorKind::Storage, "a decrypted token is malformed"))?;
        Ok(Token::from_record(record))
    }

    /// Re-seals with the current key every token sealed with another key; returns how many.
    /// Run it after [`KeyRing::rotate_to`], then drop the old key from the ring.
    pub async fn reencrypt_all(&self) -> Result<usize> {
        let mut n = 0;
        for key in self.inner.list_sealed(None).await? {
            if let Some(sealed) = self.inner.get_sealed(&key).await?
                && sealed.key_id != self.ring.current_id()
            {
                let token = self.open(&key, &sealed)?;
                self.inner
                    .put_sealed(&key, self.seal(&key, &token)?)
                    .await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[async_trait]
impl<S: SealedTokenStore> TokenStore for EncryptedTokenStore<S> {
    async fn get(&self, key: &AccountKey) -> Result<Option<Token>> {
        match self.inner.get_sealed(key).await? {
            None => Ok(None),
            Some(sealed) => self.open(key, &sealed).map(Some),
        }
    }

    async fn put(&self, key: &AccountKey, token: &Token) -> Result<()> {
        let sealed = self.seal(key, token)?;
        self.inner.put_sealed(key, sealed).await
    }

    async fn delete(&self, key: &AccountKey) -> Result<bool> {
        self.inner.delete_sealed(key).await
    }

    async fn list(&self, tenant: &str) -> Result<Vec<AccountKey>> {
        self.inner.list_sealed(Some(tenant)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::MemorySealedStore;
    use crate::platform::Platform;
    use secrecy::ExposeSecret;

    fn key(t: &str, a: &str) -> AccountKey {
        AccountKey::new(t, Platform::X, a)
    }

    fn token() -> Token {
        Token::new("access-SECRET").with_refresh_token("refresh-SECRET")
    }

    #[tokio::test]
    async fn round_trip_and_no_plaintext_at_rest() {
        let inner = MemorySealedStore::new();
        let store =
            EncryptedTokenStore::new(inner.clone(), KeyRing::new("k1", EncryptionKey::generate()));
        let k = key("t1", "a1");
        store.put(&k, &token()).await.expect("put");
        let sealed = inner.get_sealed(&k).await.expect("get").expect("some");
        let raw = String::from_utf8_lossy(&sealed.ciphertext);
        assert!(!raw.contains("SECRET"));
        let back = store.get(&k).await.expect("get").expect("some");
        assert_eq!(back.access_token.expose_secret(), "access-SECRET");
        assert_eq!(
            back.refresh_token
                .as_ref()
                .map(|s| s.expose_secret().to_owned()),
            Some("refresh-SECRET".to_owned())
        );
    }

    #[tokio::test]
    async fn nonce_differs_per_write() {
        let inner = MemorySealedStore::new();
        let store =
            EncryptedTokenStore::new(inner.clone(), KeyRing::new("k1", EncryptionKey::generate()));
        let k = key("t1", "a1");
        let a = store.seal(&k, &token()).expect("seal");
        let b = store.seal(&k, &token()).expect("seal");
        assert_ne!(a.ciphertext[1..13], b.ciphertext[1..13]);
    }

    #[tokio::test]
    async fn moved_ciphertext_fails() {
        let inner = MemorySealedStore::new();
        let store =
            EncryptedTokenStore::new(inner.clone(), KeyRing::new("k1", EncryptionKey::generate()));
        let k = key("t1", "a1");
        store.put(&k, &token()).await.expect("put");
        let sealed = inner.get_sealed(&k).await.expect("get").expect("some");
        for other in [
            key("t1", "a2"),
            key("t2", "a1"),
            AccountKey::new("t1", Platform::YouTube, "a1"),
        ] {
            inner.put_sealed(&other, sealed.clone()).await.expect("put");
            let err = store.get(&other).await.expect_err("must not decrypt");
            assert_eq!(err.kind(), ErrorKind::Storage);
        }
    }

    #[tokio::test]
    async fn tampered_ciphertext_fails() {
        let inner = MemorySealedStore::new();
        let store =
            EncryptedTokenStore::new(inner.clone(), KeyRing::new("k1", EncryptionKey::generate()));
        let k = key("t1", "a1");
        store.put(&k, &token()).await.expect("put");
        let mut sealed = inner.get_sealed(&k).await.expect("get").expect("some");
        for i in [1, 13, sealed.ciphertext.len() - 1] {
            let mut t = sealed.clone();
            t.ciphertext[i] ^= 0x01;
            inner.put_sealed(&k, t).await.expect("put");
            assert!(store.get(&k).await.is_err(), "flip at {i} must fail");
        }
        sealed.key_id = "k2".into();
        inner.put_sealed(&k, sealed).await.expect("put");
        assert_eq!(
            store.get(&k).await.expect_err("unknown key").kind(),
            ErrorKind::Configuration
        );
    }

    #[tokio::test]
    async fn rotation_decrypts_old_and_reencrypts() {
        let inner = MemorySealedStore::new();
        let old = EncryptionKey::generate();
        let store = EncryptedTokenStore::new(inner.clone(), KeyRing::new("k1", old.clone()));
        let k = key("t1", "a1");
        store.put(&k, &token()).await.expect("put");

        let ring = KeyRing::new("k1", old).rotate_to("k2", EncryptionKey::generate());
        let rotated = EncryptedTokenStore::new(inner.clone(), ring);
        assert!(rotated.get(&k).await.expect("old key decrypts").is_some());
        assert_eq!(rotated.reencrypt_all().await.expect("reencrypt"), 1);
        assert_eq!(
            inner
                .get_sealed(&k)
                .await
                .expect("get")
                .expect("some")
                .key_id,
            "k2"
        );
        assert_eq!(rotated.reencrypt_all().await.expect("again"), 0);
        assert!(rotated.get(&k).await.expect("new key").is_some());
    }

    #[test]
    fn key_from_base64() {
        let k = EncryptionKey::generate();
        let again = EncryptionKey::from_base64(&k.to_base64()).expect("b64");
        assert_eq!(format!("{again:?}"), "EncryptionKey([REDACTED])");
        assert!(EncryptionKey::from_base64("c2hvcnQ=").is_err());
        assert!(EncryptionKey::from_base64("!!").is_err());
    }
}
