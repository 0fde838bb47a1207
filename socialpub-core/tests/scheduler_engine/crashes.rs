//! Lost leases and crashes around the commit point, and how lookups settle them.

use std::sync::Arc;
use std::time::Duration;

use super::{
    LEASE, Rig, TENANT, next_event, path, post, schedule_one, secs, settle, test_policy, until,
};
use secrecy::SecretString;
use socialpub_core::Publisher;
use socialpub_core::auth::StaticToken;
use socialpub_core::publish::{NoJournal, PublishContext};
use socialpub_core::schedule::policy::DeliveryPolicy;
use socialpub_core::schedule::{
    Delivery, DeliveryState, EventKind, NewDelivery, ScheduleStore, Scheduler, Transition,
};
use socialpub_core::testkit::schedule::t0;
use socialpub_core::testkit::{FakeGate, FakeLookup, FakeOutcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_worker_whose_lease_expired_cannot_write() {
    a_slow_worker_whose_lease_expired_cannot_write_on(Rig::new()).await;
}

pub(super) async fn a_slow_worker_whose_lease_expired_cannot_write_on(rig: Rig) {
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

pub(super) async fn crash_after_the_create_is_settled_by_lookup_without_a_second_post_on(rig: Rig) {
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
