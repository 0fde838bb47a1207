//! The [`ScheduleStore`] conformance suite, and a model-based random test any store can run.
//!
//! ```no_run
//! # async fn f() {
//! use std::sync::Arc;
//! use socialpub_core::schedule::{MemoryScheduleStore, ScheduleStore};
//! use socialpub_core::testkit::schedule::{check_against_model, random_ops, store_suite};
//!
//! store_suite(|| async { Arc::new(MemoryScheduleStore::new()) as Arc<dyn ScheduleStore> }).await;
//! for seed in 0..20 {
//!     let store: Arc<dyn ScheduleStore> = Arc::new(MemoryScheduleStore::new());
//!     check_against_model(store, &random_ops(seed, 200)).await;
//! }
//! # }
//! ```
//!
//! Every function panics with a clear message on the first broken promise; call them from
//! `#[tokio::test]`s. Times are whole milliseconds, so stores that keep microseconds compare
//! equal.

mod accounts;
mod claims;
mod documents;
mod leases;
mod lifecycle;
mod model;
mod outbox;
mod retention;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

use crate::platform::Platform;
use crate::post::{Post, Target};
use crate::publish::Receipt;
use crate::schedule::{Delivery, Event, EventKind, Fenced, NewDelivery, ScheduleStore};

pub use accounts::account_slots;
pub use claims::{claiming, claiming_ahead, concurrent_claims};
pub use documents::documents_keep_any_text;
pub use leases::{fencing, rescue};
pub use lifecycle::{cancel_and_reschedule, insert_get_list, polls_and_reconciles};
pub use model::{Op, check_against_model, random_ops};
pub use outbox::outbox;
pub use retention::{data_rights, purge_after_publish};

/// The instant the suite's clock starts at (whole seconds).
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0)
        .single()
        .unwrap_or_else(Utc::now)
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

const LEASE: Duration = Duration::from_secs(60);

/// Deliveries of a new post for `tenant`, one per account id, due `due` seconds after
/// [`t0`], created at [`t0`], with their `scheduled` events.
pub fn new_post(tenant: &str, accounts: &[&str], due: i64) -> (Vec<Delivery>, Vec<Event>) {
    let mut post = Post::new(format!("post for {tenant} due at {due}"));
    for a in accounts {
        post = post.with_target(Target::new(Platform::X, *a));
    }
    post.options.insert(
        Platform::X,
        serde_json::json!({"reply_settings": "following"}),
    );
    deliveries_of(tenant, &post, due)
}

/// Deliveries of `post` for `tenant`, one per target, due `due` seconds after [`t0`], with
/// their `scheduled` events.
fn deliveries_of(tenant: &str, post: &Post, due: i64) -> (Vec<Delivery>, Vec<Event>) {
    let post_id = Uuid::now_v7();
    let deliveries: Vec<Delivery> = post
        .targets
        .iter()
        .map(|t| {
            Delivery::new(NewDelivery {
                post_id,
                tenant,
                target: t.clone(),
                post,
                due_at: at(due),
                max_attempts: 5,
                deadline: Some(at(86_400)),
                now: t0(),
            })
        })
        .collect();
    let events = deliveries
        .iter()
        .map(|d| Event::for_delivery(d, EventKind::Scheduled, t0()))
        .collect();
    (deliveries, events)
}

async fn insert(
    store: &dyn ScheduleStore,
    tenant: &str,
    accounts: &[&str],
    due: i64,
) -> Vec<Delivery> {
    let (d, e) = new_post(tenant, accounts, due);
    store.insert(&d, &e).await.expect("insert");
    d
}

fn applied<T>(f: Fenced<T>, what: &str) -> T {
    match f {
        Fenced::Applied(t) => t,
        Fenced::Stale => panic!("{what}: the write was refused as stale but holds the lease"),
    }
}

fn fence(d: &Delivery) -> i64 {
    d.lease
        .as_ref()
        .map(|l| l.fence)
        .expect("a claimed delivery has a lease")
}

fn receipt(id: &str, secs: i64) -> Receipt {
    let mut r = Receipt::new(Platform::X, id, Some(format!("https://x.example/{id}")));
    r.created_at = at(secs);
    r
}

/// Runs every check of the suite, each on a fresh store from `factory`.
pub async fn store_suite<F, Fut>(mut factory: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn ScheduleStore>>,
{
    insert_get_list(&*factory().await).await;
    claiming(&*factory().await).await;
    claiming_ahead(&*factory().await).await;
    concurrent_claims(factory().await).await;
    fencing(&*factory().await).await;
    rescue(&*factory().await).await;
    cancel_and_reschedule(&*factory().await).await;
    polls_and_reconciles(&*factory().await).await;
    outbox(&*factory().await).await;
    documents_keep_any_text(&*factory().await).await;
    data_rights(&*factory().await).await;
    purge_after_publish(&*factory().await).await;
    account_slots(factory().await).await;
}
