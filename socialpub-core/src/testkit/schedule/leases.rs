//! Checks of leases: fenced writes, and the rescue of expired leases.

use uuid::Uuid;

use super::{LEASE, applied, at, fence, insert, receipt};
use crate::error::ErrorKind;
use crate::schedule::{DeliveryState, Event, EventKind, ScheduleStore, Transition};

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
