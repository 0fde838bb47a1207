//! The connections: the writer on a thread of its own, the checkpointer, and the readers.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, oneshot};
use uuid::Uuid;

use super::{closed, db, open_connection, open_reader};
use crate::error::{Error, ErrorKind, Result};
use crate::schedule::Delivery;

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
pub(super) struct Kept {
    pub(super) rows: HashMap<Uuid, Delivery>,
    data_version: Option<i64>,
}

impl Kept {
    /// Inside a write transaction: drops the rows if another connection committed since
    /// they were kept.
    pub(super) fn check(&mut self, conn: &Connection) -> Result<i64> {
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
    pub(super) fn keep(&mut self, version: i64, d: Delivery) {
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
pub(super) struct Writer {
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave their contents half-changed (they hold a
    // sender, a receiver or idle connections): carry on.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Writer {
    /// Starts the thread; `open` makes its connection there (so a slow migration blocks no
    /// async worker). After each job it signals `kick` (the [`Checkpointer`]), without
    /// waiting.
    pub(super) async fn start(
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
    pub(super) async fn run<T: Send + 'static>(
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
    pub(super) async fn run_keeping<T: Send + 'static>(
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
    pub(super) async fn close(&self) {
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
pub(super) const WRITER_CHECKPOINT_PAGES: u32 = 16_384;

/// Copies the write-ahead log back into the database file on a thread of its own.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold, and a
/// checkpoint flushes the log and the database file to disk: with one writer thread, every
/// write queued behind that commit waited for the disk (stalls of hundreds of milliseconds on
/// a busy virtual disk). A `PASSIVE` checkpoint from another connection takes no write lock,
/// so the writer goes on meanwhile.
pub(super) struct Checkpointer {
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Checkpointer {
    /// Starts the thread. It checkpoints at most every [`CHECKPOINT_EVERY`] after the writer
    /// signals a write, and stops when the writer does (the sender drops).
    pub(super) fn start(
        path: PathBuf,
        busy: Duration,
        kicks: std::sync::mpsc::Receiver<()>,
    ) -> Checkpointer {
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
    pub(super) async fn stopped(&self) {
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
pub(super) struct Readers {
    pub(super) path: PathBuf,
    pub(super) busy: Duration,
    pub(super) idle: Mutex<Vec<Connection>>,
    pub(super) permits: Semaphore,
    pub(super) closed: AtomicBool,
}

impl Readers {
    pub(super) async fn run<T: Send + 'static>(
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

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.permits.close();
        lock(&self.idle).clear();
    }
}
