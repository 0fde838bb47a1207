//! [`SqliteStore`]: deliveries and sealed tokens in one SQLite file (feature `sqlite`).
//!
//! The file is opened in WAL mode, so readers never block the writer. Writes go through one
//! connection per process, owned by a dedicated thread: SQLite has one writer anyway, and
//! handing that thread a whole unit of work (a batch of state changes with their reads, or a
//! claim) costs one thread hand-off per call rather than one per statement or row. Reads go
//! through a small pool of read-only connections on Tokio's blocking threads. Several
//! processes may share a file: a writer waits up to the busy timeout for the others.
//!
//! Every state change is one `BEGIN IMMEDIATE` transaction that also appends its history row
//! and, when there is one, its outbox event; concurrent transitions and commit points share
//! one transaction (group commit). A claim is one
//! `UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING …` statement over a partial index that
//! holds only due, unleased rows.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::{Notify, Semaphore, oneshot};
use uuid::Uuid;

use super::common::{
    BatchWrite, Batcher, DELIVERY_COLUMNS, Migration, OpResult, Step, WriteOp, apply_batch,
    check_not_newer, corrupt, due_condition, from_json, from_json_opt, from_micros, lease_until,
    micros, parse_kind, parse_platform, parse_state, to_json, to_json_opt, to_u32, trunc,
    trunc_transition,
};
use crate::auth::{AccountKey, SealedToken, SealedTokenStore};
use crate::error::{Error, ErrorKind, Result};
use crate::platform::Platform;
use crate::post::Target;
use crate::schedule::{
    CancelOutcome, Claimed, Delivery, DeliveryFilter, Event, Fenced, HistoryEntry, Lease,
    NextTimes, OutboxEvent, PurgeReport, RescheduleOutcome, Rescued, ScheduleStore, TenantExport,
    Transition,
};

/// The embedded schema, applied in order when a store opens.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "cheaper_state_changes",
        sql: include_str!("../../migrations/sqlite/0002_cheaper_state_changes.sql"),
    },
];

/// Finished deliveries, word for word as in the condition of the index the purge uses
/// (`socialpub_deliveries_finished`): SQLite matches a partial index's condition by its terms.
const FINISHED: &str = "(state = 'published' OR state = 'failed' OR state = 'cancelled')";

/// Prepared statements kept per connection (the hot paths use a dozen).
const STATEMENT_CACHE: usize = 64;

/// A SQLite error as socialpub's [`Error`] (class [`ErrorKind::Storage`]).
fn db(what: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| Error::storage(format!("{what}: {e}"), e)
}

/// The error of a call made after [`SqliteStore::close`] (or after the writer thread died).
fn closed() -> Error {
    Error::new(ErrorKind::Storage, "the SQLite store is closed")
}

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
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
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
        let (synchronous, busy) = (self.synchronous, self.busy_timeout);
        let writer_path = path.clone();
        let (kick, checkpoints) = std::sync::mpsc::sync_channel::<()>(1);
        let writer = Writer::start(kick, move || {
            let mut conn = open_writer(&writer_path, synchronous, busy)?;
            // One `BEGIN IMMEDIATE` transaction, so two processes opening a new file at once
            // apply the migrations once.
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await?;
        let checkpointer = Checkpointer::start(path.clone(), busy, checkpoints);
        let writer = Arc::new(writer);
        let readers = Arc::new(Readers {
            path: path.clone(),
            busy,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(self.readers as usize),
            closed: AtomicBool::new(false),
        });
        tracing::debug!(path = %path.display(), "opened SQLite store");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: writer.clone(),
                checkpointer,
                readers,
                wake: Arc::new(Notify::new()),
                // One writer thread: a second batch would only queue behind the first.
                batcher: Batcher::start(Arc::new(BatchWriter { writer }), 1),
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
    // Query parameters (`?mode=rwc`) are URL conventions of other drivers; the store sets its
    // own options.
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return Err(Error::invalid_input(format!(
            "`{target}` is not a SQLite file path (for a store in memory, use the in-memory \
             schedule store)"
        )));
    }
    Ok(PathBuf::from(path))
}

/// A connection to `path` with `flags`, waiting up to `busy` for another process's lock;
/// `what` is the error when it cannot open.
fn open_connection(
    path: &Path,
    flags: OpenFlags,
    busy: Duration,
    what: &'static str,
) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(db(what))?;
    conn.busy_timeout(busy)
        .map_err(db("cannot set the SQLite busy timeout"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The writer connection: WAL, the chosen durability, foreign keys on.
fn open_writer(path: &Path, synchronous: Synchronous, busy: Duration) -> Result<Connection> {
    let conn = open_connection(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        busy,
        "cannot open the SQLite database",
    )?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(db("cannot switch the SQLite database to WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::new(
            ErrorKind::Configuration,
            format!("the SQLite database refused WAL mode (it is in `{mode}` mode)"),
        ));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = {};",
        synchronous.pragma(),
        WRITER_CHECKPOINT_PAGES
    ))
    .map_err(db("cannot configure the SQLite connection"))?;
    Ok(conn)
}

/// A read-only connection.
fn open_reader(path: &Path, busy: Duration) -> Result<Connection> {
    open_connection(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY,
        busy,
        "cannot open the SQLite database for reading",
    )
}

