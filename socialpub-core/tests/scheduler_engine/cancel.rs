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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_publishes_a_failed_delivery_again_keeping_its_history() {
    retry_publishes_a_failed_delivery_again_keeping_its_history_on(Rig::new()).await;
}

pub(super) async fn retry_publishes_a_failed_delivery_again_keeping_its_history_on(rig: Rig) {
    use socialpub_core::ErrorKind;
    use socialpub_core::schedule::RetryOutcome;

    rig.fake.script(
        "1",
        [FakeOutcome::Fail(ErrorKind::Platform), FakeOutcome::Publish],
    );
    let engine = rig.builder().build();
    let handle = engine.start();
    let id = engine
        .schedule(TENANT, &post("try me again", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    let failed = rig.wait_state(id, DeliveryState::Failed).await;
    assert_eq!(failed.attempt, 1);
    match engine.retry(TENANT, id).await.expect("retry") {
        RetryOutcome::Retrying(d) => {
            assert_eq!(d.id, id, "the same delivery");
            assert_eq!(d.state, DeliveryState::Scheduled);
        }
        other => panic!("a failed delivery is retried: {other:?}"),
    }
    let d = rig.wait_state(id, DeliveryState::Published).await;
    assert_eq!(rig.fake.creates_for(&id.to_string()), 1);
    assert!(
        d.last_error.is_some(),
        "what it recovered from is still there"
    );
    let history = engine.history(TENANT, id).await.expect("history");
    let states: Vec<DeliveryState> = history.iter().map(|h| h.to).collect();
    let failed_at = states
        .iter()
        .position(|s| *s == DeliveryState::Failed)
        .expect("the failure is kept in the history");
    assert_eq!(
        states[failed_at + 1],
        DeliveryState::Scheduled,
        "{states:?}"
    );
    assert_eq!(states.last(), Some(&DeliveryState::Published), "{states:?}");

    // Only failed (or needs_reauth) deliveries: a published one, or none at all, is refused.
    assert_eq!(
        engine.retry(TENANT, id).await.expect("retry"),
        RetryOutcome::NotRetryable(DeliveryState::Published)
    );
    assert_eq!(
        engine.retry("other", id).await.expect("retry"),
        RetryOutcome::NotFound,
        "another tenant's delivery is invisible"
    );
    let later = engine
        .schedule(TENANT, &post("not yet", &["1"]), rig.now() + secs(600))
        .await
        .expect("schedule")
        .deliveries[0];
    assert_eq!(
        engine.retry(TENANT, later).await.expect("retry"),
        RetryOutcome::NotRetryable(DeliveryState::Scheduled)
    );
    assert_eq!(rig.get(later).await.run_at, Some(rig.now() + secs(600)));
    handle.shutdown().await;
}
