//! Cancel and reschedule against a worker holding the delivery.

use super::{Rig, TENANT, post, secs, settle, until};
use socialpub_core::schedule::{CancelOutcome, DeliveryState, RescheduleOutcome, Scheduler};
use socialpub_core::testkit::{FakeGate, FakeLookup, FakeOutcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_claimed_sends_nothing() {
    cancel_while_claimed_sends_nothing_on(Rig::new()).await;
}

pub(super) async fn cancel_while_claimed_sends_nothing_on(rig: Rig) {
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