/// Applies the migrations the file lacks, in one write transaction.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("cannot lock the SQLite database to migrate it"))?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS socialpub_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        [],
    )
    .map_err(db("cannot create the migrations table"))?;
    let applied: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM socialpub_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(db("cannot read the schema version"))?;
    check_not_newer(applied, MIGRATIONS, "SQLite")?;
    for m in MIGRATIONS.iter().filter(|m| m.version > applied) {
        tx.execute_batch(m.sql).map_err(|e| {
            Error::storage(
                format!("SQLite migration {} ({}) failed: {e}", m.version, m.name),
                e,
            )
        })?;
        tx.execute(
            "INSERT INTO socialpub_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, micros(Utc::now())],
        )
        .map_err(db("cannot record a migration"))?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied SQLite migration"
        );
    }
    tx.commit()
        .map_err(db("cannot finish migrating the SQLite database"))
}

type Job = Box<dyn FnOnce(&mut Connection, &mut Kept) + Send>;

/// Most rows [`Kept`] holds: those of the deliveries in flight, for a bounded memory.
const KEPT_MAX: usize = 16_384;

/// The rows of deliveries in flight as the writer connection last claimed or wrote them: a
/// batch of state changes starts from these instead of reading (and decoding) each row again.
///
/// They are trusted only while nothing else has changed the database: no other connection
/// has committed (`PRAGMA data_version`, read inside the write transaction, is as it was
/// after this connection's last commit), and every other job on this connection drops them,
/// but for an insert (new rows only) and a lease renewal (which drops its own row).
#[derive(Default)]
struct Kept {
    rows: HashMap<Uuid, Delivery>,
    data_version: Option<i64>,
}

impl Kept {
    /// Inside a write transaction: drops the rows if another connection committed since
    /// they were kept.
    fn check(&mut self, conn: &Connection) -> Result<i64> {
        let version: i64 = conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(db("cannot read the SQLite data version"))?;
        if self.data_version != Some(version) {
            self.rows.clear();
            self.data_version = Some(version);
        }
        Ok(version)
    }

    /// After a commit at `version`: keeps `d` if it is still in a worker's hands.
    fn keep(&mut self, version: i64, d: Delivery) {
        self.data_version = Some(version);
        if d.lease.is_some() && (self.rows.len() < KEPT_MAX || self.rows.contains_key(&d.id)) {
            self.rows.insert(d.id, d);
        } else {
            self.rows.remove(&d.id);
        }
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.data_version = None;
    }
}

/// The writer connection, owned by one thread that runs the jobs sent to it in order.
struct Writer {
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave their contents half-changed (they hold a
    // sender, a receiver or idle connections): carry on.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Writer {
    /// Starts the thread; `open` makes its connection there (so a slow migration blocks no
    /// async worker). After each job it signals `kick` (the [`Checkpointer`]), without
    /// waiting.
    async fn start(
        kick: std::sync::mpsc::SyncSender<()>,
        open: impl FnOnce() -> Result<Connection> + Send + 'static,
    ) -> Result<Writer> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let (opened_tx, opened) = oneshot::channel::<Result<()>>();
        let (stopped_tx, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("socialpub-sqlite-writer".into())
            .spawn(move || {
                let mut kept = Kept::default();
                let mut conn = match open() {
                    Ok(conn) => {
                        let _ = opened_tx.send(Ok(()));
                        conn
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    // A panicking job drops its reply (its caller gets an error) and rolls back
                    // its transaction as it unwinds; the connection stays usable.
                    let done =
                        std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn, &mut kept)));
                    if done.is_err() {
                        kept.clear();
                    }
                    let _ = kick.try_send(());
                }
                drop(conn);
                let _ = stopped_tx.send(());
            })
            .map_err(|e| Error::storage("cannot start the SQLite writer thread", e))?;
        opened.await.map_err(|_| closed())??;
        Ok(Writer {
            jobs: Mutex::new(Some(jobs)),
            stopped: Mutex::new(Some(stopped)),
        })
    }

    /// Runs `f` on the writer connection and returns what it returns. The kept rows are
    /// dropped first: `f` may change any row.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.run_keeping(move |conn, kept| {
            kept.clear();
            f(conn)
        })
        .await
    }

    /// Runs `f` on the writer connection with the kept rows, which `f` keeps true.
    async fn run_keeping<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &mut Kept) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn, kept| {
            let _ = reply.send(f(conn, kept));
        });
        lock(&self.jobs)
            .as_ref()
            .ok_or_else(closed)?
            .send(job)
            .map_err(|_| closed())?;
        rx.await.map_err(|_| {
            Error::new(
                ErrorKind::Storage,
                "the SQLite writer stopped before answering; the write may or may not have \
                 been applied",
            )
        })?
    }

    /// Lets the jobs already sent finish, then closes the connection.
    async fn close(&self) {
        drop(lock(&self.jobs).take());
        let stopped = lock(&self.stopped).take();
        if let Some(stopped) = stopped {
            let _ = stopped.await;
        }
    }
}

/// How often the [`Checkpointer`] looks while writes go on.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The writer's own checkpoints start only when its write-ahead log reaches this many pages
/// (64 MiB of 4 KiB pages): a backstop should the [`Checkpointer`] fall behind or be missing.
const WRITER_CHECKPOINT_PAGES: u32 = 16_384;

