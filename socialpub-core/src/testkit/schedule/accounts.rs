//! The account publish slot: at most one delivery per account publishes at a time across every
//! engine sharing the store.

use std::sync::Arc;

use uuid::Uuid;

use super::at;
use crate::auth::AccountKey;
use crate::platform::Platform;
use crate::schedule::ScheduleStore;

/// One holder per account; the holder takes it again and renews it; another holder takes it
/// only once it expired or was given up; accounts, platforms and tenants are apart; and of
/// many takers racing for a free slot, exactly one wins.
pub async fn account_slots(store: Arc<dyn ScheduleStore>) {
    let key = AccountKey::new("acme", Platform::X, "42");
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let take = |holder: Uuid, now: i64, until: i64| {
        let (store, key) = (store.clone(), key.clone());
        async move {
            store
                .acquire_account_slot(&key, holder, at(now), at(until))
                .await
                .expect("acquire")
        }
    };
    assert!(take(a, 0, 60).await, "a free slot is taken");
    assert!(
        !take(b, 10, 70).await,
        "a held slot is refused to another delivery"
    );
    assert!(take(a, 20, 80).await, "its holder takes it again");
    assert!(
        store
            .renew_account_slot(&key, a, at(120))
            .await
            .expect("renew"),
        "its holder renews it"
    );
    assert!(
        !store
            .renew_account_slot(&key, b, at(200))
            .await
            .expect("renew"),
        "another delivery cannot renew it"
    );
    assert!(!take(b, 100, 160).await, "renewed: still held at 100 s");
    assert!(
        take(b, 120, 180).await,
        "expired: another delivery takes it"
    );
    assert!(
        !store
            .renew_account_slot(&key, a, at(300))
            .await
            .expect("renew"),
        "the old holder lost it"
    );
    store
        .release_account_slot(&key, a)
        .await
        .expect("release by a non-holder");
    assert!(
        !take(a, 130, 190).await,
        "a non-holder's release changes nothing"
    );
    store.release_account_slot(&key, b).await.expect("release");
    assert!(take(a, 130, 190).await, "a released slot is free");

    for other in [
        AccountKey::new("acme", Platform::X, "43"),
        AccountKey::new("acme", Platform::YouTube, "42"),
        AccountKey::new("other", Platform::X, "42"),
    ] {
        assert!(
            store
                .acquire_account_slot(&other, b, at(130), at(190))
                .await
                .expect("acquire"),
            "{other} has a slot of its own"
        );
    }

    let race = AccountKey::new("acme", Platform::X, "race");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, race) = (store.clone(), race.clone());
            tokio::spawn(async move {
                store
                    .acquire_account_slot(&race, Uuid::now_v7(), at(0), at(60))
                    .await
                    .expect("acquire")
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        if t.await.expect("join") {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one of the racing takers holds the slot");
}
