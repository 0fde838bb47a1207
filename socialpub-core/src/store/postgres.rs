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

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{
    PgArgumentBuffer, PgConnectOptions, PgConnection, PgHasArrayType, PgListener, PgPool,
    PgPoolOptions, PgRow, PgTypeInfo, Postgres,
};
use sqlx::types::Json;
use sqlx::{Connection, Executor, Row};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::common::{
    BatchWrite, Batcher, Changed, DELIVERY_COLUMNS, Groups, Migration, OpResult, Pending, Step,
    WriteOp, apply_batch, check_not_newer, corrupt, db, due_condition, lease_until, parse_kind,
    parse_platform, parse_state, terminal_states, to_u32, trunc, trunc_transition,
};
use crate::auth::{AccountKey, SealedToken, SealedTokenStore};
use crate::error::{Error, ErrorKind, Result};
use crate::platform::Platform;
use crate::post::{Post, Target};
use crate::publish::Receipt;
use crate::schedule::{
    CancelOutcome, Claimed, Delivery, DeliveryError, DeliveryFilter, Event, Fenced, HistoryEntry,
    Lease, NextTimes, OutboxEvent, PurgeReport, RescheduleOutcome, Rescued, ScheduleStore,
    TenantExport, Transition,
};

/// The embedded schema, applied in order on connect.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "lean_state_changes",
        sql: include_str!("../../migrations/postgres/0002_lean_state_changes.sql"),
    },
    Migration {
        version: 3,
        name: "plain_json",
        sql: include_str!("../../migrations/postgres/0003_plain_json.sql"),
    },
];

/// [`DELIVERY_COLUMNS`] of `socialpub_deliveries d`, for queries that join its lookup keys.
const KEYED_COLUMNS: &str = "d.id, d.post_id, d.tenant, d.platform, d.account_id, d.post, \
    d.state, d.due_at, d.run_at, d.attempt, d.max_attempts, d.deadline, d.fence, d.lease_owner, \
    d.lease_expires_at, d.checkpoint, d.committed_at, d.receipt, d.last_error, d.had_failure, \
    d.created_at, d.updated_at";

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

fn account_from_row(row: &sqlx::postgres::PgRow) -> Result<AccountKey> {
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
impl SealedTokenStore for PostgresStore {
    async fn get_sealed(&self, key: &AccountKey) -> Result<Option<SealedToken>> {
        let row = sqlx::query(
            "SELECT key_id, ciphertext FROM socialpub_tokens
             WHERE tenant = $1 AND platform = $2 AND account_id = $3",
        )
        .bind(&key.tenant)
        .bind(key.platform.as_str())
        .bind(&key.account_id)
        .fetch_optional(&self.inner.pool)
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
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant, platform, account_id) DO UPDATE SET
                 key_id = excluded.key_id, ciphertext = excluded.ciphertext,
                 updated_at = excluded.updated_at",
        )
        .bind(&key.tenant)
        .bind(key.platform.as_str())
        .bind(&key.account_id)
        .bind(&sealed.key_id)
        .bind(&sealed.ciphertext)
        .bind(Utc::now())
        .execute(&self.inner.pool)
        .await
        .map_err(db("cannot store a token"))?;
        Ok(())
    }

    async fn delete_sealed(&self, key: &AccountKey) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM socialpub_tokens WHERE tenant = $1 AND platform = $2 AND account_id = $3",
        )
        .bind(&key.tenant)
        .bind(key.platform.as_str())
        .bind(&key.account_id)
        .execute(&self.inner.pool)
        .await
        .map_err(db("cannot delete a token"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_sealed(&self, tenant: Option<&str>) -> Result<Vec<AccountKey>> {
        let rows = sqlx::query(
            "SELECT tenant, platform, account_id FROM socialpub_tokens
             WHERE $1::TEXT IS NULL OR tenant = $1
             ORDER BY tenant, platform, account_id",
        )
        .bind(tenant)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db("cannot list tokens"))?;
        rows.iter().map(account_from_row).collect()
    }
}

/// A history message as PostgreSQL's `text` can hold it: without U+0000, which becomes
/// U+FFFD. A message quotes what a platform answered, and that may hold anything; the error
/// itself keeps its exact text in the delivery's `last_error` document.
fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// A document bound as `json`: its text, which PostgreSQL only checks. `sqlx::types::Json`
/// declares `jsonb`, which the server would parse into its binary form and, for a `json`
/// column, print back to text.
struct JsonText<T>(T);

/// `json` and `json[]` (PostgreSQL's fixed type oids).
const JSON_OID: sqlx::postgres::types::Oid = sqlx::postgres::types::Oid(114);
const JSON_ARRAY_OID: sqlx::postgres::types::Oid = sqlx::postgres::types::Oid(199);

impl<T> sqlx::Type<Postgres> for JsonText<T> {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(JSON_OID)
    }
}

impl<T> PgHasArrayType for JsonText<T> {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(JSON_ARRAY_OID)
    }
}

impl<T: serde::Serialize> sqlx::Encode<'_, Postgres> for JsonText<T> {
    fn encode_by_ref(
        &self,
        buf: &mut PgArgumentBuffer,
    ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        // The binary form of `json` is its text.
        serde_json::to_writer(&mut **buf, &self.0)?;
        Ok(sqlx::encode::IsNull::No)
    }
}

fn col<'r, T>(row: &'r PgRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(name)
        .map_err(|e| Error::storage(format!("cannot read column {name}: {e}"), e))
}