/// Copies the write-ahead log back into the database file on a thread of its own.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold, and a
/// checkpoint flushes the log and the database file to disk: with one writer thread, every
/// write queued behind that commit waited for the disk (stalls of hundreds of milliseconds on
/// a busy virtual disk). A `PASSIVE` checkpoint from another connection takes no write lock,
/// so the writer goes on meanwhile.
struct Checkpointer {
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Checkpointer {
    /// Starts the thread. It checkpoints at most every [`CHECKPOINT_EVERY`] after the writer
    /// signals a write, and stops when the writer does (the sender drops).
    fn start(path: PathBuf, busy: Duration, kicks: std::sync::mpsc::Receiver<()>) -> Checkpointer {
        let (stopped_tx, stopped) = oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("socialpub-sqlite-checkpoint".into())
            .spawn(move || {
                let conn = match open_checkpointer(&path, busy) {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open the SQLite checkpoint connection; the writer checkpoints by itself");
                        let _ = stopped_tx.send(());
                        return;
                    }
                };
                while kicks.recv().is_ok() {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    while kicks.try_recv().is_ok() {}
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "a SQLite checkpoint failed");
                    }
                }
                drop(conn);
                let _ = stopped_tx.send(());
            });
        let stopped = match spawned {
            Ok(_) => Some(stopped),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the SQLite checkpoint thread; the writer checkpoints by itself");
                None
            }
        };
        Checkpointer {
            stopped: Mutex::new(stopped),
        }
    }

    /// Waits until the thread has stopped (after the writer stopped).
    async fn stopped(&self) {
        let stopped = lock(&self.stopped).take();
        if let Some(stopped) = stopped {
            let _ = stopped.await;
        }
    }
}

/// The checkpoint connection: it writes the database file, so it opens it read-write.
fn open_checkpointer(path: &Path, busy: Duration) -> Result<Connection> {
    open_connection(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE,
        busy,
        "cannot open the SQLite database to checkpoint it",
    )
}

/// Read-only connections, used on Tokio's blocking threads.
struct Readers {
    path: PathBuf,
    busy: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    closed: AtomicBool,
}

impl Readers {
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = self.permits.acquire().await.map_err(|_| closed())?;
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let me = self.clone();
        let out = tokio::task::spawn_blocking(move || {
            let idle = lock(&me.idle).pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => open_reader(&me.path, me.busy)?,
            };
            let out = f(&mut conn);
            if !me.closed.load(Ordering::Acquire) {
                lock(&me.idle).push(conn);
            }
            out
        })
        .await
        .map_err(|e| Error::internal(format!("a SQLite read did not finish: {e}")))?;
        drop(permit);
        out
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.permits.close();
        lock(&self.idle).clear();
    }
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
    writer: Arc<Writer>,
    checkpointer: Checkpointer,
    readers: Arc<Readers>,
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
        self.read(|conn| {
            conn.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM socialpub_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(db("cannot read the schema version"))
        })
        .await
    }

    /// Closes the connections, waiting for writes in progress. Later calls fail.
    pub async fn close(&self) {
        self.inner.readers.close();
        self.inner.writer.close().await;
        self.inner.checkpointer.stopped().await;
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.inner.readers.run(f).await
    }

    async fn write_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.inner.writer.run(f).await
    }
}

fn immediate(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("cannot start a SQLite write transaction"))
}

