//! [`PostgresStore`]: deliveries and sealed tokens in PostgreSQL (feature `postgres`), for many
//! workers in many processes on many machines.
//!
//! A claim is one `UPDATE … WHERE ctid = ANY(ARRAY(SELECT … FOR UPDATE SKIP LOCKED LIMIT n))`
//! statement over a partial index holding only due, unleased rows: workers never wait on each
//! other's rows and claiming stays flat as finished and future rows pile up. Every other state
//! change is one transaction that also appends its history row and outbox event. Scheduling a
//! delivery sooner than before sends a `NOTIFY`, which [`PostgresStore`] turns into a wake-up
//! of sleeping workers; polling stays correct on its own, so a pooler that breaks `LISTEN` only
//! costs latency.
//!
//! Migrations are embedded and applied on connect under an advisory lock, so several processes
//! starting at once apply them once.

mod batch;
mod insert;
mod listen;
mod rows;
mod schedule;
#[cfg(all(test, feature = "testkit"))]
mod tests;
mod tokens;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres};
use sqlx::{Connection, Executor, Row};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::common::{Batcher, DELIVERY_COLUMNS, Groups, Migration, Step, check_not_newer, db};
use crate::error::{Error, Result};
use crate::schedule::Delivery;
use batch::{BATCHES_IN_FLIGHT, BatchWriter, Held};
use insert::{InsertCall, insert_groups};
use rows::{delivery_from_row, write_step};

/// The embedded schema, applied in order on connect.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "lean_state_changes",
        sql: include_str!("../../../migrations/postgres/0002_lean_state_changes.sql"),
    },
    Migration {
        version: 3,
        name: "plain_json",
        sql: include_str!("../../../migrations/postgres/0003_plain_json.sql"),
    },
    Migration {
        version: 4,
        name: "account_slots",
        sql: include_str!("../../../migrations/postgres/0004_account_slots.sql"),
    },
];

/// The first half of the advisory-lock key that serializes migrations (the second is a hash
/// of the schema name): "spub".
const MIGRATION_LOCK: i32 = 0x7370_7562;

/// Options for [`PostgresStore`]; made by [`PostgresStore::builder`].
#[derive(Clone)]
pub struct PostgresStoreBuilder {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password.
        f.debug_struct("PostgresStoreBuilder")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl PostgresStoreBuilder {
    /// The schema holding socialpub's tables, created if missing (default: the connection's
    /// `search_path`, usually `public`). Letters, digits and `_` only.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The most connections the pool opens (default 10). One more is held open to listen for
    /// wake-ups while a worker sleeps.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a call waits for a free connection before it fails (default 30 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Connects and applies the embedded migrations.
    ///
    /// ```no_run
    /// # async fn run() -> socialpub_core::Result<()> {
    /// use socialpub_core::store::PostgresStore;
    ///
    /// let store = PostgresStore::builder("postgres://socialpub@db.internal/socialpub")
    ///     .schema("socialpub")
    ///     .max_connections(20)
    ///     .connect()
    ///     .await?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub async fn connect(self) -> Result<PostgresStore> {
        if let Some(s) = &self.schema
            && !valid_identifier(s)
        {
            return Err(Error::invalid_input(format!(
                "`{s}` is not a schema name socialpub accepts (letters, digits and `_`, at most \
                 40, not starting with a digit)"
            )));
        }
        let mut options = PgConnectOptions::from_str(&self.url).map_err(|e| {
            // sqlx's message names the part that is wrong, never the password.
            Error::storage(format!("the PostgreSQL URL is not valid: {e}"), e)
        })?;
        options = options.application_name("socialpub");
        if let Some(s) = &self.schema {
            options = options.options([("search_path", s.as_str())]);
        }
        {
            // Migrate on a connection of its own: its advisory lock dies with it if this
            // process does.
            let mut conn = PgConnection::connect_with(&options)
                .await
                .map_err(db("cannot connect to PostgreSQL"))?;
            let migrated = migrate(&mut conn, self.schema.as_deref()).await;
            let _ = conn.close().await;
            migrated?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(db("cannot connect to PostgreSQL"))?;
        let schema: String = sqlx::query("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .map_err(db("cannot read the current schema"))?
            .try_get(0)
            .map_err(db("cannot read the current schema"))?;
        tracing::debug!(schema = %schema, "connected PostgreSQL store");
        let channel = format!("socialpub_wake_{schema}");
        let held = Arc::new(Held::default());
        let batcher = Batcher::start(
            Arc::new(BatchWriter {
                pool: pool.clone(),
                held: held.clone(),
            }),
            BATCHES_IN_FLIGHT,
        );
        let inserts = insert_groups(pool.clone(), channel.clone());
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                schema,
                options,
                channel,
                wake: Arc::new(Notify::new()),
                listener: OnceLock::new(),
                batcher,
                held,
                inserts,
            }),
        })
    }
}

fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// Creates the schema and applies the migrations it lacks, each in its own transaction, under
/// a session advisory lock.
async fn migrate(conn: &mut PgConnection, schema: Option<&str>) -> Result<()> {
    let lock_name = schema.unwrap_or("");
    sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
        .bind(MIGRATION_LOCK)
        .bind(lock_name)
        .execute(&mut *conn)
        .await
        .map_err(db("cannot take the migration lock"))?;
    let result = migrate_locked(conn, schema).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind(MIGRATION_LOCK)
        .bind(lock_name)
        .execute(&mut *conn)
        .await
        .map_err(db("cannot release the migration lock"));
    result.and(unlocked.map(|_| ()))
}

async fn migrate_locked(conn: &mut PgConnection, schema: Option<&str>) -> Result<()> {
    if let Some(s) = schema {
        // Checked by `valid_identifier`; quoted so case is kept.
        (&mut *conn)
            .execute(format!("CREATE SCHEMA IF NOT EXISTS \"{s}\"").as_str())
            .await
            .map_err(db("cannot create the schema"))?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS socialpub_migrations (
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .map_err(db("cannot create the migrations table"))?;
    let applied: i64 =
        sqlx::query("SELECT COALESCE(MAX(version), 0)::BIGINT FROM socialpub_migrations")
            .fetch_one(&mut *conn)
            .await
            .map_err(db("cannot read the schema version"))?
            .try_get(0)
            .map_err(db("cannot read the schema version"))?;
    check_not_newer(applied, MIGRATIONS, "PostgreSQL")?;
    for m in MIGRATIONS.iter().filter(|m| m.version > applied) {
        let mut tx = conn.begin().await.map_err(db("cannot start a migration"))?;
        (&mut *tx).execute(m.sql).await.map_err(|e| {
            Error::storage(
                format!(
                    "PostgreSQL migration {} ({}) failed: {e}",
                    m.version, m.name
                ),
                e,
            )
        })?;
        sqlx::query(
            "INSERT INTO socialpub_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(Utc::now())
        .execute(&mut *tx)
        .await
        .map_err(db("cannot record a migration"))?;
        tx.commit().await.map_err(db("cannot commit a migration"))?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied PostgreSQL migration"
        );
    }
    Ok(())
}

/// Deliveries, their history, the event outbox and sealed tokens in a PostgreSQL schema.
///
/// Cheap to clone (the clones share the pool). Implements [`SealedTokenStore`] (wrap it in
/// [`crate::auth::EncryptedTokenStore`]) and the scheduler's store trait.
///
/// ```no_run
/// # async fn run() -> socialpub_core::Result<()> {
/// let store = socialpub_core::store::PostgresStore::connect("postgres://localhost/socialpub").await?;
/// # let _ = store; Ok(()) }
/// ```
///
/// [`SealedTokenStore`]: crate::auth::SealedTokenStore
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    schema: String,
    /// For the listener's own connection.
    options: PgConnectOptions,
    /// The `NOTIFY` channel of this schema.
    channel: String,
    /// Fired on a notification from any process, and after local writes.
    wake: Arc<Notify>,
    listener: OnceLock<JoinHandle<()>>,
    /// Group commit of transitions and commit points.
    batcher: Option<Batcher>,
    /// The rows this process holds leases on, as last claimed or written.
    held: Arc<Held>,
    /// Group commit of schedules.
    inserts: Option<Groups<InsertCall, ()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get() {
            task.abort();
        }
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Options for the database at `url` (`postgres://user:password@host:port/database`).
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.into(),
            schema: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
        }
    }

    /// Connects with the default options and applies the embedded migrations.
    ///
    /// ```no_run
    /// # async fn run() -> socialpub_core::Result<()> {
    /// let store = socialpub_core::store::PostgresStore::connect("postgres://localhost/socialpub").await?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub async fn connect(url: impl Into<String>) -> Result<Self> {
        Self::builder(url).connect().await
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The connection pool, e.g. to read the outbox in the application's own transaction.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64> {
        sqlx::query("SELECT COALESCE(MAX(version), 0)::BIGINT FROM socialpub_migrations")
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db("cannot read the schema version"))?
            .try_get(0)
            .map_err(db("cannot read the schema version"))
    }

    /// Closes the pool, waiting for calls in progress. Later calls fail.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }
}

impl PostgresStore {
    async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        self.inner
            .pool
            .begin()
            .await
            .map_err(db("cannot start a PostgreSQL transaction"))
    }

    /// Locks delivery `id` (of `tenant`, when given) with `SELECT … FOR UPDATE`, lets `f`
    /// apply a state-machine step to it, and writes back what changed with its history and
    /// events, in one transaction. `None` when there is no such delivery.
    async fn modify<R>(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        f: impl FnOnce(&mut Delivery) -> Result<Step<R>>,
    ) -> Result<Option<R>> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("cannot read a delivery"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut d = delivery_from_row(&row)?;
        if tenant.is_some_and(|t| t != d.tenant) {
            return Ok(None);
        }
        let step = f(&mut d)?;
        if !step.changed {
            // Nothing written: release the row lock without a commit record.
            tx.rollback()
                .await
                .map_err(db("cannot end a PostgreSQL transaction"))?;
            return Ok(Some(step.out));
        }
        write_step(&mut tx, &d, &step.history, &step.events).await?;
        tx.commit()
            .await
            .map_err(db("cannot commit a PostgreSQL write"))?;
        Ok(Some(step.out))
    }
}