fn delivery_from_row(row: &PgRow) -> Result<Delivery> {
    let fence: i64 = col(row, "fence")?;
    let lease = match col::<Option<String>>(row, "lease_owner")? {
        Some(owner) => Some(Lease {
            owner,
            fence,
            expires_at: col::<Option<DateTime<Utc>>>(row, "lease_expires_at")?
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
        post: std::sync::Arc::new(col::<Json<Post>>(row, "post")?.0),
        state: parse_state("state", &col::<String>(row, "state")?)?,
        due_at: col(row, "due_at")?,
        run_at: col(row, "run_at")?,
        attempt: to_u32("attempt", i64::from(col::<i32>(row, "attempt")?))?,
        max_attempts: to_u32("max_attempts", i64::from(col::<i32>(row, "max_attempts")?))?,
        deadline: col(row, "deadline")?,
        fence,
        lease,
        checkpoint: col::<Option<Json<serde_json::Value>>>(row, "checkpoint")?.map(|j| j.0),
        committed_at: col(row, "committed_at")?,
        receipt: col::<Option<Json<Receipt>>>(row, "receipt")?.map(|j| j.0),
        last_error: col::<Option<Json<DeliveryError>>>(row, "last_error")?.map(|j| j.0),
        had_failure: col(row, "had_failure")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

fn history_from_row(row: &PgRow) -> Result<HistoryEntry> {
    Ok(HistoryEntry {
        delivery_id: col(row, "delivery_id")?,
        at: col(row, "at")?,
        from: col::<Option<String>>(row, "from_state")?
            .map(|s| parse_state("from_state", &s))
            .transpose()?,
        to: parse_state("to_state", &col::<String>(row, "to_state")?)?,
        attempt: to_u32("attempt", i64::from(col::<i32>(row, "attempt")?))?,
        worker: col(row, "worker")?,
        error_kind: col::<Option<String>>(row, "error_kind")?
            .map(|s| parse_kind(&s))
            .transpose()?,
        message: col(row, "message")?,
    })
}

fn event_from_row(row: &PgRow) -> Result<OutboxEvent> {
    Ok(OutboxEvent {
        seq: col(row, "seq")?,
        event: col::<Json<Event>>(row, "payload")?.0,
    })
}

fn int(column: &str, v: u32) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid_input(format!("{column} {v} is too large")))
}

/// Writes back everything a transition may change, with its history entries and events, in
/// one statement.
async fn write_step(
    conn: &mut PgConnection,
    d: &Delivery,
    history: &[HistoryEntry],
    events: &[Event],
) -> Result<()> {
    let h = history.first();
    let e = events.first();
    sqlx::query(concat!(
        "WITH upd AS (
             UPDATE socialpub_deliveries SET state = $2, due_at = $3, run_at = $4, attempt = $5,
                 max_attempts = $6, deadline = $7, lease_owner = $8, lease_expires_at = $9,
                 checkpoint = $10, committed_at = $11, receipt = $12, last_error = $13,
                 had_failure = $14, updated_at = $15,
                 finished_at = CASE WHEN $2 IN ",
        terminal_states!(),
        " THEN COALESCE(finished_at, $15) END
             WHERE id = $1),
         hist AS (
             INSERT INTO socialpub_history (delivery_id, tenant, at, from_state, to_state,
                 attempt, worker, error_kind, message)
             SELECT $1, $16, $17, $18, $19, $20, $21, $22, $23 WHERE $24)
         INSERT INTO socialpub_outbox (event_id, tenant, kind, delivery_id, at, payload)
         SELECT $25, $16, $26, $1, $27, $28 WHERE $29",
    ))
    .bind(d.id)
    .bind(d.state.as_str())
    .bind(d.due_at)
    .bind(d.run_at)
    .bind(int("attempt", d.attempt)?)
    .bind(int("max_attempts", d.max_attempts)?)
    .bind(d.deadline)
    .bind(d.lease.as_ref().map(|l| l.owner.as_str()))
    .bind(d.lease.as_ref().map(|l| l.expires_at))
    .bind(d.checkpoint.as_ref().map(JsonText))
    .bind(d.committed_at)
    .bind(d.receipt.as_ref().map(JsonText))
    .bind(d.last_error.as_ref().map(JsonText))
    .bind(d.had_failure)
    .bind(d.updated_at)
    .bind(&d.tenant)
    .bind(h.map(|h| h.at))
    .bind(h.and_then(|h| h.from.map(|s| s.as_str())))
    .bind(h.map(|h| h.to.as_str()))
    .bind(h.map(|h| int("attempt", h.attempt)).transpose()?)
    .bind(h.and_then(|h| h.worker.as_deref()))
    .bind(h.and_then(|h| h.error_kind.map(|k| k.as_str())))
    .bind(h.and_then(|h| h.message.as_deref()).map(pg_text))
    .bind(h.is_some())
    .bind(e.map(|e| e.id))
    .bind(e.map(|e| e.kind.as_str()))
    .bind(e.map(|e| e.at))
    .bind(e.map(JsonText))
    .bind(e.is_some())
    .execute(&mut *conn)
    .await
    .map_err(db("cannot update a delivery"))?;
    for h in history.iter().skip(1) {
        insert_history(conn, &d.tenant, h).await?;
    }
    for e in events.iter().skip(1) {
        insert_event(conn, e).await?;
    }
    Ok(())
}

async fn insert_history(conn: &mut PgConnection, tenant: &str, h: &HistoryEntry) -> Result<()> {
    sqlx::query(
        "INSERT INTO socialpub_history
             (delivery_id, tenant, at, from_state, to_state, attempt, worker, error_kind, message)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(h.delivery_id)
    .bind(tenant)
    .bind(h.at)
    .bind(h.from.map(|s| s.as_str()))
    .bind(h.to.as_str())
    .bind(int("attempt", h.attempt)?)
    .bind(h.worker.as_deref())
    .bind(h.error_kind.map(|k| k.as_str()))
    .bind(h.message.as_deref().map(pg_text))
    .execute(&mut *conn)
    .await
    .map_err(db("cannot append a history entry"))?;
    Ok(())
}

async fn insert_event(conn: &mut PgConnection, e: &Event) -> Result<()> {
    sqlx::query(
        "INSERT INTO socialpub_outbox (event_id, tenant, kind, delivery_id, at, payload)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(e.id)
    .bind(&e.tenant)
    .bind(e.kind.as_str())
    .bind(e.delivery_id)
    .bind(e.at)
    .bind(JsonText(e))
    .execute(&mut *conn)
    .await
    .map_err(db("cannot append an event"))?;
    Ok(())
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

    /// Wakes this process's workers, and (through `NOTIFY`, sent when `tx` commits) every
    /// other process's.
    async fn notify_in(&self, conn: &mut PgConnection) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(&self.inner.channel)
            .execute(&mut *conn)
            .await
            .map_err(db("cannot notify workers"))?;
        Ok(())
    }

    fn wake_local(&self) {
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
            pool: self.inner.pool.clone(),
            held: self.inner.held.clone(),
        };
        writer
            .write_batch(vec![op])
            .await?
            .pop()
            .unwrap_or(Ok(Fenced::Stale))
    }

    /// Starts (once) the task that turns `NOTIFY`s from any process into wake-ups.
    fn ensure_listener(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.inner.listener.get_or_init(|| {
            let options = self.inner.options.clone();
            let channel = self.inner.channel.clone();
            let wake = Arc::downgrade(&self.inner.wake);
            handle.spawn(listen(options, channel, wake))
        });
    }
}

/// Batches of transitions and commit points written at once, each on its own connection:
/// PostgreSQL flushes concurrent commits together, so while one batch waits for the disk the
/// next is already being written.
const BATCHES_IN_FLIGHT: usize = 4;

/// Writes batches of transitions and commit points: the rows are taken as last claimed or
/// written here (or read), the ops applied, and the rows still unchanged written back with
/// their history and events in one statement (one round trip and one commit per batch when
/// every row is held); rows changed in between are redone locked.
struct BatchWriter {
    pool: PgPool,
    held: Arc<Held>,
}

/// Where a row version stands: its tuple id (`ctid`) and the transaction that wrote it
/// (`xmin`, which every update of a row changes). A batch write finds each row by the tuple id
/// (a TID scan: no descent of the primary key per row) and writes it only if the tuple there is
/// still this version of this delivery; a tuple id that moved on, or was reused after a vacuum,
/// matches nothing, and the op is redone locked.
#[derive(Debug, Clone)]
struct RowAt {
    tid: String,
    xmin: String,
}

impl RowAt {
    fn from_row(row: &PgRow) -> Result<RowAt> {
        Ok(RowAt {
            tid: col(row, "row_tid")?,
            xmin: col(row, "row_version")?,
        })
    }
}

/// The rows this process holds leases on, each as it last claimed or wrote it, with its
/// version: a batch write of such a row need not read it first. The compare-and-set on the
/// version keeps this as safe as a read just before the write: a row changed in between (a
/// cancel, a renewal, a rescue, another process) is refused and redone locked.
#[derive(Default)]
struct Held {
    rows: Mutex<std::collections::HashMap<Uuid, (Delivery, RowAt)>>,
}

/// At most this many rows are kept; past it the map starts afresh (a row left out is read).
const HELD_MAX: usize = 16_384;

impl Held {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<Uuid, (Delivery, RowAt)>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `d` at `version` while it is leased; forgets it once released.
    fn put(&self, d: Delivery, version: RowAt) {
        let mut rows = self.lock();
        if d.lease.is_none() {
            rows.remove(&d.id);
            return;
        }
        if rows.len() >= HELD_MAX && !rows.contains_key(&d.id) {
            rows.clear();
        }
        rows.insert(d.id, (d, version));
    }

    fn forget(&self, id: &Uuid) {
        self.lock().remove(id);
    }

    /// Takes out the rows `ops` name that are kept (a write puts back what it wrote).
    fn take(&self, ops: &[WriteOp]) -> std::collections::HashMap<Uuid, (Delivery, RowAt)> {
        let mut rows = self.lock();
        ops.iter()
            .filter_map(|op| rows.remove_entry(&op.id()))
            .collect()
    }
}

/// A statement whose parameters are being bound.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// The columns of `socialpub_deliveries` a state change sets, one array each, bound in this
/// order: state, run_at, attempt, max_attempts, deadline, lease_owner, lease_expires_at,
/// checkpoint, committed_at, receipt, last_error, had_failure, updated_at.
struct StateArrays<'a> {
    state: Vec<&'static str>,
    run_at: Vec<Option<DateTime<Utc>>>,
    attempt: Vec<i32>,
    max_attempts: Vec<i32>,
    deadline: Vec<Option<DateTime<Utc>>>,
    lease_owner: Vec<Option<&'a str>>,
    lease_expires_at: Vec<Option<DateTime<Utc>>>,
    checkpoint: Vec<Option<JsonText<&'a serde_json::Value>>>,
    committed_at: Vec<Option<DateTime<Utc>>>,
    receipt: Vec<Option<JsonText<&'a Receipt>>>,
    last_error: Vec<Option<JsonText<&'a DeliveryError>>>,
    had_failure: Vec<bool>,
    updated_at: Vec<DateTime<Utc>>,
}