fn account_from_row(row: &Row<'_>) -> Result<AccountKey> {
    let tenant: String = get(row, 0, "tenant")?;
    let platform: String = get(row, 1, "platform")?;
    let account_id: String = get(row, 2, "account_id")?;
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
        let key = key.clone();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT key_id, ciphertext FROM socialpub_tokens
                 WHERE tenant = ?1 AND platform = ?2 AND account_id = ?3",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![key.tenant, key.platform.as_str(), key.account_id],
                    |r| {
                        Ok(SealedToken {
                            key_id: r.get(0)?,
                            ciphertext: r.get(1)?,
                        })
                    },
                )
                .optional()
            })
            .map_err(db("cannot read a token"))
        })
        .await
    }

    async fn put_sealed(&self, key: &AccountKey, sealed: SealedToken) -> Result<()> {
        let key = key.clone();
        self.write_with(move |conn| {
            conn.prepare_cached(
                "INSERT INTO socialpub_tokens
                     (tenant, platform, account_id, key_id, ciphertext, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, platform, account_id) DO UPDATE SET
                     key_id = excluded.key_id, ciphertext = excluded.ciphertext,
                     updated_at = excluded.updated_at",
            )
            .and_then(|mut s| {
                s.execute(params![
                    key.tenant,
                    key.platform.as_str(),
                    key.account_id,
                    sealed.key_id,
                    sealed.ciphertext,
                    micros(Utc::now()),
                ])
            })
            .map_err(db("cannot store a token"))?;
            Ok(())
        })
        .await
    }

    async fn delete_sealed(&self, key: &AccountKey) -> Result<bool> {
        let key = key.clone();
        self.write_with(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM socialpub_tokens
                     WHERE tenant = ?1 AND platform = ?2 AND account_id = ?3",
                    params![key.tenant, key.platform.as_str(), key.account_id],
                )
                .map_err(db("cannot delete a token"))?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_sealed(&self, tenant: Option<&str>) -> Result<Vec<AccountKey>> {
        let tenant = tenant.map(str::to_owned);
        self.read(move |conn| {
            let mut s = conn
                .prepare_cached(
                    "SELECT tenant, platform, account_id FROM socialpub_tokens
                     WHERE ?1 IS NULL OR tenant = ?1
                     ORDER BY tenant, platform, account_id",
                )
                .map_err(db("cannot list tokens"))?;
            let mut rows = s.query(params![tenant]).map_err(db("cannot list tokens"))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db("cannot list tokens"))? {
                out.push(account_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }
}

/// Column `i` (named `name`, for errors) of `row`.
fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, i: usize, name: &str) -> Result<T> {
    row.get(i)
        .map_err(|e| Error::storage(format!("cannot read column {name}: {e}"), e))
}

/// Text column `i`, borrowed from the row (no copy before JSON parsing); `None` for NULL.
fn text_opt<'r>(row: &'r Row<'_>, i: usize, name: &str) -> Result<Option<&'r str>> {
    match row
        .get_ref(i)
        .map_err(|e| Error::storage(format!("cannot read column {name}: {e}"), e))?
    {
        ValueRef::Null => Ok(None),
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| corrupt(format!("column {name}: not UTF-8"))),
        _ => Err(corrupt(format!("column {name}: not text"))),
    }
}

fn text<'r>(row: &'r Row<'_>, i: usize, name: &str) -> Result<&'r str> {
    text_opt(row, i, name)?.ok_or_else(|| corrupt(format!("column {name}: NULL")))
}

fn time(row: &Row<'_>, i: usize, name: &str) -> Result<DateTime<Utc>> {
    from_micros(name, get(row, i, name)?)
}

fn time_opt(row: &Row<'_>, i: usize, name: &str) -> Result<Option<DateTime<Utc>>> {
    get::<Option<i64>>(row, i, name)?
        .map(|us| from_micros(name, us))
        .transpose()
}

/// A delivery from a row of [`DELIVERY_COLUMNS`], read by position.
fn delivery_from_row(row: &Row<'_>) -> Result<Delivery> {
    let fence: i64 = get(row, 12, "fence")?;
    let lease = match text_opt(row, 13, "lease_owner")? {
        Some(owner) => Some(Lease {
            owner: owner.to_owned(),
            fence,
            expires_at: time_opt(row, 14, "lease_expires_at")?
                .ok_or_else(|| corrupt("a lease without an expiry"))?,
        }),
        None => None,
    };
    Ok(Delivery {
        id: get(row, 0, "id")?,
        post_id: get(row, 1, "post_id")?,
        tenant: get(row, 2, "tenant")?,
        target: Target::new(
            parse_platform(text(row, 3, "platform")?)?,
            text(row, 4, "account_id")?,
        ),
        post: std::sync::Arc::new(from_json("post", text(row, 5, "post")?)?),
        state: parse_state("state", text(row, 6, "state")?)?,
        due_at: time(row, 7, "due_at")?,
        run_at: time_opt(row, 8, "run_at")?,
        attempt: to_u32("attempt", get(row, 9, "attempt")?)?,
        max_attempts: to_u32("max_attempts", get(row, 10, "max_attempts")?)?,
        deadline: time_opt(row, 11, "deadline")?,
        fence,
        lease,
        checkpoint: from_json_opt("checkpoint", text_opt(row, 15, "checkpoint")?)?,
        committed_at: time_opt(row, 16, "committed_at")?,
        receipt: from_json_opt("receipt", text_opt(row, 17, "receipt")?)?,
        last_error: from_json_opt("last_error", text_opt(row, 18, "last_error")?)?,
        had_failure: get(row, 19, "had_failure")?,
        created_at: time(row, 20, "created_at")?,
        updated_at: time(row, 21, "updated_at")?,
    })
}

fn history_from_row(row: &Row<'_>) -> Result<HistoryEntry> {
    Ok(HistoryEntry {
        delivery_id: get(row, 0, "delivery_id")?,
        at: time(row, 1, "at")?,
        from: text_opt(row, 2, "from_state")?
            .map(|s| parse_state("from_state", s))
            .transpose()?,
        to: parse_state("to_state", text(row, 3, "to_state")?)?,
        attempt: to_u32("attempt", get(row, 4, "attempt")?)?,
        worker: get(row, 5, "worker")?,
        error_kind: text_opt(row, 6, "error_kind")?
            .map(parse_kind)
            .transpose()?,
        message: get(row, 7, "message")?,
    })
}

fn event_from_row(row: &Row<'_>) -> Result<OutboxEvent> {
    Ok(OutboxEvent {
        seq: get(row, 0, "seq")?,
        event: from_json("payload", text(row, 1, "payload")?)?,
    })
}

/// Runs `sql` with `params` and decodes every row with `decode`.
fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    what: &'static str,
    decode: impl Fn(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db(what))?;
    let mut rows = stmt.query(params).map_err(db(what))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db(what))? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Writes back what a state change may change. The fence is left alone: only a claim changes
