//! [`ScheduleStore`]: the durable half of the scheduler, implemented in memory
//! ([`super::MemoryScheduleStore`]), on SQLite and on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use super::delivery::{
    CancelOutcome, Delivery, DeliveryState, Fenced, HistoryEntry, RescheduleOutcome, Rescued,
    Transition,
};
use super::events::{Event, OutboxEvent};
use crate::auth::AccountKey;
use crate::error::Result;

/// When workers next have something to do ([`ScheduleStore::next_times`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NextTimes {
    /// The smallest `run_at` of an unleased claimable delivery.
    pub run_at: Option<DateTime<Utc>>,
    /// The earliest lease expiry.
    pub lease_expiry: Option<DateTime<Utc>>,
}

impl NextTimes {
    /// The next run time and lease expiry.
    pub fn new(run_at: Option<DateTime<Utc>>, lease_expiry: Option<DateTime<Utc>>) -> Self {
        NextTimes {
            run_at,
            lease_expiry,
        }
    }

    /// The earlier of the two; `None` when neither is pending.
    pub fn earliest(&self) -> Option<DateTime<Utc>> {
        match (self.run_at, self.lease_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A delivery [`ScheduleStore::claim_ahead`] took, with the time it was due.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Claimed {
    /// The delivery, as the claim left it (leased, `run_at` cleared).
    pub delivery: Delivery,
    /// The `run_at` it had: when its step is due. Later than the claim's `now` for a
    /// delivery claimed ahead.
    pub run_at: DateTime<Utc>,
}

impl Claimed {
    /// `delivery` claimed for `run_at`.
    pub fn new(delivery: Delivery, run_at: DateTime<Utc>) -> Self {
        Claimed { delivery, run_at }
    }
}

/// Which deliveries [`ScheduleStore::list`] returns. The tenant is required: no call crosses
/// tenants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeliveryFilter {
    /// The tenant.
    pub tenant: String,
    /// Only these states (any state when empty).
    #[serde(default)]
    pub states: Vec<DeliveryState>,
    /// Only deliveries due at or after this instant (`due_at`, the user's time).
    #[serde(default)]
    pub due_from: Option<DateTime<Utc>>,
    /// Only deliveries due strictly before this instant.
    #[serde(default)]
    pub due_before: Option<DateTime<Utc>>,
    /// Only deliveries of this post.
    #[serde(default)]
    pub post_id: Option<Uuid>,
    /// At most this many (ordered by `due_at`, then id).
    pub limit: usize,
}

impl DeliveryFilter {
    /// Every delivery of `tenant`, up to 1,000.
    pub fn tenant(tenant: impl Into<String>) -> Self {
        DeliveryFilter {
            tenant: tenant.into(),
            states: Vec::new(),
            due_from: None,
            due_before: None,
            post_id: None,
            limit: 1000,
        }
    }

    /// Only these states.
    pub fn states(mut self, states: impl IntoIterator<Item = DeliveryState>) -> Self {
        self.states = states.into_iter().collect();
        self
    }

    /// Only due in `[from, before)`.
    pub fn due_between(mut self, from: DateTime<Utc>, before: DateTime<Utc>) -> Self {
        self.due_from = Some(from);
        self.due_before = Some(before);
        self
    }

    /// Only deliveries of `post_id`.
    pub fn post(mut self, post_id: Uuid) -> Self {
        self.post_id = Some(post_id);
        self
    }

    /// At most `limit`.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Whether `d` passes the filter (the limit aside).
    pub fn matches(&self, d: &Delivery) -> bool {
        d.tenant == self.tenant
            && (self.states.is_empty() || self.states.contains(&d.state))
            && self.due_from.is_none_or(|f| d.due_at >= f)
            && self.due_before.is_none_or(|b| d.due_at < b)
            && self.post_id.is_none_or(|p| d.post_id == p)
    }
}

/// What [`ScheduleStore::purge`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    /// Final deliveries removed (with their history).
    pub deliveries: u64,
    /// Outbox events removed.
    pub events: u64,
}

/// Everything a store keeps about one tenant, as [`ScheduleStore::export_tenant`] returns it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantExport {
    /// The tenant.
    pub tenant: String,
    /// Its deliveries, by `due_at` then id.
    pub deliveries: Vec<Delivery>,
    /// Their history, per delivery in order.
    pub history: Vec<HistoryEntry>,
    /// Its events still in the outbox, in order.
    pub events: Vec<Event>,
}

