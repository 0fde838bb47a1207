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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::error::ErrorKind;
use crate::platform::Platform;
use crate::post::{Post, Target};
use crate::publish::{Receipt, RemoteState};
use crate::schedule::{
    CancelOutcome, Delivery, DeliveryError, DeliveryFilter, DeliveryState, Event, EventKind,
    Fenced, MemoryScheduleStore, NewDelivery, NextTimes, RescheduleOutcome, ScheduleStore,
    Transition,
};

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
}

/// Inserted deliveries round-trip exactly, are scoped by tenant, start their history and
/// their events, and list by tenant, state, due time, post and limit, ordered by due time.
pub async fn insert_get_list(store: &dyn ScheduleStore) {
    let a = insert(store, "tenant-a", &["1", "2"], 10).await;
    let b = insert(store, "tenant-b", &["1"], 5).await;
    let a_later = insert(store, "tenant-a", &["3"], 20).await;

    let got = store.get("tenant-a", a[0].id).await.expect("get");
    assert_eq!(got.as_ref(), Some(&a[0]), "a delivery round-trips exactly");
    assert!(
        store.get("tenant-b", a[0].id).await.expect("get").is_none(),
        "another tenant cannot see it"
    );
    let h = store.history("tenant-a", a[1].id).await.expect("history");
    assert_eq!(
        h,
        vec![a[1].inserted_entry()],
        "history starts with the insert"
    );
    assert!(
        store
            .history("tenant-b", a[1].id)
            .await
            .expect("history")
            .is_empty(),
        "history is scoped by tenant"
    );
    let dup = store.insert(&a[..1], &[]).await;
    assert!(dup.is_err(), "inserting an existing id fails");

    let all = store
        .list(&DeliveryFilter::tenant("tenant-a"))
        .await
        .expect("list");
    let mut want: Vec<Uuid> = a.iter().map(|d| d.id).collect();
    want.sort();
    let mut first_two: Vec<Uuid> = all[..2].iter().map(|d| d.id).collect();
    first_two.sort();
    assert_eq!(all.len(), 3, "list returns the tenant's deliveries only");
    assert_eq!(first_two, want, "ordered by due time");
    assert_eq!(all[2].id, a_later[0].id);
    let ranged = store
        .list(&DeliveryFilter::tenant("tenant-a").due_between(at(15), at(25)))
        .await
        .expect("list");
    assert_eq!(
        ranged.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![a_later[0].id]
    );
    let limited = store
        .list(&DeliveryFilter::tenant("tenant-a").limit(1))
        .await
        .expect("list");
    assert_eq!(limited.len(), 1);
    let by_post = store
        .list(&DeliveryFilter::tenant("tenant-a").post(a[0].post_id))
        .await
        .expect("list");
    assert_eq!(by_post.len(), 2);
    let none = store
        .list(&DeliveryFilter::tenant("tenant-a").states([DeliveryState::Published]))
        .await
        .expect("list");
    assert!(none.is_empty(), "state filter");
    let b_list = store
        .list(&DeliveryFilter::tenant("tenant-b").states([DeliveryState::Scheduled]))
        .await
        .expect("list");
    assert_eq!(b_list, b);

    let events = store.events(None, 100).await.expect("events");
    assert_eq!(events.len(), 4, "one scheduled event per delivery");
    assert!(
        events.windows(2).all(|w| w[0].seq < w[1].seq),
        "events in order"
    );
    assert!(events.iter().all(|e| e.event.kind == EventKind::Scheduled));
}

/// A claim ahead takes, besides up to its limit of due deliveries, up to its own limit of
/// those due after `now` and by `due_by` (not later), each oldest first, and returns each
/// with the run time it had; the lease and history count from the claim's `now`.
/// `next_times` reports run times and lease expiries apart.
pub async fn claiming_ahead(store: &dyn ScheduleStore) {
    let due = insert(store, "t", &["1"], 5).await;
    let due_too = insert(store, "t", &["2"], 6).await;
    let soon = insert(store, "t", &["3"], 10).await;
    let later = insert(store, "t", &["4"], 12).await;
    insert(store, "t", &["5"], 20).await;
    assert_eq!(
        store.next_times().await.expect("next"),
        NextTimes::new(Some(at(5)), None)
    );
    let first = store
        .claim_ahead("w", at(8), 1, at(12), 1, LEASE)
        .await
        .expect("claim");
    let ids: Vec<Uuid> = first.iter().map(|c| c.delivery.id).collect();
    assert_eq!(
        ids,
        vec![due[0].id, soon[0].id],
        "one due and one due soon: each limit holds for its own kind"
    );
    let second = store
        .claim_ahead("w", at(8), 5, at(12), 5, LEASE)
        .await
        .expect("claim");
    let ids: Vec<Uuid> = second.iter().map(|c| c.delivery.id).collect();
    assert_eq!(
        ids,
        vec![due_too[0].id, later[0].id],
        "due by 12, by run time; not the one due at 20"
    );
    let run_ats: Vec<DateTime<Utc>> = first.iter().chain(&second).map(|c| c.run_at).collect();
    assert_eq!(run_ats, vec![at(5), at(10), at(6), at(12)]);
    for c in first.iter().chain(&second) {
        assert_eq!(c.delivery.state, DeliveryState::Claimed);
        assert_eq!(c.delivery.run_at, None, "the claim clears the run time");
        assert_eq!(
            c.delivery.lease.as_ref().map(|l| l.expires_at),
            Some(at(68)),
            "the lease counts from the claim, not from the run time"
        );
        assert_eq!(c.delivery.updated_at, at(8));
        assert_eq!(
            store.get("t", c.delivery.id).await.expect("get").as_ref(),
            Some(&c.delivery),
            "stored as returned"
        );
    }
    assert_eq!(
        store.next_times().await.expect("next"),
        NextTimes::new(Some(at(20)), Some(at(68))),
        "the next run time and the lease expiry, apart"
    );
    assert_eq!(store.next_due_at().await.expect("next"), Some(at(20)));
    assert!(
        store
            .claim_due("w", at(19), 10, LEASE)
            .await
            .expect("claim")
            .is_empty(),
        "a plain claim takes nothing before its time"
    );
}