/// it (and fires the claim's history trigger). SQLite maintains an index on an UPDATE whenever
/// the statement sets one of the columns it names, whatever the value, so columns are set only
/// when they may have changed since `before`: the lease and the run time (the lease and due
/// indexes) together, and the due time, attempt limit and deadline (the tenant index) only
/// after a reschedule. A commit point thus touches no index.
fn update_delivery(conn: &Connection, d: &Delivery, before: &Before) -> Result<()> {
    let keeps_lease_and_run = lease_and_run(d) == before.lease_and_run;
    let sql = if keeps_lease_and_run {
        "UPDATE socialpub_deliveries SET state = ?1, attempt = ?2, checkpoint = ?3,
             committed_at = ?4, receipt = ?5, last_error = ?6, had_failure = ?7, updated_at = ?8
         WHERE id = ?9"
    } else {
        "UPDATE socialpub_deliveries SET state = ?1, attempt = ?2, checkpoint = ?3,
             committed_at = ?4, receipt = ?5, last_error = ?6, had_failure = ?7, updated_at = ?8,
             run_at = ?10, lease_owner = ?11, lease_expires_at = ?12
         WHERE id = ?9"
    };
    conn.prepare_cached(sql)
        .and_then(|mut s| {
            let checkpoint = to_json_opt(d.checkpoint.as_ref()).map_err(to_sql_err)?;
            let receipt = to_json_opt(d.receipt.as_ref()).map_err(to_sql_err)?;
            let last_error = to_json_opt(d.last_error.as_ref()).map_err(to_sql_err)?;
            s.raw_bind_parameter(1, d.state.as_str())?;
            s.raw_bind_parameter(2, i64::from(d.attempt))?;
            s.raw_bind_parameter(3, checkpoint)?;
            s.raw_bind_parameter(4, d.committed_at.map(micros))?;
            s.raw_bind_parameter(5, receipt)?;
            s.raw_bind_parameter(6, last_error)?;
            s.raw_bind_parameter(7, d.had_failure)?;
            s.raw_bind_parameter(8, micros(d.updated_at))?;
            s.raw_bind_parameter(9, d.id)?;
            if !keeps_lease_and_run {
                s.raw_bind_parameter(10, d.run_at.map(micros))?;
                s.raw_bind_parameter(11, d.lease.as_ref().map(|l| l.owner.as_str()))?;
                s.raw_bind_parameter(12, d.lease.as_ref().map(|l| micros(l.expires_at)))?;
            }
            s.raw_execute()
        })
        .map_err(db("cannot update a delivery"))?;
    if fixed_part(d) != before.fixed {
        conn.prepare_cached(
            "UPDATE socialpub_deliveries SET due_at = ?1, max_attempts = ?2, deadline = ?3
             WHERE id = ?4",
        )
        .and_then(|mut s| {
            s.execute(params![
                micros(d.due_at),
                i64::from(d.max_attempts),
                d.deadline.map(micros),
                d.id,
            ])
        })
        .map_err(db("cannot update a delivery"))?;
    }
    Ok(())
}

/// The columns only a reschedule changes: due time, attempt limit, deadline.
type FixedPart = (DateTime<Utc>, u32, Option<DateTime<Utc>>);

fn fixed_part(d: &Delivery) -> FixedPart {
    (d.due_at, d.max_attempts, d.deadline)
}

/// The lease (owner and expiry) and the run time.
type LeaseAndRun = (Option<(String, DateTime<Utc>)>, Option<DateTime<Utc>>);

fn lease_and_run(d: &Delivery) -> LeaseAndRun {
    (
        d.lease.as_ref().map(|l| (l.owner.clone(), l.expires_at)),
        d.run_at,
    )
}

/// A delivery's indexed columns as read, before a state change: what its write compares with.
#[derive(Debug, Clone, PartialEq)]
struct Before {
    fixed: FixedPart,
    lease_and_run: LeaseAndRun,
}

impl Before {
    fn of(d: &Delivery) -> Self {
        Before {
            fixed: fixed_part(d),
            lease_and_run: lease_and_run(d),
        }
    }
}

/// A JSON encoding failure inside a statement's parameters, carried as a SQLite-side error.
fn to_sql_err(e: Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn insert_history(conn: &Connection, tenant: &str, h: &HistoryEntry) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO socialpub_history
             (delivery_id, tenant, at, from_state, to_state, attempt, worker, error_kind, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            h.delivery_id,
            tenant,
            micros(h.at),
            h.from.map(|s| s.as_str()),
            h.to.as_str(),
            i64::from(h.attempt),
            h.worker.as_deref(),
            h.error_kind.map(|k| k.as_str()),
            h.message.as_deref(),
        ])
    })
    .map_err(db("cannot append a history entry"))?;
    Ok(())
}

fn insert_event(conn: &Connection, e: &Event) -> Result<()> {
    let payload = to_json(e)?;
    conn.prepare_cached(
        "INSERT INTO socialpub_outbox (event_id, tenant, kind, delivery_id, at, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            e.id,
            e.tenant,
            e.kind.as_str(),
            e.delivery_id,
            micros(e.at),
            payload,
        ])
    })
    .map_err(db("cannot append an event"))?;
    Ok(())
}

fn select_delivery(conn: &Connection, id: Uuid) -> Result<Option<Delivery>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries WHERE id = ?1"
        ))
        .map_err(db("cannot read a delivery"))?;
    let mut rows = stmt
        .query(params![id])
        .map_err(db("cannot read a delivery"))?;
    match rows.next().map_err(db("cannot read a delivery"))? {
        Some(row) => delivery_from_row(row).map(Some),
        None => Ok(None),
    }
}

/// Writes a changed delivery (as it was `before`) with its history entries and events (inside
/// the caller's transaction).
fn write_step(
    conn: &Connection,
    d: &Delivery,
    before: &Before,
    history: &[HistoryEntry],
    events: &[Event],
) -> Result<()> {
    update_delivery(conn, d, before)?;
    for h in history {
        insert_history(conn, &d.tenant, h)?;
    }
    for e in events {
        insert_event(conn, e)?;
    }
    Ok(())
}

impl SqliteStore {
    /// Reads delivery `id` (of `tenant`, when given) inside one write transaction, lets `f`
    /// apply a state-machine step to it, and writes back what changed with its history and
    /// events. `None` when there is no such delivery.
    async fn modify<R: Send + 'static>(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        f: impl FnOnce(&mut Delivery) -> Result<Step<R>> + Send + 'static,
    ) -> Result<Option<R>> {
        let tenant = tenant.map(str::to_owned);
        self.write_with(move |conn| {
            let tx = immediate(conn)?;
            let Some(mut d) = select_delivery(&tx, id)? else {
                return Ok(None);
            };
            if tenant.is_some_and(|t| t != d.tenant) {
                return Ok(None);
            }
            let before = Before::of(&d);
            let step = f(&mut d)?;
            if step.changed {
                write_step(&tx, &d, &before, &step.history, &step.events)?;
            }
            tx.commit().map_err(db("cannot commit a SQLite write"))?;
            Ok(Some(step.out))
        })
        .await
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
            .write_batch(vec![op])
            .await?
            .pop()
            .unwrap_or(Ok(Fenced::Stale))
    }
}

