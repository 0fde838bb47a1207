//! Checks of the event outbox.

use super::{at, insert};
use crate::platform::Platform;
use crate::post::Target;
use crate::schedule::{Event, ScheduleStore};

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