/// Claims take due deliveries only, oldest first, up to the limit, each once, with a lease and
/// a fresh fence, and start an attempt; `next_due_at` follows due times and lease expiries.
pub async fn claiming(store: &dyn ScheduleStore) {
    assert_eq!(
        store.next_due_at().await.expect("next"),
        None,
        "empty store"
    );
    let late = insert(store, "t", &["1"], 30).await;
    let early = insert(store, "t", &["2", "3"], 10).await;
    assert_eq!(store.next_due_at().await.expect("next"), Some(at(10)));

    let none = store
        .claim_due("w1", at(9), 10, LEASE)
        .await
        .expect("claim");
    assert!(none.is_empty(), "nothing is due before its time");
    let got = store
        .claim_due("w1", at(10), 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(got.len(), 1, "the limit is honoured");
    let first = &got[0];
    assert!(
        early.iter().any(|d| d.id == first.id),
        "the oldest due first"
    );
    assert_eq!(first.state, DeliveryState::Claimed);
    assert_eq!(first.attempt, 1, "a claim starts an attempt");
    assert_eq!(first.run_at, None);
    let lease = first.lease.as_ref().expect("lease");
    assert_eq!(lease.owner, "w1");
    assert_eq!(lease.fence, 1);
    assert_eq!(first.fence, 1);
    assert_eq!(lease.expires_at, at(70));
    assert_eq!(
        store.get("t", first.id).await.expect("get").as_ref(),
        Some(first),
        "the claim is stored as returned"
    );

    let rest = store
        .claim_due("w2", at(100), 10, LEASE)
        .await
        .expect("claim");
    let ids: Vec<Uuid> = rest.iter().map(|d| d.id).collect();
    let other_early = early.iter().find(|d| d.id != first.id).expect("two early");
    assert_eq!(ids, vec![other_early.id, late[0].id], "due ones, by run_at");
    assert!(
        store
            .claim_due("w3", at(1000), 10, LEASE)
            .await
            .expect("claim")
            .is_empty(),
        "a leased delivery is not claimed again"
    );
    assert_eq!(
        store.next_due_at().await.expect("next"),
        Some(at(70)),
        "the earliest lease expiry when nothing is queued"
    );
    let h = store.history("t", first.id).await.expect("history");
    assert_eq!(h.len(), 2);
    assert_eq!(h[1].from, Some(DeliveryState::Scheduled));
    assert_eq!(h[1].to, DeliveryState::Claimed);
    assert_eq!(h[1].worker.as_deref(), Some("w1"));
    assert_eq!(h[1].attempt, 1);
}

/// Many concurrent claimers never receive the same delivery, and together take all of them.
pub async fn concurrent_claims(store: Arc<dyn ScheduleStore>) {
    let mut all = HashSet::new();
    for i in 0..40 {
        let accounts = ["a", "b", "c", "d", "e"];
        for d in insert(&*store, "t", &accounts, i % 7).await {
            all.insert(d.id);
        }
    }
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store
                        .claim_due(&format!("w{w}"), at(100), 7, LEASE)
                        .await
                        .expect("claim");
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|d| d.id));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for t in tasks {
        for id in t.await.expect("join") {
            assert!(seen.insert(id), "delivery {id} was claimed twice");
        }
    }
    assert_eq!(seen, all, "every due delivery was claimed");
}

/// Every write after a claim carries the fence; a write with any other fence is refused and
/// changes nothing; a transition the state machine forbids is an error.
pub async fn fencing(store: &dyn ScheduleStore) {
    let d = insert(store, "t", &["1"], 0).await.remove(0);
    let c = store
        .claim_due("w", at(0), 1, LEASE)
        .await
        .expect("claim")
        .remove(0);
    let f = fence(&c);
    assert!(
        !store
            .renew_lease(d.id, f + 1, at(200))
            .await
            .expect("renew")
    );
    assert!(store.renew_lease(d.id, f, at(120)).await.expect("renew"));
    let renewed = store.get("t", d.id).await.expect("get").expect("there");
    assert_eq!(renewed.lease.as_ref().map(|l| l.expires_at), Some(at(120)));

    let stale = Transition::new(&c, DeliveryState::Preparing, at(1));
    let mut wrong = stale.clone();
    wrong.fence = f + 1;
    assert!(store.transition(&wrong).await.expect("write").is_stale());
    assert_eq!(
        store.get("t", d.id).await.expect("get").as_ref(),
        Some(&renewed),
        "unchanged"
    );

    let p = applied(store.transition(&stale).await.expect("write"), "preparing");
    assert_eq!(p.state, DeliveryState::Preparing);
    assert!(p.lease.is_some(), "preparing keeps the lease");
    assert_eq!(store.get("t", d.id).await.expect("get").as_ref(), Some(&p));

    let bad = Transition::new(&p, DeliveryState::Scheduled, at(2));
    assert!(
        store.transition(&bad).await.is_err(),
        "preparing → scheduled is not a transition the state machine allows"
    );

    let cp = serde_json::json!({"upload": {"id": "u1", "offset": 4096}});
    assert!(
        store
            .save_checkpoint(d.id, f + 1, &cp, at(2))
            .await
            .expect("cp")
            .is_stale()
    );
    applied(
        store
            .save_checkpoint(d.id, f, &cp, at(2))
            .await
            .expect("cp"),
        "checkpoint",
    );
    assert!(
        store
            .commit_point(d.id, f + 1, at(3))
            .await
            .expect("cp")
            .is_stale()
    );
    let committing = applied(
        store.commit_point(d.id, f, at(3)).await.expect("cp"),
        "commit",
    );
    assert_eq!(committing.state, DeliveryState::Committing);
    assert_eq!(committing.committed_at, Some(at(3)));
    assert_eq!(committing.checkpoint, Some(cp.clone()));
    let again = applied(
        store.commit_point(d.id, f, at(4)).await.expect("cp"),
        "commit again",
    );
    assert_eq!(
        again.committed_at,
        Some(at(3)),
        "the first commit time is kept"
    );
    assert_eq!(again.state, DeliveryState::Committing);

    let r = receipt("remote-1", 5);
    let mut event = Event::for_delivery(&again, EventKind::Published, at(5));
    event.state = Some(DeliveryState::Published);
    let t = Transition::new(&again, DeliveryState::Published, at(5))
        .receipt(r.clone())
        .event(event.clone());
    let done = applied(store.transition(&t).await.expect("write"), "published");
    assert_eq!(done.state, DeliveryState::Published);
    assert_eq!(done.receipt, Some(r));
    assert!(done.lease.is_none(), "a final state releases the lease");
    assert_eq!(done.fence, f, "the fence stays after the lease ends");
    assert_eq!(
        store.get("t", d.id).await.expect("get").as_ref(),
        Some(&done)
    );
    assert!(
        store.transition(&t).await.expect("write").is_stale(),
        "the lease is gone"
    );
    assert!(!store.renew_lease(d.id, f, at(300)).await.expect("renew"));
    let events = store.events(None, 100).await.expect("events");
    assert_eq!(
        events.last().map(|e| &e.event),
        Some(&event),
        "the event is in the outbox"
    );

    let h = store.history("t", d.id).await.expect("history");
    let path: Vec<DeliveryState> = h.iter().map(|e| e.to).collect();
    assert_eq!(
        path,
        vec![
            DeliveryState::Scheduled,
            DeliveryState::Claimed,
            DeliveryState::Preparing,
            DeliveryState::Committing,
            DeliveryState::Published
        ],
        "one history entry per state change"
    );
    assert_eq!(h[4].worker.as_deref(), Some("w"));
    assert_eq!(h[4].at, at(5));
}

