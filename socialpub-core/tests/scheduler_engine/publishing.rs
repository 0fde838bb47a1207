//! The publish itself: status polls, one publish per account, the `preparing` step.

use super::{Rig, TENANT, path, post, schedule_one, secs, until};
use socialpub_core::schedule::{DeliveryState, Scheduler};
use socialpub_core::testkit::schedule::t0;
use socialpub_core::testkit::{FakeGate, FakeOutcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_posts_are_polled_without_holding_a_worker() {
    processing_posts_are_polled_without_holding_a_worker_on(Rig::new()).await;
}

pub(super) async fn processing_posts_are_polled_without_holding_a_worker_on(rig: Rig) {
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

pub(super) async fn preparing_is_recorded_with_the_first_checkpoint_on(rig: Rig) {
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
async fn a_platform_without_a_publisher_leaves_its_deliveries_waiting() {
    use socialpub_core::schedule::NO_PUBLISHER_WAIT;
    use socialpub_core::{Platform, Post, Target};

    let rig = Rig::new();
    // The engine publishes to X only; a YouTube delivery (scheduled by a process that had
    // a YouTube publisher, say) is due.
    let engine = rig.builder().build();
    let handle = engine.start();
    let youtube = Post::new("a video").with_target(Target::new(Platform::YouTube, "channel"));
    let id = engine
        .schedule(TENANT, &youtube, rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    let wait = chrono::Duration::from_std(NO_PUBLISHER_WAIT).expect("a short wait");
    until("the delivery to be given back", || async {
        rig.get(id).await.run_at == Some(t0() + wait)
    })
    .await;
    // Twice over: waiting never uses up the attempt budget nor fails the delivery.
    rig.clock.advance(wait);
    until("the delivery to be given back again", || async {
        rig.get(id).await.run_at == Some(t0() + wait + wait)
    })
    .await;
    let d = rig.get(id).await;
    assert_eq!(d.state, DeliveryState::Scheduled);
    assert_eq!(d.attempt, 0, "no attempt is used");
    assert!(d.last_error.is_none(), "{:?}", d.last_error);
    let history = engine.history(TENANT, id).await.expect("history");
    assert_eq!(
        path(&history),
        [
            DeliveryState::Scheduled,
            DeliveryState::Claimed,
            DeliveryState::Scheduled,
            DeliveryState::Claimed,
            DeliveryState::Scheduled
        ]
    );
    let note = history
        .last()
        .and_then(|h| h.message.clone())
        .unwrap_or_default();
    assert!(note.contains("no publisher for youtube"), "{note}");
    handle.shutdown().await;
}
