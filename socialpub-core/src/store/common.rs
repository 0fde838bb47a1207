//! What the SQL stores share: embedded migrations, error mapping, time and JSON helpers.

use chrono::{DateTime, Utc};
#[cfg(feature = "sqlite")]
use serde::Serialize;
#[cfg(feature = "sqlite")]
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};

/// One embedded schema change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Applied in increasing order; recorded in `socialpub_migrations`.
    pub(crate) version: i64,
    /// A short name, for the record and for errors.
    pub(crate) name: &'static str,
    /// The statements (several, separated by semicolons).
    pub(crate) sql: &'static str,
}

/// Refuses a database that a newer socialpub migrated: its schema may not be what this code
/// reads and writes.
pub(crate) fn check_not_newer(applied: i64, known: &[Migration], backend: &str) -> Result<()> {
    let newest = known.iter().map(|m| m.version).max().unwrap_or(0);
    if applied > newest {
        return Err(Error::new(
            ErrorKind::Configuration,
            format!(
                "the {backend} database has schema version {applied}, newer than this socialpub \
                 knows ({newest}); upgrade socialpub"
            ),
        ));
    }
    Ok(())
}

#[cfg(feature = "postgres")]
/// A database error as socialpub's [`Error`] (class [`ErrorKind::Storage`]).
pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::storage(format!("{what}: {e}"), e)
}

/// A value read back from the database that does not parse: the row was not written by
/// socialpub, or by an incompatible version.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Storage,
        format!("a stored row does not parse: {what}"),
    )
}

#[cfg(feature = "sqlite")]
/// `value` as JSON text.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::internal(format!("JSON encoding failed: {e}")))
}

#[cfg(feature = "sqlite")]
/// `value` as JSON text, when present.
pub(crate) fn to_json_opt<T: Serialize>(value: Option<&T>) -> Result<Option<String>> {
    value.map(to_json).transpose()
}

#[cfg(feature = "sqlite")]
/// Parses JSON text read from a column.
pub(crate) fn from_json<T: DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("column {column}: {e}")))
}

#[cfg(feature = "sqlite")]
/// Parses optional JSON text read from a column.
pub(crate) fn from_json_opt<T: DeserializeOwned>(
    column: &str,
    text: Option<&str>,
) -> Result<Option<T>> {
    text.map(|t| from_json(column, t)).transpose()
}

#[cfg(feature = "sqlite")]
/// An instant as integer microseconds since the Unix epoch (how SQLite keeps times).
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

#[cfg(feature = "sqlite")]
/// Microseconds since the Unix epoch as an instant.
pub(crate) fn from_micros(column: &str, us: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| corrupt(format!("column {column}: {us}")))
}

/// `at` truncated to whole microseconds: what both databases keep, so a delivery returned by a
/// write equals the same delivery read back.
pub(crate) fn trunc(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// A column count (attempts) read back as `u32`.
pub(crate) fn to_u32(column: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(format!("column {column}: {v}")))
}

/// The SQL condition of a delivery a claim may take (its `run_at` aside): unleased, with a run
/// time, in a claimable state. Written exactly as SQLite's partial index
/// `socialpub_deliveries_due` is, so its planner matches them; PostgreSQL's index leaves the
/// state out (only a claimable state has a run time) and proves the match itself.
macro_rules! due_condition {
    () => {
        "lease_owner IS NULL AND run_at IS NOT NULL \
         AND state IN ('scheduled', 'retry_waiting', 'processing', 'unconfirmed')"
    };
}
pub(crate) use due_condition;

/// The delivery columns, in the order the row decoders read them.
pub(crate) const DELIVERY_COLUMNS: &str = "id, post_id, tenant, platform, account_id, post, \
    state, due_at, run_at, attempt, max_attempts, deadline, fence, lease_owner, \
    lease_expires_at, checkpoint, committed_at, receipt, last_error, had_failure, created_at, \
    updated_at";

/// The terminal states, as SQL (a macro, for `concat!`).
macro_rules! terminal_states {
    () => {
        "('published', 'failed', 'cancelled')"
    };
}
pub(crate) use terminal_states;

/// Parses a stored state.
pub(crate) fn parse_state(column: &str, s: &str) -> Result<crate::schedule::DeliveryState> {
    s.parse()
        .map_err(|_| corrupt(format!("column {column}: unknown state {s:?}")))
}

/// Parses a stored error class.
pub(crate) fn parse_kind(s: &str) -> Result<ErrorKind> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| corrupt(format!("column error_kind: unknown class {s:?}")))
}

/// Parses a stored platform.
pub(crate) fn parse_platform(s: &str) -> Result<crate::platform::Platform> {
    s.parse()
        .map_err(|_| corrupt(format!("column platform: unknown platform {s:?}")))
}

/// A lease expiring `lease` after `now`, at microsecond precision.
pub(crate) fn lease_until(now: DateTime<Utc>, lease: std::time::Duration) -> DateTime<Utc> {
    trunc(now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::days(36_500)))
}