/// Expired leases end: before the commit point the delivery is queued again (attempt kept);
/// after it, it becomes unconfirmed with an event. The late worker's writes are refused, and
/// the next claim gets a larger fence.
pub async fn rescue(store: &dyn ScheduleStore) {
    let a = insert(store, "t", &["1"], 0).await.remove(0);
    let b = insert(store, "t", &["2"], 1).await.remove(0);
    let c = insert(store, "t", &["3"], 2).await.remove(0);
    let claimed = store
        .claim_due("slow", at(2), 10, LEASE)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 3);
    let get = |id: Uuid| {
        claimed
            .iter()
            .find(|d| d.id == id)
            .cloned()
            .expect("claimed")
    };
    let (ca, cb, cc) = (get(a.id), get(b.id), get(c.id));
    applied(
        store
            .transition(&Transition::new(&cb, DeliveryState::Preparing, at(3)))
            .await
            .expect("w"),
        "preparing",
    );
    let cb = applied(
        store
            .commit_point(b.id, fence(&cb), at(4))
            .await
            .expect("cp"),
        "commit",
    );
    assert!(
        store
            .renew_lease(c.id, fence(&cc), at(500))
            .await
            .expect("renew")
    );

    assert!(
        store
            .rescue_expired(at(61))
            .await
            .expect("rescue")
            .is_empty(),
        "not yet expired"
    );
    let rescued = store.rescue_expired(at(62)).await.expect("rescue");
    let mut ids: Vec<Uuid> = rescued.iter().map(|r| r.delivery.id).collect();
    ids.sort();
    let mut want = vec![a.id, b.id];
    want.sort();
    assert_eq!(ids, want, "exactly the expired leases are rescued");

    let ra = store.get("t", a.id).await.expect("get").expect("a");
    assert_eq!(
        ra.state,
        DeliveryState::RetryWaiting,
        "never committed: back in the queue"
    );
    assert_eq!(ra.run_at, Some(at(62)));
    assert_eq!(ra.attempt, 1, "the attempt count is kept");
    assert!(ra.lease.is_none());
    assert_eq!(
        ra.last_error.as_ref().map(|e| e.kind),
        Some(ErrorKind::Transient)
    );
    let resc_a = rescued.iter().find(|r| r.delivery.id == a.id).expect("a");
    assert_eq!(
        resc_a.delivery, ra,
        "the rescue returns the stored delivery"
    );
    assert!(resc_a.event.is_none());

    let rb = store.get("t", b.id).await.expect("get").expect("b");
    assert_eq!(
        rb.state,
        DeliveryState::Unconfirmed,
        "committed: unconfirmed"
    );
    assert_eq!(rb.committed_at, Some(at(4)));
    assert_eq!(rb.run_at, Some(at(62)), "due for reconciliation");
    assert_eq!(
        rb.last_error.as_ref().map(|e| e.kind),
        Some(ErrorKind::Unconfirmed)
    );
    let ev = rescued
        .iter()
        .find(|r| r.delivery.id == b.id)
        .and_then(|r| r.event.clone())
        .expect("an unconfirmed rescue has an event");
    assert_eq!(ev.kind, EventKind::Unconfirmed);
    assert_eq!(ev.delivery_id, Some(b.id));
    let outbox = store.events(None, 100).await.expect("events");
    assert!(
        outbox.iter().any(|e| e.event == ev),
        "its event is in the outbox"
    );

    // The slow worker wakes up: every write it makes is refused.
    let late = Transition::new(&ca, DeliveryState::Preparing, at(63));
    assert!(store.transition(&late).await.expect("w").is_stale());
    assert!(
        store
            .commit_point(a.id, fence(&ca), at(63))
            .await
            .expect("cp")
            .is_stale()
    );
    let late_b = Transition::new(&cb, DeliveryState::Published, at(63)).receipt(receipt("r", 63));
    assert!(store.transition(&late_b).await.expect("w").is_stale());
    assert_eq!(
        store.get("t", a.id).await.expect("get").as_ref(),
        Some(&ra),
        "unchanged"
    );

    let again = store
        .claim_due("fast", at(63), 10, LEASE)
        .await
        .expect("claim");
    let na = again
        .iter()
        .find(|d| d.id == a.id)
        .expect("a is claimable again");
    assert!(fence(na) > fence(&ca), "the new claim has a larger fence");
    assert_eq!(na.attempt, 2);
    assert_eq!(na.state, DeliveryState::Claimed);
    let nb = again
        .iter()
        .find(|d| d.id == b.id)
        .expect("b is due for reconciliation");
    assert_eq!(
        nb.state,
        DeliveryState::Unconfirmed,
        "reconciling keeps the state"
    );
    assert_eq!(nb.attempt, 1, "reconciling is not an attempt");
    assert!(
        store
            .commit_point(a.id, fence(&ca), at(64))
            .await
            .expect("cp")
            .is_stale()
    );
    let h = store.history("t", b.id).await.expect("history");
    let last = h.last().expect("entries");
    assert_eq!(last.to, DeliveryState::Unconfirmed);
    assert_eq!(last.from, Some(DeliveryState::Committing));
    assert_eq!(last.error_kind, Some(ErrorKind::Unconfirmed));
}

