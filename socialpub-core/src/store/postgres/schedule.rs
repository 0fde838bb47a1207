//! The [`ScheduleStore`] implementation: claims, leases, transitions, queries and retention.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use tokio::sync::Notify;
use uuid::Uuid;

use super::PostgresStore;
use super::batch::{RowAt, refs};
use super::insert::{GROUPED_INSERT_MAX, insert_rows};
use super::rows::{
    JsonText, KEYED_COLUMNS, col, delivery_from_row, event_from_row, history_from_row,
    insert_event, write_step,
};
use crate::auth::AccountKey;
use crate::error::Result;
use crate::schedule::{
    CancelOutcome, Claimed, Delivery, DeliveryFilter, Event, Fenced, HistoryEntry, NextTimes,
    OutboxEvent, PurgeReport, RescheduleOutcome, Rescued, ScheduleStore, TenantExport, Transition,
};
use crate::store::common::{
    DELIVERY_COLUMNS, Step, WriteOp, db, due_condition, lease_until, trunc, trunc_transition,
};

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

    async fn acquire_account_slot(
        &self,
        key: &AccountKey,
        holder: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO socialpub_account_slots (tenant, platform, account_id, holder, held_until)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant, platform, account_id) DO UPDATE
             SET holder = EXCLUDED.holder, held_until = EXCLUDED.held_until
             WHERE socialpub_account_slots.holder = EXCLUDED.holder
                OR socialpub_account_slots.held_until <= $6",
        )
        .bind(&key.tenant)
        .bind(key.platform.as_str())
        .bind(&key.account_id)
        .bind(holder)
        .bind(trunc(until))
        .bind(trunc(now))
        .execute(&self.inner.pool)
        .await
        .map_err(db("cannot take an account's publish slot"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn renew_account_slot(
        &self,
        key: &AccountKey,
        holder: Uuid,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE socialpub_account_slots SET held_until = GREATEST(held_until, $1)
             WHERE tenant = $2 AND platform = $3 AND account_id = $4 AND holder = $5",
        )
        .bind(trunc(until))
        .bind(&key.tenant)
        .bind(key.platform.as_str())
        .bind(&key.account_id)
        .bind(holder)
        .execute(&self.inner.pool)
        .await
        .map_err(db("cannot renew an account's publish slot"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_account_slot(&self, key: &AccountKey, holder: Uuid) -> Result<()> {
        sqlx::query(
            "DELETE FROM socialpub_account_slots
             WHERE tenant = $1 AND platform = $2 AND account_id = $3 AND holder = $4",
        )
        .bind(&key.tenant)
        .bind(key.platform.as_str())
        .bind(&key.account_id)
        .bind(holder)
        .execute(&self.inner.pool)
        .await
        .map_err(db("cannot give up an account's publish slot"))?;
        Ok(())
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
        sqlx::query("DELETE FROM socialpub_account_slots WHERE tenant = $1")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .map_err(db("cannot delete a tenant's account slots"))?;
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