impl<'a> StateArrays<'a> {
    fn with_capacity(n: usize) -> Self {
        StateArrays {
            state: Vec::with_capacity(n),
            run_at: Vec::with_capacity(n),
            attempt: Vec::with_capacity(n),
            max_attempts: Vec::with_capacity(n),
            deadline: Vec::with_capacity(n),
            lease_owner: Vec::with_capacity(n),
            lease_expires_at: Vec::with_capacity(n),
            checkpoint: Vec::with_capacity(n),
            committed_at: Vec::with_capacity(n),
            receipt: Vec::with_capacity(n),
            last_error: Vec::with_capacity(n),
            had_failure: Vec::with_capacity(n),
            updated_at: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, d: &'a Delivery) -> Result<()> {
        self.state.push(d.state.as_str());
        self.run_at.push(d.run_at);
        self.attempt.push(int("attempt", d.attempt)?);
        self.max_attempts.push(int("max_attempts", d.max_attempts)?);
        self.deadline.push(d.deadline);
        self.lease_owner
            .push(d.lease.as_ref().map(|l| l.owner.as_str()));
        self.lease_expires_at
            .push(d.lease.as_ref().map(|l| l.expires_at));
        self.checkpoint.push(d.checkpoint.as_ref().map(JsonText));
        self.committed_at.push(d.committed_at);
        self.receipt.push(d.receipt.as_ref().map(JsonText));
        self.last_error.push(d.last_error.as_ref().map(JsonText));
        self.had_failure.push(d.had_failure);
        self.updated_at.push(d.updated_at);
        Ok(())
    }

    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.state)
            .bind(&self.run_at)
            .bind(&self.attempt)
            .bind(&self.max_attempts)
            .bind(&self.deadline)
            .bind(&self.lease_owner)
            .bind(&self.lease_expires_at)
            .bind(&self.checkpoint)
            .bind(&self.committed_at)
            .bind(&self.receipt)
            .bind(&self.last_error)
            .bind(&self.had_failure)
            .bind(&self.updated_at)
    }
}

/// History rows, one array per column of `socialpub_history`, bound in this order:
/// delivery_id, tenant, at, from_state, to_state, attempt, worker, error_kind, message.
struct HistoryArrays<'a> {
    delivery_id: Vec<Uuid>,
    tenant: Vec<&'a str>,
    at: Vec<DateTime<Utc>>,
    from: Vec<Option<&'static str>>,
    to: Vec<&'static str>,
    attempt: Vec<i32>,
    worker: Vec<Option<&'a str>>,
    error_kind: Vec<Option<&'static str>>,
    message: Vec<Option<std::borrow::Cow<'a, str>>>,
}

impl<'a> HistoryArrays<'a> {
    fn with_capacity(n: usize) -> Self {
        HistoryArrays {
            delivery_id: Vec::with_capacity(n),
            tenant: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            from: Vec::with_capacity(n),
            to: Vec::with_capacity(n),
            attempt: Vec::with_capacity(n),
            worker: Vec::with_capacity(n),
            error_kind: Vec::with_capacity(n),
            message: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, tenant: &'a str, h: &'a HistoryEntry) -> Result<()> {
        self.delivery_id.push(h.delivery_id);
        self.tenant.push(tenant);
        self.at.push(h.at);
        self.from.push(h.from.map(|s| s.as_str()));
        self.to.push(h.to.as_str());
        self.attempt.push(int("attempt", h.attempt)?);
        self.worker.push(h.worker.as_deref());
        self.error_kind.push(h.error_kind.map(|k| k.as_str()));
        self.message.push(h.message.as_deref().map(pg_text));
        Ok(())
    }

    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.delivery_id)
            .bind(&self.tenant)
            .bind(&self.at)
            .bind(&self.from)
            .bind(&self.to)
            .bind(&self.attempt)
            .bind(&self.worker)
            .bind(&self.error_kind)
            .bind(&self.message)
    }
}

/// Outbox rows, one array per column of `socialpub_outbox`, bound in this order: event_id,
/// tenant, kind, delivery_id, at, payload.
struct EventArrays<'a> {
    id: Vec<Uuid>,
    tenant: Vec<&'a str>,
    kind: Vec<&'static str>,
    delivery_id: Vec<Option<Uuid>>,
    at: Vec<DateTime<Utc>>,
    payload: Vec<JsonText<&'a Event>>,
}

impl<'a> EventArrays<'a> {
    fn with_capacity(n: usize) -> Self {
        EventArrays {
            id: Vec::with_capacity(n),
            tenant: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            delivery_id: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, e: &'a Event) {
        self.id.push(e.id);
        self.tenant.push(e.tenant.as_str());
        self.kind.push(e.kind.as_str());
        self.delivery_id.push(e.delivery_id);
        self.at.push(e.at);
        self.payload.push(JsonText(e));
    }

    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.id)
            .bind(&self.tenant)
            .bind(&self.kind)
            .bind(&self.delivery_id)
            .bind(&self.at)
            .bind(&self.payload)
    }
}

