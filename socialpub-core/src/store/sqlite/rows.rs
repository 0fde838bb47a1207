//! Rows to values and values to rows: decoding a read row, encoding a written one.

use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row, params};
use uuid::Uuid;

use super::db;
use crate::error::{Error, Result};
use crate::post::Target;
use crate::schedule::{Delivery, Event, HistoryEntry, Lease, OutboxEvent};
use crate::store::common::{
    DELIVERY_COLUMNS, corrupt, from_json, from_json_opt, from_micros, micros, parse_kind,
    parse_platform, parse_state, to_json, to_json_opt, to_u32,
};

/// Column `i` (named `name`, for errors) of `row`.
pub(super) fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, i: usize, name: &str) -> Result<T> {
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

pub(super) fn time(row: &Row<'_>, i: usize, name: &str) -> Result<DateTime<Utc>> {
    from_micros(name, get(row, i, name)?)
}

pub(super) fn time_opt(row: &Row<'_>, i: usize, name: &str) -> Result<Option<DateTime<Utc>>> {
    get::<Option<i64>>(row, i, name)?
        .map(|us| from_micros(name, us))
        .transpose()
}

/// A delivery from a row of [`DELIVERY_COLUMNS`], read by position.
pub(super) fn delivery_from_row(row: &Row<'_>) -> Result<Delivery> {
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

pub(super) fn history_from_row(row: &Row<'_>) -> Result<HistoryEntry> {
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

pub(super) fn event_from_row(row: &Row<'_>) -> Result<OutboxEvent> {
    Ok(OutboxEvent {
        seq: get(row, 0, "seq")?,
        event: from_json("payload", text(row, 1, "payload")?)?,
    })
}

/// Runs `sql` with `params` and decodes every row with `decode`.
pub(super) fn query_all<T>(
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
pub(super) struct Before {
    fixed: FixedPart,
    lease_and_run: LeaseAndRun,
}

impl Before {
    pub(super) fn of(d: &Delivery) -> Self {
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

pub(super) fn insert_history(conn: &Connection, tenant: &str, h: &HistoryEntry) -> Result<()> {
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

pub(super) fn insert_event(conn: &Connection, e: &Event) -> Result<()> {
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

pub(super) fn select_delivery(conn: &Connection, id: Uuid) -> Result<Option<Delivery>> {
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
pub(super) fn write_step(
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
