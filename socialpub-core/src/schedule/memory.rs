//! [`MemoryScheduleStore`]: deliveries in process memory, indexed by due time and lease expiry.
//! The reference model the property tests compare other stores with.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use super::delivery::{
    CancelOutcome, Delivery, Fenced, HistoryEntry, RescheduleOutcome, Rescued, Transition,
};
use super::events::{Event, OutboxEvent};
use super::store::{Claimed, DeliveryFilter, NextTimes, PurgeReport, ScheduleStore, TenantExport};
use crate::auth::AccountKey;
use crate::error::{Error, Result};

#[derive(Debug, Default)]
struct Inner {
    deliveries: HashMap<Uuid, Delivery>,
    history: HashMap<Uuid, Vec<HistoryEntry>>,
    /// (run_at, id) of every unleased claimable delivery with a run time.
    due: BTreeSet<(DateTime<Utc>, Uuid)>,
    /// (expires_at, id) of every lease.
    leases: BTreeSet<(DateTime<Utc>, Uuid)>,
    outbox: BTreeMap<i64, Event>,
    next_seq: i64,
    /// Each account's publish slot: its holder and until when.
    slots: HashMap<AccountKey, (Uuid, DateTime<Utc>)>,
}

fn due_key(d: &Delivery) -> Option<(DateTime<Utc>, Uuid)> {
    if d.lease.is_none() && d.state.is_claimable() {
        d.run_at.map(|t| (t, d.id))
    } else {
        None
    }
}

fn lease_key(d: &Delivery) -> Option<(DateTime<Utc>, Uuid)> {
    d.lease.as_ref().map(|l| (l.expires_at, d.id))
}

impl Inner {
    fn unindex(&mut self, d: &Delivery) {
        if let Some(k) = due_key(d) {
            self.due.remove(&k);
        }
        if let Some(k) = lease_key(d) {
            self.leases.remove(&k);
        }
    }

    fn index(&mut self, d: &Delivery) {
        if let Some(k) = due_key(d) {
            self.due.insert(k);
        }
        if let Some(k) = lease_key(d) {
            self.leases.insert(k);
        }
    }

    /// Runs `f` on delivery `id` in place, keeping the indexes right.
    fn update<R>(&mut self, id: Uuid, f: impl FnOnce(&mut Delivery) -> R) -> Option<R> {
        let d = self.deliveries.get_mut(&id)?;
        let (due, lease) = (due_key(d), lease_key(d));
        let r = f(d);
        let (due_now, lease_now) = (due_key(d), lease_key(d));
        if due != due_now {
            if let Some(k) = due {
                self.due.remove(&k);
            }
            if let Some(k) = due_now {
                self.due.insert(k);
            }
        }
        if lease != lease_now {
            if let Some(k) = lease {
                self.leases.remove(&k);
            }
            if let Some(k) = lease_now {
                self.leases.insert(k);
            }
        }
        Some(r)
    }

    fn record(&mut self, entry: HistoryEntry) {
        self.history
            .entry(entry.delivery_id)
            .or_default()
            .push(entry);
    }

    fn push_event(&mut self, event: Event) {
        self.next_seq += 1;
        self.outbox.insert(self.next_seq, event);
    }

    fn remove(&mut self, id: Uuid) {
        if let Some(d) = self.deliveries.remove(&id) {
            self.unindex(&d);
        }
        self.history.remove(&id);
    }
}

/// Deliveries, history and outbox in process memory: for tests, demos and single-process
/// tools. Nothing survives the process. Cloning shares the same store.
#[derive(Debug, Clone, Default)]
pub struct MemoryScheduleStore {
    inner: Arc<Mutex<Inner>>,
    wake: Arc<Notify>,
}

impl MemoryScheduleStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| Error::internal("schedule store lock poisoned"))
    }
}

