//! [`SqliteStore`]: deliveries and sealed tokens in one SQLite file (feature `sqlite`).
//!
//! The file is opened in WAL mode, so readers never block the writer. Writes go through one
//! connection per process (SQLite has one writer anyway; queueing in the pool is cheaper than
//! SQLite's busy-wait), and reads through a small pool of read-only connections. Several
//! processes may share a file: a writer waits up to the busy timeout for the others.
//!
//! Every state change is one `BEGIN IMMEDIATE` transaction that also appends its history row
//! and, when there is one, its outbox event. A claim is one
//! `UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING …` statement over a partial index that
//! holds only due, unleased rows.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Executor, Row, Sqlite, SqliteConnection};
use tokio::sync::Notify;
use uuid::Uuid;

use super::common::{
    BatchWrite, Batcher, DELIVERY_COLUMNS, Migration, OpResult, Step, TERMINAL_STATES, WriteOp,
    apply_batch, check_not_newer, corrupt, db, due_condition, from_json, from_json_opt,
    from_micros, lease_until, micros, parse_kind, parse_platform, parse_state, to_json,
    to_json_opt, to_u32, trunc, trunc_transition,
};
use crate::auth::{AccountKey, SealedToken, SealedTokenStore};
use crate::error::{Error, ErrorKind, Result};
use crate::platform::Platform;
use crate::post::Target;
use crate::schedule::{
    CancelOutcome, Delivery, DeliveryFilter, Event, Fenced, HistoryEntry, Lease, OutboxEvent,
    PurgeReport, RescheduleOutcome, Rescued, ScheduleStore, TenantExport, Transition,
};

/// The embedded schema, applied in order when a store opens.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    sql: include_str!("../../migrations/sqlite/0001_init.sql"),
}];

/// How hard SQLite works to make a commit survive a power cut (its `synchronous` setting).
///
/// Both settings survive a crash of the process (the case the scheduler's guarantees are about:
/// a worker killed at any point). They differ only when the machine itself loses power or the
/// kernel crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// `synchronous = NORMAL` (the default): commits are written to the operating system at
    /// once and flushed to disk at each WAL checkpoint. A power cut may undo the last moments
    /// of commits; the database is never corrupted. About 20× the commit rate of `Full` on a
    /// typical virtual disk.
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit waits for the disk. Nothing committed is ever lost,
    /// at the cost of one flush per state change.
    Full,
}

impl Synchronous {
    fn sqlx(self) -> SqliteSynchronous {
        match self {
            Synchronous::Normal => SqliteSynchronous::Normal,
            Synchronous::Full => SqliteSynchronous::Full,
        }
    }
}

/// Options for [`SqliteStore`]; made by [`SqliteStore::builder`].
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    target: String,
    synchronous: Synchronous,
    busy_timeout: Duration,
    readers: u32,
}

impl SqliteStoreBuilder {
    /// The commit durability (default [`Synchronous::Normal`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How long a write waits for another process holding the file's write lock before it
    /// fails (default 10 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How many read-only connections to keep (default 4).
    pub fn readers(mut self, readers: u32) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// Opens (creating it if missing) the database and applies the embedded migrations.
    ///
    /// ```no_run
    /// # async fn run() -> socialpub_core::Result<()> {
    /// use socialpub_core::store::{SqliteStore, Synchronous};
    ///
    /// let store = SqliteStore::builder("sqlite://socialpub.db")
    ///     .synchronous(Synchronous::Full)
    ///     .open()
    ///     .await?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub async fn open(self) -> Result<SqliteStore> {
        let path = parse_target(&self.target)?;
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(self.synchronous.sqlx())
            .busy_timeout(self.busy_timeout)
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(self.busy_timeout + Duration::from_secs(20))
            .connect_with(base.clone().create_if_missing(true))
            .await
            .map_err(db("cannot open the SQLite database"))?;
        // One `BEGIN IMMEDIATE` transaction, so two processes opening a new file at once
        // apply the migrations once.
        let mut tx = writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db("cannot lock the SQLite database to migrate it"))?;
        migrate_locked(&mut tx).await?;
        tx.commit()
            .await
            .map_err(db("cannot finish migrating the SQLite database"))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(self.readers)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base.read_only(true))
            .await
            .map_err(db("cannot open the SQLite database for reading"))?;
        tracing::debug!(path = %path.display(), "opened SQLite store");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: writer.clone(),
                reader,
                wake: Arc::new(Notify::new()),
                batcher: Batcher::start(Arc::new(BatchWriter {
                    writer: writer.clone(),
                })),
            }),
        })
    }
}

/// `sqlite://path`, `sqlite:path` or a plain path, as a file path.
fn parse_target(target: &str) -> Result<PathBuf> {
    let rest = target
        .strip_prefix("sqlite://")
        .or_else(|| target.strip_prefix("sqlite:"))
        .unwrap_or(target);
    // Query parameters (`?mode=rwc`) are sqlx conventions; the store sets its own options.
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return Err(Error::invalid_input(format!(
            "`{target}` is not a SQLite file path (for a store in memory, use the in-memory \
             schedule store)"
        )));
    }
    Ok(PathBuf::from(path))
}

