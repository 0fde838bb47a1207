//! Started authorizations, kept by their CSRF state until the user comes back: the
//! [`PendingStore`] trait and its in-memory implementation.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::platform::Platform;

/// A started authorization, kept until the user comes back. Single use.
#[derive(Clone)]
#[non_exhaustive]
pub struct PendingAuthorization {
    /// The tenant connecting an account.
    pub tenant: String,
    /// The platform.
    pub platform: Platform,
    /// The PKCE verifier, if PKCE is used.
    pub pkce_verifier: Option<SecretString>,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("tenant", &self.tenant)
            .field("platform", &self.platform)
            .field(
                "pkce_verifier",
                &self.pkce_verifier.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Keeps started authorizations by state. `take` removes: a state works once.
#[async_trait]
pub trait PendingStore: Send + Sync + 'static {
    /// Keeps `pending` under `state`.
    async fn put(&self, state: &str, pending: PendingAuthorization) -> Result<()>;
    /// Removes and returns the authorization of `state`, comparing states in constant time.
    async fn take(&self, state: &str) -> Result<Option<PendingAuthorization>>;
}

type PendingMap = HashMap<[u8; 32], (String, PendingAuthorization)>;

/// Started authorizations in process memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryPendingStore {
    inner: Arc<Mutex<PendingMap>>,
}

impl MemoryPendingStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn state_digest(state: &str) -> [u8; 32] {
    Sha256::digest(state.as_bytes()).into()
}

#[async_trait]
impl PendingStore for MemoryPendingStore {
    async fn put(&self, state: &str, pending: PendingAuthorization) -> Result<()> {
        let mut m = self
            .inner
            .lock()
            .map_err(|_| Error::internal("pending store lock poisoned"))?;
        let now = Utc::now();
        m.retain(|_, (_, p)| p.expires_at > now);
        m.insert(state_digest(state), (state.to_owned(), pending));
        Ok(())
    }

    async fn take(&self, state: &str) -> Result<Option<PendingAuthorization>> {
        let mut m = self
            .inner
            .lock()
            .map_err(|_| Error::internal("pending store lock poisoned"))?;
        // The map is keyed by a digest, so the lookup reveals nothing useful about the stored
        // state; the full comparison is constant-time.
        let Some((stored, pending)) = m.remove(&state_digest(state)) else {
            return Ok(None);
        };
        let same: bool = stored.as_bytes().ct_eq(state.as_bytes()).into();
        Ok(same.then_some(pending))
    }
}