fn lease_until(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

#[async_trait]
impl ScheduleStore for MemoryScheduleStore {
    async fn insert(&self, deliveries: &[Delivery], events: &[Event]) -> Result<()> {
        {
            let mut g = self.lock()?;
            if let Some(d) = deliveries.iter().find(|d| g.deliveries.contains_key(&d.id)) {
                return Err(Error::invalid_input(format!(
                    "delivery {} already exists",
                    d.id
                )));
            }
            for d in deliveries {
                g.index(d);
                g.record(d.inserted_entry());
                g.deliveries.insert(d.id, d.clone());
            }
            for e in events {
                g.push_event(e.clone());
            }
        }
        self.wake.notify_waiters();
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
        let mut g = self.lock()?;
        let mut due: Vec<(DateTime<Utc>, Uuid)> = g
            .due
            .iter()
            .take_while(|(t, _)| *t <= now)
            .take(limit)
            .copied()
            .collect();
        due.extend(
            g.due
                .iter()
                .skip_while(|(t, _)| *t <= now)
                .take_while(|(t, _)| *t <= due_by)
                .take(ahead)
                .copied(),
        );
        let until = lease_until(now, lease);
        let mut out = Vec::with_capacity(due.len());
        for (run_at, id) in due {
            let claimed = g.update(id, |d| {
                let entry = d.apply_claim(worker, now, until);
                (d.clone(), entry)
            });
            if let Some((d, entry)) = claimed {
                if let Some(e) = entry {
                    g.record(e);
                }
                out.push(Claimed::new(d, run_at));
            }
        }
        Ok(out)
    }

    async fn renew_lease(&self, id: Uuid, fence: i64, until: DateTime<Utc>) -> Result<bool> {
        let mut g = self.lock()?;
        Ok(g.update(id, |d| d.apply_renew(fence, until))
            .unwrap_or(false))
    }

    async fn acquire_account_slot(
        &self,
        key: &AccountKey,
        holder: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let mut g = self.lock()?;
        let free = g
            .slots
            .get(key)
            .is_none_or(|(h, held_until)| *h == holder || *held_until <= now);
        if free {
            g.slots.insert(key.clone(), (holder, until));
        }
        Ok(free)
    }

    async fn renew_account_slot(
        &self,
        key: &AccountKey,
        holder: Uuid,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let mut g = self.lock()?;
        match g.slots.get_mut(key) {
            Some((h, held_until)) if *h == holder => {
                *held_until = (*held_until).max(until);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_account_slot(&self, key: &AccountKey, holder: Uuid) -> Result<()> {
        let mut g = self.lock()?;
        if g.slots.get(key).is_some_and(|(h, _)| *h == holder) {
            g.slots.remove(key);
        }
        Ok(())
    }

    async fn transition(&self, t: &Transition) -> Result<Fenced<Delivery>> {
        let mut g = self.lock()?;
        // `apply_transition` refuses (stale fence, forbidden move) before it changes anything.
        let applied = g.update(t.id, |d| {
            d.apply_transition(t)
                .map(|entry| entry.map(|e| (e, d.clone())))
        });
        let Some((entry, d)) = applied.transpose()?.flatten() else {
            return Ok(Fenced::Stale);
        };
        g.record(entry);
        if let Some(e) = &t.event {
            g.push_event(Event::clone(e));
        }
        Ok(Fenced::Applied(d))
    }

    async fn commit_point(
        &self,
        id: Uuid,
        fence: i64,
        at: DateTime<Utc>,
    ) -> Result<Fenced<Delivery>> {
        let mut g = self.lock()?;
        // `apply_commit_point` refuses before it changes anything.
        let applied = g.update(id, |d| {
            d.apply_commit_point(fence, at)
                .map(|entry| entry.map(|e| (e, d.clone())))
        });
        let Some((entry, d)) = applied.transpose()?.flatten() else {
            return Ok(Fenced::Stale);
        };
        if let Some(e) = entry {
            g.record(e);
        }
        Ok(Fenced::Applied(d))
    }

    async fn save_checkpoint(
        &self,
        id: Uuid,
        fence: i64,
        checkpoint: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<Fenced<()>> {
        let mut g = self.lock()?;
        match g.update(id, |d| d.apply_checkpoint(fence, checkpoint, at)) {
            Some(true) => Ok(Fenced::Applied(())),
            _ => Ok(Fenced::Stale),
        }
    }

    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<Vec<Rescued>> {
        let mut out = Vec::new();
        {
            let mut g = self.lock()?;
            let ids: Vec<Uuid> = g
                .leases
                .iter()
                .take_while(|(t, _)| *t <= now)
                .map(|(_, id)| *id)
                .collect();
            for id in ids {
                let rescued = g.update(id, |d| d.apply_rescue(now).map(|r| (r, d.clone())));
                if let Some(Some(((entry, event), d))) = rescued {
                    g.record(entry);
                    if let Some(e) = &event {
                        g.push_event(e.clone());
                    }
                    out.push(Rescued { delivery: d, event });
                }
            }
        }
        if !out.is_empty() {
            self.wake.notify_waiters();
        }
        Ok(out)
    }

    async fn cancel(&self, tenant: &str, id: Uuid, at: DateTime<Utc>) -> Result<CancelOutcome> {
        let mut g = self.lock()?;
        if g.deliveries.get(&id).is_none_or(|d| d.tenant != tenant) {
            return Ok(CancelOutcome::NotFound);
        }
        let Some((outcome, entry)) = g.update(id, |d| d.apply_cancel(at)) else {
            return Ok(CancelOutcome::NotFound);
        };
        if let Some(e) = entry {
            g.record(e);
        }
        Ok(outcome)
    }

    async fn reschedule(
        &self,
        tenant: &str,
        id: Uuid,
        due_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<RescheduleOutcome> {
        let outcome = {
            let mut g = self.lock()?;
            if g.deliveries.get(&id).is_none_or(|d| d.tenant != tenant) {
                return Ok(RescheduleOutcome::NotFound);
            }
            let Some((outcome, entry)) = g.update(id, |d| d.apply_reschedule(due_at, at)) else {
                return Ok(RescheduleOutcome::NotFound);
            };
            if let Some(e) = entry {
                g.record(e);
            }
            outcome
        };
        if matches!(outcome, RescheduleOutcome::Rescheduled(_)) {
            self.wake.notify_waiters();
        }
        Ok(outcome)
    }

    async fn get(&self, tenant: &str, id: Uuid) -> Result<Option<Delivery>> {
        let g = self.lock()?;
        Ok(g.deliveries
            .get(&id)
            .filter(|d| d.tenant == tenant)
            .cloned())
    }

    async fn history(&self, tenant: &str, id: Uuid) -> Result<Vec<HistoryEntry>> {
        let g = self.lock()?;
        if g.deliveries.get(&id).is_none_or(|d| d.tenant != tenant) {
            return Ok(Vec::new());
        }
        Ok(g.history.get(&id).cloned().unwrap_or_default())
    }

    async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        let g = self.lock()?;
        let mut out: Vec<Delivery> = g
            .deliveries
            .values()
            .filter(|d| filter.matches(d))
            .cloned()
            .collect();
        out.sort_by_key(|d| (d.due_at, d.id));
        out.truncate(filter.limit);
        Ok(out)
    }

    async fn next_times(&self) -> Result<NextTimes> {
        let g = self.lock()?;
        Ok(NextTimes::new(
            g.due.first().map(|(t, _)| *t),
            g.leases.first().map(|(t, _)| *t),
        ))
    }

    async fn append_event(&self, event: &Event) -> Result<()> {
        self.lock()?.push_event(event.clone());
        Ok(())
    }

    async fn events(&self, after: Option<i64>, limit: usize) -> Result<Vec<OutboxEvent>> {
        let g = self.lock()?;
        let from = after.map_or(i64::MIN, |a| a.saturating_add(1));
        Ok(g.outbox
            .range(from..)
            .take(limit)
            .map(|(seq, event)| OutboxEvent {
                seq: *seq,
                event: event.clone(),
            })
            .collect())
    }

    async fn ack_events(&self, seqs: &[i64]) -> Result<u64> {
        let mut g = self.lock()?;
        Ok(seqs.iter().filter(|s| g.outbox.remove(s).is_some()).count() as u64)
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<PurgeReport> {
        let mut g = self.lock()?;
        let ids: Vec<Uuid> = g
            .deliveries
            .values()
            .filter(|d| d.state.is_terminal() && d.updated_at < before)
            .map(|d| d.id)
            .collect();
        for id in &ids {
            g.remove(*id);
        }
        let old: Vec<i64> = g
            .outbox
            .iter()
            .filter(|(_, e)| e.at < before)
            .map(|(s, _)| *s)
            .collect();
        for s in &old {
            g.outbox.remove(s);
        }
        Ok(PurgeReport {
            deliveries: ids.len() as u64,
            events: old.len() as u64,
        })
    }

    async fn export_tenant(&self, tenant: &str) -> Result<TenantExport> {
        let g = self.lock()?;
        let mut deliveries: Vec<Delivery> = g
            .deliveries
            .values()
            .filter(|d| d.tenant == tenant)
            .cloned()
            .collect();
        deliveries.sort_by_key(|d| (d.due_at, d.id));
        let history = deliveries
            .iter()
            .flat_map(|d| g.history.get(&d.id).cloned().unwrap_or_default())
            .collect();
        let events = g
            .outbox
            .values()
            .filter(|e| e.tenant == tenant)
            .cloned()
            .collect();
        Ok(TenantExport {
            tenant: tenant.to_owned(),
            deliveries,
            history,
            events,
        })
    }

    async fn delete_tenant(&self, tenant: &str) -> Result<u64> {
        let mut g = self.lock()?;
        let ids: Vec<Uuid> = g
            .deliveries
            .values()
            .filter(|d| d.tenant == tenant)
            .map(|d| d.id)
            .collect();
        for id in &ids {
            g.remove(*id);
        }
        g.outbox.retain(|_, e| e.tenant != tenant);
        g.slots.retain(|k, _| k.tenant != tenant);
        Ok(ids.len() as u64)
    }

    fn wakeups(&self) -> Option<Arc<Notify>> {
        Some(self.wake.clone())
    }
}