/// Applies the migrations the file lacks (inside the caller's write transaction).
async fn migrate_locked(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS socialpub_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .map_err(db("cannot create the migrations table"))?;
    let applied: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM socialpub_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(db("cannot read the schema version"))?
        .try_get(0)
        .map_err(db("cannot read the schema version"))?;
    check_not_newer(applied, MIGRATIONS, "SQLite")?;
    for m in MIGRATIONS.iter().filter(|m| m.version > applied) {
        (&mut *conn).execute(m.sql).await.map_err(|e| {
            Error::storage(
                format!("SQLite migration {} ({}) failed: {e}", m.version, m.name),
                e,
            )
        })?;
        sqlx::query(
            "INSERT INTO socialpub_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(micros(Utc::now()))
        .execute(&mut *conn)
        .await
        .map_err(db("cannot record a migration"))?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied SQLite migration"
        );
    }
    Ok(())
}

/// Deliveries, their history, the event outbox and sealed tokens in one SQLite file.
///
/// Cheap to clone (the clones share the connections). Implements
/// [`SealedTokenStore`] (wrap it in [`crate::auth::EncryptedTokenStore`]) and the scheduler's
/// store trait.
///
/// ```no_run
/// # async fn run() -> socialpub_core::Result<()> {
/// use socialpub_core::auth::{EncryptedTokenStore, EncryptionKey, KeyRing};
/// use socialpub_core::store::SqliteStore;
///
/// let store = SqliteStore::open("sqlite://socialpub.db").await?;
/// let key = EncryptionKey::from_base64(&std::env::var("SOCIALPUB_TOKEN_KEY").unwrap_or_default())?;
/// let tokens = EncryptedTokenStore::new(store.clone(), KeyRing::new("k1", key));
/// # let _ = tokens; Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: SqlitePool,
    reader: SqlitePool,
    /// Fired after a write that may make something due sooner (this process only: SQLite has
    /// no cross-process signal; other processes find it when they next poll).
    wake: Arc<Notify>,
    /// Group commit of transitions and commit points.
    batcher: Option<Batcher>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Options for the database at `target`: `sqlite://path`, `sqlite:path` or a plain path.
    pub fn builder(target: impl Into<String>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            target: target.into(),
            synchronous: Synchronous::default(),
            busy_timeout: Duration::from_secs(10),
            readers: 4,
        }
    }

    /// Opens (creating it if missing) the database at `target` with the default options and
    /// applies the embedded migrations.
    ///
    /// ```no_run
    /// # async fn run() -> socialpub_core::Result<()> {
    /// let store = socialpub_core::store::SqliteStore::open("sqlite://socialpub.db").await?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub async fn open(target: impl Into<String>) -> Result<Self> {
        Self::builder(target).open().await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The schema version the file is at.
    pub async fn schema_version(&self) -> Result<i64> {
        sqlx::query("SELECT COALESCE(MAX(version), 0) FROM socialpub_migrations")
            .fetch_one(&self.inner.reader)
            .await
            .map_err(db("cannot read the schema version"))?
            .try_get(0)
            .map_err(db("cannot read the schema version"))
    }

    /// Closes the connections, waiting for writes in progress. Later calls fail.
    pub async fn close(&self) {
        self.inner.reader.close().await;
        self.inner.writer.close().await;
    }
}

fn account_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<AccountKey> {
    let tenant: String = row.try_get(0).map_err(db("cannot read a token row"))?;
    let platform: String = row.try_get(1).map_err(db("cannot read a token row"))?;
    let account_id: String = row.try_get(2).map_err(db("cannot read a token row"))?;
    let platform = Platform::from_str(&platform).map_err(|_| {
        Error::new(
            ErrorKind::Storage,
            format!("a stored token has an unknown platform `{platform}`"),
        )
    })?;
    Ok(AccountKey::new(tenant, platform, account_id))
}

#[async_trait]
impl SealedTokenStore for SqliteStore {
    async fn get_sealed(&self, key: &AccountKey) -> Result<Option<SealedToken>> {
        let row = sqlx::query(
            "SELECT key_id, ciphertext FROM socialpub_tokens
             WHERE tenant = ? AND platform = ? AND account_id = ?",
        )
        .bind(&key.tenant)
        .bind(key.platform.as_str())
        .bind(&key.account_id)
        .fetch_optional(&self.inner.reader)
        .await
        .map_err(db("cannot read a token"))?;
        row.map(|r| {
            Ok(SealedToken {
                key_id: r.try_get(0).map_err(db("cannot read a token"))?,
                ciphertext: r.try_get(1).map_err(db("cannot read a token"))?,
            })
        })
        .transpose()
    }

