//! The scheduler engine against the in-memory store and the scripted fake publisher, on a
//! manual clock: nothing here waits for real lease or backoff durations.
#![cfg(feature = "testkit")]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use socialpub_core::auth::{AccessTokens, AccountKey, MemoryTokenStore, StaticToken, Token};
use socialpub_core::clock::ManualClock;
use socialpub_core::http::{RateLimit, Window};
use socialpub_core::publish::{NoJournal, PublishContext};
use socialpub_core::schedule::policy::{DeliveryPolicy, RetryPolicy};
use socialpub_core::schedule::{
    CancelOutcome, Claimed, Delivery, DeliveryFilter, DeliveryState, Engine, EngineBuilder, Event,
    EventKind, Fenced, HistoryEntry, MemoryScheduleStore, NewDelivery, NextTimes, OutboxEvent,
    PurgeReport, RescheduleOutcome, Rescued, ScheduleStore, Scheduler, TenantExport, Transition,
};
use socialpub_core::testkit::schedule::t0;
use socialpub_core::testkit::{FakeGate, FakeLookup, FakeOutcome, FakePublisher};
use socialpub_core::{ErrorKind, Platform, Post, Publisher, Target, TokenManager};
use tokio::sync::broadcast;

const TENANT: &str = "acme";
const LEASE: Duration = Duration::from_secs(60);

