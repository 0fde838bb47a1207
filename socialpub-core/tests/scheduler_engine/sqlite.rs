//! The same engine scenarios on the SQLite store.

use super::cancel::{
    cancel_while_claimed_sends_nothing_on,
    retry_publishes_a_failed_delivery_again_keeping_its_history_on,
};
use super::claims::{
    claims_ahead_and_publishes_at_the_due_time_on, publishes_at_the_due_time_and_not_before_on,
};
use super::crashes::{
    a_slow_worker_whose_lease_expired_cannot_write_on,
    crash_after_the_create_is_settled_by_lookup_without_a_second_post_on,
};
use super::publishing::{
    preparing_is_recorded_with_the_first_checkpoint_on,
    processing_posts_are_polled_without_holding_a_worker_on,
};
use super::rate_limits::a_rate_limit_pauses_only_its_account_and_keeps_the_attempt_on;

use super::*;
use socialpub_core::store::SqliteStore;

pub(super) async fn rig(dir: &tempfile::TempDir) -> Rig {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_publishes_a_failed_delivery_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    retry_publishes_a_failed_delivery_again_keeping_its_history_on(rig(&dir).await).await;
}