    async fn put_sealed(&self, key: &AccountKey, sealed: SealedToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO socialpub_tokens
                 (tenant, platform, account_id, key_id, ciphertext, updated_at)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant, platform, account_id) DO UPDATE SET
                 key_id = excluded.key_id, ciphertext = excluded.ciphertext,
                 updated_at = excluded.updated_at",
        )
        .bind(&key.tenant)
        .bind(key.platform.as_str())
        .bind(&key.account_id)
        .bind(&sealed.key_id)
        .bind(&sealed.ciphertext)
        .bind(micros(Utc::now()))
        .execute(&self.inner.writer)
        .await
        .map_err(db("cannot store a token"))?;
        Ok(())
    }

    async fn delete_sealed(&self, key: &AccountKey) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM socialpub_tokens WHERE tenant = ? AND platform = ? AND account_id = ?",
        )
        .bind(&key.tenant)
        .bind(key.platform.as_str())
        .bind(&key.account_id)
        .execute(&self.inner.writer)
        .await
        .map_err(db("cannot delete a token"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_sealed(&self, tenant: Option<&str>) -> Result<Vec<AccountKey>> {
        let rows = sqlx::query(
            "SELECT tenant, platform, account_id FROM socialpub_tokens
             WHERE ?1 IS NULL OR tenant = ?1
             ORDER BY tenant, platform, account_id",
        )
        .bind(tenant)
        .fetch_all(&self.inner.reader)
        .await
        .map_err(db("cannot list tokens"))?;
        rows.iter().map(account_from_row).collect()
    }
}

fn col<'r, T>(row: &'r SqliteRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(name)
        .map_err(|e| Error::storage(format!("cannot read column {name}: {e}"), e))
}

fn time(row: &SqliteRow, name: &str) -> Result<DateTime<Utc>> {
    from_micros(name, col(row, name)?)
}

fn time_opt(row: &SqliteRow, name: &str) -> Result<Option<DateTime<Utc>>> {
    col::<Option<i64>>(row, name)?
        .map(|us| from_micros(name, us))
        .transpose()
}