/// No jitter, 10 s base backoff, 30 s before the first lookup.
fn test_policy() -> RetryPolicy {
    let mut p = RetryPolicy::default();
    p.base = Duration::from_secs(10);
    p.jitter = false;
    p.rate_limit_jitter = Duration::ZERO;
    p.lookup_base = Duration::from_secs(30);
    p
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

struct Rig {
    clock: ManualClock,
    store: Arc<dyn ScheduleStore>,
    fake: FakePublisher,
}

impl Rig {
    fn new() -> Self {
        Self::on(Arc::new(MemoryScheduleStore::new()))
    }

    fn on(store: Arc<dyn ScheduleStore>) -> Self {
        let clock = ManualClock::new(t0());
        Rig {
            store,
            fake: FakePublisher::new(Platform::X).with_clock(Arc::new(clock.clone())),
            clock,
        }
    }

    fn builder(&self) -> EngineBuilder {
        self.builder_with(Arc::new(StaticToken(SecretString::from("token"))))
    }

    fn builder_with(&self, tokens: Arc<dyn AccessTokens>) -> EngineBuilder {
        Engine::builder_arc(self.store.clone(), tokens)
            .publisher(Arc::new(self.fake.clone()))
            .clock(Arc::new(self.clock.clone()))
            .lease(LEASE)
            .idle_poll(Duration::from_secs(3600))
            .retry(test_policy())
    }

    fn now(&self) -> DateTime<Utc> {
        use socialpub_core::clock::Clock;
        self.clock.now()
    }

    async fn get(&self, id: uuid::Uuid) -> Delivery {
        self.store
            .get(TENANT, id)
            .await
            .expect("get")
            .expect("the delivery exists")
    }

    async fn wait_state(&self, id: uuid::Uuid, state: DeliveryState) -> Delivery {
        let mut last = None;
        for _ in 0..3000 {
            let d = self.get(id).await;
            if d.state == state {
                return d;
            }
            last = Some(d.state);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("delivery {id} never reached {state}; it is {last:?}");
    }
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..3000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Lets the engine's tasks run for a while without moving the clock.
async fn settle() {
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Schedules a post to one account at `at` and returns its one delivery.
async fn schedule_one(engine: &Engine, text: &str, account: &str, at: DateTime<Utc>) -> uuid::Uuid {
    engine
        .schedule(TENANT, &post(text, &[account]), at)
        .await
        .expect("schedule")
        .deliveries[0]
}

fn post(text: &str, accounts: &[&str]) -> Post {
    let mut p = Post::new(text);
    for a in accounts {
        p = p.with_target(Target::new(Platform::X, *a));
    }
    p
}

async fn next_event(rx: &mut broadcast::Receiver<Event>, kind: EventKind) -> Event {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind} event"))
            .expect("event channel open");
        if e.kind == kind {
            return e;
        }
    }
}

fn path(history: &[socialpub_core::schedule::HistoryEntry]) -> Vec<DeliveryState> {
    history.iter().map(|h| h.to).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_at_the_due_time_and_not_before() {
    publishes_at_the_due_time_and_not_before_on(Rig::new()).await;
}

async fn publishes_at_the_due_time_and_not_before_on(rig: Rig) {
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

async fn claims_ahead_and_publishes_at_the_due_time_on(rig: Rig) {
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
async fn invalid_posts_fail_without_a_request() {
    let rig = Rig::new();
    let engine = rig.builder().build();
    let err = engine
        .schedule(TENANT, &post("bad #invalid", &["1"]), rig.now())
        .await
        .expect_err("an invalid post is refused when scheduled");
    assert_eq!(err.kind(), ErrorKind::Validation);
    let err = engine
        .schedule(TENANT, &post("twice", &["1", "1"]), rig.now())
        .await
        .expect_err("a target twice is refused");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = engine
        .schedule("ten\0ant", &post("fine", &["1"]), rig.now())
        .await
        .expect_err("a tenant with a control character is refused");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("control character"), "{err}");
    for account in ["", "a\0b", "line\nbreak"] {
        let err = engine
            .schedule(TENANT, &post("fine", &[account]), rig.now())
            .await
            .expect_err("an empty account id or one with a control character is refused");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{account:?}");
    }
    assert!(
        rig.store
            .list(&DeliveryFilter::tenant(TENANT))
            .await
            .expect("list")
            .is_empty(),
        "nothing refused was stored"
    );

    // A delivery stored before the rules changed is failed by the worker, with no request.
    let p = post("bad #invalid", &["1"]);
    let d = Delivery::new(NewDelivery {
        post_id: uuid::Uuid::now_v7(),
        tenant: TENANT,
        target: p.targets[0].clone(),
        post: &p,
        due_at: rig.now(),
        max_attempts: 5,
        deadline: None,
        now: rig.now(),
    });
    rig.store
        .insert(std::slice::from_ref(&d), &[])
        .await
        .expect("insert");
    let handle = engine.start();
    let failed = rig.wait_state(d.id, DeliveryState::Failed).await;
    assert_eq!(failed.attempt, 0, "no attempt spent on the network");
    assert_eq!(
        failed.last_error.as_ref().map(|e| e.kind),
        Some(ErrorKind::Validation)
    );
    assert!(rig.fake.publish_calls().is_empty(), "no publish call");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_retry_with_exponential_backoff_then_recover() {
    let rig = Rig::new();
    rig.fake.script(
        "1",
        [
            FakeOutcome::Fail(ErrorKind::Transient),
            FakeOutcome::Fail(ErrorKind::Transient),
        ],
    );
    let engine = rig.builder().build();
    let mut events = engine.subscribe();
    let handle = engine.start();
    let id = engine
        .schedule(TENANT, &post("retry me", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    let d = rig.wait_state(id, DeliveryState::RetryWaiting).await;
    assert_eq!(d.run_at, Some(t0() + secs(10)), "first backoff: base");
    assert_eq!(d.attempt, 1);
    let e = next_event(&mut events, EventKind::Retrying).await;
    assert_eq!(e.next_at, Some(t0() + secs(10)));

    rig.clock.advance(secs(9));
    settle().await;
    assert_eq!(
        rig.fake.publish_calls().len(),
        1,
        "no retry before the backoff"
    );
    rig.clock.advance(secs(1));
    until("the second attempt", || async {
        rig.get(id).await.attempt == 2 && rig.get(id).await.state == DeliveryState::RetryWaiting
    })
    .await;
    assert_eq!(
        rig.get(id).await.run_at,
        Some(t0() + secs(10) + secs(20)),
        "second backoff doubles"
    );
    rig.clock.advance(secs(20));
    let d = rig.wait_state(id, DeliveryState::Published).await;
    assert_eq!(d.attempt, 3);
    next_event(&mut events, EventKind::Recovered).await;
    assert_eq!(rig.fake.creates(), 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_run_out_into_failed() {
    let rig = Rig::new();
    rig.fake
        .script("1", vec![FakeOutcome::Fail(ErrorKind::Transient); 3]);
    let engine = rig
        .builder()
        .retry({
            let mut p = test_policy();
            p.max_attempts = 2;
            p.base = Duration::from_secs(1);
            p
        })
        .build();
    let mut events = engine.subscribe();
    let handle = engine.start();
    let id = engine
        .schedule(TENANT, &post("doomed", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    rig.wait_state(id, DeliveryState::RetryWaiting).await;
    rig.clock.advance(secs(1));
    let d = rig.wait_state(id, DeliveryState::Failed).await;
    assert_eq!(d.attempt, 2);
    assert!(
        d.last_error
            .as_ref()
            .is_some_and(|e| e.message.contains("gave up after 2 attempts")),
        "{:?}",
        d.last_error
    );
    next_event(&mut events, EventKind::Failed).await;
    assert_eq!(rig.fake.creates(), 0);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_pauses_only_its_account_and_keeps_the_attempt() {
    a_rate_limit_pauses_only_its_account_and_keeps_the_attempt_on(Rig::new()).await;
}

async fn a_rate_limit_pauses_only_its_account_and_keeps_the_attempt_on(rig: Rig) {
    rig.fake.script(
        "limited",
        [FakeOutcome::RateLimited(Duration::from_secs(900))],
    );
    let engine = rig.builder().workers(1).build();
    let handle = engine.start();
    let first = engine
        .schedule(TENANT, &post("one", &["limited"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    let d = rig.wait_state(first, DeliveryState::RetryWaiting).await;
    assert_eq!(d.attempt, 0, "a rate-limit wait does not use up an attempt");
    assert_eq!(
        d.run_at,
        Some(t0() + secs(900)),
        "the platform's wait is honoured"
    );
    assert_eq!(
        d.last_error.as_ref().map(|e| e.kind),
        Some(ErrorKind::RateLimited)
    );

    // More posts for both accounts, due now.
    let second = engine
        .schedule(TENANT, &post("two", &["limited"]), rig.now() + secs(5))
        .await
        .expect("schedule")
        .deliveries[0];
    let other = engine
        .schedule(TENANT, &post("three", &["free"]), rig.now() + secs(5))
        .await
        .expect("schedule")
        .deliveries[0];
    rig.clock.advance(secs(5));
    rig.wait_state(other, DeliveryState::Published).await;
    let d2 = rig.wait_state(second, DeliveryState::RetryWaiting).await;
    assert_eq!(d2.attempt, 0);
    assert_eq!(
        d2.run_at,
        Some(t0() + secs(900)),
        "the paused account's other posts wait too"
    );
    let calls = rig.fake.publish_calls();
    assert_eq!(
        calls
            .iter()
            .filter(|(k, _)| k.account_id == "limited")
            .count(),
        1,
        "no request to the limited account while it is paused"
    );

    rig.clock.advance(secs(895));
    rig.wait_state(first, DeliveryState::Published).await;
    rig.wait_state(second, DeliveryState::Published).await;
    let limited_calls: Vec<DateTime<Utc>> = rig
        .fake
        .publish_calls()
        .into_iter()
        .filter(|(k, _)| k.account_id == "limited")
        .map(|(_, t)| t)
        .collect();
    assert_eq!(limited_calls.len(), 3);
    assert!(limited_calls[1..].iter().all(|t| *t >= t0() + secs(900)));
    assert_eq!(rig.get(first).await.attempt, 1);
    handle.shutdown().await;
}

fn spent(reset: DateTime<Utc>) -> Option<Window> {
    Some(Window {
        limit: Some(100),
        remaining: Some(0),
        reset_at: Some(reset),
    })
}

fn calls_to(rig: &Rig, account: &str) -> Vec<DateTime<Utc>> {
    rig.fake
        .publish_calls()
        .into_iter()
        .filter(|(k, _)| k.account_id == account)
        .map(|(_, t)| t)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_window_in_a_receipt_paces_its_account_until_the_reset() {
    let rig = Rig::new();
    let reset = t0() + secs(600);
    let mut limits = RateLimit::default();
    limits.window = spent(reset);
    rig.fake
        .script("spent", [FakeOutcome::PublishWithLimits(limits)]);
    let engine = rig.builder().workers(1).build();
    let handle = engine.start();
    let first = schedule_one(&engine, "one", "spent", rig.now()).await;
    rig.wait_state(first, DeliveryState::Published).await;

    let second = schedule_one(&engine, "two", "spent", rig.now() + secs(5)).await;
    let other = schedule_one(&engine, "three", "free", rig.now() + secs(5)).await;
    rig.clock.advance(secs(5));
    rig.wait_state(other, DeliveryState::Published).await;
    let d2 = rig.wait_state(second, DeliveryState::RetryWaiting).await;
    assert_eq!(d2.attempt, 0, "pacing does not use up an attempt");
    assert_eq!(d2.run_at, Some(reset), "it waits for the window's reset");
    assert_eq!(
        calls_to(&rig, "spent").len(),
        1,
        "no request while the window is spent, and no 429 drawn"
    );

    rig.clock.advance(secs(595));
    rig.wait_state(second, DeliveryState::Published).await;
    let calls = calls_to(&rig, "spent");
    assert_eq!(calls.len(), 2);
    assert!(calls[1] >= reset);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_application_window_paces_every_account_of_the_platform() {
    let rig = Rig::new();
    let reset = t0() + secs(3600);
    let mut limits = RateLimit::default();
    limits.app_day = spent(reset);
    // Some windows left for the user: only the application's is spent.
    limits.window = Some(Window {
        limit: Some(100),
        remaining: Some(42),
        reset_at: Some(t0() + secs(900)),
    });
    rig.fake
        .script("a", [FakeOutcome::PublishWithLimits(limits)]);
    let engine = rig.builder().workers(1).build();
    let handle = engine.start();
    let first = schedule_one(&engine, "one", "a", rig.now()).await;
    rig.wait_state(first, DeliveryState::Published).await;

    let s = engine
        .schedule(TENANT, &post("two", &["a", "b"]), rig.now() + secs(5))
        .await
        .expect("schedule");
    rig.clock.advance(secs(5));
    for id in &s.deliveries {
        let d = rig.wait_state(*id, DeliveryState::RetryWaiting).await;
        assert_eq!(d.run_at, Some(reset), "every account waits: {:?}", d.target);
        assert_eq!(d.attempt, 0);
    }
    assert!(calls_to(&rig, "b").is_empty(), "nothing sent for b either");

    rig.clock.advance(secs(3595));
    for id in &s.deliveries {
        rig.wait_state(*id, DeliveryState::Published).await;
    }
    handle.shutdown().await;
}

#[derive(Debug, Default)]
struct CountingTokens {
    refreshes: AtomicUsize,
    fail_refresh: bool,
}

#[async_trait]
impl AccessTokens for CountingTokens {
    async fn access_token(&self, _key: &AccountKey) -> socialpub_core::Result<SecretString> {
        Ok(SecretString::from(format!(
            "token-{}",
            self.refreshes.load(Ordering::SeqCst)
        )))
    }

    async fn refresh_after_rejection(
        &self,
        key: &AccountKey,
        _rejected: &SecretString,
    ) -> socialpub_core::Result<SecretString> {
        if self.fail_refresh {
            return Err(socialpub_core::Error::new(
                ErrorKind::ReauthRequired,
                format!("{key}: the refresh token was revoked"),
            ));
        }
        let n = self.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(SecretString::from(format!("token-{n}")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_refreshes_once_and_retries_once() {
    let rig = Rig::new();
    let tokens = Arc::new(CountingTokens::default());
    rig.fake.script("1", [FakeOutcome::Unauthorized]);
    rig.fake
        .script("2", [FakeOutcome::Unauthorized, FakeOutcome::Unauthorized]);
    let engine = rig.builder_with(tokens.clone()).build();
    let mut events = engine.subscribe();
    let handle = engine.start();
    let ok = engine
        .schedule(TENANT, &post("a", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    let d = rig.wait_state(ok, DeliveryState::Published).await;
    assert_eq!(d.attempt, 1, "the retry is part of the same attempt");
    assert_eq!(tokens.refreshes.load(Ordering::SeqCst), 1);

    let bad = engine
        .schedule(TENANT, &post("b", &["2"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    rig.wait_state(bad, DeliveryState::NeedsReauth).await;
    assert_eq!(
        tokens.refreshes.load(Ordering::SeqCst),
        2,
        "one refresh per publish, never more"
    );
    let e = next_event(&mut events, EventKind::NeedsReauth).await;
    assert_eq!(e.delivery_id, Some(bad));
    assert_eq!(rig.fake.creates(), 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_refresh_token_marks_the_account_for_reauth() {
    let rig = Rig::new();
    let tokens = Arc::new(CountingTokens {
        fail_refresh: true,
        ..CountingTokens::default()
    });
    rig.fake.script("1", [FakeOutcome::Unauthorized]);
    rig.fake
        .script("2", [FakeOutcome::Fail(ErrorKind::ReauthRequired)]);
    let engine = rig.builder_with(tokens).build();
    let mut events = engine.subscribe();
    let handle = engine.start();
    let s = engine
        .schedule(TENANT, &post("a", &["1", "2"]), rig.now())
        .await
        .expect("schedule");
    for id in &s.deliveries {
        let d = rig.wait_state(*id, DeliveryState::NeedsReauth).await;
        assert_eq!(
            d.last_error.as_ref().map(|e| e.kind),
            Some(ErrorKind::ReauthRequired)
        );
    }
    next_event(&mut events, EventKind::NeedsReauth).await;
    // Reconnected: a reschedule sends it again.
    match engine
        .reschedule(TENANT, s.deliveries[1], rig.now())
        .await
        .expect("reschedule")
    {
        RescheduleOutcome::Rescheduled(_) => {}
        other => panic!("needs-reauth reschedules: {other:?}"),
    }
    rig.wait_state(s.deliveries[1], DeliveryState::Published)
        .await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_posts_are_polled_without_holding_a_worker() {
    processing_posts_are_polled_without_holding_a_worker_on(Rig::new()).await;
}

async fn processing_posts_are_polled_without_holding_a_worker_on(rig: Rig) {
    rig.fake.script("1", [FakeOutcome::Processing]);
    rig.fake.processing_polls(2);
    let engine = rig.builder().concurrency(1).build();
    let handle = engine.start();
    let id = engine
        .schedule(TENANT, &post("video", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    let d = rig.wait_state(id, DeliveryState::Processing).await;
    assert!(
        d.lease.is_none(),
        "no worker is held while the platform processes"
    );
    assert_eq!(d.run_at, Some(t0() + secs(10)));
    // With one slot only, another post still goes out meanwhile.
    let other = engine
        .schedule(TENANT, &post("text", &["2"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    rig.wait_state(other, DeliveryState::Published).await;

    rig.clock.advance(secs(10));
    until("the first status check", || async {
        rig.get(id).await.run_at == Some(t0() + secs(20))
    })
    .await;
    assert_eq!(rig.get(id).await.state, DeliveryState::Processing);
    rig.clock.advance(secs(10));
    let d = rig.wait_state(id, DeliveryState::Published).await;
    assert_eq!(rig.fake.creates_for(&id.to_string()), 1);
    assert_eq!(d.attempt, 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_one_publish_in_flight_per_account() {
    let rig = Rig::new();
    let engine = rig.builder().workers(2).concurrency(8).batch(8).build();
    let handle = engine.start();
    let mut ids = Vec::new();
    for i in 0..12 {
        let s = engine
            .schedule(
                TENANT,
                &post(&format!("post {i}"), &["a", "b", "c"]),
                rig.now(),
            )
            .await
            .expect("schedule");
        ids.extend(s.deliveries);
    }
    for id in &ids {
        rig.wait_state(*id, DeliveryState::Published).await;
        assert_eq!(rig.fake.creates_for(&id.to_string()), 1);
    }
    assert_eq!(rig.fake.max_inflight_per_account(), 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preparing_is_recorded_with_the_first_checkpoint() {
    preparing_is_recorded_with_the_first_checkpoint_on(Rig::new()).await;
}

async fn preparing_is_recorded_with_the_first_checkpoint_on(rig: Rig) {
    // The gated fake saves a checkpoint after the gate (an upload done), then commits.
    let gate = FakeGate::new();
    rig.fake.script("1", [FakeOutcome::Gated(gate.clone())]);
    let engine = rig.builder().workers(1).build();
    let handle = engine.start();
    let id = schedule_one(&engine, "with media", "1", rig.now()).await;
    gate.entered().await;
    assert_eq!(rig.get(id).await.state, DeliveryState::Claimed);
    gate.release();
    let d = rig.wait_state(id, DeliveryState::Published).await;
    assert_eq!(d.checkpoint, Some(serde_json::json!({"stage": "uploaded"})));
    let h = engine.history(TENANT, id).await.expect("history");
    assert_eq!(
        path(&h),
        vec![
            DeliveryState::Scheduled,
            DeliveryState::Claimed,
            DeliveryState::Preparing,
            DeliveryState::Committing,
            DeliveryState::Published
        ]
    );
    assert_eq!(rig.fake.creates_for(&id.to_string()), 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_worker_whose_lease_expired_cannot_write() {
    a_slow_worker_whose_lease_expired_cannot_write_on(Rig::new()).await;
}

async fn a_slow_worker_whose_lease_expired_cannot_write_on(rig: Rig) {
    let gate = FakeGate::new();
    rig.fake.script("1", [FakeOutcome::Gated(gate.clone())]);
    let engine = rig.builder().workers(1).build();
    let handle = engine.start();
    let id = schedule_one(&engine, "slow", "1", rig.now()).await;
    gate.entered().await;
    let held = rig.get(id).await;
    assert_eq!(held.state, DeliveryState::Claimed);
    let slow_fence = held.lease.as_ref().map(|l| l.fence).expect("lease");

    // The slow worker's renewals stop reaching the store (a stall, a partition): its lease
    // lapses and a rescue puts the delivery back in the queue.
    let rescued = rig
        .store
        .rescue_expired(rig.now() + secs(61))
        .await
        .expect("rescue");
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].delivery.state, DeliveryState::RetryWaiting);
    let stale = Transition::new(&held, DeliveryState::Failed, rig.now());
    assert!(
        rig.store
            .transition(&stale)
            .await
            .expect("write")
            .is_stale(),
        "a write with the old fence is refused"
    );

    // The slow worker wakes up: its checkpoint and its commit point are refused, so it sends
    // nothing and writes nothing.
    let before = rig.get(id).await;
    gate.release();
    settle().await;
    assert_eq!(rig.get(id).await, before, "the slow worker changed nothing");
    assert_eq!(rig.fake.creates(), 0, "the slow worker sent nothing");

    // Another claim publishes it, once.
    rig.clock.advance(secs(61));
    let d = rig.wait_state(id, DeliveryState::Published).await;
    assert!(d.fence > slow_fence, "published under a newer claim");
    assert_eq!(
        rig.fake.creates_for(&id.to_string()),
        1,
        "published exactly once"
    );
    assert!(
        d.checkpoint.is_none(),
        "the slow worker's checkpoint was refused"
    );
    let h = engine.history(TENANT, id).await.expect("history");
    assert!(
        h.iter()
            .any(|e| e.from == Some(DeliveryState::Claimed) && e.to == DeliveryState::RetryWaiting),
        "the rescue is in the history: {h:?}"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_claimed_sends_nothing() {
    cancel_while_claimed_sends_nothing_on(Rig::new()).await;
}

async fn cancel_while_claimed_sends_nothing_on(rig: Rig) {
    let gate = FakeGate::new();
    rig.fake.script("1", [FakeOutcome::Gated(gate.clone())]);
    let engine = rig.builder().build();
    let handle = engine.start();
    let id = engine
        .schedule(TENANT, &post("never", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    gate.entered().await;
    match engine.cancel(TENANT, id).await.expect("cancel") {
        CancelOutcome::Cancelled(d) => assert_eq!(d.state, DeliveryState::Cancelled),
        other => panic!("cancel wins before the commit point: {other:?}"),
    }
    gate.release();
    settle().await;
    let d = rig.get(id).await;
    assert_eq!(d.state, DeliveryState::Cancelled);
    assert_eq!(rig.fake.creates(), 0, "a cancelled post never goes out");
    rig.clock.advance(secs(3600));
    settle().await;
    assert_eq!(rig.fake.creates(), 0);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_while_claimed_moves_the_publish() {
    let rig = Rig::new();
    let gate = FakeGate::new();
    rig.fake.script("1", [FakeOutcome::Gated(gate.clone())]);
    let engine = rig.builder().build();
    let handle = engine.start();
    let id = engine
        .schedule(TENANT, &post("moved", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    gate.entered().await;
    let out = engine
        .reschedule(TENANT, id, rig.now() + secs(300))
        .await
        .expect("reschedule");
    assert!(matches!(out, RescheduleOutcome::Rescheduled(_)), "{out:?}");
    gate.release();
    settle().await;
    assert_eq!(rig.fake.creates(), 0, "the old claim sends nothing");
    assert_eq!(rig.get(id).await.state, DeliveryState::Scheduled);
    rig.clock.advance(secs(300));
    rig.wait_state(id, DeliveryState::Published).await;
    assert_eq!(rig.fake.creates(), 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_unconfirmed_delivery_can_be_cancelled_by_a_person() {
    let rig = Rig::new();
    rig.fake.script("1", [FakeOutcome::TimeoutWithoutCreate]);
    rig.fake.set_lookup(FakeLookup::Unsupported);
    let engine = rig.builder().build();
    let handle = engine.start();
    let id = engine
        .schedule(TENANT, &post("x", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    rig.wait_state(id, DeliveryState::Unconfirmed).await;
    rig.clock.advance(secs(30));
    until("the delivery to be parked", || async {
        let d = rig.get(id).await;
        d.run_at.is_none() && d.lease.is_none()
    })
    .await;
    assert!(matches!(
        engine.cancel(TENANT, id).await.expect("cancel"),
        CancelOutcome::Cancelled(_)
    ));
    handle.shutdown().await;
}

/// A worker that recorded its commit point (and maybe created the post), then died.
async fn crash_after_commit(rig: &Rig, id: uuid::Uuid, created: bool) {
    let claimed = rig
        .store
        .claim_due("doomed-worker", rig.now(), 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let d = &claimed[0];
    assert_eq!(d.id, id);
    let fence = d.lease.as_ref().map(|l| l.fence).expect("lease");
    let d = rig
        .store
        .transition(&Transition::new(d, DeliveryState::Preparing, rig.now()))
        .await
        .expect("prepare")
        .applied()
        .expect("held");
    rig.store
        .commit_point(id, fence, rig.now())
        .await
        .expect("commit")
        .applied()
        .expect("held");
    if created {
        let mut ctx = PublishContext::new(
            d.account(),
            Arc::new(StaticToken(SecretString::from("token"))),
        )
        .with_journal(Arc::new(NoJournal))
        .with_idempotency_key(id.to_string());
        rig.fake
            .publish(&mut ctx, &d.post)
            .await
            .expect("the create went out");
    }
}

async fn scheduled_but_not_started(rig: &Rig, text: &str) -> uuid::Uuid {
    let p = post(text, &["1"]);
    let d = Delivery::new(NewDelivery {
        post_id: uuid::Uuid::now_v7(),
        tenant: TENANT,
        target: p.targets[0].clone(),
        post: &p,
        due_at: rig.now(),
        max_attempts: 5,
        deadline: None,
        now: rig.now(),
    });
    rig.store
        .insert(std::slice::from_ref(&d), &[])
        .await
        .expect("insert");
    d.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_create_is_settled_by_lookup_without_a_second_post() {
    crash_after_the_create_is_settled_by_lookup_without_a_second_post_on(Rig::new()).await;
}

async fn crash_after_the_create_is_settled_by_lookup_without_a_second_post_on(rig: Rig) {
    let id = scheduled_but_not_started(&rig, "crash after create").await;
    crash_after_commit(&rig, id, true).await;
    assert_eq!(rig.fake.creates(), 1);

    rig.clock.advance(secs(61));
    let engine = rig.builder().build();
    let mut events = engine.subscribe();
    let handle = engine.start();
    let d = rig.wait_state(id, DeliveryState::Published).await;
    assert_eq!(
        d.receipt.as_ref().map(|r| r.remote_id.as_str()),
        Some("fake-1"),
        "the post the dead worker created"
    );
    let e = next_event(&mut events, EventKind::Recovered).await;
    assert_eq!(e.delivery_id, Some(id));
    assert_eq!(rig.fake.creates(), 1, "never published twice");
    assert_eq!(
        rig.fake.publish_calls().len(),
        1,
        "no publish after the crash"
    );
    let h = engine.history(TENANT, id).await.expect("history");
    assert!(
        h.windows(2)
            .any(|w| w[0].to == DeliveryState::Committing && w[1].to == DeliveryState::Unconfirmed),
        "committing → unconfirmed on rescue: {:?}",
        path(&h)
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_the_create_is_published_again_once_lookup_shows_it_absent() {
    let rig = Rig::new();
    let id = scheduled_but_not_started(&rig, "crash before create").await;
    crash_after_commit(&rig, id, false).await;
    rig.clock.advance(secs(61));
    let engine = rig.builder().build();
    let handle = engine.start();
    // Not found right after the crash: the dead worker's create could still land, so the
    // lookup is repeated once that can no longer happen, and only then is it sent again.
    until("the first lookup", || async {
        rig.get(id).await.run_at == Some(t0() + secs(300))
    })
    .await;
    assert_eq!(rig.get(id).await.state, DeliveryState::Unconfirmed);
    assert_eq!(rig.fake.publish_calls().len(), 0);
    rig.clock.advance(secs(240));
    let d = rig.wait_state(id, DeliveryState::Published).await;
    assert_eq!(rig.fake.creates_for(&id.to_string()), 1);
    assert!(d.had_failure);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_lookup_an_unconfirmed_delivery_waits_for_a_person() {
    let rig = Rig::new();
    rig.fake.set_lookup(FakeLookup::Unsupported);
    let id = scheduled_but_not_started(&rig, "no lookup").await;
    crash_after_commit(&rig, id, true).await;
    rig.clock.advance(secs(61));
    let engine = rig.builder().build();
    let handle = engine.start();
    until("the delivery to be parked", || async {
        let d = rig.get(id).await;
        d.state == DeliveryState::Unconfirmed && d.run_at.is_none() && d.lease.is_none()
    })
    .await;
    let d = rig.get(id).await;
    let msg = d.last_error.map(|e| e.message).unwrap_or_default();
    assert!(
        msg.contains("cannot look up") && msg.contains("reschedule"),
        "a clear message: {msg}"
    );
    rig.clock.advance(secs(86_400));
    settle().await;
    assert_eq!(rig.fake.creates(), 1, "at-most-once: never re-sent blindly");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_republishes_when_the_lookup_cannot_tell() {
    let rig = Rig::new();
    rig.fake.set_lookup(FakeLookup::Unknown);
    let id = scheduled_but_not_started(&rig, "maybe").await;
    crash_after_commit(&rig, id, false).await;
    rig.clock.advance(secs(61));
    let engine = rig
        .builder()
        .delivery_policy(DeliveryPolicy::AtLeastOnce)
        .retry({
            let mut p = test_policy();
            p.lookup_window = Duration::ZERO;
            p
        })
        .build();
    let handle = engine.start();
    rig.wait_state(id, DeliveryState::Published).await;
    assert_eq!(rig.fake.creates(), 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_publish_is_reconciled_after_the_lookup_delay() {
    let rig = Rig::new();
    rig.fake.script("1", [FakeOutcome::CreateThenTimeout]);
    let engine = rig.builder().build();
    let mut events = engine.subscribe();
    let handle = engine.start();
    let id = engine
        .schedule(TENANT, &post("timeout", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    let d = rig.wait_state(id, DeliveryState::Unconfirmed).await;
    assert_eq!(d.run_at, Some(t0() + secs(30)));
    next_event(&mut events, EventKind::Unconfirmed).await;
    rig.clock.advance(secs(30));
    rig.wait_state(id, DeliveryState::Published).await;
    next_event(&mut events, EventKind::Recovered).await;
    assert_eq!(rig.fake.creates(), 1);
    handle.shutdown().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_warnings_and_tenant_data_rights() {
    let rig = Rig::new();
    let tokens = MemoryTokenStore::new();
    let manager = Arc::new(TokenManager::builder(tokens.clone()).build());
    let key = AccountKey::new(TENANT, Platform::X, "1");
    let mut token = Token::new("access").with_refresh_token("refresh");
    token.refresh_expires_at = Some(rig.now() + secs(3 * 86_400));
    manager.connect(&key, &token).await.expect("connect");
    let engine = rig
        .builder_with(manager.clone())
        .token_manager(manager.clone())
        .build();
    let mut events = engine.subscribe();
    let handle = engine.start();
    let id = engine
        .schedule(TENANT, &post("hi", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    rig.wait_state(id, DeliveryState::Published).await;
    let e = next_event(&mut events, EventKind::TokenExpiresSoon).await;
    assert_eq!(e.target.account_id, "1");
    assert_eq!(e.next_at, token.refresh_expires_at);

    let export = engine.export_tenant(TENANT).await.expect("export");
    assert_eq!(export["deliveries"].as_array().map(Vec::len), Some(1));
    assert!(
        !export.to_string().contains("refresh"),
        "no token in the export"
    );
    assert_eq!(engine.delete_tenant(TENANT).await.expect("delete"), 1);
    assert!(engine.get(TENANT, id).await.expect("get").is_none());
    use socialpub_core::TokenStore;
    assert!(
        tokens.list(TENANT).await.expect("list").is_empty(),
        "tokens are deleted too"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_quota_paces_publishes_without_spending_attempts() {
    use socialpub_core::schedule::policy::Quota;
    let rig = Rig::new();
    let per_minute = std::num::NonZeroU32::new(1).expect("non-zero");
    let engine = rig
        .builder()
        .app_quota(Platform::X, Quota::per_minute(per_minute))
        .build();
    let handle = engine.start();
    let s = engine
        .schedule(TENANT, &post("paced", &["1", "2"]), rig.now())
        .await
        .expect("schedule");
    until("one published and one paced", || async {
        let mut states = Vec::new();
        for id in &s.deliveries {
            states.push(rig.get(*id).await.state);
        }
        states.contains(&DeliveryState::Published) && states.contains(&DeliveryState::RetryWaiting)
    })
    .await;
    let mut waiting = None;
    for id in &s.deliveries {
        let d = rig.get(*id).await;
        if d.state == DeliveryState::RetryWaiting {
            waiting = Some(d);
        }
    }
    let waiting = waiting.expect("one waits");
    assert_eq!(waiting.attempt, 0, "pacing does not use up an attempt");
    assert_eq!(
        waiting.run_at,
        Some(t0() + secs(60)),
        "the quota's next slot"
    );
    assert_eq!(
        rig.fake.publish_calls().len(),
        1,
        "no request over the quota"
    );
    rig.clock.advance(secs(60));
    rig.wait_state(waiting.id, DeliveryState::Published).await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_hangs_before_its_commit_point_is_abandoned_and_retried() {
    let rig = Rig::new();
    let gate = FakeGate::new();
    rig.fake.script("1", [FakeOutcome::Gated(gate.clone())]);
    let engine = rig
        .builder()
        .publish_timeout(Duration::from_secs(120))
        .build();
    let handle = engine.start();
    let id = engine
        .schedule(TENANT, &post("hangs", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    gate.entered().await;
    // Move time in steps shorter than the lease, so the worker keeps renewing it.
    for _ in 0..12 {
        rig.clock.advance(secs(10));
        settle().await;
    }
    let d = rig.wait_state(id, DeliveryState::RetryWaiting).await;
    assert_eq!(
        d.last_error.as_ref().map(|e| e.kind),
        Some(ErrorKind::Transient),
        "abandoned before the commit point: nothing was sent, so it is retried"
    );
    assert_eq!(rig.fake.creates(), 0);
    rig.clock.advance(secs(10));
    rig.wait_state(id, DeliveryState::Published).await;
    assert_eq!(rig.fake.creates(), 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_fails_a_post_rather_than_publish_it_late() {
    use socialpub_core::schedule::ScheduleOptions;
    let rig = Rig::new();
    rig.fake
        .script("1", vec![FakeOutcome::Fail(ErrorKind::Transient); 2]);
    let engine = rig.builder().build();
    let handle = engine.start();
    let id = engine
        .schedule_with(
            TENANT,
            &post("timely", &["1"]),
            rig.now(),
            ScheduleOptions::default()
                .deadline(rig.now() + secs(15))
                .max_attempts(9),
        )
        .await
        .expect("schedule")
        .deliveries[0];
    let d = rig.wait_state(id, DeliveryState::RetryWaiting).await;
    assert_eq!(d.max_attempts, 9);
    assert_eq!(d.deadline, Some(t0() + secs(15)));
    rig.clock.advance(secs(10));
    let d = rig.wait_state(id, DeliveryState::Failed).await;
    assert!(
        d.last_error
            .as_ref()
            .is_some_and(|e| e.message.contains("deadline")),
        "{:?}",
        d.last_error
    );
    assert_eq!(rig.fake.creates(), 0);
    handle.shutdown().await;
}

/// The same engine scenarios on the SQLite store.
#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use socialpub_core::store::SqliteStore;

    async fn rig(dir: &tempfile::TempDir) -> Rig {
        let path = dir.path().join("engine.db");
        let store = SqliteStore::open(format!("sqlite://{}", path.display()))
            .await
            .expect("open");
        Rig::on(Arc::new(store))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_at_the_due_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        publishes_at_the_due_time_and_not_before_on(rig(&dir).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_ahead() {
        let dir = tempfile::tempdir().expect("tempdir");
        claims_ahead_and_publishes_at_the_due_time_on(rig(&dir).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn preparing_with_the_first_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        preparing_is_recorded_with_the_first_checkpoint_on(rig(&dir).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_worker_cannot_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        a_slow_worker_whose_lease_expired_cannot_write_on(rig(&dir).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_while_claimed() {
        let dir = tempfile::tempdir().expect("tempdir");
        cancel_while_claimed_sends_nothing_on(rig(&dir).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_create() {
        let dir = tempfile::tempdir().expect("tempdir");
        crash_after_the_create_is_settled_by_lookup_without_a_second_post_on(rig(&dir).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rate_limit_per_account() {
        let dir = tempfile::tempdir().expect("tempdir");
        a_rate_limit_pauses_only_its_account_and_keeps_the_attempt_on(rig(&dir).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn processing_polls() {
        let dir = tempfile::tempdir().expect("tempdir");
        processing_posts_are_polled_without_holding_a_worker_on(rig(&dir).await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_publish_is_dropped_once_its_lease_is_lost_and_reconciled_by_the_next_owner() {
    let rig = Rig::new();
    rig.fake.script("1", [FakeOutcome::Hang { created: true }]);
    let engine = rig.builder().build();
    let handle = engine.start();
    let id = engine
        .schedule(TENANT, &post("hung", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    rig.wait_state(id, DeliveryState::Committing).await;
    until("the create", || async { rig.fake.creates() == 1 }).await;
    let rescued = rig
        .store
        .rescue_expired(rig.now() + secs(61))
        .await
        .expect("rescue");
    assert_eq!(rescued[0].delivery.state, DeliveryState::Unconfirmed);
    // The hung worker's next renewal finds its lease gone and drops the publish; the delivery
    // is then reconciled by lookup, not sent again.
    rig.clock.advance(secs(61));
    let d = rig.wait_state(id, DeliveryState::Published).await;
    assert_eq!(d.receipt.map(|r| r.remote_id), Some("fake-1".to_owned()));
    assert_eq!(rig.fake.creates(), 1);
    assert!(
        handle.shutdown_within(Duration::from_secs(5)).await,
        "no publish is left hanging"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_post_cancels_each_target() {
    let rig = Rig::new();
    let engine = rig.builder().build();
    let s = engine
        .schedule(
            TENANT,
            &post("multi", &["1", "2", "3"]),
            rig.now() + secs(60),
        )
        .await
        .expect("schedule");
    let out = engine.cancel_post(TENANT, s.post_id).await.expect("cancel");
    assert_eq!(out.len(), 3);
    assert!(
        out.iter()
            .all(|(_, o)| matches!(o, CancelOutcome::Cancelled(_)))
    );
    assert!(
        engine
            .cancel_post("other", s.post_id)
            .await
            .expect("cancel")
            .is_empty(),
        "scoped by tenant"
    );
    let handle = engine.start();
    rig.clock.advance(secs(120));
    settle().await;
    assert_eq!(rig.fake.creates(), 0);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_final_deliveries_are_purged_on_a_schedule() {
    let rig = Rig::new();
    let engine = rig.builder().retention(Duration::from_secs(86_400)).build();
    let handle = engine.start();
    let old = engine
        .schedule(TENANT, &post("old", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    rig.wait_state(old, DeliveryState::Published).await;
    let pending = engine
        .schedule(
            TENANT,
            &post("far future", &["2"]),
            rig.now() + secs(30 * 86_400),
        )
        .await
        .expect("schedule")
        .deliveries[0];
    rig.clock.advance(secs(2 * 86_400));
    until("the purge", || async {
        rig.store.get(TENANT, old).await.expect("get").is_none()
    })
    .await;
    assert!(
        rig.store.get(TENANT, pending).await.expect("get").is_some(),
        "deliveries still to come are kept"
    );
    handle.shutdown().await;
}
