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

mod batch;
mod connections;
mod insert;
mod rows;
mod schedule;
mod tokens;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use tokio::sync::{Notify, Semaphore};
use uuid::Uuid;

use super::common::{Batcher, Migration, Step, check_not_newer, micros};
use crate::error::{Error, ErrorKind, Result};
use crate::schedule::Delivery;
use batch::BatchWriter;
use connections::{Checkpointer, Readers, WRITER_CHECKPOINT_PAGES, Writer};
use rows::{Before, select_delivery, write_step};

/// The embedded schema, applied in order when a store opens.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "cheaper_state_changes",
        sql: include_str!("../../../migrations/sqlite/0002_cheaper_state_changes.sql"),
    },
    Migration {
        version: 3,
        name: "account_slots",
        sql: include_str!("../../../migrations/sqlite/0003_account_slots.sql"),
    },
];

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
///
/// [`SealedTokenStore`]: crate::auth::SealedTokenStore
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
}
