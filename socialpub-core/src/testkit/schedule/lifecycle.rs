//! Checks of a delivery's life outside claims: insert, read, cancel, reschedule, poll, reconcile.

use uuid::Uuid;

use super::{LEASE, applied, at, fence, insert, receipt};
use crate::error::ErrorKind;
use crate::publish::RemoteState;
use crate::schedule::{
    CancelOutcome, DeliveryError, DeliveryFilter, DeliveryState, EventKind, RescheduleOutcome,
    ScheduleStore, Transition,
};

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