/// A worker's transition with its instants truncated to what the database keeps.
pub(crate) fn trunc_transition(t: &crate::schedule::Transition) -> crate::schedule::Transition {
    let mut t = t.clone();
    t.at = trunc(t.at);
    t.run_at = t.run_at.map(trunc);
    t
}

/// What a read-modify-write step decided.
pub(crate) struct Step<R> {
    /// Whether the delivery changed and must be written back.
    pub(crate) changed: bool,
    /// History entries to append.
    pub(crate) history: Vec<crate::schedule::HistoryEntry>,
    /// Events to append to the outbox.
    pub(crate) events: Vec<crate::schedule::Event>,
    /// What the call returns.
    pub(crate) out: R,
}

impl<R> Step<R> {
    /// Nothing to write; returns `out`.
    pub(crate) fn unchanged(out: R) -> Self {
        Step {
            changed: false,
            history: Vec::new(),
            events: Vec::new(),
            out,
        }
    }

    /// Write the delivery back with `history` (if any) and `event` (if any); returns `out`.
    pub(crate) fn changed(
        out: R,
        history: Option<crate::schedule::HistoryEntry>,
        event: Option<crate::schedule::Event>,
    ) -> Self {
        Step {
            changed: true,
            history: history.into_iter().collect(),
            events: event.into_iter().collect(),
            out,
        }
    }
}

/// A fenced write a [`Batcher`] groups with others into one transaction.
#[derive(Debug, Clone)]
pub(crate) enum WriteOp {
    /// [`crate::schedule::ScheduleStore::transition`], instants already truncated.
    Transition(Box<crate::schedule::Transition>),
    /// [`crate::schedule::ScheduleStore::commit_point`], the instant already truncated.
    CommitPoint {
        id: uuid::Uuid,
        fence: i64,
        at: DateTime<Utc>,
    },
}

impl WriteOp {
    pub(crate) fn id(&self) -> uuid::Uuid {
        match self {
            WriteOp::Transition(t) => t.id,
            WriteOp::CommitPoint { id, .. } => *id,
        }
    }

    /// Applies the op to `d` (as the state machine says); `Ok(None)` when stale.
    pub(crate) fn apply(
        &self,
        d: &mut crate::schedule::Delivery,
    ) -> Result<
        Option<(
            Option<crate::schedule::HistoryEntry>,
            Option<crate::schedule::Event>,
        )>,
    > {
        match self {
            WriteOp::Transition(t) => Ok(d
                .apply_transition(t)?
                .map(|h| (Some(h), t.event.as_deref().cloned()))),
            WriteOp::CommitPoint { fence, at, .. } => {
                Ok(d.apply_commit_point(*fence, *at)?.map(|h| (h, None)))
            }
        }
    }
}

/// The outcome of one op of a batch.
pub(crate) type OpResult = Result<crate::schedule::Fenced<crate::schedule::Delivery>>;

/// Writes a batch of ops in one transaction; the per-op results are in the ops' order.
#[async_trait::async_trait]
pub(crate) trait BatchWrite: Send + Sync + 'static {
    async fn write_batch(&self, ops: Vec<WriteOp>) -> Result<Vec<OpResult>>;
}

/// What a batch decided for one delivery: its new row, and the history entries and events to
/// append with it.
pub(crate) struct Changed<V> {
    pub(crate) delivery: crate::schedule::Delivery,
    /// What the store read with the row (PostgreSQL: its version, for a compare-and-set).
    pub(crate) read_with: V,
    pub(crate) history: Vec<crate::schedule::HistoryEntry>,
    pub(crate) events: Vec<crate::schedule::Event>,
}

/// Applies `ops` in order to the deliveries read for them (`rows`, by id, each with what the
/// store read along): what each op returns, and each changed delivery once, with its history
/// entries and events in order.
pub(crate) fn apply_batch<V>(
    ops: &[WriteOp],
    mut rows: std::collections::HashMap<uuid::Uuid, (crate::schedule::Delivery, V)>,
) -> (Vec<OpResult>, Vec<Changed<V>>) {
    use crate::schedule::Fenced;
    let mut results = Vec::with_capacity(ops.len());
    let mut changed: Vec<Changed<V>> = Vec::new();
    let mut slot: std::collections::HashMap<uuid::Uuid, usize> = std::collections::HashMap::new();
    for op in ops {
        let id = op.id();
        // Applied in place: the state machine refuses an op before it changes anything
        // (`Delivery::apply_transition`, `Delivery::apply_commit_point`), so a refused op
        // leaves the row as it was.
        let applied = if let Some(&i) = slot.get(&id) {
            op.apply(&mut changed[i].delivery)
                .map(|r| r.map(|entries| (i, entries)))
        } else if let Some((mut d, read_with)) = rows.remove(&id) {
            match op.apply(&mut d) {
                Ok(Some(entries)) => {
                    changed.push(Changed {
                        delivery: d,
                        read_with,
                        history: Vec::new(),
                        events: Vec::new(),
                    });
                    slot.insert(id, changed.len() - 1);
                    Ok(Some((changed.len() - 1, entries)))
                }
                refused => {
                    rows.insert(id, (d, read_with));
                    refused.map(|_| None)
                }
            }
        } else {
            Ok(None)
        };
        match applied {
            Ok(None) => results.push(Ok(Fenced::Stale)),
            Ok(Some((i, (h, e)))) => {
                results.push(Ok(Fenced::Applied(changed[i].delivery.clone())));
                changed[i].history.extend(h);
                changed[i].events.extend(e);
            }
            Err(e) => results.push(Err(e)),
        }
    }
    (results, changed)
}