/// Cancel and reschedule win before the commit point (revoking a worker's lease) and are
/// refused after it; both are scoped by tenant.
pub async fn cancel_and_reschedule(store: &dyn ScheduleStore) {
    let s = insert(store, "t", &["1"], 100).await.remove(0);
    assert_eq!(
        store.cancel("other", s.id, at(1)).await.expect("cancel"),
        CancelOutcome::NotFound
    );
    assert_eq!(
        store
            .reschedule("other", s.id, at(5), at(1))
            .await
            .expect("r"),
        RescheduleOutcome::NotFound
    );
    match store
        .reschedule("t", s.id, at(5), at(1))
        .await
        .expect("reschedule")
    {
        RescheduleOutcome::Rescheduled(d) => {
            assert_eq!(d.due_at, at(5));
            assert_eq!(d.run_at, Some(at(5)));
            assert_eq!(d.state, DeliveryState::Scheduled);
            assert_eq!(store.get("t", s.id).await.expect("get").as_ref(), Some(&*d));
        }
        other => panic!("a scheduled delivery reschedules: {other:?}"),
    }
    assert_eq!(store.next_due_at().await.expect("next"), Some(at(5)));
    let listed_between = |from: i64, before: i64| {
        let mut f = DeliveryFilter::tenant("t");
        f.due_from = Some(at(from));
        f.due_before = Some(at(before));
        async move {
            let listed = store.list(&f).await.expect("list");
            listed.iter().map(|d| d.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed_between(5, 6).await,
        vec![s.id],
        "listed at its new time"
    );
    assert!(
        listed_between(99, 101).await.is_empty(),
        "not at its old time"
    );
    match store.cancel("t", s.id, at(2)).await.expect("cancel") {
        CancelOutcome::Cancelled(d) => {
            assert_eq!(d.state, DeliveryState::Cancelled);
            assert_eq!(d.run_at, None);
        }
        other => panic!("a scheduled delivery cancels: {other:?}"),
    }
    assert_eq!(
        store.cancel("t", s.id, at(3)).await.expect("c"),
        CancelOutcome::AlreadyCancelled
    );
    assert!(
        store
            .claim_due("w", at(1000), 10, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(
        store.reschedule("t", s.id, at(9), at(3)).await.expect("r"),
        RescheduleOutcome::TooLate(DeliveryState::Cancelled),
        "a cancelled delivery can never go out"
    );

    // Claimed and preparing: cancel wins, the worker's commit point is refused.
    let d = insert(store, "t", &["2"], 0).await.remove(0);
    let c = store
        .claim_due("w", at(10), 1, LEASE)
        .await
        .expect("claim")
        .remove(0);
    let p = applied(
        store
            .transition(&Transition::new(&c, DeliveryState::Preparing, at(11)))
            .await
            .expect("w"),
        "preparing",
    );
    assert!(matches!(
        store.cancel("t", d.id, at(12)).await.expect("c"),
        CancelOutcome::Cancelled(_)
    ));
    assert!(
        store
            .commit_point(d.id, fence(&p), at(13))
            .await
            .expect("cp")
            .is_stale()
    );
    let got = store.get("t", d.id).await.expect("get").expect("d");
    assert_eq!(got.state, DeliveryState::Cancelled);
    assert!(got.lease.is_none());

    // Claimed: reschedule wins; the worker's writes are refused; the next claim is later.
    let e = insert(store, "t", &["3"], 0).await.remove(0);
    let c = store
        .claim_due("w", at(20), 1, LEASE)
        .await
        .expect("claim")
        .remove(0);
    assert!(matches!(
        store
            .reschedule("t", e.id, at(40), at(21))
            .await
            .expect("r"),
        RescheduleOutcome::Rescheduled(_)
    ));
    assert!(
        store
            .transition(&Transition::new(&c, DeliveryState::Preparing, at(22)))
            .await
            .expect("w")
            .is_stale()
    );
    assert!(
        store
            .claim_due("w", at(39), 10, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
    let c2 = store
        .claim_due("w", at(40), 10, LEASE)
        .await
        .expect("claim")
        .remove(0);
    assert!(fence(&c2) > fence(&c));
    assert_eq!(c2.attempt, 1, "a reschedule gives a fresh attempt budget");

    // Committing: too late for both.
    applied(
        store
            .commit_point(e.id, fence(&c2), at(41))
            .await
            .expect("cp"),
        "commit",
    );
    assert_eq!(
        store.cancel("t", e.id, at(42)).await.expect("c"),
        CancelOutcome::TooLate(DeliveryState::Committing)
    );
    assert_eq!(
        store
            .reschedule("t", e.id, at(99), at(42))
            .await
            .expect("r"),
        RescheduleOutcome::TooLate(DeliveryState::Committing)
    );
    let still = store.get("t", e.id).await.expect("get").expect("e");
    assert_eq!(still.state, DeliveryState::Committing);
    assert!(still.lease.is_some(), "the worker keeps its lease");

    // Failed: a reschedule is a new try.
    let t = Transition::new(&still, DeliveryState::Failed, at(43))
        .error(DeliveryError::new(ErrorKind::Platform, "refused"));
    applied(store.transition(&t).await.expect("w"), "failed");
    match store
        .reschedule("t", e.id, at(50), at(44))
        .await
        .expect("r")
    {
        RescheduleOutcome::Rescheduled(d) => {
            assert_eq!(d.state, DeliveryState::Scheduled);
            assert_eq!(d.attempt, 0);
            assert_eq!(d.committed_at, None);
        }
        other => panic!("a failed delivery reschedules: {other:?}"),
    }
}

/// Processing deliveries are polled and unconfirmed ones reconciled by claims that keep their
/// state and start no attempt; parked ones (no run time) are never claimed.
pub async fn polls_and_reconciles(store: &dyn ScheduleStore) {
    let d = insert(store, "t", &["1"], 0).await.remove(0);
    let c = store
        .claim_due("w", at(0), 1, LEASE)
        .await
        .expect("claim")
        .remove(0);
    applied(
        store
            .commit_point(d.id, fence(&c), at(1))
            .await
            .expect("cp"),
        "commit",
    );
    let c = store.get("t", d.id).await.expect("get").expect("d");
    let t = Transition::new(&c, DeliveryState::Processing, at(2))
        .receipt(receipt("r1", 2).with_state(RemoteState::Processing))
        .run_at(at(12));
    let p = applied(store.transition(&t).await.expect("w"), "processing");
    assert!(p.lease.is_none(), "processing holds no worker");
    assert!(
        store
            .claim_due("w", at(11), 1, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
    let polled = store
        .claim_due("w", at(12), 1, LEASE)
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(polled.state, DeliveryState::Processing);
    assert_eq!(polled.attempt, 1);
    let t = Transition::new(&polled, DeliveryState::Unconfirmed, at(13))
        .error(DeliveryError::new(ErrorKind::Unconfirmed, "status lost"))
        .run_at(at(20));
    let u = applied(store.transition(&t).await.expect("w"), "unconfirmed");
    assert_eq!(u.committed_at, Some(at(1)));
    let r = store
        .claim_due("w", at(20), 1, LEASE)
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(r.state, DeliveryState::Unconfirmed);
    let parked = Transition::new(&r, DeliveryState::Unconfirmed, at(21))
        .error(DeliveryError::new(ErrorKind::Unconfirmed, "cannot tell"));
    let parked = applied(store.transition(&parked).await.expect("w"), "parked");
    assert_eq!(parked.run_at, None);
    assert!(
        store
            .claim_due("w", at(10_000), 1, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(store.next_due_at().await.expect("next"), None);
    assert!(
        matches!(
            store.cancel("t", d.id, at(22)).await.expect("c"),
            CancelOutcome::Cancelled(_)
        ),
        "a person may give up on a parked unconfirmed delivery"
    );
}

/// The outbox pages after a cursor, acknowledges by sequence number, and keeps appended
/// events.
pub async fn outbox(store: &dyn ScheduleStore) {
    insert(store, "t", &["1", "2", "3"], 0).await;
    let extra = Event::token_expires_soon("t", Target::new(Platform::X, "1"), at(99), at(1));
    store.append_event(&extra).await.expect("append");
    let all = store.events(None, 10).await.expect("events");
    assert_eq!(all.len(), 4);
    assert_eq!(all[3].event, extra, "events round-trip exactly");
    let page = store.events(Some(all[1].seq), 1).await.expect("events");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].seq, all[2].seq);
    assert_eq!(
        store
            .ack_events(&[all[0].seq, all[2].seq])
            .await
            .expect("ack"),
        2
    );
    assert_eq!(
        store.ack_events(&[all[0].seq]).await.expect("ack"),
        0,
        "acked once"
    );
    let left: Vec<i64> = store
        .events(None, 10)
        .await
        .expect("events")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(left, vec![all[1].seq, all[3].seq]);
}

/// Text with a NUL character, quotes, a backslash, control characters, a character outside
/// the Basic Multilingual Plane and a direction override.
const AWKWARD: &str =
    "nul \u{0} quote \" backslash \\ line\nbreak tab\t bell \u{7} crab \u{1f980} rtl \u{202e} end";

/// Documents keep any text exactly: a post, its options, a receipt, an error and the events
/// of a published and a failed delivery round-trip whatever characters their strings hold.
pub async fn documents_keep_any_text(store: &dyn ScheduleStore) {
    let mut post = Post::new(format!("text: {AWKWARD}"))
        .with_target(Target::new(Platform::X, "1"))
        .with_target(Target::new(Platform::X, "2"));
    post.options
        .insert(Platform::X, serde_json::json!({ "note": AWKWARD }));
    let (deliveries, events) = deliveries_of("odd", &post, 0);
    store.insert(&deliveries, &events).await.expect("insert");
    for d in &deliveries {
        let got = store.get("odd", d.id).await.expect("get");
        assert_eq!(got.as_ref(), Some(d), "the post round-trips exactly");
    }
    let claimed = store.claim_due("w", at(1), 10, LEASE).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    for c in &claimed {
        assert_eq!(
            c.post, deliveries[0].post,
            "a claim reads the post back exactly"
        );
    }

    let (first, second) = (&claimed[0], &claimed[1]);
    let committing = applied(
        store
            .commit_point(first.id, fence(first), at(2))
            .await
            .expect("commit point"),
        "commit",
    );
    let mut r = receipt(AWKWARD, 3);
    r.extra = serde_json::json!({ "raw": AWKWARD });
    let published = Event::for_delivery(&committing, EventKind::Published, at(3));
    let t = Transition::new(&committing, DeliveryState::Published, at(3))
        .receipt(r.clone())
        .event(published.clone());
    let done = applied(store.transition(&t).await.expect("published"), "published");
    assert_eq!(done.receipt.as_ref(), Some(&r));

    let error = DeliveryError::new(ErrorKind::InvalidInput, format!("refused: {AWKWARD}"));
    let failed_event = Event::for_delivery(second, EventKind::Failed, at(4));
    let t = Transition::new(second, DeliveryState::Failed, at(4))
        .error(error.clone())
        .event(failed_event.clone());
    applied(store.transition(&t).await.expect("failed"), "failed");

    let got = store.get("odd", first.id).await.expect("get").expect("row");
    assert_eq!(
        got.receipt.as_ref(),
        Some(&r),
        "the receipt round-trips exactly"
    );
    let got = store
        .get("odd", second.id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(
        got.last_error.as_ref(),
        Some(&error),
        "the error round-trips exactly"
    );
    let history = store.history("odd", second.id).await.expect("history");
    let message = history
        .last()
        .and_then(|h| h.message.clone())
        .expect("the failure's history entry has its message");
    // PostgreSQL's text cannot hold U+0000: a store may keep it as U+FFFD.
    assert!(
        message == error.message || message == error.message.replace('\0', "\u{fffd}"),
        "the history keeps the message: {message:?}"
    );
    let outbox: Vec<Event> = store
        .events(None, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert!(
        outbox.contains(&published),
        "the published event round-trips exactly"
    );
    assert!(
        outbox.contains(&failed_event),
        "the failed event round-trips exactly"
    );
}

/// A delivery a worker published is final from its publish time (and has no run time): a
/// purge with an earlier cut-off keeps it, a later one takes it with its history.
pub async fn purge_after_publish(store: &dyn ScheduleStore) {
    let d = insert(store, "p", &["1"], 0).await.remove(0);
    let c = store
        .claim_due("w", at(1), 10, LEASE)
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(c.id, d.id);
    let f = c.lease.as_ref().expect("lease").fence;
    let committing = applied(
        store.commit_point(d.id, f, at(2)).await.expect("cp"),
        "commit",
    );
    assert_eq!(
        store.purge(at(3)).await.expect("purge").deliveries,
        0,
        "not final yet"
    );
    // A run time given with a final state is dropped: only a due state has one.
    let t = Transition::new(&committing, DeliveryState::Published, at(5))
        .receipt(receipt("remote-p", 5))
        .run_at(at(7));
    let done = applied(store.transition(&t).await.expect("write"), "published");
    assert_eq!(done.run_at, None);
    assert_eq!(store.next_due_at().await.expect("next"), None);
    assert_eq!(
        store.purge(at(5)).await.expect("purge").deliveries,
        0,
        "published at 5, not before"
    );
    assert!(store.get("p", d.id).await.expect("get").is_some());
    assert_eq!(store.purge(at(6)).await.expect("purge").deliveries, 1);
    assert!(store.get("p", d.id).await.expect("get").is_none());
    assert!(store.history("p", d.id).await.expect("h").is_empty());
    assert!(
        store
            .list(&DeliveryFilter::tenant("p"))
            .await
            .expect("list")
            .is_empty()
    );
}

/// Purge removes final deliveries and old events only; export returns all of one tenant's
/// data; delete removes it and nothing else.
pub async fn data_rights(store: &dyn ScheduleStore) {
    let keep = insert(store, "t", &["1"], 0).await.remove(0);
    let gone = insert(store, "t", &["2"], 0).await.remove(0);
    let other = insert(store, "u", &["1"], 0).await.remove(0);
    assert!(matches!(
        store.cancel("t", gone.id, at(5)).await.expect("c"),
        CancelOutcome::Cancelled(_)
    ));
    let newer = Event::token_expires_soon("t", Target::new(Platform::X, "1"), at(99), at(50));
    store.append_event(&newer).await.expect("append");

    let export = store.export_tenant("t").await.expect("export");
    assert_eq!(export.tenant, "t");
    assert_eq!(export.deliveries.len(), 2);
    assert!(export.deliveries.iter().all(|d| d.tenant == "t"));
    assert_eq!(export.history.len(), 3, "two inserts and a cancel");
    assert_eq!(export.events.len(), 3);
    serde_json::to_value(&export).expect("the export is JSON");

    let report = store.purge(at(10)).await.expect("purge");
    assert_eq!(report.deliveries, 1, "only the final delivery");
    assert_eq!(report.events, 3, "events older than the cut-off");
    assert!(store.get("t", gone.id).await.expect("get").is_none());
    assert!(store.history("t", gone.id).await.expect("h").is_empty());
    assert!(
        store.get("t", keep.id).await.expect("get").is_some(),
        "live deliveries stay"
    );
    let left = store.events(None, 10).await.expect("events");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event, newer);

    assert_eq!(store.delete_tenant("t").await.expect("delete"), 1);
    assert!(store.get("t", keep.id).await.expect("get").is_none());
    assert!(
        store
            .export_tenant("t")
            .await
            .expect("export")
            .deliveries
            .is_empty()
    );
    assert!(store.events(None, 10).await.expect("events").is_empty());
    assert_eq!(
        store.get("u", other.id).await.expect("get").as_ref(),
        Some(&other)
    );
    assert_eq!(
        store
            .claim_due("w", at(100), 10, LEASE)
            .await
            .expect("claim")
            .len(),
        1
    );
}

/// One step of [`check_against_model`]. Indices pick among the deliveries or claims known so
/// far (modulo their number).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Schedules a post to `targets` (1–3) accounts of tenant `tenant` (0–1), due in `due`
    /// seconds from the current time.
    Schedule {
        /// The tenant.
        tenant: u8,
        /// How many targets.
        targets: u8,
        /// Seconds from now (negative: overdue).
        due: i64,
    },
    /// Worker `worker` claims up to `limit`.
    Claim {
        /// The worker.
        worker: u8,
        /// The limit.
        limit: u8,
    },
    /// Moves time forward.
    Advance {
        /// Seconds.
        secs: u32,
    },
    /// The holder of a claim moves it to preparing.
    Prepare {
        /// Which claim.
        pick: usize,
    },
    /// The holder of a claim records its commit point.
    Commit {
        /// Which claim.
        pick: usize,
    },
    /// The holder publishes (or, for a processing claim, finishes).
    Publish {
        /// Which claim.
        pick: usize,
    },
    /// The holder fails: retryable (back in the queue in 5 s) or not.
    Fail {
        /// Which claim.
        pick: usize,
        /// Retryable or final.
        retryable: bool,
    },
    /// The holder loses the answer to its create: unconfirmed, due for lookup in 5 s.
    Unconfirm {
        /// Which claim.
        pick: usize,
    },
    /// The holder renews its lease.
    Renew {
        /// Which claim.
        pick: usize,
    },
    /// A worker crashes: it forgets its claims (their leases lapse).
    Crash {
        /// The worker.
        worker: u8,
    },
    /// Expired leases are rescued.
    Rescue,
    /// A delivery is cancelled.
    Cancel {
        /// Which delivery.
        pick: usize,
    },
    /// A delivery is rescheduled `due` seconds from now.
    Reschedule {
        /// Which delivery.
        pick: usize,
        /// Seconds from now.
        due: i64,
    },
}

/// `n` random operations from `seed` (the same seed gives the same operations).
pub fn random_ops(seed: u64, n: usize) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let pick = rng.random_range(0..64usize);
            match rng.random_range(0..20u8) {
                0..=2 => Op::Schedule {
                    tenant: rng.random_range(0..2),
                    targets: rng.random_range(1..4),
                    due: rng.random_range(-5..60),
                },
                3..=5 => Op::Claim {
                    worker: rng.random_range(0..3),
                    limit: rng.random_range(1..5),
                },
                6..=7 => Op::Advance {
                    secs: rng.random_range(1..40),
                },
                8 => Op::Prepare { pick },
                9 => Op::Commit { pick },
                10 => Op::Publish { pick },
                11 => Op::Fail {
                    pick,
                    retryable: rng.random_bool(0.6),
                },
                12 => Op::Unconfirm { pick },
                13 => Op::Renew { pick },
                14 => Op::Crash {
                    worker: rng.random_range(0..3),
                },
                15..=16 => Op::Rescue,
                17 => Op::Cancel { pick },
                18 => Op::Reschedule {
                    pick,
                    due: rng.random_range(0..30),
                },
                _ => Op::Claim {
                    worker: rng.random_range(0..3),
                    limit: 10,
                },
            }
        })
        .collect()
}

/// A claim a worker holds, as it knows it.
#[derive(Debug, Clone)]
struct Held {
    worker: u8,
    delivery: Delivery,
}

/// Replays `ops` against `store` and against a [`MemoryScheduleStore`] as the model, and
/// panics when they disagree or when an invariant breaks:
///
/// - both stores give the same answer to every call (claims, fenced writes, cancels, …) and
///   hold the same deliveries at the end;
/// - at most one worker holds a delivery at a time, and fences only grow;
/// - a final state never changes again (except a reschedule of a failed delivery);
/// - a delivery whose commit point was recorded is never claimed for a new attempt before it
///   is reconciled (it is never `claimed` with a commit time);
/// - a cancelled delivery is never committed afterwards;
/// - writes of a worker whose claim was superseded are refused.
pub async fn check_against_model(store: Arc<dyn ScheduleStore>, ops: &[Op]) {
    let model = MemoryScheduleStore::new();
    let mut now = t0();
    let mut known: Vec<(String, Uuid)> = Vec::new();
    let mut held: Vec<Held> = Vec::new();
    let mut superseded: Vec<Held> = Vec::new();
    let mut last_fence: HashMap<Uuid, i64> = HashMap::new();
    let mut cancelled: HashSet<Uuid> = HashSet::new();
    let secs = |n: i64| chrono::Duration::seconds(n);

    for (step, op) in ops.iter().enumerate() {
        let ctx = format!("step {step}: {op:?}");
        match op {
            Op::Schedule {
                tenant,
                targets,
                due,
            } => {
                let tenant = format!("tenant-{tenant}");
                let accounts: Vec<String> = (0..*targets).map(|i| format!("acct-{i}")).collect();
                let refs: Vec<&str> = accounts.iter().map(String::as_str).collect();
                let (mut ds, _) = new_post(&tenant, &refs, 0);
                for d in &mut ds {
                    d.due_at = now + secs(*due);
                    d.run_at = Some(d.due_at);
                    d.created_at = now;
                    d.updated_at = now;
                }
                let events: Vec<Event> = ds
                    .iter()
                    .map(|d| Event::for_delivery(d, EventKind::Scheduled, now))
                    .collect();
                store.insert(&ds, &events).await.expect("insert");
                model.insert(&ds, &events).await.expect("insert");
                known.extend(ds.iter().map(|d| (tenant.clone(), d.id)));
            }
            Op::Claim { worker, limit } => {
                let name = format!("w{worker}");
                let got = store
                    .claim_due(&name, now, *limit as usize, LEASE)
                    .await
                    .expect("claim");
                let want = model
                    .claim_due(&name, now, *limit as usize, LEASE)
                    .await
                    .expect("claim");
                assert_eq!(got, want, "{ctx}: claims differ from the model");
                for d in got {
                    assert!(
                        !(d.state == DeliveryState::Claimed && d.committed_at.is_some()),
                        "{ctx}: a committed delivery was claimed for a new attempt"
                    );
                    let f = fence(&d);
                    if let Some(prev) = last_fence.insert(d.id, f) {
                        assert!(f > prev, "{ctx}: fences only grow");
                    }
                    // Anyone who held it before has been superseded.
                    let (old, keep): (Vec<Held>, Vec<Held>) =
                        held.drain(..).partition(|h| h.delivery.id == d.id);
                    held = keep;
                    superseded.extend(old);
                    held.push(Held {
                        worker: *worker,
                        delivery: d,
                    });
                }
            }
            Op::Advance { secs: s } => now += secs(i64::from(*s)),
            Op::Crash { worker } => held.retain(|h| h.worker != *worker),
            Op::Rescue => {
                let got = store.rescue_expired(now).await.expect("rescue");
                let want = model.rescue_expired(now).await.expect("rescue");
                let strip = |v: Vec<crate::schedule::Rescued>| {
                    let mut v: Vec<(Delivery, Option<EventKind>)> = v
                        .into_iter()
                        .map(|r| (r.delivery, r.event.map(|e| e.kind)))
                        .collect();
                    v.sort_by_key(|(d, _)| d.id);
                    v
                };
                let got = strip(got);
                assert_eq!(got, strip(want), "{ctx}: rescues differ from the model");
                for (d, _) in &got {
                    superseded.extend(held.iter().filter(|h| h.delivery.id == d.id).cloned());
                    held.retain(|h| h.delivery.id != d.id);
                }
            }
            Op::Cancel { pick } | Op::Reschedule { pick, .. } => {
                if known.is_empty() {
                    continue;
                }
                let (tenant, id) = known[pick % known.len()].clone();
                let before = model.get(&tenant, id).await.expect("get");
                if let Op::Reschedule { due, .. } = op {
                    let a = store
                        .reschedule(&tenant, id, now + secs(*due), now)
                        .await
                        .expect("r");
                    let b = model
                        .reschedule(&tenant, id, now + secs(*due), now)
                        .await
                        .expect("r");
                    assert_eq!(a, b, "{ctx}: reschedules differ");
                    if matches!(a, RescheduleOutcome::Rescheduled(_)) {
                        if let Some(prev) = &before {
                            assert!(
                                !matches!(
                                    prev.state,
                                    DeliveryState::Published | DeliveryState::Cancelled
                                ),
                                "{ctx}: a published or cancelled delivery was rescheduled"
                            );
                        }
                        superseded.extend(held.iter().filter(|h| h.delivery.id == id).cloned());
                        held.retain(|h| h.delivery.id != id);
                    }
                } else {
                    let a = store.cancel(&tenant, id, now).await.expect("c");
                    let b = model.cancel(&tenant, id, now).await.expect("c");
                    assert_eq!(a, b, "{ctx}: cancels differ");
                    if matches!(a, CancelOutcome::Cancelled(_)) {
                        cancelled.insert(id);
                        superseded.extend(held.iter().filter(|h| h.delivery.id == id).cloned());
                        held.retain(|h| h.delivery.id != id);
                    }
                }
            }
            Op::Prepare { pick }
            | Op::Commit { pick }
            | Op::Publish { pick }
            | Op::Fail { pick, .. }
            | Op::Unconfirm { pick }
            | Op::Renew { pick } => {
                // Half the time, a superseded worker tries: it must be refused.
                let from_superseded = pick % 2 == 1 && !superseded.is_empty();
                let h = if from_superseded {
                    superseded[pick % superseded.len()].clone()
                } else if !held.is_empty() {
                    held[pick % held.len()].clone()
                } else {
                    continue;
                };
                let d = &h.delivery;
                let f = fence(d);
                let result: Option<Fenced<Delivery>> = match op {
                    Op::Renew { .. } => {
                        let until = now + secs(60);
                        let a = store.renew_lease(d.id, f, until).await.expect("renew");
                        let b = model.renew_lease(d.id, f, until).await.expect("renew");
                        assert_eq!(a, b, "{ctx}: renewals differ");
                        if from_superseded {
                            assert!(!a, "{ctx}: a superseded worker renewed a lease");
                        }
                        None
                    }
                    Op::Commit { .. } => {
                        if !matches!(
                            d.state,
                            DeliveryState::Claimed
                                | DeliveryState::Preparing
                                | DeliveryState::Committing
                        ) {
                            continue;
                        }
                        let a = store.commit_point(d.id, f, now).await.expect("cp");
                        let b = model.commit_point(d.id, f, now).await.expect("cp");
                        assert_eq!(a, b, "{ctx}: commit points differ");
                        if !a.is_stale() {
                            assert!(
                                !cancelled.contains(&d.id),
                                "{ctx}: a cancelled delivery was committed"
                            );
                        }
                        Some(a)
                    }
                    _ => {
                        let to = match (op, d.state) {
                            (Op::Prepare { .. }, DeliveryState::Claimed) => {
                                DeliveryState::Preparing
                            }
                            (Op::Publish { .. }, DeliveryState::Claimed) => continue,
                            (Op::Publish { .. }, _) => DeliveryState::Published,
                            (
                                Op::Fail {
                                    retryable: true, ..
                                },
                                DeliveryState::Claimed
                                | DeliveryState::Preparing
                                | DeliveryState::Committing,
                            ) => DeliveryState::RetryWaiting,
                            (Op::Fail { .. }, _) => DeliveryState::Failed,
                            (Op::Unconfirm { .. }, DeliveryState::Claimed) => continue,
                            (Op::Unconfirm { .. }, _) => DeliveryState::Unconfirmed,
                            _ => continue,
                        };
                        if !d.state.may_become(to) {
                            continue;
                        }
                        let mut t = Transition::new(d, to, now);
                        match to {
                            DeliveryState::RetryWaiting | DeliveryState::Unconfirmed => {
                                t = t
                                    .run_at(now + secs(5))
                                    .error(DeliveryError::new(ErrorKind::Transient, "x"));
                            }
                            DeliveryState::Published => t = t.receipt(receipt("r", 0)),
                            DeliveryState::Failed => {
                                t = t.error(DeliveryError::new(ErrorKind::Platform, "no"))
                            }
                            _ => {}
                        }
                        let a = store.transition(&t).await.expect("transition");
                        let b = model.transition(&t).await.expect("transition");
                        assert_eq!(a, b, "{ctx}: transitions differ");
                        Some(a)
                    }
                };
                if let Some(r) = result {
                    if from_superseded {
                        assert!(
                            r.is_stale(),
                            "{ctx}: a superseded worker's write was accepted"
                        );
                    }
                    match r {
                        Fenced::Applied(nd) => {
                            // The holder keeps working only while it keeps the lease.
                            held.retain(|x| x.delivery.id != nd.id);
                            if nd.lease.is_some() {
                                held.push(Held {
                                    worker: h.worker,
                                    delivery: nd,
                                });
                            }
                        }
                        Fenced::Stale => {
                            held.retain(|x| !(x.delivery.id == d.id && fence(&x.delivery) == f));
                        }
                    }
                }
            }
        }
        // At most one holder per delivery, and it holds the stored lease.
        let mut holders: BTreeMap<Uuid, i64> = BTreeMap::new();
        for h in &held {
            assert!(
                holders.insert(h.delivery.id, fence(&h.delivery)).is_none(),
                "{ctx}: two workers hold one delivery"
            );
        }
    }

    // In the end both stores hold the same deliveries, history and next due time.
    for (tenant, id) in &known {
        let a = store.get(tenant, *id).await.expect("get");
        let b = model.get(tenant, *id).await.expect("get");
        assert_eq!(a, b, "final state of {id} differs from the model");
        let ha = store.history(tenant, *id).await.expect("history");
        let hb = model.history(tenant, *id).await.expect("history");
        assert_eq!(ha, hb, "history of {id} differs from the model");
        if let Some(d) = a {
            let path: Vec<DeliveryState> = ha.iter().map(|e| e.to).collect();
            if let Some(pos) = path.iter().position(|s| *s == DeliveryState::Cancelled) {
                assert!(
                    !path[pos..].contains(&DeliveryState::Committing),
                    "{id}: committed after it was cancelled"
                );
            }
            assert!(
                !(d.state == DeliveryState::Claimed && d.committed_at.is_some()),
                "{id}: claimed with a commit outstanding"
            );
        }
    }
    assert_eq!(
        store.next_due_at().await.expect("next"),
        model.next_due_at().await.expect("next"),
        "next due times differ"
    );
}
