//! Rows to values and values to rows: decoding a read row, encoding a written one.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgArgumentBuffer, PgConnection, PgHasArrayType, PgRow, PgTypeInfo, Postgres};
use sqlx::types::Json;

use crate::error::{Error, Result};
use crate::post::{Post, Target};
use crate::publish::Receipt;
use crate::schedule::{Delivery, DeliveryError, Event, HistoryEntry, Lease, OutboxEvent};
use crate::store::common::{
    corrupt, db, parse_kind, parse_platform, parse_state, terminal_states, to_u32,
};

/// [`DELIVERY_COLUMNS`] of `socialpub_deliveries d`, for queries that join its lookup keys.
///
/// [`DELIVERY_COLUMNS`]: crate::store::common::DELIVERY_COLUMNS
pub(super) const KEYED_COLUMNS: &str = "d.id, d.post_id, d.tenant, d.platform, d.account_id, d.post, \
    d.state, d.due_at, d.run_at, d.attempt, d.max_attempts, d.deadline, d.fence, d.lease_owner, \
    d.lease_expires_at, d.checkpoint, d.committed_at, d.receipt, d.last_error, d.had_failure, \
    d.created_at, d.updated_at";

/// A history message as PostgreSQL's `text` can hold it: without U+0000, which becomes
/// U+FFFD. A message quotes what a platform answered, and that may hold anything; the error
/// itself keeps its exact text in the delivery's `last_error` document.
pub(super) fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// A document bound as `json`: its text, which PostgreSQL only checks. `sqlx::types::Json`
/// declares `jsonb`, which the server would parse into its binary form and, for a `json`
/// column, print back to text.
pub(super) struct JsonText<T>(pub(super) T);

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

pub(super) fn col<'r, T>(row: &'r PgRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(name)
        .map_err(|e| Error::storage(format!("cannot read column {name}: {e}"), e))
}

pub(super) fn delivery_from_row(row: &PgRow) -> Result<Delivery> {
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

pub(super) fn history_from_row(row: &PgRow) -> Result<HistoryEntry> {
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

pub(super) fn event_from_row(row: &PgRow) -> Result<OutboxEvent> {
    Ok(OutboxEvent {
        seq: col(row, "seq")?,
        event: col::<Json<Event>>(row, "payload")?.0,
    })
}

pub(super) fn int(column: &str, v: u32) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid_input(format!("{column} {v} is too large")))
}

/// Writes back everything a transition may change, with its history entries and events, in
/// one statement.
pub(super) async fn write_step(
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

pub(super) async fn insert_event(conn: &mut PgConnection, e: &Event) -> Result<()> {
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
