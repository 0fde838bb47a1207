//! The group commit of transitions and commit points: batches of fenced writes in one statement.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgRow, Postgres};
use uuid::Uuid;

use super::PostgresStore;
use super::rows::{JsonText, col, delivery_from_row, int, pg_text};
use crate::error::Result;
use crate::publish::Receipt;
use crate::schedule::{Delivery, DeliveryError, Event, Fenced, HistoryEntry};
use crate::store::common::{
    BatchWrite, Changed, DELIVERY_COLUMNS, OpResult, WriteOp, apply_batch, db, terminal_states,
};

impl PostgresStore {
    /// A transition or commit point: through the group-commit task, or directly (a batch of
    /// one) when there is none.
    pub(super) async fn write(&self, op: WriteOp) -> Result<Fenced<Delivery>> {
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
}

/// Batches of transitions and commit points written at once, each on its own connection:
/// PostgreSQL flushes concurrent commits together, so while one batch waits for the disk the
/// next is already being written.
pub(super) const BATCHES_IN_FLIGHT: usize = 4;

/// Writes batches of transitions and commit points: the rows are taken as last claimed or
/// written here (or read), the ops applied, and the rows still unchanged written back with
/// their history and events in one statement (one round trip and one commit per batch when
/// every row is held); rows changed in between are redone locked.
pub(super) struct BatchWriter {
    pub(super) pool: PgPool,
    pub(super) held: Arc<Held>,
}

/// Where a row version stands: its tuple id (`ctid`) and the transaction that wrote it
/// (`xmin`, which every update of a row changes). A batch write finds each row by the tuple id
/// (a TID scan: no descent of the primary key per row) and writes it only if the tuple there is
/// still this version of this delivery; a tuple id that moved on, or was reused after a vacuum,
/// matches nothing, and the op is redone locked.
#[derive(Debug, Clone)]
pub(super) struct RowAt {
    tid: String,
    xmin: String,
}

impl RowAt {
    pub(super) fn from_row(row: &PgRow) -> Result<RowAt> {
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
pub(super) struct Held {
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
    pub(super) fn put(&self, d: Delivery, version: RowAt) {
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

    pub(super) fn forget(&self, id: &Uuid) {
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
pub(super) struct StateArrays<'a> {
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
    pub(super) fn with_capacity(n: usize) -> Self {
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

    pub(super) fn push(&mut self, d: &'a Delivery) -> Result<()> {
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

    pub(super) fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
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
pub(super) struct HistoryArrays<'a> {
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
    pub(super) fn with_capacity(n: usize) -> Self {
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

    pub(super) fn push(&mut self, tenant: &'a str, h: &'a HistoryEntry) -> Result<()> {
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

    pub(super) fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
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
pub(super) struct EventArrays<'a> {
    id: Vec<Uuid>,
    tenant: Vec<&'a str>,
    kind: Vec<&'static str>,
    delivery_id: Vec<Option<Uuid>>,
    at: Vec<DateTime<Utc>>,
    payload: Vec<JsonText<&'a Event>>,
}

impl<'a> EventArrays<'a> {
    pub(super) fn with_capacity(n: usize) -> Self {
        EventArrays {
            id: Vec::with_capacity(n),
            tenant: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            delivery_id: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
        }
    }

    pub(super) fn push(&mut self, e: &'a Event) {
        self.id.push(e.id);
        self.tenant.push(e.tenant.as_str());
        self.kind.push(e.kind.as_str());
        self.delivery_id.push(e.delivery_id);
        self.at.push(e.at);
        self.payload.push(JsonText(e));
    }

    pub(super) fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
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
pub(super) async fn read_versions<'e>(
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
pub(super) struct Written {
    pub(super) rows: Vec<(Delivery, RowAt)>,
    pub(super) conflicts: std::collections::HashSet<Uuid>,
}

/// Writes back, in one statement, the changed rows still at the version they were read at
/// (compare-and-set on `xmin`), with their history and events.
pub(super) async fn write_versions<'e>(
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
pub(super) async fn write_locked(pool: &PgPool, ops: &[WriteOp]) -> Result<Vec<OpResult>> {
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

pub(super) fn refs<T>(items: &[T]) -> Vec<&T> {
    items.iter().collect()
}
