//! Assembles the pieces every command needs: the store chosen by URL, the encrypted token
//! store and its refreshing manager, the publishers, and the scheduling engine.

use std::sync::Arc;

use socialpub_core::auth::{
    EncryptedTokenStore, MemorySealedStore, SealedTokenStore, TokenManager, TokenStore,
};
use socialpub_core::schedule::{Engine, EngineBuilder, MemoryScheduleStore, ScheduleStore};
use socialpub_core::store::{PostgresStore, SqliteStore};
use socialpub_core::{Error, ErrorKind, Result};

use crate::config::{Config, StoreUrl, redact_password};
use crate::platforms::Platforms;

/// The open store: one database (or memory) holding deliveries and sealed tokens.
#[derive(Debug, Clone)]
pub enum Store {
    /// SQLite, one file.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PostgresStore),
    /// Process memory.
    Memory(MemoryScheduleStore, MemorySealedStore),
}

impl Store {
    /// Opens the store `url` names, creating and migrating it as needed. An unreachable
    /// database is a [`ErrorKind::Storage`] error that names it (without its password).
    pub async fn open(url: &StoreUrl) -> Result<Store> {
        match url {
            StoreUrl::Memory => Ok(Store::Memory(
                MemoryScheduleStore::new(),
                MemorySealedStore::new(),
            )),
            StoreUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                    && !dir.exists()
                {
                    return Err(Error::configuration(format!(
                        "cannot open the SQLite store {}: the directory {} does not exist",
                        path.display(),
                        dir.display()
                    )));
                }
                SqliteStore::open(format!("sqlite://{}", path.display()))
                    .await
                    .map(Store::Sqlite)
                    .map_err(|e| unreachable_db(url, e))
            }
            StoreUrl::Postgres(u) => PostgresStore::connect(u.clone())
                .await
                .map(Store::Postgres)
                .map_err(|e| unreachable_db(url, e)),
        }
    }

    /// The schedule half.
    pub fn schedule(&self) -> Arc<dyn ScheduleStore> {
        match self {
            Store::Sqlite(s) => Arc::new(s.clone()),
            Store::Postgres(s) => Arc::new(s.clone()),
            Store::Memory(s, _) => Arc::new(s.clone()),
        }
    }

    /// The sealed-token half (ciphertext only).
    pub fn sealed_tokens(&self) -> Arc<dyn SealedTokenStore> {
        match self {
            Store::Sqlite(s) => Arc::new(s.clone()),
            Store::Postgres(s) => Arc::new(s.clone()),
            Store::Memory(_, t) => Arc::new(t.clone()),
        }
    }

    /// Closes database connections, waiting for writes in progress.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
            Store::Memory(..) => {}
        }
    }
}

fn unreachable_db(url: &StoreUrl, e: Error) -> Error {
    let what = redact_password(&url.to_string());
    Error::new(
        ErrorKind::Storage,
        format!("cannot open the store {what}: {}", e.message()),
    )
    .with_source(e)
}

/// Everything a command works with.
#[derive(Debug)]
pub struct App {
    /// The tenant commands act for.
    pub tenant: String,
    /// The store.
    pub store: Store,
    /// Tokens: sealed in the store, refreshed ahead of expiry.
    pub tokens: Arc<TokenManager>,
    /// The same tokens as the store keeps them, for re-sealing after a key rotation.
    pub sealed: Arc<EncryptedTokenStore<Arc<dyn SealedTokenStore>>>,
    /// The platforms configured.
    pub platforms: Platforms,
    /// The scheduler and its workers.
    pub engine: Engine,
}

impl App {
    /// Opens the store and assembles the app for `config` and `platforms`.
    pub async fn open(config: &Config, platforms: Platforms) -> Result<App> {
        Self::open_with(config, platforms, |b| b).await
    }

    /// [`App::open`] with the engine adjusted by `tune` (workers, retry policy, …).
    pub async fn open_with(
        config: &Config,
        platforms: Platforms,
        tune: impl FnOnce(EngineBuilder) -> EngineBuilder,
    ) -> Result<App> {
        // Check the key before touching the database: a missing key is the likelier mistake.
        let ring = config.key_ring()?;
        let store = Store::open(&config.store).await?;
        let sealed = Arc::new(EncryptedTokenStore::new(store.sealed_tokens(), ring));
        let mut manager = TokenManager::builder_arc(sealed.clone() as Arc<dyn TokenStore>);
        for r in platforms.refreshers()? {
            manager = manager.refresher(r);
        }
        let tokens = Arc::new(manager.build());
        let mut builder = Engine::builder_arc(store.schedule(), tokens.clone())
            .token_manager(tokens.clone())
            .name(format!("socialpub-{}", std::process::id()));
        for p in platforms.publishers()? {
            builder = builder.publisher(p);
        }
        Ok(App {
            tenant: config.tenant.clone(),
            store,
            tokens,
            sealed,
            platforms,
            engine: tune(builder).build(),
        })
    }
}