fn delivery_from_row(row: &SqliteRow) -> Result<Delivery> {
    let fence: i64 = col(row, "fence")?;
    let lease = match col::<Option<String>>(row, "lease_owner")? {
        Some(owner) => Some(Lease {
            owner,
            fence,
            expires_at: time_opt(row, "lease_expires_at")?
                .ok_or_else(|| corrupt("a lease without an expiry"))?,
        }),
        None => None,
    };
    Ok(Delivery {
        id: col(row, "id")?,
        post_id: col(row, "post_id")?,
        tenant: col(row, "tenant")?,
        target: Target::new(
            parse_platform(&col::<String>(row, "platform")?)?,
            col::<String>(row, "account_id")?,
        ),
        post: from_json("post", &col::<String>(row, "post")?)?,
        state: parse_state("state", &col::<String>(row, "state")?)?,
        due_at: time(row, "due_at")?,
        run_at: time_opt(row, "run_at")?,
        attempt: to_u32("attempt", col(row, "attempt")?)?,
        max_attempts: to_u32("max_attempts", col(row, "max_attempts")?)?,
        deadline: time_opt(row, "deadline")?,
        fence,
        lease,
        checkpoint: from_json_opt(
            "checkpoint",
            col::<Option<String>>(row, "checkpoint")?.as_deref(),
        )?,
        committed_at: time_opt(row, "committed_at")?,
        receipt: from_json_opt("receipt", col::<Option<String>>(row, "receipt")?.as_deref())?,
        last_error: from_json_opt(
            "last_error",
            col::<Option<String>>(row, "last_error")?.as_deref(),
        )?,
        had_failure: col(row, "had_failure")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

fn history_from_row(row: &SqliteRow) -> Result<HistoryEntry> {
    Ok(HistoryEntry {
        delivery_id: col(row, "delivery_id")?,
        at: time(row, "at")?,
        from: col::<Option<String>>(row, "from_state")?
            .map(|s| parse_state("from_state", &s))
            .transpose()?,
        to: parse_state("to_state", &col::<String>(row, "to_state")?)?,
        attempt: to_u32("attempt", col(row, "attempt")?)?,
        worker: col(row, "worker")?,
        error_kind: col::<Option<String>>(row, "error_kind")?
            .map(|s| parse_kind(&s))
            .transpose()?,
        message: col(row, "message")?,
    })
}

fn event_from_row(row: &SqliteRow) -> Result<OutboxEvent> {
    Ok(OutboxEvent {
        seq: col(row, "seq")?,
        event: from_json("payload", &col::<String>(row, "payload")?)?,
    })
}

/// Writes back everything a transition may change. The fence is left alone: only a claim
/// changes it (and fires the claim's history trigger).
async fn update_delivery(conn: &mut SqliteConnection, d: &Delivery) -> Result<()> {
    sqlx::query(
        "UPDATE socialpub_deliveries SET state = ?, due_at = ?, run_at = ?, attempt = ?,
             max_attempts = ?, deadline = ?, lease_owner = ?, lease_expires_at = ?,
             checkpoint = ?, committed_at = ?, receipt = ?, last_error = ?, had_failure = ?,
             updated_at = ?
         WHERE id = ?",
    )
    .bind(d.state.as_str())
    .bind(micros(d.due_at))
    .bind(d.run_at.map(micros))
    .bind(i64::from(d.attempt))
    .bind(i64::from(d.max_attempts))
    .bind(d.deadline.map(micros))
    .bind(d.lease.as_ref().map(|l| l.owner.as_str()))
    .bind(d.lease.as_ref().map(|l| micros(l.expires_at)))
    .bind(to_json_opt(d.checkpoint.as_ref())?)
    .bind(d.committed_at.map(micros))
    .bind(to_json_opt(d.receipt.as_ref())?)
    .bind(to_json_opt(d.last_error.as_ref())?)
    .bind(d.had_failure)
    .bind(micros(d.updated_at))
    .bind(d.id)
    .execute(&mut *conn)
    .await
    .map_err(db("cannot update a delivery"))?;
    Ok(())
}

async fn insert_history(conn: &mut SqliteConnection, tenant: &str, h: &HistoryEntry) -> Result<()> {
    sqlx::query(
        "INSERT INTO socialpub_history
             (delivery_id, tenant, at, from_state, to_state, attempt, worker, error_kind, message)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(h.delivery_id)
    .bind(tenant)
    .bind(micros(h.at))
    .bind(h.from.map(|s| s.as_str()))
    .bind(h.to.as_str())
    .bind(i64::from(h.attempt))
    .bind(h.worker.as_deref())
    .bind(h.error_kind.map(|k| k.as_str()))
    .bind(h.message.as_deref())
    .execute(&mut *conn)
    .await
    .map_err(db("cannot append a history entry"))?;
    Ok(())
}

async fn insert_event(conn: &mut SqliteConnection, e: &Event) -> Result<()> {
    sqlx::query(
        "INSERT INTO socialpub_outbox (event_id, tenant, kind, delivery_id, at, payload)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(e.id)
    .bind(&e.tenant)
    .bind(e.kind.as_str())
    .bind(e.delivery_id)
    .bind(micros(e.at))
    .bind(to_json(e)?)
    .execute(&mut *conn)
    .await
    .map_err(db("cannot append an event"))?;
    Ok(())
}

async fn select_delivery(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<Delivery>> {
    let row = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db("cannot read a delivery"))?;
    row.as_ref().map(delivery_from_row).transpose()
}

impl SqliteStore {
    async fn begin(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        self.inner
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db("cannot start a SQLite write transaction"))
    }

    /// Reads delivery `id` (of `tenant`, when given) inside one write transaction, lets `f`
    /// apply a state-machine step to it, and writes back what changed with its history and
    /// events. `None` when there is no such delivery.
    async fn modify<R>(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        f: impl FnOnce(&mut Delivery) -> Result<Step<R>>,
    ) -> Result<Option<R>> {
        let mut tx = self.begin().await?;
        let Some(mut d) = select_delivery(&mut tx, id).await? else {
            return Ok(None);
        };
        if tenant.is_some_and(|t| t != d.tenant) {
            return Ok(None);
        }
        let step = f(&mut d)?;
        if step.changed {
            update_delivery(&mut tx, &d).await?;
            for h in &step.history {
                insert_history(&mut tx, &d.tenant, h).await?;
            }
            for e in &step.events {
                insert_event(&mut tx, e).await?;
            }
        }
        tx.commit()
            .await
            .map_err(db("cannot commit a SQLite write"))?;
        Ok(Some(step.out))
    }

    fn wake(&self) {
        self.inner.wake.notify_waiters();
    }

    /// A transition or commit point: through the group-commit task, or directly (a batch of
    /// one) when there is none.
    async fn write(&self, op: WriteOp) -> Result<Fenced<Delivery>> {
        let op = match &self.inner.batcher {
            Some(b) => match b.submit(op).await {
                Ok(result) => return result,
                Err(op) => op,
            },
            None => op,
        };
        let writer = BatchWriter {
            writer: self.inner.writer.clone(),
        };
        writer
            .write_batch(std::slice::from_ref(&op))
            .await?
            .pop()
            .unwrap_or(Ok(Fenced::Stale))
    }
}

/// Writes batches of transitions and commit points, each batch in one `BEGIN IMMEDIATE`
/// transaction of five statements whatever its size: rows are passed as JSON arrays.
struct BatchWriter {
    writer: SqlitePool,
}

fn hex(id: Uuid) -> String {
    id.simple().to_string()
}

fn delivery_json(d: &Delivery) -> Result<serde_json::Value> {
    Ok(serde_json::json!({
        "id": hex(d.id),
        "state": d.state.as_str(),
        "due_at": micros(d.due_at),
        "run_at": d.run_at.map(micros),
        "attempt": d.attempt,
        "max_attempts": d.max_attempts,
        "deadline": d.deadline.map(micros),
        "lease_owner": d.lease.as_ref().map(|l| l.owner.as_str()),
        "lease_expires_at": d.lease.as_ref().map(|l| micros(l.expires_at)),
        "checkpoint": to_json_opt(d.checkpoint.as_ref())?,
        "committed_at": d.committed_at.map(micros),
        "receipt": to_json_opt(d.receipt.as_ref())?,
        "last_error": to_json_opt(d.last_error.as_ref())?,
        "had_failure": d.had_failure,
        "updated_at": micros(d.updated_at),
    }))
}

fn history_json(tenant: &str, h: &HistoryEntry) -> serde_json::Value {
    serde_json::json!({
        "delivery_id": hex(h.delivery_id),
        "tenant": tenant,
        "at": micros(h.at),
        "from": h.from.map(|s| s.as_str()),
        "to": h.to.as_str(),
        "attempt": h.attempt,
        "worker": h.worker,
        "error_kind": h.error_kind.map(|k| k.as_str()),
        "message": h.message,
    })
}

fn event_json(e: &Event) -> Result<serde_json::Value> {
    Ok(serde_json::json!({
        "event_id": hex(e.id),
        "tenant": e.tenant,
        "kind": e.kind.as_str(),
        "delivery_id": e.delivery_id.map(hex),
        "at": micros(e.at),
        "payload": to_json(e)?,
    }))
}

/// Runs `f` on the writer connection; when it fails, ends whatever transaction it left open
/// (the statements below begin and commit their own, to spare round trips to SQLite's thread).
async fn on_writer<T>(
    pool: &SqlitePool,
    f: impl for<'c> FnOnce(
        &'c mut SqliteConnection,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T>> + Send + 'c>,
    >,
) -> Result<T> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(db("cannot get the SQLite writer connection"))?;
    let result = f(&mut conn).await;
    if result.is_err() && sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
        // "No transaction is active" is the usual answer; if it was anything else, the
        // connection's state is unknown: do not reuse it.
        conn.close_on_drop();
    }
    result
}

/// Inserts new deliveries, their first history entries and their events (JSON arrays) and
/// commits, in one call to SQLite's thread.
const INSERT_AND_COMMIT: &str = "
    BEGIN IMMEDIATE;
    INSERT INTO socialpub_deliveries (id, post_id, tenant, platform, account_id, post, state,
        due_at, run_at, attempt, max_attempts, deadline, fence, lease_owner, lease_expires_at,
        checkpoint, committed_at, receipt, last_error, had_failure, created_at, updated_at)
    SELECT unhex(value ->> 'id'), unhex(value ->> 'post_id'), value ->> 'tenant',
        value ->> 'platform', value ->> 'account_id', value ->> 'post', value ->> 'state',
        value ->> 'due_at', value ->> 'run_at', value ->> 'attempt', value ->> 'max_attempts',
        value ->> 'deadline', value ->> 'fence', value ->> 'lease_owner',
        value ->> 'lease_expires_at', value ->> 'checkpoint', value ->> 'committed_at',
        value ->> 'receipt', value ->> 'last_error', value ->> 'had_failure',
        value ->> 'created_at', value ->> 'updated_at'
    FROM json_each(?1) ORDER BY key;
    INSERT INTO socialpub_history (delivery_id, tenant, at, from_state, to_state, attempt,
        worker, error_kind, message)
    SELECT unhex(value ->> 'delivery_id'), value ->> 'tenant', value ->> 'at',
        value ->> 'from', value ->> 'to', value ->> 'attempt', value ->> 'worker',
        value ->> 'error_kind', value ->> 'message'
    FROM json_each(?2) ORDER BY key;
    INSERT INTO socialpub_outbox (event_id, tenant, kind, delivery_id, at, payload)
    SELECT unhex(value ->> 'event_id'), value ->> 'tenant', value ->> 'kind',
        unhex(value ->> 'delivery_id'), value ->> 'at', value ->> 'payload'
    FROM json_each(?3) ORDER BY key;
    COMMIT";

/// Writes changed deliveries, history entries and events (JSON arrays; empty ones write
/// nothing) and commits, in one call to SQLite's thread.
const WRITE_AND_COMMIT: &str = "
    UPDATE socialpub_deliveries AS d SET
        state = j.value ->> 'state', due_at = j.value ->> 'due_at',
        run_at = j.value ->> 'run_at', attempt = j.value ->> 'attempt',
        max_attempts = j.value ->> 'max_attempts', deadline = j.value ->> 'deadline',
        lease_owner = j.value ->> 'lease_owner',
        lease_expires_at = j.value ->> 'lease_expires_at',
        checkpoint = j.value ->> 'checkpoint', committed_at = j.value ->> 'committed_at',
        receipt = j.value ->> 'receipt', last_error = j.value ->> 'last_error',
        had_failure = j.value ->> 'had_failure', updated_at = j.value ->> 'updated_at'
    FROM json_each(?1) AS j
    WHERE d.id = unhex(j.value ->> 'id');
    INSERT INTO socialpub_history (delivery_id, tenant, at, from_state, to_state, attempt,
        worker, error_kind, message)
    SELECT unhex(value ->> 'delivery_id'), value ->> 'tenant', value ->> 'at',
        value ->> 'from', value ->> 'to', value ->> 'attempt', value ->> 'worker',
        value ->> 'error_kind', value ->> 'message'
    FROM json_each(?2) ORDER BY key;
    INSERT INTO socialpub_outbox (event_id, tenant, kind, delivery_id, at, payload)
    SELECT unhex(value ->> 'event_id'), value ->> 'tenant', value ->> 'kind',
        unhex(value ->> 'delivery_id'), value ->> 'at', value ->> 'payload'
    FROM json_each(?3) ORDER BY key;
    COMMIT";

#[async_trait]
impl BatchWrite for BatchWriter {
    async fn write_batch(&self, ops: &[WriteOp]) -> Result<Vec<OpResult>> {
        let mut ids: Vec<String> = ops.iter().map(|op| hex(op.id())).collect();
        ids.sort_unstable();
        ids.dedup();
        let ids = to_json(&ids)?;
        let ops = ops.to_vec();
        on_writer(&self.writer, move |conn| {
            Box::pin(async move {
                // Two calls in all: lock and read, then write and commit.
                let rows = sqlx::query(&format!(
                    "BEGIN IMMEDIATE;
                     SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries
                     WHERE id IN (SELECT unhex(value) FROM json_each(?1))"
                ))
                .bind(ids)
                .fetch_all(&mut *conn)
                .await
                .map_err(db("cannot read deliveries"))?;
                let mut by_id = std::collections::HashMap::with_capacity(rows.len());
                for row in &rows {
                    let d = delivery_from_row(row)?;
                    by_id.insert(d.id, d);
                }
                let (results, changed, history, events) = apply_batch(&ops, by_id);
                if changed.is_empty() {
                    sqlx::query("COMMIT")
                        .execute(&mut *conn)
                        .await
                        .map_err(db("cannot end a SQLite transaction"))?;
                    return Ok(results);
                }
                let deliveries = changed
                    .iter()
                    .map(delivery_json)
                    .collect::<Result<Vec<_>>>()?;
                let history: Vec<_> = history.iter().map(|(t, h)| history_json(t, h)).collect();
                let events = events.iter().map(event_json).collect::<Result<Vec<_>>>()?;
                sqlx::query(WRITE_AND_COMMIT)
                    .bind(to_json(&deliveries)?)
                    .bind(to_json(&history)?)
                    .bind(to_json(&events)?)
                    .execute(&mut *conn)
                    .await
                    .map_err(db("cannot write deliveries"))?;
                Ok(results)
            })
        })
        .await
    }
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn insert(&self, deliveries: &[Delivery], events: &[Event]) -> Result<()> {
        let mut rows = Vec::with_capacity(deliveries.len());
        let mut history = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let mut row = delivery_json(d)?;
            if let Some(o) = row.as_object_mut() {
                o.insert("post_id".into(), hex(d.post_id).into());
                o.insert("tenant".into(), d.tenant.clone().into());
                o.insert("platform".into(), d.target.platform.as_str().into());
                o.insert("account_id".into(), d.target.account_id.clone().into());
                o.insert("post".into(), to_json(&d.post)?.into());
                o.insert("fence".into(), d.fence.into());
                o.insert("created_at".into(), micros(d.created_at).into());
            }
            rows.push(row);
            history.push(history_json(&d.tenant, &d.inserted_entry()));
        }
        let events = events.iter().map(event_json).collect::<Result<Vec<_>>>()?;
        let (rows, history, events) = (to_json(&rows)?, to_json(&history)?, to_json(&events)?);
        on_writer(&self.inner.writer, move |conn| {
            Box::pin(async move {
                sqlx::query(INSERT_AND_COMMIT)
                    .bind(rows)
                    .bind(history)
                    .bind(events)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| {
                        if e.as_database_error()
                            .is_some_and(|d| d.is_unique_violation())
                        {
                            Error::invalid_input("a delivery with one of these ids already exists")
                        } else {
                            Error::storage(format!("cannot insert deliveries: {e}"), e)
                        }
                    })
            })
        })
        .await?;
        self.wake();
        Ok(())
    }

    async fn claim_due(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = trunc(now);
        let until = lease_until(now, lease);
        // One statement inside `BEGIN IMMEDIATE … COMMIT`, sent as one call; the
        // `socialpub_claim_history` trigger writes the history rows.
        let sql = format!(
            "BEGIN IMMEDIATE;
             UPDATE socialpub_deliveries SET
                 claimed_due_at = run_at, fence = fence + 1, lease_owner = ?1,
                 lease_expires_at = ?2, run_at = NULL, updated_at = ?3,
                 state = CASE WHEN state IN ('scheduled', 'retry_waiting') THEN 'claimed'
                              ELSE state END,
                 attempt = CASE WHEN state IN ('scheduled', 'retry_waiting') THEN attempt + 1
                                ELSE attempt END
             WHERE id IN (SELECT id FROM socialpub_deliveries
                          WHERE {} AND run_at <= ?3
                          ORDER BY run_at, id LIMIT ?4)
             RETURNING {DELIVERY_COLUMNS}, claimed_due_at;
             COMMIT",
            due_condition!()
        );
        let worker = worker.to_owned();
        let rows = on_writer(&self.inner.writer, move |conn| {
            Box::pin(async move {
                sqlx::query(&sql)
                    .bind(worker)
                    .bind(micros(until))
                    .bind(micros(now))
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db("cannot claim deliveries"))
            })
        })
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let order: Option<i64> = col(row, "claimed_due_at")?;
            out.push((order, delivery_from_row(row)?));
        }
        out.sort_by_key(|(order, d)| (*order, d.id));
        Ok(out.into_iter().map(|(_, d)| d).collect())
    }

    async fn renew_lease(&self, id: Uuid, fence: i64, until: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE socialpub_deliveries SET lease_expires_at = MAX(lease_expires_at, ?)
             WHERE id = ? AND fence = ? AND lease_owner IS NOT NULL",
        )
        .bind(micros(trunc(until)))
        .bind(id)
        .bind(fence)
        .execute(&self.inner.writer)
        .await
        .map_err(db("cannot renew a lease"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn transition(&self, transition: &Transition) -> Result<Fenced<Delivery>> {
        let out = self
            .write(WriteOp::Transition(Box::new(trunc_transition(transition))))
            .await?;
        if matches!(&out, Fenced::Applied(d) if d.run_at.is_some()) {
            self.wake();
        }
        Ok(out)
    }

    async fn commit_point(
        &self,
        id: Uuid,
        fence: i64,
        at: DateTime<Utc>,
    ) -> Result<Fenced<Delivery>> {
        self.write(WriteOp::CommitPoint {
            id,
            fence,
            at: trunc(at),
        })
        .await
    }

    async fn save_checkpoint(
        &self,
        id: Uuid,
        fence: i64,
        checkpoint: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<Fenced<()>> {
        let done = sqlx::query(
            "UPDATE socialpub_deliveries SET checkpoint = ?, updated_at = ?
             WHERE id = ? AND fence = ? AND lease_owner IS NOT NULL",
        )
        .bind(to_json(checkpoint)?)
        .bind(micros(trunc(at)))
        .bind(id)
        .bind(fence)
        .execute(&self.inner.writer)
        .await
        .map_err(db("cannot save a checkpoint"))?;
        Ok(if done.rows_affected() > 0 {
            Fenced::Applied(())
        } else {
            Fenced::Stale
        })
    }

    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<Vec<Rescued>> {
        let now = trunc(now);
        // Workers call this every round: look before taking the write lock.
        let expired: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM socialpub_deliveries
             WHERE lease_owner IS NOT NULL AND lease_expires_at <= ? LIMIT 1",
        )
        .bind(micros(now))
        .fetch_optional(&self.inner.reader)
        .await
        .map_err(db("cannot look for expired leases"))?;
        if expired.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries
             WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?
             ORDER BY lease_expires_at, id"
        ))
        .bind(micros(now))
        .fetch_all(&mut *tx)
        .await
        .map_err(db("cannot find expired leases"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut d = delivery_from_row(row)?;
            if let Some((entry, event)) = d.apply_rescue(now) {
                update_delivery(&mut tx, &d).await?;
                insert_history(&mut tx, &d.tenant, &entry).await?;
                if let Some(e) = &event {
                    insert_event(&mut tx, e).await?;
                }
                out.push(Rescued { delivery: d, event });
            }
        }
        tx.commit().await.map_err(db("cannot commit a rescue"))?;
        if !out.is_empty() {
            self.wake();
        }
        Ok(out)
    }

    async fn cancel(&self, tenant: &str, id: Uuid, at: DateTime<Utc>) -> Result<CancelOutcome> {
        let at = trunc(at);
        let out = self
            .modify(id, Some(tenant), |d| {
                let (outcome, entry) = d.apply_cancel(at);
                Ok(match entry {
                    Some(h) => Step::changed(outcome, Some(h), None),
                    None => Step::unchanged(outcome),
                })
            })
            .await?;
        Ok(out.unwrap_or(CancelOutcome::NotFound))
    }

    async fn reschedule(
        &self,
        tenant: &str,
        id: Uuid,
        due_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<RescheduleOutcome> {
        let (due_at, at) = (trunc(due_at), trunc(at));
        let out = self
            .modify(id, Some(tenant), |d| {
                let (outcome, entry) = d.apply_reschedule(due_at, at);
                Ok(match entry {
                    Some(h) => Step::changed(outcome, Some(h), None),
                    None => Step::unchanged(outcome),
                })
            })
            .await?
            .unwrap_or(RescheduleOutcome::NotFound);
        if matches!(out, RescheduleOutcome::Rescheduled(_)) {
            self.wake();
        }
        Ok(out)
    }

    async fn get(&self, tenant: &str, id: Uuid) -> Result<Option<Delivery>> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries WHERE id = ? AND tenant = ?"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.inner.reader)
        .await
        .map_err(db("cannot read a delivery"))?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    async fn history(&self, tenant: &str, id: Uuid) -> Result<Vec<HistoryEntry>> {
        let rows = sqlx::query(
            "SELECT delivery_id, at, from_state, to_state, attempt, worker, error_kind, message
             FROM socialpub_history WHERE delivery_id = ? AND tenant = ? ORDER BY seq",
        )
        .bind(id)
        .bind(tenant)
        .fetch_all(&self.inner.reader)
        .await
        .map_err(db("cannot read a delivery's history"))?;
        rows.iter().map(history_from_row).collect()
    }

    async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        let states = if filter.states.is_empty() {
            None
        } else {
            Some(to_json(
                &filter.states.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            )?)
        };
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries
             WHERE tenant = ?1
               AND (?2 IS NULL OR state IN (SELECT value FROM json_each(?2)))
               AND (?3 IS NULL OR due_at >= ?3)
               AND (?4 IS NULL OR due_at < ?4)
               AND (?5 IS NULL OR post_id = ?5)
             ORDER BY due_at, id LIMIT ?6"
        ))
        .bind(&filter.tenant)
        .bind(states)
        .bind(filter.due_from.map(micros))
        .bind(filter.due_before.map(micros))
        .bind(filter.post_id)
        .bind(i64::try_from(filter.limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.reader)
        .await
        .map_err(db("cannot list deliveries"))?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(concat!(
            "SELECT (SELECT MIN(run_at) FROM socialpub_deliveries WHERE ",
            due_condition!(),
            "), (SELECT MIN(lease_expires_at) FROM socialpub_deliveries ",
            "WHERE lease_owner IS NOT NULL)"
        ))
        .fetch_one(&self.inner.reader)
        .await
        .map_err(db("cannot read the next due time"))?;
        let due: Option<i64> = row
            .try_get(0)
            .map_err(db("cannot read the next due time"))?;
        let lease: Option<i64> = row
            .try_get(1)
            .map_err(db("cannot read the next due time"))?;
        let next = match (due, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|us| from_micros("run_at", us)).transpose()
    }

    async fn append_event(&self, event: &Event) -> Result<()> {
        let mut conn = self
            .inner
            .writer
            .acquire()
            .await
            .map_err(db("cannot append an event"))?;
        insert_event(&mut conn, event).await
    }

    async fn events(&self, after: Option<i64>, limit: usize) -> Result<Vec<OutboxEvent>> {
        let rows = sqlx::query(
            "SELECT seq, payload FROM socialpub_outbox WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after.unwrap_or(i64::MIN))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.reader)
        .await
        .map_err(db("cannot read the outbox"))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn ack_events(&self, seqs: &[i64]) -> Result<u64> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            "DELETE FROM socialpub_outbox WHERE seq IN (SELECT value FROM json_each(?))",
        )
        .bind(to_json(seqs)?)
        .execute(&self.inner.writer)
        .await
        .map_err(db("cannot acknowledge events"))?;
        Ok(done.rows_affected())
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<PurgeReport> {
        let before = micros(before);
        let mut tx = self.begin().await?;
        sqlx::query(&format!(
            "DELETE FROM socialpub_history WHERE delivery_id IN (
                 SELECT id FROM socialpub_deliveries
                 WHERE state IN {TERMINAL_STATES} AND updated_at < ?)"
        ))
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(db("cannot purge history"))?;
        let deliveries = sqlx::query(&format!(
            "DELETE FROM socialpub_deliveries WHERE state IN {TERMINAL_STATES} AND updated_at < ?"
        ))
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(db("cannot purge deliveries"))?
        .rows_affected();
        let events = sqlx::query("DELETE FROM socialpub_outbox WHERE at < ?")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(db("cannot purge events"))?
            .rows_affected();
        tx.commit().await.map_err(db("cannot commit a purge"))?;
        Ok(PurgeReport { deliveries, events })
    }

    async fn export_tenant(&self, tenant: &str) -> Result<TenantExport> {
        // One read transaction, so the three parts agree.
        let mut tx = self
            .inner
            .reader
            .begin()
            .await
            .map_err(db("cannot start an export"))?;
        let deliveries = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries WHERE tenant = ?
             ORDER BY due_at, id"
        ))
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("cannot export deliveries"))?
        .iter()
        .map(delivery_from_row)
        .collect::<Result<Vec<_>>>()?;
        let history = sqlx::query(
            "SELECT h.delivery_id, h.at, h.from_state, h.to_state, h.attempt, h.worker,
                    h.error_kind, h.message
             FROM socialpub_history h JOIN socialpub_deliveries d ON d.id = h.delivery_id
             WHERE d.tenant = ? ORDER BY d.due_at, d.id, h.seq",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("cannot export history"))?
        .iter()
        .map(history_from_row)
        .collect::<Result<Vec<_>>>()?;
        let events =
            sqlx::query("SELECT seq, payload FROM socialpub_outbox WHERE tenant = ? ORDER BY seq")
                .bind(tenant)
                .fetch_all(&mut *tx)
                .await
                .map_err(db("cannot export events"))?
                .iter()
                .map(|r| event_from_row(r).map(|e| e.event))
                .collect::<Result<Vec<_>>>()?;
        tx.commit().await.map_err(db("cannot finish an export"))?;
        Ok(TenantExport {
            tenant: tenant.to_owned(),
            deliveries,
            history,
            events,
        })
    }

    async fn delete_tenant(&self, tenant: &str) -> Result<u64> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM socialpub_history WHERE delivery_id IN (
                 SELECT id FROM socialpub_deliveries WHERE tenant = ?)",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .map_err(db("cannot delete a tenant's history"))?;
        let n = sqlx::query("DELETE FROM socialpub_deliveries WHERE tenant = ?")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .map_err(db("cannot delete a tenant's deliveries"))?
            .rows_affected();
        sqlx::query("DELETE FROM socialpub_outbox WHERE tenant = ?")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .map_err(db("cannot delete a tenant's events"))?;
        tx.commit()
            .await
            .map_err(db("cannot commit a tenant's deletion"))?;
        Ok(n)
    }

    fn wakeups(&self) -> Option<Arc<Notify>> {
        Some(self.inner.wake.clone())
    }
}