/// Reads the rows `ops` name, each with its version (`xmin`, which every update of a row
/// changes); with `lock`, locks them too (in id order, so concurrent batches cannot deadlock).
async fn read_versions<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    ops: &[WriteOp],
    lock: bool,
) -> Result<std::collections::HashMap<Uuid, (Delivery, RowAt)>> {
    let mut ids: Vec<Uuid> = ops.iter().map(WriteOp::id).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = sqlx::query(&format!(
        "SELECT ctid::TEXT AS row_tid, xmin::TEXT AS row_version, {DELIVERY_COLUMNS}
         FROM socialpub_deliveries
         WHERE id = ANY($1) {}",
        if lock { "ORDER BY id FOR UPDATE" } else { "" }
    ))
    .bind(&ids)
    .fetch_all(exec)
    .await
    .map_err(db("cannot read deliveries"))?;
    let mut by_id = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let d = delivery_from_row(row)?;
        by_id.insert(d.id, (d, RowAt::from_row(row)?));
    }
    Ok(by_id)
}

/// What [`write_versions`] did: the rows written, each with its new version, and the ids of
/// the rows that had changed since they were read (nothing of theirs is written).
#[derive(Default)]
struct Written {
    rows: Vec<(Delivery, RowAt)>,
    conflicts: std::collections::HashSet<Uuid>,
}

/// Writes back, in one statement, the changed rows still at the version they were read at
/// (compare-and-set on `xmin`), with their history and events.
async fn write_versions<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    mut planned: Vec<Changed<RowAt>>,
) -> Result<Written> {
    if planned.is_empty() {
        return Ok(Written::default());
    }
    // In id order, so concurrent writers take the row locks in one order.
    planned.sort_unstable_by_key(|p| p.delivery.id);
    // The arrays borrow from `planned`, which the results below take apart.
    let rows = {
        let n = planned.len();
        let hn: usize = planned.iter().map(|p| p.history.len()).sum();
        let en: usize = planned.iter().map(|p| p.events.len()).sum();
        let mut id = Vec::with_capacity(n);
        let mut version = Vec::with_capacity(n);
        let mut tid = Vec::with_capacity(n);
        let mut states = StateArrays::with_capacity(n);
        let mut history = HistoryArrays::with_capacity(hn);
        let mut owner = Vec::with_capacity(en);
        let mut events = EventArrays::with_capacity(en);
        for p in &planned {
            let d = &p.delivery;
            id.push(d.id);
            version.push(p.read_with.xmin.as_str());
            tid.push(p.read_with.tid.as_str());
            states.push(d)?;
            for h in &p.history {
                history.push(&d.tenant, h)?;
            }
            for e in &p.events {
                owner.push(d.id);
                events.push(e);
            }
        }
        let query = sqlx::query(concat!(
            "WITH u AS (
                     UPDATE socialpub_deliveries d SET state = j.state,
                         run_at = j.run_at, attempt = j.attempt, max_attempts = j.max_attempts,
                         deadline = j.deadline, lease_owner = j.lease_owner,
                         lease_expires_at = j.lease_expires_at, checkpoint = j.checkpoint,
                         committed_at = j.committed_at, receipt = j.receipt,
                         last_error = j.last_error, had_failure = j.had_failure,
                         updated_at = j.updated_at,
                         finished_at = CASE WHEN j.state IN ",
            terminal_states!(),
            " THEN COALESCE(d.finished_at, j.updated_at) END
                     FROM UNNEST($1::UUID[], $2::TEXT[], $3::TEXT[],
                         $4::TIMESTAMPTZ[], $5::INTEGER[], $6::INTEGER[], $7::TIMESTAMPTZ[],
                         $8::TEXT[], $9::TIMESTAMPTZ[], $10::JSON[], $11::TIMESTAMPTZ[],
                         $12::JSON[], $13::JSON[], $14::BOOLEAN[], $15::TIMESTAMPTZ[],
                         $32::TEXT[]::TID[])
                         AS j(id, row_version, state, run_at, attempt, max_attempts,
                         deadline, lease_owner, lease_expires_at, checkpoint, committed_at,
                         receipt, last_error, had_failure, updated_at, row_tid)
                     WHERE d.ctid = j.row_tid AND d.id = j.id AND d.xmin::TEXT = j.row_version
                     RETURNING d.id, d.xmin::TEXT AS row_version, d.ctid::TEXT AS row_tid),
                 hist AS (
                     INSERT INTO socialpub_history (delivery_id, tenant, at, from_state, to_state,
                         attempt, worker, error_kind, message)
                     SELECT h.delivery_id, h.tenant, h.at, h.from_state, h.to_state, h.attempt,
                         h.worker, h.error_kind, h.message
                     FROM UNNEST($16::UUID[], $17::TEXT[], $18::TIMESTAMPTZ[], $19::TEXT[],
                         $20::TEXT[], $21::INTEGER[], $22::TEXT[], $23::TEXT[], $24::TEXT[])
                         WITH ORDINALITY AS h(delivery_id, tenant, at, from_state, to_state,
                         attempt, worker, error_kind, message, n)
                     WHERE h.delivery_id IN (SELECT id FROM u)
                     ORDER BY h.n),
                 ev AS (
                     INSERT INTO socialpub_outbox (event_id, tenant, kind, delivery_id, at, payload)
                     SELECT e.event_id, e.tenant, e.kind, e.delivery_id, e.at, e.payload
                     FROM UNNEST($25::UUID[], $26::UUID[], $27::TEXT[], $28::TEXT[], $29::UUID[],
                         $30::TIMESTAMPTZ[], $31::JSON[])
                         WITH ORDINALITY AS e(owner, event_id, tenant, kind, delivery_id, at,
                         payload, n)
                     WHERE e.owner IN (SELECT id FROM u)
                     ORDER BY e.n)
                 SELECT id, row_version, row_tid FROM u",
        ))
        .bind(&id)
        .bind(&version);
        let query = events
            .bind(history.bind(states.bind(query)).bind(&owner))
            .bind(&tid);
        query
            .fetch_all(exec)
            .await
            .map_err(db("cannot write deliveries"))?
    };
    let mut versions = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        versions.insert(col::<Uuid>(row, "id")?, RowAt::from_row(row)?);
    }
    let mut out = Written::default();
    for p in planned {
        match versions.remove(&p.delivery.id) {
            Some(version) => out.rows.push((p.delivery, version)),
            None => {
                out.conflicts.insert(p.delivery.id);
            }
        }
    }
    Ok(out)
}

/// Applies `ops` and writes them with their rows locked for the whole transaction: for the
/// ops whose rows changed between an unlocked read and the compare-and-set.
async fn write_locked(pool: &PgPool, ops: &[WriteOp]) -> Result<Vec<OpResult>> {
    let mut tx = pool
        .begin()
        .await
        .map_err(db("cannot start a PostgreSQL transaction"))?;
    let rows = read_versions(&mut *tx, ops, true).await?;
    let (results, planned) = apply_batch(ops, rows);
    // Locked rows keep their version until this transaction ends: nothing conflicts.
    write_versions(&mut *tx, planned).await?;
    tx.commit()
        .await
        .map_err(db("cannot commit a PostgreSQL write"))?;
    Ok(results)
}

