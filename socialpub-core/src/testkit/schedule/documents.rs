//! Checks that stored documents keep any text exactly.

use super::{LEASE, applied, at, deliveries_of, fence, receipt};
use crate::error::ErrorKind;
use crate::platform::Platform;
use crate::post::{Post, Target};
use crate::schedule::{DeliveryError, DeliveryState, Event, EventKind, ScheduleStore, Transition};

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