/// Writes batches of transitions and commit points, each batch in one `BEGIN IMMEDIATE`
/// transaction run whole on the writer thread.
struct BatchWriter {
    writer: Arc<Writer>,
}

/// Takes the deliveries `ops` name (as kept, or read), applies the ops in order and writes
/// back what changed, in one transaction; keeps the rows written.
fn write_batch_now(
    conn: &mut Connection,
    kept: &mut Kept,
    ops: &[WriteOp],
) -> Result<Vec<OpResult>> {
    let tx = immediate(conn)?;
    let version = kept.check(&tx)?;
    // In key order: neighbouring reads share B-tree pages.
    let mut ids: Vec<Uuid> = ops.iter().map(WriteOp::id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut by_id = HashMap::with_capacity(ids.len());
    for id in ids {
        // Taken out: should this transaction fail, the row is read afresh next time.
        let d = match kept.rows.remove(&id) {
            Some(d) => Some(d),
            None => select_delivery(&tx, id)?,
        };
        if let Some(d) = d {
            let before = Before::of(&d);
            by_id.insert(id, (d, before));
        }
    }
    let (results, changed) = apply_batch(ops, by_id);
    for c in &changed {
        write_step(&tx, &c.delivery, &c.read_with, &c.history, &c.events)?;
    }
    tx.commit().map_err(db("cannot commit a SQLite write"))?;
    for c in changed {
        kept.keep(version, c.delivery);
    }
    Ok(results)
}

#[async_trait]
impl BatchWrite for BatchWriter {
    async fn write_batch(&self, ops: Vec<WriteOp>) -> Result<Vec<OpResult>> {
        self.writer
            .run_keeping(move |conn, kept| write_batch_now(conn, kept, &ops))
            .await
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// Inserts new deliveries with their first history entries, and `events`, in one transaction.
fn insert_now(conn: &mut Connection, deliveries: &[Delivery], events: &[Event]) -> Result<()> {
    let tx = immediate(conn)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO socialpub_deliveries (id, post_id, tenant, platform, account_id,
                     post, state, due_at, run_at, attempt, max_attempts, deadline, fence,
                     lease_owner, lease_expires_at, checkpoint, committed_at, receipt,
                     last_error, had_failure, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                     ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
            )
            .map_err(db("cannot insert deliveries"))?;
        for d in deliveries {
            stmt.execute(params![
                d.id,
                d.post_id,
                d.tenant,
                d.target.platform.as_str(),
                d.target.account_id,
                to_json(&d.post)?,
                d.state.as_str(),
                micros(d.due_at),
                d.run_at.map(micros),
                i64::from(d.attempt),
                i64::from(d.max_attempts),
                d.deadline.map(micros),
                d.fence,
                d.lease.as_ref().map(|l| l.owner.as_str()),
                d.lease.as_ref().map(|l| micros(l.expires_at)),
                to_json_opt(d.checkpoint.as_ref())?,
                d.committed_at.map(micros),
                to_json_opt(d.receipt.as_ref())?,
                to_json_opt(d.last_error.as_ref())?,
                d.had_failure,
                micros(d.created_at),
                micros(d.updated_at),
            ])
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::invalid_input("a delivery with one of these ids already exists")
                } else {
                    Error::storage(format!("cannot insert deliveries: {e}"), e)
                }
            })?;
        }
    }
    for d in deliveries {
        insert_history(&tx, &d.tenant, &d.inserted_entry())?;
    }
    for e in events {
        insert_event(&tx, e)?;
    }
    tx.commit().map_err(db("cannot commit new deliveries"))
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn insert(&self, deliveries: &[Delivery], events: &[Event]) -> Result<()> {
        if deliveries.is_empty() && events.is_empty() {
            return Ok(());
        }
        let (deliveries, events) = (deliveries.to_vec(), events.to_vec());
        // New rows only: the kept ones stay true.
        self.inner
            .writer
            .run_keeping(move |conn, _| insert_now(conn, &deliveries, &events))
            .await?;
        self.wake();
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
        let due_by = trunc(due_by);
        let until = lease_until(now, lease);
        let worker = worker.to_owned();
        // One statement inside `BEGIN IMMEDIATE … COMMIT`; the `socialpub_claim_history`
        // trigger writes the history rows.
        let mut out = self
            .inner
            .writer
            .run_keeping(move |conn, kept| {
                let tx = immediate(conn)?;
                let version = kept.check(&tx)?;
                let claimed = query_all(
                    &tx,
                    concat!(
                        "UPDATE socialpub_deliveries SET
                             claimed_due_at = run_at, fence = fence + 1, lease_owner = ?1,
                             lease_expires_at = ?2, run_at = NULL, updated_at = ?3,
                             state = CASE WHEN state IN ('scheduled', 'retry_waiting')
                                          THEN 'claimed' ELSE state END,
                             attempt = CASE WHEN state IN ('scheduled', 'retry_waiting')
                                            THEN attempt + 1 ELSE attempt END
                         WHERE id IN (
                             SELECT id FROM (SELECT id FROM socialpub_deliveries WHERE ",
                        due_condition!(),
                        " AND run_at <= ?3 ORDER BY run_at, id LIMIT ?4)
                             UNION ALL
                             SELECT id FROM (SELECT id FROM socialpub_deliveries WHERE ",
                        due_condition!(),
                        " AND run_at > ?3 AND run_at <= ?5 ORDER BY run_at, id LIMIT ?6))
                         RETURNING id, post_id, tenant, platform, account_id, post, state,
                             due_at, run_at, attempt, max_attempts, deadline, fence,
                             lease_owner, lease_expires_at, checkpoint, committed_at, receipt,
                             last_error, had_failure, created_at, updated_at, claimed_due_at"
                    ),
                    params![
                        worker,
                        micros(until),
                        micros(now),
                        i64::try_from(limit).unwrap_or(i64::MAX),
                        micros(due_by),
                        i64::try_from(ahead).unwrap_or(i64::MAX)
                    ],
                    "cannot claim deliveries",
                    |row| {
                        Ok((
                            time_opt(row, 22, "claimed_due_at")?,
                            delivery_from_row(row)?,
                        ))
                    },
                )?;
                tx.commit().map_err(db("cannot commit a claim"))?;
                for (_, d) in &claimed {
                    kept.keep(version, d.clone());
                }
                Ok(claimed)
            })
            .await?;
        out.sort_by_key(|(order, d)| (*order, d.id));
        // Every claimed row had a run time (the due condition); a missing one is taken as due
        // now rather than failing a claim already committed.
        Ok(out
            .into_iter()
            .map(|(run_at, d)| Claimed::new(d, run_at.unwrap_or(now)))
            .collect())
    }

    async fn renew_lease(&self, id: Uuid, fence: i64, until: DateTime<Utc>) -> Result<bool> {
        let until = micros(trunc(until));
        // Only this row changes: the other kept rows stay true.
        self.inner
            .writer
            .run_keeping(move |conn, kept| {
                kept.rows.remove(&id);
                let n = conn
                .prepare_cached(
                    "UPDATE socialpub_deliveries SET lease_expires_at = MAX(lease_expires_at, ?1)
                     WHERE id = ?2 AND fence = ?3 AND lease_owner IS NOT NULL",
                )
                .and_then(|mut s| s.execute(params![until, id, fence]))
                .map_err(db("cannot renew a lease"))?;
                Ok(n > 0)
            })
            .await
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
        let (checkpoint, at) = (to_json(checkpoint)?, micros(trunc(at)));
        self.write_with(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE socialpub_deliveries SET checkpoint = ?1, updated_at = ?2
                     WHERE id = ?3 AND fence = ?4 AND lease_owner IS NOT NULL",
                )
                .and_then(|mut s| s.execute(params![checkpoint, at, id, fence]))
                .map_err(db("cannot save a checkpoint"))?;
            Ok(if n > 0 {
                Fenced::Applied(())
            } else {
                Fenced::Stale
            })
        })
        .await
    }

    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<Vec<Rescued>> {
        let now = trunc(now);
        let now_us = micros(now);
        // Workers call this every round: look before taking the write lock.
        let expired = self
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT 1 FROM socialpub_deliveries
                     WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?1 LIMIT 1",
                )
                .and_then(|mut s| s.exists(params![now_us]))
                .map_err(db("cannot look for expired leases"))
            })
            .await?;
        if !expired {
            return Ok(Vec::new());
        }
        let out = self
            .write_with(move |conn| {
                let tx = immediate(conn)?;
                let expired = query_all(
                    &tx,
                    &format!(
                        "SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries
                         WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?1
                         ORDER BY lease_expires_at, id"
                    ),
                    params![now_us],
                    "cannot find expired leases",
                    delivery_from_row,
                )?;
                let mut out = Vec::with_capacity(expired.len());
                for mut d in expired {
                    let before = Before::of(&d);
                    if let Some((entry, event)) = d.apply_rescue(now) {
                        write_step(
                            &tx,
                            &d,
                            &before,
                            std::slice::from_ref(&entry),
                            event.as_slice(),
                        )?;
                        out.push(Rescued { delivery: d, event });
                    }
                }
                tx.commit().map_err(db("cannot commit a rescue"))?;
                Ok(out)
            })
            .await?;
        if !out.is_empty() {
            self.wake();
        }
        Ok(out)
    }

    async fn cancel(&self, tenant: &str, id: Uuid, at: DateTime<Utc>) -> Result<CancelOutcome> {
        let at = trunc(at);
        let out = self
            .modify(id, Some(tenant), move |d| {
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
            .modify(id, Some(tenant), move |d| {
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
        let tenant = tenant.to_owned();
        self.read(move |conn| {
            Ok(query_all(
                conn,
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries
                     WHERE id = ?1 AND tenant = ?2"
                ),
                params![id, tenant],
                "cannot read a delivery",
                delivery_from_row,
            )?
            .pop())
        })
        .await
    }

    async fn history(&self, tenant: &str, id: Uuid) -> Result<Vec<HistoryEntry>> {
        let tenant = tenant.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT delivery_id, at, from_state, to_state, attempt, worker, error_kind,
                        message
                 FROM socialpub_history WHERE delivery_id = ?1 AND tenant = ?2 ORDER BY seq",
                params![id, tenant],
                "cannot read a delivery's history",
                history_from_row,
            )
        })
        .await
    }

    async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        let states = if filter.states.is_empty() {
            None
        } else {
            Some(to_json(
                &filter.states.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            )?)
        };
        let tenant = filter.tenant.clone();
        let from = filter.due_from.map(micros);
        let before = filter.due_before.map(micros);
        let post_id = filter.post_id;
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            query_all(
                conn,
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries
                     WHERE tenant = ?1
                       AND (?2 IS NULL OR state IN (SELECT value FROM json_each(?2)))
                       AND (?3 IS NULL OR due_at >= ?3)
                       AND (?4 IS NULL OR due_at < ?4)
                       AND (?5 IS NULL OR post_id = ?5)
                     ORDER BY due_at, id LIMIT ?6"
                ),
                params![tenant, states, from, before, post_id, limit],
                "cannot list deliveries",
                delivery_from_row,
            )
        })
        .await
    }

    async fn next_times(&self) -> Result<NextTimes> {
        let (due, lease) = self
            .read(|conn| {
                conn.prepare_cached(concat!(
                    "SELECT (SELECT MIN(run_at) FROM socialpub_deliveries WHERE ",
                    due_condition!(),
                    "), (SELECT MIN(lease_expires_at) FROM socialpub_deliveries ",
                    "WHERE lease_owner IS NOT NULL)"
                ))
                .and_then(|mut s| {
                    s.query_row([], |r| {
                        Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?))
                    })
                })
                .map_err(db("cannot read the next due time"))
            })
            .await?;
        Ok(NextTimes::new(
            due.map(|us| from_micros("run_at", us)).transpose()?,
            lease
                .map(|us| from_micros("lease_expires_at", us))
                .transpose()?,
        ))
    }

    async fn append_event(&self, event: &Event) -> Result<()> {
        let event = event.clone();
        self.write_with(move |conn| insert_event(conn, &event))
            .await
    }

    async fn events(&self, after: Option<i64>, limit: usize) -> Result<Vec<OutboxEvent>> {
        let after = after.unwrap_or(i64::MIN);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT seq, payload FROM socialpub_outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                params![after, limit],
                "cannot read the outbox",
                event_from_row,
            )
        })
        .await
    }

    async fn ack_events(&self, seqs: &[i64]) -> Result<u64> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let seqs = to_json(seqs)?;
        self.write_with(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM socialpub_outbox WHERE seq IN (SELECT value FROM json_each(?1))",
                    params![seqs],
                )
                .map_err(db("cannot acknowledge events"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<PurgeReport> {
        let before = micros(before);
        self.write_with(move |conn| {
            let tx = immediate(conn)?;
            tx.execute(
                &format!(
                    "DELETE FROM socialpub_history WHERE delivery_id IN (
                         SELECT id FROM socialpub_deliveries
                         WHERE {FINISHED} AND updated_at < ?1)"
                ),
                params![before],
            )
            .map_err(db("cannot purge history"))?;
            let deliveries = tx
                .execute(
                    &format!(
                        "DELETE FROM socialpub_deliveries
                         WHERE {FINISHED} AND updated_at < ?1"
                    ),
                    params![before],
                )
                .map_err(db("cannot purge deliveries"))? as u64;
            let events = tx
                .execute(
                    "DELETE FROM socialpub_outbox WHERE at < ?1",
                    params![before],
                )
                .map_err(db("cannot purge events"))? as u64;
            tx.commit().map_err(db("cannot commit a purge"))?;
            Ok(PurgeReport { deliveries, events })
        })
        .await
    }

    async fn export_tenant(&self, tenant: &str) -> Result<TenantExport> {
        let tenant = tenant.to_owned();
        self.read(move |conn| {
            // One read transaction, so the three parts agree.
            let tx = conn.transaction().map_err(db("cannot start an export"))?;
            let deliveries = query_all(
                &tx,
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM socialpub_deliveries WHERE tenant = ?1
                     ORDER BY due_at, id"
                ),
                params![tenant],
                "cannot export deliveries",
                delivery_from_row,
            )?;
            let history = query_all(
                &tx,
                "SELECT h.delivery_id, h.at, h.from_state, h.to_state, h.attempt, h.worker,
                        h.error_kind, h.message
                 FROM socialpub_history h JOIN socialpub_deliveries d ON d.id = h.delivery_id
                 WHERE d.tenant = ?1 ORDER BY d.due_at, d.id, h.seq",
                params![tenant],
                "cannot export history",
                history_from_row,
            )?;
            let events = query_all(
                &tx,
                "SELECT seq, payload FROM socialpub_outbox WHERE tenant = ?1 ORDER BY seq",
                params![tenant],
                "cannot export events",
                |r| event_from_row(r).map(|e| e.event),
            )?;
            tx.commit().map_err(db("cannot finish an export"))?;
            Ok(TenantExport {
                tenant,
                deliveries,
                history,
                events,
            })
        })
        .await
    }

    async fn delete_tenant(&self, tenant: &str) -> Result<u64> {
        let tenant = tenant.to_owned();
        self.write_with(move |conn| {
            let tx = immediate(conn)?;
            tx.execute(
                "DELETE FROM socialpub_history WHERE delivery_id IN (
                     SELECT id FROM socialpub_deliveries WHERE tenant = ?1)",
                params![tenant],
            )
            .map_err(db("cannot delete a tenant's history"))?;
            let n = tx
                .execute(
                    "DELETE FROM socialpub_deliveries WHERE tenant = ?1",
                    params![tenant],
                )
                .map_err(db("cannot delete a tenant's deliveries"))? as u64;
            tx.execute(
                "DELETE FROM socialpub_outbox WHERE tenant = ?1",
                params![tenant],
            )
            .map_err(db("cannot delete a tenant's events"))?;
            tx.commit()
                .map_err(db("cannot commit a tenant's deletion"))?;
            Ok(n)
        })
        .await
    }

    fn wakeups(&self) -> Option<Arc<Notify>> {
        Some(self.inner.wake.clone())
    }
}
