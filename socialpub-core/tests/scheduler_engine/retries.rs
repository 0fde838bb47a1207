//! Failures before the commit point: invalid posts, backoff, hung publishes, deadlines.

use std::time::Duration;

use super::{Rig, TENANT, next_event, post, secs, settle, test_policy, until};
use socialpub_core::ErrorKind;
use socialpub_core::schedule::{
    Delivery, DeliveryFilter, DeliveryState, EventKind, NewDelivery, ScheduleStore, Scheduler,
};
use socialpub_core::testkit::schedule::t0;
use socialpub_core::testkit::{FakeGate, FakeOutcome};

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
