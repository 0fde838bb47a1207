//! The account's slot in the store: kept across a run of publishes to the account, given up
//! after the linger time and at shutdown; an account another engine holds waits.

use super::*;
use socialpub_core::auth::AccountKey;

fn key(account: &str) -> AccountKey {
    AccountKey::new(TENANT, Platform::X, account)
}

/// Whether another holder could take the account's slot now (it keeps it if so).
async fn free(rig: &Rig, account: &str) -> bool {
    let now = rig.now();
    rig.store
        .acquire_account_slot(&key(account), uuid::Uuid::now_v7(), now, now + secs(60))
        .await
        .expect("acquire")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_is_kept_across_a_run_of_publishes_and_given_up_at_shutdown() {
    let rig = Rig::new();
    let engine = rig
        .builder()
        .account_slot_linger(Duration::from_secs(3600))
        .build();
    let handle = engine.start();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(schedule_one(&engine, &format!("post {i}"), "a", rig.now()).await);
    }
    for id in &ids {
        rig.wait_state(*id, DeliveryState::Published).await;
    }
    // Idle for a while, the engine still holds the slot for the next publish to the account.
    settle().await;
    assert!(
        !free(&rig, "a").await,
        "the slot was given up between publishes"
    );
    handle.shutdown().await;
    assert!(
        free(&rig, "a").await,
        "the slot outlived the engine's shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_is_given_up_after_the_linger_time() {
    let rig = Rig::new();
    let engine = rig.builder().account_slot_linger(Duration::ZERO).build();
    let handle = engine.start();
    let id = schedule_one(&engine, "hello", "a", rig.now()).await;
    rig.wait_state(id, DeliveryState::Published).await;
    until("the slot to be given up", || free(&rig, "a")).await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_busy_in_another_engine_waits_without_using_an_attempt() {
    let rig = Rig::new();
    let other = uuid::Uuid::now_v7();
    let now = rig.now();
    assert!(
        rig.store
            .acquire_account_slot(&key("a"), other, now, now + secs(60))
            .await
            .expect("acquire")
    );
    let engine = rig.builder().build();
    let handle = engine.start();
    let id = schedule_one(&engine, "hello", "a", rig.now()).await;
    until("the delivery to wait for the account", || async {
        let d = rig.get(id).await;
        d.state == DeliveryState::Scheduled && d.run_at == Some(now + secs(1))
    })
    .await;
    assert_eq!(rig.get(id).await.attempt, 0, "waiting used an attempt");
    assert_eq!(rig.fake.posts().len(), 0);

    rig.store
        .release_account_slot(&key("a"), other)
        .await
        .expect("release");
    rig.clock.advance(secs(1));
    rig.wait_state(id, DeliveryState::Published).await;
    handle.shutdown().await;
}
