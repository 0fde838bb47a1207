//! When the engine claims and publishes: due times, wake-ups, claims ahead, free slots, shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::rate_limits::calls_to;
use super::{Rig, TENANT, next_event, path, post, schedule_one, secs, settle, until};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use socialpub_core::schedule::{
    CancelOutcome, Claimed, Delivery, DeliveryFilter, DeliveryState, Event, EventKind, Fenced,
    HistoryEntry, MemoryScheduleStore, NextTimes, OutboxEvent, PurgeReport, RescheduleOutcome,
    Rescued, ScheduleStore, Scheduler, TenantExport, Transition,
};
use socialpub_core::testkit::{FakeGate, FakeOutcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_at_the_due_time_and_not_before() {
    publishes_at_the_due_time_and_not_before_on(Rig::new()).await;
}

pub(super) async fn publishes_at_the_due_time_and_not_before_on(rig: Rig) {
    let engine = rig.builder().build();
    let mut events = engine.subscribe();
    let handle = engine.start();
    let s = engine
        .schedule(TENANT, &post("hello", &["1", "2"]), rig.now() + secs(60))
        .await
        .expect("schedule");
    assert_eq!(s.deliveries.len(), 2, "one delivery per target");
    next_event(&mut events, EventKind::Scheduled).await;
    settle().await;
    assert_eq!(
        rig.fake.creates(),
        0,
        "nothing is published before its time"
    );

    rig.clock.advance(secs(59));
    settle().await;
    assert_eq!(rig.fake.creates(), 0);
    rig.clock.advance(secs(1));
    for id in &s.deliveries {
        let d = rig.wait_state(*id, DeliveryState::Published).await;
        assert_eq!(d.attempt, 1);
        assert!(d.receipt.is_some());
        assert!(d.lease.is_none());
        let h = engine.history(TENANT, *id).await.expect("history");
        assert_eq!(
            path(&h),
            vec![
                DeliveryState::Scheduled,
                DeliveryState::Claimed,
                DeliveryState::Committing,
                DeliveryState::Published
            ],
            "nothing to prepare: claimed, then committing at the commit point"
        );
        assert_eq!(rig.fake.creates_for(&id.to_string()), 1);
    }
    let e = next_event(&mut events, EventKind::Published).await;
    assert!(e.receipt.is_some());
    let outbox = rig.store.events(None, 100).await.expect("outbox");
    let kinds: Vec<EventKind> = outbox.iter().map(|e| e.event.kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == EventKind::Published).count(),
        2,
        "published events reach the outbox: {kinds:?}"
    );
    assert!(
        engine
            .get("someone-else", s.deliveries[0])
            .await
            .expect("get")
            .is_none(),
        "other tenants see nothing"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakes_for_a_post_scheduled_sooner_than_its_next_wake_up() {
    let rig = Rig::new();
    let engine = rig.builder().build();
    let handle = engine.start();
    engine
        .schedule(TENANT, &post("later", &["1"]), rig.now() + secs(3000))
        .await
        .expect("schedule");
    settle().await;
    let soon = engine
        .schedule(TENANT, &post("sooner", &["2"]), rig.now() + secs(10))
        .await
        .expect("schedule");
    settle().await;
    rig.clock.advance(secs(10));
    rig.wait_state(soon.deliveries[0], DeliveryState::Published)
        .await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_ahead_and_publishes_at_the_due_time() {
    claims_ahead_and_publishes_at_the_due_time_on(Rig::new()).await;
}

pub(super) async fn claims_ahead_and_publishes_at_the_due_time_on(rig: Rig) {
    let engine = rig.builder().claim_ahead(Duration::from_secs(2)).build();
    let handle = engine.start();
    let due = rig.now() + secs(60);
    let id = schedule_one(&engine, "ahead", "1", due).await;
    settle().await;
    assert_eq!(
        rig.get(id).await.state,
        DeliveryState::Scheduled,
        "not claimed before its window"
    );
    rig.clock.advance(secs(59));
    let d = rig.wait_state(id, DeliveryState::Claimed).await;
    assert_eq!(d.updated_at, due - secs(1), "claimed a second ahead");
    settle().await;
    assert_eq!(rig.fake.creates(), 0, "held until its time");
    rig.clock.advance(secs(1));
    rig.wait_state(id, DeliveryState::Published).await;
    assert_eq!(calls_to(&rig, "1"), vec![due], "published at its due time");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_no_more_due_deliveries_than_free_slots() {
    let rig = Rig::new();
    let gate = FakeGate::new();
    rig.fake.script("1", [FakeOutcome::Gated(gate.clone())]);
    let engine = rig.builder().workers(1).concurrency(1).build();
    for i in 0..5 {
        schedule_one(&engine, &format!("post {i}"), "1", rig.now()).await;
    }
    let handle = engine.start();
    gate.entered().await;
    settle().await;
    let all = rig
        .store
        .list(&DeliveryFilter::tenant(TENANT))
        .await
        .expect("list");
    assert_eq!(
        all.iter().filter(|d| d.lease.is_some()).count(),
        1,
        "only the one publishing is claimed; the others wait in the store, free for any \
         engine with a slot"
    );
    gate.release();
    for d in &all {
        rig.wait_state(d.id, DeliveryState::Published).await;
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_back_a_delivery_claimed_ahead_at_its_time() {
    let rig = Rig::new();
    let engine = rig.builder().claim_ahead(Duration::from_secs(2)).build();
    let handle = engine.start();
    let due = rig.now() + secs(60);
    let id = schedule_one(&engine, "ahead", "1", due).await;
    settle().await;
    rig.clock.advance(secs(59));
    rig.wait_state(id, DeliveryState::Claimed).await;
    tokio::time::timeout(Duration::from_secs(5), handle.shutdown())
        .await
        .expect("the shutdown does not wait for the due time");
    let d = rig.get(id).await;
    assert_eq!(d.state, DeliveryState::Scheduled);
    assert!(d.lease.is_none());
    assert_eq!(d.attempt, 0, "the attempt is given back");
    assert_eq!(d.run_at, Some(due), "due at its own time, not earlier");
    assert_eq!(rig.fake.creates(), 0);
    let h = engine.history(TENANT, id).await.expect("history");
    assert_eq!(
        h.last().and_then(|e| e.message.as_deref()),
        Some("released at shutdown before its time")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_due_later_than_the_next_wake_up_costs_no_claim() {
    let counting = Arc::new(CountingClaims::new(MemoryScheduleStore::new()));
    let rig = Rig::on(counting.clone());
    let engine = rig.builder().workers(2).build();
    let handle = engine.start();
    settle().await;
    let before = counting.claims();
    assert!(before >= 2, "each worker claims once on start");
    for i in 0..20 {
        schedule_one(&engine, &format!("later {i}"), "1", rig.now() + secs(3000)).await;
    }
    settle().await;
    assert_eq!(
        counting.claims(),
        before,
        "workers woken by schedules due later read the next due time, and do not claim"
    );
    let now = schedule_one(&engine, "now", "2", rig.now()).await;
    rig.wait_state(now, DeliveryState::Published).await;
    assert!(counting.claims() > before, "a due one is claimed at once");
    handle.shutdown().await;
}

/// A store that counts the claims made through it.
struct CountingClaims<S> {
    inner: S,
    claims: AtomicUsize,
}

impl<S> CountingClaims<S> {
    fn new(inner: S) -> Self {
        CountingClaims {
            inner,
            claims: AtomicUsize::new(0),
        }
    }

    fn claims(&self) -> usize {
        self.claims.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl<S: ScheduleStore> ScheduleStore for CountingClaims<S> {
    async fn insert(
        &self,
        deliveries: &[Delivery],
        events: &[Event],
    ) -> socialpub_core::Result<()> {
        self.inner.insert(deliveries, events).await
    }
    async fn claim_ahead(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        limit: usize,
        due_by: DateTime<Utc>,
        ahead: usize,
        lease: Duration,
    ) -> socialpub_core::Result<Vec<Claimed>> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.inner
            .claim_ahead(worker, now, limit, due_by, ahead, lease)
            .await
    }
    async fn renew_lease(
        &self,
        id: uuid::Uuid,
        fence: i64,
        until: DateTime<Utc>,
    ) -> socialpub_core::Result<bool> {
        self.inner.renew_lease(id, fence, until).await
    }
    async fn acquire_account_slot(
        &self,
        key: &socialpub_core::AccountKey,
        holder: uuid::Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> socialpub_core::Result<bool> {
        self.inner
            .acquire_account_slot(key, holder, now, until)
            .await
    }
    async fn renew_account_slot(
        &self,
        key: &socialpub_core::AccountKey,
        holder: uuid::Uuid,
        until: DateTime<Utc>,
    ) -> socialpub_core::Result<bool> {
        self.inner.renew_account_slot(key, holder, until).await
    }
    async fn release_account_slot(
        &self,
        key: &socialpub_core::AccountKey,
        holder: uuid::Uuid,
    ) -> socialpub_core::Result<()> {
        self.inner.release_account_slot(key, holder).await
    }
    async fn transition(&self, t: &Transition) -> socialpub_core::Result<Fenced<Delivery>> {
        self.inner.transition(t).await
    }
    async fn commit_point(
        &self,
        id: uuid::Uuid,
        fence: i64,
        at: DateTime<Utc>,
    ) -> socialpub_core::Result<Fenced<Delivery>> {
        self.inner.commit_point(id, fence, at).await
    }
    async fn save_checkpoint(
        &self,
        id: uuid::Uuid,
        fence: i64,
        checkpoint: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> socialpub_core::Result<Fenced<()>> {
        self.inner.save_checkpoint(id, fence, checkpoint, at).await
    }
    async fn rescue_expired(&self, now: DateTime<Utc>) -> socialpub_core::Result<Vec<Rescued>> {
        self.inner.rescue_expired(now).await
    }
    async fn cancel(
        &self,
        tenant: &str,
        id: uuid::Uuid,
        at: DateTime<Utc>,
    ) -> socialpub_core::Result<CancelOutcome> {
        self.inner.cancel(tenant, id, at).await
    }
    async fn reschedule(
        &self,
        tenant: &str,
        id: uuid::Uuid,
        due_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> socialpub_core::Result<RescheduleOutcome> {
        self.inner.reschedule(tenant, id, due_at, at).await
    }
    async fn get(&self, tenant: &str, id: uuid::Uuid) -> socialpub_core::Result<Option<Delivery>> {
        self.inner.get(tenant, id).await
    }
    async fn history(
        &self,
        tenant: &str,
        id: uuid::Uuid,
    ) -> socialpub_core::Result<Vec<HistoryEntry>> {
        self.inner.history(tenant, id).await
    }
    async fn list(&self, filter: &DeliveryFilter) -> socialpub_core::Result<Vec<Delivery>> {
        self.inner.list(filter).await
    }
    async fn next_times(&self) -> socialpub_core::Result<NextTimes> {
        self.inner.next_times().await
    }
    async fn append_event(&self, event: &Event) -> socialpub_core::Result<()> {
        self.inner.append_event(event).await
    }
    async fn events(
        &self,
        after: Option<i64>,
        limit: usize,
    ) -> socialpub_core::Result<Vec<OutboxEvent>> {
        self.inner.events(after, limit).await
    }
    async fn ack_events(&self, seqs: &[i64]) -> socialpub_core::Result<u64> {
        self.inner.ack_events(seqs).await
    }
    async fn purge(&self, before: DateTime<Utc>) -> socialpub_core::Result<PurgeReport> {
        self.inner.purge(before).await
    }
    async fn export_tenant(&self, tenant: &str) -> socialpub_core::Result<TenantExport> {
        self.inner.export_tenant(tenant).await
    }
    async fn delete_tenant(&self, tenant: &str) -> socialpub_core::Result<u64> {
        self.inner.delete_tenant(tenant).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_claims_that_did_not_start() {
    let rig = Rig::new();
    let gate = FakeGate::new();
    rig.fake.script("1", [FakeOutcome::Gated(gate.clone())]);
    let engine = rig.builder().workers(1).batch(4).concurrency(4).build();
    let handle = engine.start();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.extend(
            engine
                .schedule(TENANT, &post(&format!("p{i}"), &["1"]), rig.now())
                .await
                .expect("schedule")
                .deliveries,
        );
    }
    gate.entered().await;
    until("all three claimed", || async {
        let claimed = rig
            .store
            .list(&DeliveryFilter::tenant(TENANT))
            .await
            .expect("list");
        claimed.iter().all(|d| d.lease.is_some())
    })
    .await;
    let stopping = tokio::spawn(handle.shutdown());
    settle().await;
    gate.release();
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown finishes")
        .expect("joined");
    let all = rig
        .store
        .list(&DeliveryFilter::tenant(TENANT))
        .await
        .expect("list");
    let published = all
        .iter()
        .filter(|d| d.state == DeliveryState::Published)
        .count();
    let released: Vec<&Delivery> = all
        .iter()
        .filter(|d| d.state == DeliveryState::Scheduled)
        .collect();
    assert_eq!(published, 1, "the publish in flight finished");
    assert_eq!(released.len(), 2, "the others went back to the queue");
    assert!(released.iter().all(|d| d.lease.is_none() && d.attempt == 0));
    assert_eq!(rig.fake.creates(), 1);
}
