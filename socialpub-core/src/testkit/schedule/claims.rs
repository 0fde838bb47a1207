//! Checks of claims: due and ahead, oldest first, each delivery to one claimer.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{LEASE, at, insert};
use crate::schedule::{DeliveryState, NextTimes, ScheduleStore};

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