/// A call waiting in a [`Groups`] queue, with where its answer goes.
pub(crate) type Pending<Op, T> = (Op, tokio::sync::oneshot::Sender<Result<T>>);

/// Group commit: concurrent calls are queued to one task that hands whatever is waiting (up
/// to a maximum) to a writer as one group, which writes it in a single transaction and then
/// answers each caller. A caller is answered only after the commit, so each write is exactly
/// as durable as if it were alone; many calls share one commit (and one disk flush) instead
/// of paying one each. An idle store adds no delay: a lone call is written at once.
pub(crate) struct Groups<Op, T> {
    tx: tokio::sync::mpsc::UnboundedSender<Pending<Op, T>>,
    /// Said to a caller whose group was dropped unanswered (its runtime shut down).
    gone: &'static str,
}

impl<Op, T> std::fmt::Debug for Groups<Op, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").finish_non_exhaustive()
    }
}

impl<Op: Send + 'static, T: Send + 'static> Groups<Op, T> {
    /// Starts the task on the current runtime: groups of at most `max` calls, at most
    /// `in_flight` of them being written at once (1 for a store with one writer; more where
    /// the database overlaps commits, so one group's disk flush need not wait for the
    /// previous one's). `write` must answer every call of its group. The task ends when the
    /// queue is dropped. `None` outside a runtime (callers then write directly).
    pub(crate) fn start<W, Fut>(
        max: usize,
        in_flight: usize,
        gone: &'static str,
        write: W,
    ) -> Option<Self>
    where
        W: Fn(Vec<Pending<Op, T>>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Pending<Op, T>>();
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
        handle.spawn(async move {
            loop {
                // A slot first, then whatever is waiting: calls that arrive while every slot
                // is busy join the next group instead of making groups of one.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                // Sized for what is queued (recv_many grows it for more): a buffer for the
                // largest group, allocated for every group, cost more than the rest of the
                // hand-off when the groups are small.
                let mut group = Vec::with_capacity(rx.len().clamp(1, max));
                if rx.recv_many(&mut group, max).await == 0 {
                    return;
                }
                let written = write(group);
                tokio::spawn(async move {
                    let _slot = slot;
                    written.await;
                });
            }
        });
        Some(Groups { tx, gone })
    }

    /// Queues `op` and waits for its answer. `Err(op)` when the task is gone (its runtime
    /// shut down) before taking it: the caller writes it directly.
    pub(crate) async fn submit(&self, op: Op) -> std::result::Result<Result<T>, Op> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if let Err(unsent) = self.tx.send((op, reply)) {
            return Err(unsent.0.0);
        }
        Ok(rx
            .await
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Storage, self.gone))))
    }
}

/// Writes one batch and answers each of its callers.
async fn write_and_answer(
    writer: &dyn BatchWrite,
    batch: Vec<Pending<WriteOp, crate::schedule::Fenced<crate::schedule::Delivery>>>,
) {
    let (ops, replies): (Vec<WriteOp>, Vec<_>) = batch.into_iter().unzip();
    let n = ops.len();
    match writer.write_batch(ops).await {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, ops = n, "a batch of writes failed");
            for reply in replies {
                let _ = reply.send(Err(Error::new(e.kind(), e.message().to_owned())));
            }
        }
    }
}

/// Group commit of the hot writes (transitions and commit points), through [`Groups`].
#[derive(Debug)]
pub(crate) struct Batcher(Groups<WriteOp, crate::schedule::Fenced<crate::schedule::Delivery>>);

/// Most ops in one transaction.
const MAX_BATCH: usize = 256;

impl Batcher {
    /// Starts the task on the current runtime, with at most `in_flight` batches being written
    /// at once. `None` outside a runtime (callers then write directly).
    ///
    /// Batches written at once may hold ops on the same delivery only from callers that did
    /// not wait for each other (a worker awaits each write before its next), so no order
    /// between them is lost; stores fence every op against the row as it is when written.
    pub(crate) fn start(
        writer: std::sync::Arc<dyn BatchWrite>,
        in_flight: usize,
    ) -> Option<Batcher> {
        Groups::start(
            MAX_BATCH,
            in_flight,
            "the store's write task stopped before answering (its runtime shut down); the \
             write may or may not have been applied",
            move |batch| {
                let writer = writer.clone();
                async move { write_and_answer(writer.as_ref(), batch).await }
            },
        )
        .map(Batcher)
    }

    /// Queues `op` and waits for its result. `Err(op)` when the task is gone (its runtime
    /// shut down) before taking it: the caller writes it directly.
    pub(crate) async fn submit(&self, op: WriteOp) -> std::result::Result<OpResult, WriteOp> {
        self.0.submit(op).await
    }
}
