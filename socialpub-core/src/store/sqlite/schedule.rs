//! The [`ScheduleStore`] implementation: claims, leases, transitions, queries and retention.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;
use tokio::sync::Notify;
use uuid::Uuid;

use super::insert::insert_now;
use super::rows::{
    Before, delivery_from_row, event_from_row, history_from_row, insert_event, query_all, time_opt,
    write_step,
};
use super::{SqliteStore, db, immediate};
use crate::auth::AccountKey;
use crate::error::Result;
use crate::schedule::{
    CancelOutcome, Claimed, Delivery, DeliveryFilter, Event, Fenced, HistoryEntry, NextTimes,
    OutboxEvent, PurgeReport, RescheduleOutcome, Rescued, ScheduleStore, TenantExport, Transition,
};
use crate::store::common::{
    DELIVERY_COLUMNS, Step, WriteOp, due_condition, from_micros, lease_until, micros, to_json,
    trunc, trunc_transition,
};

/// Finished deliveries, word for word as in the condition of the index the purge uses
/// (`socialpub_deliveries_finished`): SQLite matches a partial index's condition by its terms.
const FINISHED: &str = "(state = 'published' OR state = 'failed' OR state = 'cancelled')";

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

    async fn acquire_account_slot(
        &self,
        key: &AccountKey,
        holder: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let (tenant, platform, account) = slot_key(key);
        let (now, until) = (micros(trunc(now)), micros(trunc(until)));
        // The slots are not delivery rows: the kept rows stay true.
        self.inner
            .writer
            .run_keeping(move |conn, _| {
                let n = conn
                    .prepare_cached(
                        "INSERT INTO socialpub_account_slots
                             (tenant, platform, account_id, holder, held_until)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (tenant, platform, account_id) DO UPDATE
                         SET holder = excluded.holder, held_until = excluded.held_until
                         WHERE socialpub_account_slots.holder = excluded.holder
                            OR socialpub_account_slots.held_until <= ?6",
                    )
                    .and_then(|mut s| {
                        s.execute(params![tenant, platform, account, holder, until, now])
                    })
                    .map_err(db("cannot take an account's publish slot"))?;
                Ok(n > 0)
            })
            .await
    }

    async fn renew_account_slot(
        &self,
        key: &AccountKey,
        holder: Uuid,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let (tenant, platform, account) = slot_key(key);
        let until = micros(trunc(until));
        self.inner
            .writer
            .run_keeping(move |conn, _| {
                let n = conn
                    .prepare_cached(
                        "UPDATE socialpub_account_slots SET held_until = MAX(held_until, ?1)
                         WHERE tenant = ?2 AND platform = ?3 AND account_id = ?4 AND holder = ?5",
                    )
                    .and_then(|mut s| s.execute(params![until, tenant, platform, account, holder]))
                    .map_err(db("cannot renew an account's publish slot"))?;
                Ok(n > 0)
            })
            .await
    }

    async fn release_account_slot(&self, key: &AccountKey, holder: Uuid) -> Result<()> {
        let (tenant, platform, account) = slot_key(key);
        self.inner
            .writer
            .run_keeping(move |conn, _| {
                conn.prepare_cached(
                    "DELETE FROM socialpub_account_slots
                     WHERE tenant = ?1 AND platform = ?2 AND account_id = ?3 AND holder = ?4",
                )
                .and_then(|mut s| s.execute(params![tenant, platform, account, holder]))
                .map_err(db("cannot give up an account's publish slot"))?;
                Ok(())
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
            tx.execute(
                "DELETE FROM socialpub_account_slots WHERE tenant = ?1",
                params![tenant],
            )
            .map_err(db("cannot delete a tenant's account slots"))?;
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

/// The owned columns of an account's slot row.
fn slot_key(key: &AccountKey) -> (String, String, String) {
    (
        key.tenant.clone(),
        key.platform.as_str().to_owned(),
        key.account_id.clone(),
    )
}