#[async_trait]
impl BatchWrite for BatchWriter {
    /// Takes the rows as last claimed or written here, reading (without locks) those not
    /// held, applies the ops, and writes back only the rows still at the version taken: the
    /// fence check and the write are thus in one transaction, as with a row lock, for one or
    /// two round trips and no lock records. The ops of rows another writer changed in between
    /// are redone, in order, with the rows locked.
    async fn write_batch(&self, ops: Vec<WriteOp>) -> Result<Vec<OpResult>> {
        let ops = &ops[..];
        let mut rows = self.held.take(ops);
        let unknown: Vec<WriteOp> = ops
            .iter()
            .filter(|op| !rows.contains_key(&op.id()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            rows.extend(read_versions(&self.pool, &unknown, false).await?);
        }
        let (mut results, planned) = apply_batch(ops, rows);
        let Written {
            rows: written,
            conflicts,
        } = write_versions(&self.pool, planned).await?;
        for (d, version) in written {
            self.held.put(d, version);
        }
        if conflicts.is_empty() {
            return Ok(results);
        }
        let (at, redo): (Vec<usize>, Vec<WriteOp>) = ops
            .iter()
            .enumerate()
            .filter(|(_, op)| conflicts.contains(&op.id()))
            .map(|(i, op)| (i, op.clone()))
            .unzip();
        let redone = write_locked(&self.pool, &redo).await?;
        for (i, r) in at.into_iter().zip(redone) {
            results[i] = r;
        }
        Ok(results)
    }
}

fn refs<T>(items: &[T]) -> Vec<&T> {
    items.iter().collect()
}

/// Inserts deliveries with their first history entries and their events, and wakes other
/// processes' workers, in one statement (so one transaction and one round trip). Values go as
/// typed arrays, documents as `json` text: PostgreSQL's JSON functions would unescape every
/// string of a document, and refuse `\u0000`, which a post may hold.
async fn insert_rows(
    pool: &PgPool,
    channel: &str,
    deliveries: &[&Delivery],
    events: &[&Event],
) -> Result<()> {
    let n = deliveries.len();
    let entries: Vec<HistoryEntry> = deliveries.iter().map(|d| d.inserted_entry()).collect();
    let mut id = Vec::with_capacity(n);
    let mut post_id = Vec::with_capacity(n);
    let mut tenant = Vec::with_capacity(n);
    let mut platform = Vec::with_capacity(n);
    let mut account_id = Vec::with_capacity(n);
    let mut post = Vec::with_capacity(n);
    let mut due_at = Vec::with_capacity(n);
    let mut fence = Vec::with_capacity(n);
    let mut created_at = Vec::with_capacity(n);
    let mut states = StateArrays::with_capacity(n);
    let mut history = HistoryArrays::with_capacity(n);
    let mut outbox = EventArrays::with_capacity(events.len());
    for (d, h) in deliveries.iter().zip(&entries) {
        id.push(d.id);
        post_id.push(d.post_id);
        tenant.push(d.tenant.as_str());
        platform.push(d.target.platform.as_str());
        account_id.push(d.target.account_id.as_str());
        post.push(JsonText(&*d.post));
        due_at.push(d.due_at);
        fence.push(d.fence);
        created_at.push(d.created_at);
        states.push(d)?;
        history.push(&d.tenant, h)?;
    }
    for e in events {
        outbox.push(e);
    }
    let query = sqlx::query(concat!(
        "WITH ins AS (
             INSERT INTO socialpub_deliveries (id, post_id, tenant, platform, account_id,
                 post, due_at, fence, created_at, state, run_at, attempt, max_attempts,
                 deadline, lease_owner, lease_expires_at, checkpoint, committed_at, receipt,
                 last_error, had_failure, updated_at, finished_at)
             SELECT j.*, CASE WHEN j.state IN ",
        terminal_states!(),
        " THEN j.updated_at END
             FROM UNNEST($1::UUID[], $2::UUID[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                 $6::JSON[], $7::TIMESTAMPTZ[], $8::BIGINT[], $9::TIMESTAMPTZ[],
                 $10::TEXT[], $11::TIMESTAMPTZ[], $12::INTEGER[], $13::INTEGER[],
                 $14::TIMESTAMPTZ[], $15::TEXT[], $16::TIMESTAMPTZ[], $17::JSON[],
                 $18::TIMESTAMPTZ[], $19::JSON[], $20::JSON[], $21::BOOLEAN[],
                 $22::TIMESTAMPTZ[])
                 AS j(id, post_id, tenant, platform, account_id, post, due_at, fence,
                 created_at, state, run_at, attempt, max_attempts, deadline, lease_owner,
                 lease_expires_at, checkpoint, committed_at, receipt, last_error, had_failure,
                 updated_at)
             RETURNING id, tenant, due_at, post_id),
         keys AS (
             INSERT INTO socialpub_delivery_keys (id, tenant, due_at, post_id)
             SELECT id, tenant, due_at, post_id FROM ins),
         hist AS (
             INSERT INTO socialpub_history (delivery_id, tenant, at, from_state, to_state,
                 attempt, worker, error_kind, message)
             SELECT h.delivery_id, h.tenant, h.at, h.from_state, h.to_state, h.attempt,
                 h.worker, h.error_kind, h.message
             FROM UNNEST($23::UUID[], $24::TEXT[], $25::TIMESTAMPTZ[], $26::TEXT[],
                 $27::TEXT[], $28::INTEGER[], $29::TEXT[], $30::TEXT[], $31::TEXT[])
                 WITH ORDINALITY AS h(delivery_id, tenant, at, from_state, to_state, attempt,
                 worker, error_kind, message, n)
             ORDER BY h.n),
         ev AS (
             INSERT INTO socialpub_outbox (event_id, tenant, kind, delivery_id, at, payload)
             SELECT e.event_id, e.tenant, e.kind, e.delivery_id, e.at, e.payload
             FROM UNNEST($32::UUID[], $33::TEXT[], $34::TEXT[], $35::UUID[],
                 $36::TIMESTAMPTZ[], $37::JSON[])
                 WITH ORDINALITY AS e(event_id, tenant, kind, delivery_id, at, payload, n)
             ORDER BY e.n)
         SELECT pg_notify($38, '') FROM (SELECT count(*) FROM ins) c",
    ))
    .bind(&id)
    .bind(&post_id)
    .bind(&tenant)
    .bind(&platform)
    .bind(&account_id)
    .bind(&post)
    .bind(&due_at)
    .bind(&fence)
    .bind(&created_at);
    outbox
        .bind(history.bind(states.bind(query)))
        .bind(channel)
        .execute(pool)
        .await
        .map_err(|e| {
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation())
            {
                Error::invalid_input("a delivery with one of these ids already exists")
            } else {
                Error::storage(format!("cannot insert deliveries: {e}"), e)
            }
        })?;
    Ok(())
}

/// Calls to [`ScheduleStore::insert`] with fewer deliveries than this share a statement and a
/// commit with the calls that arrive while one is being written; larger ones go alone.
const GROUPED_INSERT_MAX: usize = 256;

/// Grouped inserts written at once.
const INSERTS_IN_FLIGHT: usize = 2;

type InsertCall = (Vec<Delivery>, Vec<Event>);

/// Group commit of schedules: every schedule is a transaction that waits for the disk, and on
/// a disk that flushes slowly those waits, one per post, queue up. Calls that arrive while a
/// group is being written share the next statement and its one commit. A failed group (one
/// caller's duplicate id, say) is retried call by call, so a call fails only for its own rows.
fn insert_groups(pool: PgPool, channel: String) -> Option<Groups<InsertCall, ()>> {
    Groups::start(
        GROUPED_INSERT_MAX,
        INSERTS_IN_FLIGHT,
        "the store's insert task stopped before answering (its runtime shut down); the \
         deliveries may or may not have been inserted",
        move |group| {
            let (pool, channel) = (pool.clone(), channel.clone());
            async move { insert_group(&pool, &channel, group).await }
        },
    )
}

