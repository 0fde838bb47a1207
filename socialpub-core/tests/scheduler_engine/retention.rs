//! The purge of old final deliveries on the retention schedule.

use std::time::Duration;

use super::{Rig, TENANT, post, secs, until};
use socialpub_core::schedule::{DeliveryState, ScheduleStore, Scheduler};

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