/// The durable half of the scheduler: deliveries, their history, and the event outbox.
///
/// The state machine itself lives in [`Delivery`]'s `apply_*` methods; a store makes each call
/// below **one atomic step** (one transaction) that applies them, records a
/// [`HistoryEntry`] for every state change, and appends the call's events to the outbox.
///
/// # Fencing
///
/// Every write a worker makes after its claim carries the claim's fence token. A store refuses
/// (with [`Fenced::Stale`], never an error) a write whose fence is not the current lease's:
/// the lease expired and was rescued, the delivery was cancelled or rescheduled, or another
/// worker claimed it since. Stores never look at the clock to judge a lease: only
/// [`ScheduleStore::rescue_expired`] ends an expired one, so a write is accepted until the
/// rescue happens and refused after, whichever comes first.
///
/// # Conformance
///
/// Every implementation runs `socialpub_core::testkit::schedule::store_suite` (feature
/// `testkit`) and the property test there.
#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Inserts the deliveries of one post (all `scheduled`, one per target) with their
    /// `events`, atomically: all or none. Their history starts with
    /// [`Delivery::inserted_entry`].
    async fn insert(&self, deliveries: &[Delivery], events: &[Event]) -> Result<()>;

    /// Claims, for `worker` at `now`, up to `limit` deliveries due at `now`
    /// ([`Delivery::is_due`]) and, besides them, up to `ahead` deliveries due after `now`
    /// and by `due_by`; each set oldest `run_at` first (then id). One atomic step
    /// ([`Delivery::apply_claim`]), with a lease until `now + lease`. Concurrent callers
    /// never get the same delivery. Each comes with the `run_at` it was claimed for, which the
    /// claim clears; the result is ordered by it.
    ///
    /// The engine claims ahead: it takes deliveries due in the next moments and holds them
    /// until their time, so the claim's commit is not part of their delay. The two limits
    /// keep it from taking more of what is due already than it has slots for.
    async fn claim_ahead(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        limit: usize,
        due_by: DateTime<Utc>,
        ahead: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>>;

    /// Claims up to `limit` deliveries that are due at `now`: [`ScheduleStore::claim_ahead`]
    /// with `due_by` = `now`, without the run times.
    async fn claim_due(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>> {
        let claimed = self.claim_ahead(worker, now, limit, now, 0, lease).await?;
        Ok(claimed.into_iter().map(|c| c.delivery).collect())
    }

    /// Extends the lease of `fence` on `id` until `until` ([`Delivery::apply_renew`]);
    /// `false` when that lease is gone.
    async fn renew_lease(&self, id: Uuid, fence: i64, until: DateTime<Utc>) -> Result<bool>;

    /// Takes the publish slot of account `key` for delivery `holder` until `until`, when no
    /// other delivery holds it past `now` (or `holder` already does). The engine publishes only
    /// while it holds the account's slot, so at most one publish per account is in flight
    /// across every engine sharing the store. `false` when another delivery holds it.
    async fn acquire_account_slot(
        &self,
        key: &AccountKey,
        holder: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool>;

    /// Extends the slot of account `key` to `until` while `holder` holds it; `false` when it
    /// no longer does (it expired and another delivery took it).
    async fn renew_account_slot(
        &self,
        key: &AccountKey,
        holder: Uuid,
        until: DateTime<Utc>,
    ) -> Result<bool>;

    /// Gives up the slot of account `key` if `holder` holds it.
    async fn release_account_slot(&self, key: &AccountKey, holder: Uuid) -> Result<()>;

    /// Applies a worker's fenced transition ([`Delivery::apply_transition`]) with its history
    /// entry and event. Returns the delivery as written.
    async fn transition(&self, transition: &Transition) -> Result<Fenced<Delivery>>;

    /// Records durably that the create request is about to be sent
    /// ([`Delivery::apply_commit_point`]). The publish journal calls it; when it is not
    /// applied, the adapter sends nothing.
    async fn commit_point(
        &self,
        id: Uuid,
        fence: i64,
        at: DateTime<Utc>,
    ) -> Result<Fenced<Delivery>>;

    /// Replaces the adapter's checkpoint ([`Delivery::apply_checkpoint`]).
    async fn save_checkpoint(
        &self,
        id: Uuid,
        fence: i64,
        checkpoint: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<Fenced<()>>;

    /// Ends every lease that expired at or before `now` ([`Delivery::apply_rescue`]): a
    /// delivery that never reached its commit point goes back to the queue, one that did
    /// becomes `unconfirmed`. Returns the rescued deliveries and the events appended.
    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<Vec<Rescued>>;

    /// Cancels a delivery of `tenant` ([`Delivery::apply_cancel`]).
    async fn cancel(&self, tenant: &str, id: Uuid, at: DateTime<Utc>) -> Result<CancelOutcome>;

    /// Moves a delivery of `tenant` to `due_at` ([`Delivery::apply_reschedule`]).
    async fn reschedule(
        &self,
        tenant: &str,
        id: Uuid,
        due_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<RescheduleOutcome>;

    /// A delivery of `tenant`.
    async fn get(&self, tenant: &str, id: Uuid) -> Result<Option<Delivery>>;

    /// The history of a delivery of `tenant`, oldest first (empty when there is no such
    /// delivery).
    async fn history(&self, tenant: &str, id: Uuid) -> Result<Vec<HistoryEntry>>;

    /// Deliveries passing `filter`, by `due_at` then id.
    async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>>;

    /// When workers next have something to do: the smallest `run_at` of an unleased
    /// claimable delivery, and the earliest lease expiry (to rescue it). Workers sleep until
    /// the earlier, less their claim-ahead window for the run time.
    async fn next_times(&self) -> Result<NextTimes>;

    /// The earlier of the [`ScheduleStore::next_times`]; `None` when nothing is pending.
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self.next_times().await?.earliest())
    }

    /// Appends an event that belongs to no transition (e.g. a token expiring).
    async fn append_event(&self, event: &Event) -> Result<()>;

    /// Outbox events with a sequence number greater than `after` (all of them when `None`),
    /// oldest first, at most `limit`.
    ///
    /// Sequence numbers of concurrent transactions may become visible out of order, so a
    /// consumer that must not miss any reads from `None` and acknowledges what it delivered
    /// ([`ScheduleStore::ack_events`]); `after` pages within one read.
    async fn events(&self, after: Option<i64>, limit: usize) -> Result<Vec<OutboxEvent>>;

    /// Removes delivered events from the outbox; returns how many were there.
    async fn ack_events(&self, seqs: &[i64]) -> Result<u64>;

    /// Removes final deliveries (`published`, `failed`, `cancelled`) last changed before
    /// `before`, with their history, and outbox events older than `before`.
    async fn purge(&self, before: DateTime<Utc>) -> Result<PurgeReport>;

    /// Everything kept about `tenant`.
    async fn export_tenant(&self, tenant: &str) -> Result<TenantExport>;

    /// Deletes everything kept about `tenant` (deliveries, history, events); returns how many
    /// deliveries there were. Deliveries in a worker's hands are deleted too: the worker's
    /// next fenced write is refused.
    async fn delete_tenant(&self, tenant: &str) -> Result<u64>;

    /// A notifier the store fires when something became due sooner than workers may expect
    /// (e.g. a PostgreSQL `LISTEN` on another process's inserts). Fire it with
    /// [`Notify::notify_waiters`]: every sleeping worker wakes and reads
    /// [`ScheduleStore::next_due_at`] again (workers register before reading the store, so
    /// no signal is lost). The engine wakes on it in addition to its own in-process
    /// notifications. `None` (the default) when the store has no such signal.
    fn wakeups(&self) -> Option<Arc<Notify>> {
        None
    }
}

#[async_trait]
impl<T: ScheduleStore + ?Sized> ScheduleStore for Arc<T> {
    async fn insert(&self, deliveries: &[Delivery], events: &[Event]) -> Result<()> {
        (**self).insert(deliveries, events).await
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
        (**self)
            .claim_ahead(worker, now, limit, due_by, ahead, lease)
            .await
    }
    async fn renew_lease(&self, id: Uuid, fence: i64, until: DateTime<Utc>) -> Result<bool> {
        (**self).renew_lease(id, fence, until).await
    }
    async fn acquire_account_slot(
        &self,
        key: &AccountKey,
        holder: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        (**self).acquire_account_slot(key, holder, now, until).await
    }
    async fn renew_account_slot(
        &self,
        key: &AccountKey,
        holder: Uuid,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        (**self).renew_account_slot(key, holder, until).await
    }
    async fn release_account_slot(&self, key: &AccountKey, holder: Uuid) -> Result<()> {
        (**self).release_account_slot(key, holder).await
    }
    async fn transition(&self, transition: &Transition) -> Result<Fenced<Delivery>> {
        (**self).transition(transition).await
    }
    async fn commit_point(
        &self,
        id: Uuid,
        fence: i64,
        at: DateTime<Utc>,
    ) -> Result<Fenced<Delivery>> {
        (**self).commit_point(id, fence, at).await
    }
    async fn save_checkpoint(
        &self,
        id: Uuid,
        fence: i64,
        checkpoint: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<Fenced<()>> {
        (**self).save_checkpoint(id, fence, checkpoint, at).await
    }
    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<Vec<Rescued>> {
        (**self).rescue_expired(now).await
    }
    async fn cancel(&self, tenant: &str, id: Uuid, at: DateTime<Utc>) -> Result<CancelOutcome> {
        (**self).cancel(tenant, id, at).await
    }
    async fn reschedule(
        &self,
        tenant: &str,
        id: Uuid,
        due_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<RescheduleOutcome> {
        (**self).reschedule(tenant, id, due_at, at).await
    }
    async fn get(&self, tenant: &str, id: Uuid) -> Result<Option<Delivery>> {
        (**self).get(tenant, id).await
    }
    async fn history(&self, tenant: &str, id: Uuid) -> Result<Vec<HistoryEntry>> {
        (**self).history(tenant, id).await
    }
    async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        (**self).list(filter).await
    }
    async fn next_times(&self) -> Result<NextTimes> {
        (**self).next_times().await
    }
    async fn append_event(&self, event: &Event) -> Result<()> {
        (**self).append_event(event).await
    }
    async fn events(&self, after: Option<i64>, limit: usize) -> Result<Vec<OutboxEvent>> {
        (**self).events(after, limit).await
    }
    async fn ack_events(&self, seqs: &[i64]) -> Result<u64> {
        (**self).ack_events(seqs).await
    }
    async fn purge(&self, before: DateTime<Utc>) -> Result<PurgeReport> {
        (**self).purge(before).await
    }
    async fn export_tenant(&self, tenant: &str) -> Result<TenantExport> {
        (**self).export_tenant(tenant).await
    }
    async fn delete_tenant(&self, tenant: &str) -> Result<u64> {
        (**self).delete_tenant(tenant).await
    }
    fn wakeups(&self) -> Option<Arc<Notify>> {
        (**self).wakeups()
    }
}
