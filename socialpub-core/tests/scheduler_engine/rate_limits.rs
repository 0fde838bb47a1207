//! Rate limits and quotas: pauses per account and per application, pacing from receipts.

use std::time::Duration;

use super::{Rig, TENANT, post, schedule_one, secs, until};
use chrono::{DateTime, Utc};
use socialpub_core::http::{RateLimit, Window};
use socialpub_core::schedule::{DeliveryState, Scheduler};
use socialpub_core::testkit::FakeOutcome;
use socialpub_core::testkit::schedule::t0;
use socialpub_core::{ErrorKind, Platform};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_pauses_only_its_account_and_keeps_the_attempt() {
    a_rate_limit_pauses_only_its_account_and_keeps_the_attempt_on(Rig::new()).await;
}

pub(super) async fn a_rate_limit_pauses_only_its_account_and_keeps_the_attempt_on(rig: Rig) {
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

pub(super) fn spent(reset: DateTime<Utc>) -> Option<Window> {
    Some(Window {
        limit: Some(100),
        remaining: Some(0),
        reset_at: Some(reset),
    })
}

pub(super) fn calls_to(rig: &Rig, account: &str) -> Vec<DateTime<Utc>> {
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

/// A platform's retry time that has already come (the clock moved during the publish) means
/// no wait: it is read against the engine's clock, not the system's (this test's clock is
/// years away from it), which once parked such a delivery for years.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_time_already_past_waits_no_longer() {
    let rig = Rig::new();
    rig.fake
        .script("now", [FakeOutcome::RateLimited(Duration::ZERO)]);
    let engine = rig.builder().workers(1).build();
    let handle = engine.start();
    let id = engine
        .schedule(TENANT, &post("at once", &["now"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    // Waiting at most the jitter of a rate-limit wait (2 s), the clock moving a second a time.
    for _ in 0..3 {
        rig.clock.advance(secs(1));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = rig.wait_state(id, DeliveryState::Published).await;
    assert_eq!(d.attempt, 1, "the rate limit used no attempt");
    handle.shutdown().await;
}
