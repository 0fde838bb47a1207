//! Checks of purge, export and deletion of a tenant's data.

use super::{LEASE, applied, at, insert, receipt};
use crate::platform::Platform;
use crate::post::Target;
use crate::schedule::{
    CancelOutcome, DeliveryFilter, DeliveryState, Event, ScheduleStore, Transition,
};

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
