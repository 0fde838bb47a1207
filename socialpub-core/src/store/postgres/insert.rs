//! Inserts of new deliveries, grouped so concurrent schedules share a statement and a commit.

use sqlx::postgres::PgPool;

use super::batch::{EventArrays, HistoryArrays, StateArrays, refs};
use super::rows::JsonText;
use crate::error::{Error, Result};
use crate::schedule::{Delivery, Event, HistoryEntry};
use crate::store::common::{Groups, Pending, terminal_states};

/// Inserts deliveries with their first history entries and their events, and wakes other
/// processes' workers, in one statement (so one transaction and one round trip). Values go as
/// typed arrays, documents as `json` text: PostgreSQL's JSON functions would unescape every
/// string of a document, and refuse `\u0000`, which a post may hold.
pub(super) async fn insert_rows(
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
///
/// [`ScheduleStore::insert`]: crate::schedule::ScheduleStore::insert
pub(super) const GROUPED_INSERT_MAX: usize = 256;

/// Grouped inserts written at once.
const INSERTS_IN_FLIGHT: usize = 2;

pub(super) type InsertCall = (Vec<Delivery>, Vec<Event>);

/// Group commit of schedules: every schedule is a transaction that waits for the disk, and on
/// a disk that flushes slowly those waits, one per post, queue up. Calls that arrive while a
/// group is being written share the next statement and its one commit. A failed group (one
/// caller's duplicate id, say) is retried call by call, so a call fails only for its own rows.
pub(super) fn insert_groups(pool: PgPool, channel: String) -> Option<Groups<InsertCall, ()>> {
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