async fn insert_group(pool: &PgPool, channel: &str, group: Vec<Pending<InsertCall, ()>>) {
    if group.len() > 1 {
        let deliveries: Vec<&Delivery> = group.iter().flat_map(|((d, _), _)| d).collect();
        let events: Vec<&Event> = group.iter().flat_map(|((_, e), _)| e).collect();
        if insert_rows(pool, channel, &deliveries, &events)
            .await
            .is_ok()
        {
            for (_, reply) in group {
                let _ = reply.send(Ok(()));
            }
            return;
        }
    }
    for ((deliveries, events), reply) in group {
        let (d, e) = (refs(&deliveries), refs(&events));
        let _ = reply.send(insert_rows(pool, channel, &d, &e).await);
    }
}

/// Listens on `channel` until the store is dropped; reconnects after errors, waking workers so
/// they poll whatever a lost notification announced.
async fn listen(options: PgConnectOptions, channel: String, wake: Weak<Notify>) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to listen for wake-ups; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(&channel).await {
            tracing::warn!(error = %e, "cannot LISTEN for wake-ups; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.recv().await {
                Ok(_) => match wake.upgrade() {
                    Some(w) => w.notify_waiters(),
                    None => return,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "lost the wake-up listener; reconnecting");
                    match wake.upgrade() {
                        Some(w) => w.notify_waiters(),
                        None => return,
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}

#[async_trait]
impl ScheduleStore for PostgresStore {
    async fn insert(&self, deliveries: &[Delivery], events: &[Event]) -> Result<()> {
        let small = deliveries.len() < GROUPED_INSERT_MAX;
        match &self.inner.inserts {
            Some(group) if small => {
                match group.submit((deliveries.to_vec(), events.to_vec())).await {
                    Ok(result) => result?,
                    Err((deliveries, events)) => {
                        let (d, e) = (refs(&deliveries), refs(&events));
                        insert_rows(&self.inner.pool, &self.inner.channel, &d, &e).await?
                    }
                }
            }
            _ => {
                let (d, e) = (refs(deliveries), refs(events));
                insert_rows(&self.inner.pool, &self.inner.channel, &d, &e).await?
            }
        }
        self.wake_local();
        Ok(())
    }

    async fn claim_ahead(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        limit: usize,
        due_by: DateTime<Utc>,
        ahead: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>> {
        if limit == 0 && ahead == 0 {
            return Ok(Vec::new());
        }
        let now = trunc(now);
        let until = lease_until(now, lease);
        // One statement: pick due rows nobody holds (skipping rows another transaction has
        // locked), and those due by `due_by` up to their own limit, take them, and write the
        // history of those that became `claimed`. The MATERIALIZED CTEs keep the planner from
        // re-running the LIMIT subqueries per row; the second one does nothing when its limit
        // is zero. A limit is a sub-select so that no plan knows it: a plan made for a limit of 8 would
        // cost less than the generic plan, and PostgreSQL would then plan every claim anew.
        // The update finds the picked rows by their tuple ids (`ctid = ANY`, a TID scan: no
        // index lookup, no join against a scan of the table). A row this transaction has
        // locked cannot be updated by another, so its tuple id holds until the update.
        let rows = sqlx::query(&format!(
            "WITH due AS MATERIALIZED (
                 SELECT ctid AS tid, id, state AS from_state
                 FROM socialpub_deliveries
                 WHERE {due} AND run_at <= $3
                 ORDER BY run_at, id LIMIT (SELECT $4::BIGINT)
                 FOR UPDATE SKIP LOCKED),
             soon AS MATERIALIZED (
                 SELECT ctid AS tid, id, state AS from_state
                 FROM socialpub_deliveries
                 WHERE {due} AND run_at > $3 AND run_at <= $5
                 ORDER BY run_at, id LIMIT (SELECT $6::BIGINT)
                 FOR UPDATE SKIP LOCKED),
             picked AS (SELECT * FROM due UNION ALL SELECT * FROM soon),
             claimed AS (
                 UPDATE socialpub_deliveries d SET
                     claimed_due_at = d.run_at, fence = d.fence + 1,
                     lease_owner = $1, lease_expires_at = $2, run_at = NULL, updated_at = $3,
                     state = CASE WHEN d.state IN ('scheduled', 'retry_waiting') THEN 'claimed'
                                  ELSE d.state END,
                     attempt = CASE WHEN d.state IN ('scheduled', 'retry_waiting')
                                    THEN d.attempt + 1 ELSE d.attempt END
                 WHERE d.ctid = ANY (ARRAY(SELECT tid FROM picked))
                 RETURNING d.*, d.xmin::TEXT AS row_version, d.ctid::TEXT AS row_tid),
             hist AS (
                 INSERT INTO socialpub_history
                     (delivery_id, tenant, at, from_state, to_state, attempt, worker)
                 SELECT c.id, c.tenant, c.updated_at, p.from_state, c.state, c.attempt,
                     c.lease_owner
                 FROM claimed c JOIN picked p ON p.id = c.id WHERE p.from_state <> c.state)
             SELECT {DELIVERY_COLUMNS}, claimed_due_at, row_version, row_tid FROM claimed",
            due = due_condition!()
        ))
        .bind(worker)
        .bind(until)
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(trunc(due_by))
        .bind(i64::try_from(ahead).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db("cannot claim deliveries"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let order: Option<DateTime<Utc>> = col(row, "claimed_due_at")?;
            let d = delivery_from_row(row)?;
            self.inner.held.put(d.clone(), RowAt::from_row(row)?);
            out.push((order, d));
        }
        out.sort_by_key(|(order, d)| (*order, d.id));
        // Every claimed row had a run time (the due condition); a missing one is taken as due
        // now rather than failing a claim already committed.
        Ok(out
            .into_iter()
            .map(|(run_at, d)| Claimed::new(d, run_at.unwrap_or(now)))
            .collect())
    }

    async fn renew_lease(&self, id: Uuid, fence: i64, until: DateTime<Utc>) -> Result<bool> {
        // The row's version changes: the next write reads it.
        self.inner.held.forget(&id);
        let done = sqlx::query(
            "UPDATE socialpub_deliveries SET lease_expires_at = GREATEST(lease_expires_at, $1)
             WHERE id = $2 AND fence = $3 AND lease_owner IS NOT NULL",
        )
        .bind(trunc(until))
        .bind(id)
        .bind(fence)
        .execute(&self.inner.pool)
        .await
        .map_err(db("cannot renew a lease"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn transition(&self, transition: &Transition) -> Result<Fenced<Delivery>> {
        let out = self
            .write(WriteOp::Transition(Box::new(trunc_transition(transition))))
            .await?;
        if matches!(&out, Fenced::Applied(d) if d.run_at.is_some()) {
            self.wake_local();
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
        self.inner.held.forget(&id);
        let done = sqlx::query(
            "UPDATE socialpub_deliveries SET checkpoint = $1, updated_at = $2
             WHERE id = $3 AND fence = $4 AND lease_owner IS NOT NULL",
        )
        .bind(JsonText(checkpoint))
        .bind(trunc(at))
        .bind(id)
        .bind(fence)
        .execute(&self.inner.pool)
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
        // Most calls find nothing: look first without a transaction (one round trip over the
        // lease index instead of three). A lease expiring just after is the next call's.
        // MIN walks the lease index from its start (a plain EXISTS may be planned as a scan).
        let first: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT MIN(lease_expires_at) FROM socialpub_deliveries WHERE lease_owner IS NOT NULL",
        )
        .fetch_one(&self.inner.pool)
        .await
        .map_err(db("cannot find expired leases"))?;
        if first.is_none_or(|t| t > now) {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        // SKIP LOCKED: rows another rescuer (or a worker's write) holds are theirs to settle.
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries
             WHERE lease_owner IS NOT NULL AND lease_expires_at <= $1
             ORDER BY lease_expires_at, id
             FOR UPDATE SKIP LOCKED"
        ))
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("cannot find expired leases"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut d = delivery_from_row(row)?;
            if let Some((entry, event)) = d.apply_rescue(now) {
                write_step(&mut tx, &d, std::slice::from_ref(&entry), event.as_slice()).await?;
                out.push(Rescued { delivery: d, event });
            }
        }
        if out.is_empty() {
            tx.rollback()
                .await
                .map_err(db("cannot end a PostgreSQL transaction"))?;
            return Ok(out);
        }
        self.notify_in(&mut tx).await?;
        tx.commit().await.map_err(db("cannot commit a rescue"))?;
        self.wake_local();
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
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries
             WHERE id = $1 AND tenant = $2 FOR UPDATE"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("cannot read a delivery"))?;
        let Some(row) = row else {
            return Ok(RescheduleOutcome::NotFound);
        };
        let mut d = delivery_from_row(&row)?;
        let was_due_at = d.due_at;
        let (outcome, entry) = d.apply_reschedule(due_at, at);
        let Some(entry) = entry else {
            tx.rollback()
                .await
                .map_err(db("cannot end a PostgreSQL transaction"))?;
            return Ok(outcome);
        };
        write_step(&mut tx, &d, std::slice::from_ref(&entry), &[]).await?;
        sqlx::query(
            "UPDATE socialpub_delivery_keys SET due_at = $1
             WHERE tenant = $2 AND due_at = $3 AND id = $4",
        )
        .bind(d.due_at)
        .bind(&d.tenant)
        .bind(was_due_at)
        .bind(d.id)
        .execute(&mut *tx)
        .await
        .map_err(db("cannot move a delivery's lookup key"))?;
        self.notify_in(&mut tx).await?;
        tx.commit()
            .await
            .map_err(db("cannot commit a reschedule"))?;
        self.wake_local();
        Ok(outcome)
    }

    async fn get(&self, tenant: &str, id: Uuid) -> Result<Option<Delivery>> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries WHERE id = $1 AND tenant = $2"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(db("cannot read a delivery"))?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    async fn history(&self, tenant: &str, id: Uuid) -> Result<Vec<HistoryEntry>> {
        let rows = sqlx::query(
            "SELECT delivery_id, at, from_state, to_state, attempt, worker, error_kind, message
             FROM socialpub_history WHERE delivery_id = $1 AND tenant = $2 ORDER BY seq",
        )
        .bind(id)
        .bind(tenant)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db("cannot read a delivery's history"))?;
        rows.iter().map(history_from_row).collect()
    }

    async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        let states: Option<Vec<&str>> = if filter.states.is_empty() {
            None
        } else {
            Some(filter.states.iter().map(|s| s.as_str()).collect())
        };
        let rows = sqlx::query(&format!(
            "SELECT {KEYED_COLUMNS} FROM socialpub_delivery_keys k
                 JOIN socialpub_deliveries d ON d.id = k.id
             WHERE k.tenant = $1
               AND ($2::TEXT[] IS NULL OR d.state = ANY($2))
               AND ($3::TIMESTAMPTZ IS NULL OR k.due_at >= $3)
               AND ($4::TIMESTAMPTZ IS NULL OR k.due_at < $4)
               AND ($5::UUID IS NULL OR k.post_id = $5)
             ORDER BY k.due_at, k.id LIMIT $6"
        ))
        .bind(&filter.tenant)
        .bind(states)
        .bind(filter.due_from)
        .bind(filter.due_before)
        .bind(filter.post_id)
        .bind(i64::try_from(filter.limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db("cannot list deliveries"))?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn next_times(&self) -> Result<NextTimes> {
        let row = sqlx::query(concat!(
            "SELECT (SELECT MIN(run_at) FROM socialpub_deliveries WHERE ",
            due_condition!(),
            "), (SELECT MIN(lease_expires_at) FROM socialpub_deliveries ",
            "WHERE lease_owner IS NOT NULL)"
        ))
        .fetch_one(&self.inner.pool)
        .await
        .map_err(db("cannot read the next due time"))?;
        Ok(NextTimes::new(
            row.try_get(0)
                .map_err(db("cannot read the next due time"))?,
            row.try_get(1)
                .map_err(db("cannot read the next lease expiry"))?,
        ))
    }

    async fn append_event(&self, event: &Event) -> Result<()> {
        let mut conn = self
            .inner
            .pool
            .acquire()
            .await
            .map_err(db("cannot append an event"))?;
        insert_event(&mut conn, event).await
    }

    async fn events(&self, after: Option<i64>, limit: usize) -> Result<Vec<OutboxEvent>> {
        let rows = sqlx::query(
            "SELECT seq, payload FROM socialpub_outbox WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after.unwrap_or(i64::MIN))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db("cannot read the outbox"))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn ack_events(&self, seqs: &[i64]) -> Result<u64> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query("DELETE FROM socialpub_outbox WHERE seq = ANY($1)")
            .bind(seqs)
            .execute(&self.inner.pool)
            .await
            .map_err(db("cannot acknowledge events"))?;
        Ok(done.rows_affected())
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<PurgeReport> {
        let mut tx = self.begin().await?;
        let deliveries: i64 = sqlx::query_scalar(
            "WITH doomed AS (
                 DELETE FROM socialpub_deliveries WHERE finished_at < $1
                 RETURNING id, tenant, due_at),
             keys AS (
                 DELETE FROM socialpub_delivery_keys k USING doomed
                 WHERE k.tenant = doomed.tenant AND k.due_at = doomed.due_at
                   AND k.id = doomed.id),
             hist AS (
                 DELETE FROM socialpub_history WHERE delivery_id IN (SELECT id FROM doomed))
             SELECT count(*) FROM doomed",
        )
        .bind(before)
        .fetch_one(&mut *tx)
        .await
        .map_err(db("cannot purge deliveries"))?;
        let events = sqlx::query("DELETE FROM socialpub_outbox WHERE at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(db("cannot purge events"))?
            .rows_affected();
        tx.commit().await.map_err(db("cannot commit a purge"))?;
        Ok(PurgeReport {
            deliveries: u64::try_from(deliveries).unwrap_or(0),
            events,
        })
    }

    async fn export_tenant(&self, tenant: &str) -> Result<TenantExport> {
        // One snapshot, so the three parts agree.
        let mut tx = self.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db("cannot start an export"))?;
        let deliveries = sqlx::query(&format!(
            "SELECT {KEYED_COLUMNS} FROM socialpub_delivery_keys k
                 JOIN socialpub_deliveries d ON d.id = k.id
             WHERE k.tenant = $1 ORDER BY k.due_at, k.id"
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
             FROM socialpub_delivery_keys k JOIN socialpub_history h ON h.delivery_id = k.id
             WHERE k.tenant = $1 ORDER BY k.due_at, k.id, h.seq",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("cannot export history"))?
        .iter()
        .map(history_from_row)
        .collect::<Result<Vec<_>>>()?;
        let events =
            sqlx::query("SELECT seq, payload FROM socialpub_outbox WHERE tenant = $1 ORDER BY seq")
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
        let n: i64 = sqlx::query_scalar(
            "WITH keys AS (
                 DELETE FROM socialpub_delivery_keys WHERE tenant = $1 RETURNING id),
             hist AS (
                 DELETE FROM socialpub_history WHERE delivery_id IN (SELECT id FROM keys)),
             gone AS (
                 DELETE FROM socialpub_deliveries WHERE id IN (SELECT id FROM keys)
                 RETURNING 1)
             SELECT count(*) FROM gone",
        )
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await
        .map_err(db("cannot delete a tenant's deliveries"))?;
        sqlx::query("DELETE FROM socialpub_outbox WHERE tenant = $1")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .map_err(db("cannot delete a tenant's events"))?;
        tx.commit()
            .await
            .map_err(db("cannot commit a tenant's deletion"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn wakeups(&self) -> Option<Arc<Notify>> {
        self.ensure_listener();
        Some(self.inner.wake.clone())
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;
    use crate::schedule::DeliveryState;
    use crate::testkit::schedule::{new_post, t0};

    #[test]
    fn keyed_columns_are_the_delivery_columns() {
        let prefixed: Vec<String> = DELIVERY_COLUMNS
            .split(',')
            .map(|c| format!("d.{}", c.trim()))
            .collect();
        let keyed: Vec<String> = KEYED_COLUMNS
            .split(',')
            .map(|c| c.trim().to_owned())
            .collect();
        assert_eq!(keyed, prefixed);
    }

    /// A store on a schema of its own, or `None` (with a notice) when no test database is
    /// configured; under `CI=true` a missing database fails the test.
    #[allow(clippy::print_stderr)] // the skip notice, as the integration tests print it
    async fn test_store(prefix: &str) -> Option<(PostgresStore, String)> {
        let url = match std::env::var("SOCIALPUB_TEST_POSTGRES_URL") {
            Ok(u) if !u.is_empty() => u,
            _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true but SOCIALPUB_TEST_POSTGRES_URL is not set")
            }
            _ => {
                eprintln!("notice: skipped: set SOCIALPUB_TEST_POSTGRES_URL to run it");
                return None;
            }
        };
        let schema = format!("{prefix}_{}", &Uuid::new_v4().simple().to_string()[..10]);
        let store = PostgresStore::builder(url)
            .schema(schema.clone())
            .max_connections(4)
            .connect()
            .await
            .expect("connect");
        Some((store, schema))
    }

    /// The compare-and-set refuses a row changed between its read and the write, and the
    /// locked redo then applies the op once.
    #[tokio::test]
    async fn a_row_changed_after_the_read_is_refused_then_redone_locked() {
        let Some((store, schema)) = test_store("t_cas").await else {
            return;
        };
        let (deliveries, events) = new_post("t", &["a"], 0);
        store.insert(&deliveries, &events).await.expect("insert");
        let claimed = store
            .claim_due("w", t0(), 1, Duration::from_secs(60))
            .await
            .expect("claim");
        let d = claimed.first().expect("one claimed");
        let fence = d.lease.as_ref().expect("lease").fence;
        let op = WriteOp::CommitPoint {
            id: d.id,
            fence,
            at: t0(),
        };
        let ops = std::slice::from_ref(&op);
        let pool = store.inner.pool.clone();

        // Read, then change the row behind the batch's back (a lease renewal), then write.
        let rows = read_versions(&pool, ops, false).await.expect("read");
        let renewed = store
            .renew_lease(d.id, fence, t0() + chrono::Duration::minutes(5))
            .await
            .expect("renew");
        assert!(renewed);
        let (results, planned) = apply_batch(ops, rows);
        assert!(matches!(results.first(), Some(Ok(Fenced::Applied(_)))));
        let written = write_versions(&pool, planned).await.expect("write");
        assert!(written.rows.is_empty());
        assert!(
            written.conflicts.contains(&d.id),
            "the changed row is refused"
        );
        let after = store.get("t", d.id).await.expect("get").expect("row");
        assert_eq!(after.state, DeliveryState::Claimed, "nothing of it landed");
        assert_eq!(store.history("t", d.id).await.expect("history").len(), 2);

        let redone = write_locked(&pool, ops).await.expect("redo");
        assert!(matches!(redone.first(), Some(Ok(Fenced::Applied(_)))));
        let after = store.get("t", d.id).await.expect("get").expect("row");
        assert_eq!(after.state, DeliveryState::Committing);
        assert_eq!(after.committed_at, Some(t0()));
        let states: Vec<DeliveryState> = store
            .history("t", d.id)
            .await
            .expect("history")
            .iter()
            .map(|h| h.to)
            .collect();
        assert_eq!(
            states,
            vec![
                DeliveryState::Scheduled,
                DeliveryState::Claimed,
                DeliveryState::Committing
            ]
        );
        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(&pool)
            .await
            .expect("drop schema");
    }

    /// A row kept from the claim is not trusted over the database: once another process has
    /// taken the delivery (its fence moved on), the write through the group commit is stale;
    /// a change that leaves the lease alone does not stop the next write.
    #[tokio::test]
    async fn a_kept_row_changed_by_another_process_is_not_trusted() {
        let Some((store, schema)) = test_store("t_held").await else {
            return;
        };
        let pool = store.inner.pool.clone();
        let (deliveries, events) = new_post("t", &["a", "b"], 0);
        store.insert(&deliveries, &events).await.expect("insert");
        let claimed = store
            .claim_due("w", t0(), 2, Duration::from_secs(60))
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 2);
        let (taken, renewed) = (&claimed[0], &claimed[1]);
        let fence = |d: &Delivery| d.lease.as_ref().expect("lease").fence;

        // Another process rescued the first and claimed it again.
        sqlx::query(
            "UPDATE socialpub_deliveries SET fence = fence + 1, lease_owner = 'other'
             WHERE id = $1",
        )
        .bind(taken.id)
        .execute(&pool)
        .await
        .expect("take over");
        let out = store
            .commit_point(taken.id, fence(taken), t0())
            .await
            .expect("commit point");
        assert!(out.is_stale(), "the kept row said the lease was still held");
        let after = store.get("t", taken.id).await.expect("get").expect("row");
        assert_eq!(after.state, DeliveryState::Claimed);
        assert_eq!(after.lease.expect("lease").owner, "other");

        // The second's lease was extended by another connection: the write still lands.
        sqlx::query(
            "UPDATE socialpub_deliveries
             SET lease_expires_at = lease_expires_at + INTERVAL '1 minute' WHERE id = $1",
        )
        .bind(renewed.id)
        .execute(&pool)
        .await
        .expect("extend");
        let out = store
            .commit_point(renewed.id, fence(renewed), t0())
            .await
            .expect("commit point");
        assert!(matches!(out, Fenced::Applied(ref d) if d.state == DeliveryState::Committing));
        let after = store.get("t", renewed.id).await.expect("get").expect("row");
        assert_eq!(after.state, DeliveryState::Committing);
        // The write put back what it wrote: the next one needs no read and still lands.
        let t = Transition::new(&after, DeliveryState::Published, t0());
        let out = store.transition(&t).await.expect("published");
        assert!(matches!(out, Fenced::Applied(ref d) if d.state == DeliveryState::Published));
        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(&pool)
            .await
            .expect("drop schema");
    }
}
