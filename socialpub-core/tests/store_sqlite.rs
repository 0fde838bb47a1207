//! The SQLite store: the schedule store conformance suite and model test, migrations,
//! sealed tokens, and the claim's query plan.
#![cfg(all(feature = "sqlite", feature = "testkit"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use socialpub_core::auth::{
    AccountKey, EncryptedTokenStore, EncryptionKey, KeyRing, SealedTokenStore, Token, TokenStore,
};
use socialpub_core::platform::Platform;
use socialpub_core::schedule::ScheduleStore;
use socialpub_core::store::{SqliteStore, Synchronous};
use socialpub_core::testkit::conformance::token_store_suite;
use socialpub_core::testkit::schedule::{check_against_model, new_post, random_ops, store_suite};

/// The states delivery `id` of tenant `t` went through, in order.
async fn history_states(
    store: &dyn ScheduleStore,
    id: uuid::Uuid,
) -> Vec<socialpub_core::schedule::DeliveryState> {
    store
        .history("t", id)
        .await
        .expect("history")
        .iter()
        .map(|h| h.to)
        .collect()
}

async fn open(dir: &tempfile::TempDir, name: &str) -> SqliteStore {
    SqliteStore::open(dir.path().join(name).display().to_string())
        .await
        .expect("open")
}

#[tokio::test]
async fn conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = AtomicUsize::new(0);
    store_suite(|| {
        let path = dir
            .path()
            .join(format!("suite-{}.db", n.fetch_add(1, Ordering::Relaxed)));
        async move {
            Arc::new(
                SqliteStore::open(format!("sqlite://{}", path.display()))
                    .await
                    .expect("open"),
            ) as Arc<dyn ScheduleStore>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_based_random_operations() {
    let dir = tempfile::tempdir().expect("tempdir");
    for seed in 0..12 {
        let store = open(&dir, &format!("model-{seed}.db")).await;
        check_against_model(Arc::new(store), &random_ops(seed, 150)).await;
    }
}

#[tokio::test]
async fn reopening_keeps_data_and_does_not_migrate_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, "reopen.db").await;
    assert_eq!(store.schema_version().await.expect("version"), 3);
    let (deliveries, events) = socialpub_core::testkit::schedule::new_post("t", &["1"], 10);
    store.insert(&deliveries, &events).await.expect("insert");
    store.close().await;

    let again = SqliteStore::builder(dir.path().join("reopen.db").display().to_string())
        .synchronous(Synchronous::Full)
        .open()
        .await
        .expect("reopen");
    assert_eq!(again.schema_version().await.expect("version"), 3);
    let got = again
        .get("t", deliveries[0].id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(got, deliveries[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_of_a_new_file_migrate_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("race.db").display().to_string();
    let opens = (0..4).map(|_| {
        let path = path.clone();
        tokio::spawn(async move { SqliteStore::open(path).await })
    });
    for handle in opens {
        let store = handle.await.expect("join").expect("open");
        assert_eq!(store.schema_version().await.expect("version"), 3);
    }
}

#[tokio::test]
async fn rejects_a_non_file_target() {
    let err = SqliteStore::open("sqlite::memory:")
        .await
        .expect_err("memory");
    assert_eq!(err.kind(), socialpub_core::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn sealed_tokens_pass_the_token_store_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, "tokens.db").await;
    let tokens = EncryptedTokenStore::new(store, KeyRing::new("k1", EncryptionKey::generate()));
    token_store_suite(&tokens).await;
}

#[tokio::test]
async fn the_database_file_holds_no_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, "sealed.db").await;
    let tokens =
        EncryptedTokenStore::new(store.clone(), KeyRing::new("k1", EncryptionKey::generate()));
    let key = AccountKey::new("acme", Platform::X, "42");
    let token = Token::new("ACCESS-kqzx-plaintext").with_refresh_token("REFRESH-wyvu-plaintext");
    tokens.put(&key, &token).await.expect("put");

    let sealed = store.get_sealed(&key).await.expect("get").expect("sealed");
    assert_eq!(sealed.key_id, "k1");
    store.close().await;

    // The file and its write-ahead log, byte for byte.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("sealed.db"))
        {
            bytes.extend(std::fs::read(&path).expect("read"));
        }
    }
    assert!(bytes.len() > 4096, "the database was written");
    for secret in ["ACCESS-kqzx-plaintext", "REFRESH-wyvu-plaintext"] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} found in the database file"
        );
    }
    // What is there is the ciphertext.
    assert!(
        bytes
            .windows(sealed.ciphertext.len())
            .any(|w| w == sealed.ciphertext.as_slice())
    );

    // And it opens again with the key.
    let reopened = open(&dir, "sealed.db").await;
    let ring = KeyRing::new("k1", EncryptionKey::generate());
    let wrong = EncryptedTokenStore::new(reopened, ring);
    assert!(
        wrong.get(&key).await.is_err(),
        "another key does not open it"
    );
}

#[tokio::test]
async fn claiming_uses_the_due_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, "plan.db").await;
    let path = store.path().to_owned();
    let conn = rusqlite::Connection::open(&path).expect("open");
    let mut stmt = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT id FROM socialpub_deliveries
             WHERE lease_owner IS NULL AND run_at IS NOT NULL
               AND state IN ('scheduled', 'retry_waiting', 'processing', 'unconfirmed')
               AND run_at <= 0 ORDER BY run_at, id LIMIT 10",
        )
        .expect("explain");
    let rows: Vec<(i64, i64, i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("explain")
        .collect::<Result<_, _>>()
        .expect("explain");
    let plan: Vec<String> = rows.into_iter().map(|r| r.3).collect();
    let plan = plan.join("\n");
    assert!(plan.contains("socialpub_deliveries_due"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "no sort: {plan}");
}

/// Many concurrent transitions and commit points (grouped into shared transactions by the
/// store), with stale writes mixed in: each lands exactly as alone.
async fn concurrent_fenced_writes(store: Arc<dyn ScheduleStore>) {
    use socialpub_core::schedule::{DeliveryState, Event, EventKind, Fenced, Transition};
    use socialpub_core::testkit::schedule::t0;
    const N: usize = 200;
    let mut all = Vec::new();
    for i in 0..N {
        let (d, e) = new_post("t", &[&format!("a{i}")], 0);
        store.insert(&d, &e).await.expect("insert");
        all.extend(d);
    }
    let claimed = store
        .claim_due("w", t0(), N, std::time::Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), N);
    let tasks: Vec<_> = claimed
        .into_iter()
        .map(|d| {
            let store = store.clone();
            tokio::spawn(async move {
                let fence = d.lease.as_ref().expect("lease").fence;
                let at = t0() + chrono::Duration::seconds(1);
                let mut stale = Transition::new(&d, DeliveryState::Failed, at);
                stale.fence = fence - 1;
                assert!(store.transition(&stale).await.expect("stale").is_stale());
                let committing = match store.commit_point(d.id, fence, at).await.expect("cp") {
                    Fenced::Applied(c) => c,
                    Fenced::Stale => panic!("commit point refused"),
                };
                assert_eq!(committing.state, DeliveryState::Committing);
                let published = Transition::new(&committing, DeliveryState::Published, at)
                    .event(Event::for_delivery(&committing, EventKind::Published, at));
                match store.transition(&published).await.expect("publish") {
                    Fenced::Applied(p) => assert_eq!(p.state, DeliveryState::Published),
                    Fenced::Stale => panic!("publish refused"),
                }
                // The lease is gone now: a late write of the same worker is refused.
                assert!(
                    store
                        .commit_point(d.id, fence, at)
                        .await
                        .expect("late")
                        .is_stale()
                );
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    for d in &all {
        let got = store.get("t", d.id).await.expect("get").expect("kept");
        assert_eq!(got.state, DeliveryState::Published);
        let states = history_states(store.as_ref(), d.id).await;
        assert_eq!(
            states,
            [
                DeliveryState::Scheduled,
                DeliveryState::Claimed,
                DeliveryState::Committing,
                DeliveryState::Published
            ]
        );
    }
    let events = store.events(None, 10 * N).await.expect("events");
    let published = events
        .iter()
        .filter(|e| e.event.kind == EventKind::Published)
        .count();
    assert_eq!(published, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_grouped_and_stay_fenced() {
    let dir = tempfile::tempdir().expect("tempdir");
    concurrent_fenced_writes(Arc::new(open(&dir, "concurrent.db").await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_ahead_log_is_checkpointed_beside_the_writer() {
    // The writer's own checkpoint waits for 16,384 log pages; a few hundred deliveries write
    // far fewer. The main file grows only when a checkpoint copies the log into it, so its
    // growth shows the checkpoint thread at work.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("checkpoint.db");
    let store = open(&dir, "checkpoint.db").await;
    let before = std::fs::metadata(&path).expect("metadata").len();
    for i in 0..300 {
        let (deliveries, events) = new_post("t", &["1", "2"], i);
        store.insert(&deliveries, &events).await.expect("insert");
    }
    let mut after = before;
    for _ in 0..500 {
        after = std::fs::metadata(&path).expect("metadata").len();
        if after > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        after > before,
        "the main file grew from {before} bytes: a checkpoint ran while the store was open"
    );
    store.close().await;
}

/// The rows the writer keeps from its last claim or write stand in for a read only while no
/// other connection has committed, and only for what this store did not change otherwise.
#[tokio::test]
async fn kept_rows_are_not_trusted_after_another_change() {
    use socialpub_core::schedule::{Delivery, DeliveryState, Fenced, Transition};
    use socialpub_core::testkit::schedule::t0;
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, "kept.db").await;
    let (deliveries, events) = new_post("t", &["a", "b", "c"], 0);
    store.insert(&deliveries, &events).await.expect("insert");
    let claimed = store
        .claim_due("w", t0(), 3, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 3);
    let (taken, renewed, kept) = (&claimed[0], &claimed[1], &claimed[2]);
    let fence = |d: &Delivery| d.lease.as_ref().expect("lease").fence;

    // This store renewed the second's lease: its write keeps the renewal.
    let until = t0() + chrono::Duration::minutes(5);
    assert!(
        store
            .renew_lease(renewed.id, fence(renewed), until)
            .await
            .expect("renew")
    );
    let out = store
        .commit_point(renewed.id, fence(renewed), t0())
        .await
        .expect("commit point");
    assert!(matches!(out, Fenced::Applied(ref d) if d.state == DeliveryState::Committing));
    let after = store.get("t", renewed.id).await.expect("get").expect("row");
    assert_eq!(after.state, DeliveryState::Committing);
    assert_eq!(after.lease.expect("lease").expires_at, until);

    // Another process took the first over.
    let other = rusqlite::Connection::open(store.path()).expect("open");
    other
        .execute(
            "UPDATE socialpub_deliveries SET fence = fence + 1, lease_owner = 'other'
             WHERE id = ?1",
            [taken.id],
        )
        .expect("take over");
    let out = store
        .commit_point(taken.id, fence(taken), t0())
        .await
        .expect("commit point");
    assert!(out.is_stale(), "the kept row said the lease was still held");
    let after = store.get("t", taken.id).await.expect("get").expect("row");
    assert_eq!(after.state, DeliveryState::Claimed);
    assert_eq!(after.lease.expect("lease").owner, "other");

    // The third was not changed since: its writes land.
    let out = store
        .commit_point(kept.id, fence(kept), t0())
        .await
        .expect("commit point");
    let Fenced::Applied(committing) = out else {
        panic!("the commit point was refused");
    };
    let t = Transition::new(&committing, DeliveryState::Published, t0());
    let out = store.transition(&t).await.expect("published");
    assert!(matches!(out, Fenced::Applied(ref d) if d.state == DeliveryState::Published));
    let after = store.get("t", kept.id).await.expect("get").expect("row");
    assert_eq!(after.state, DeliveryState::Published);
    assert!(after.lease.is_none());
    let states = history_states(&store, kept.id).await;
    assert_eq!(
        states,
        vec![
            DeliveryState::Scheduled,
            DeliveryState::Claimed,
            DeliveryState::Committing,
            DeliveryState::Published
        ]
    );
}

/// The statements of a state change build no temporary tables (SQLite builds one to evaluate
/// `IN` with more than two constants, as a partial index's condition once did), and the purge
/// still finds finished rows through their index.
#[tokio::test]
async fn state_changes_build_no_temporary_table_and_the_purge_uses_its_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, "ops.db").await;
    let conn = rusqlite::Connection::open(store.path()).expect("open");
    let opcodes = |sql: &str, n: usize| -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).expect("explain");
        let params: Vec<Option<i64>> = vec![None; n];
        stmt.query_map(rusqlite::params_from_iter(params), |r| {
            r.get::<_, String>(1)
        })
        .expect("explain")
        .collect::<Result<_, _>>()
        .expect("explain")
    };
    let update = opcodes(
        "UPDATE socialpub_deliveries SET state = ?1, run_at = ?2, attempt = ?3,
             lease_owner = ?4, lease_expires_at = ?5, checkpoint = ?6, committed_at = ?7,
             receipt = ?8, last_error = ?9, had_failure = ?10, updated_at = ?11
         WHERE id = ?12",
        12,
    );
    assert!(!update.iter().any(|op| op == "OpenEphemeral"), "{update:?}");
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN QUERY PLAN DELETE FROM socialpub_deliveries
             WHERE (state = 'published' OR state = 'failed' OR state = 'cancelled')
               AND updated_at < 0",
        )
        .expect("explain")
        .query_map([], |r| r.get::<_, String>(3))
        .expect("explain")
        .collect::<Result<_, _>>()
        .expect("explain");
    assert!(
        plan.iter()
            .any(|p| p.contains("socialpub_deliveries_finished")),
        "{plan:?}"
    );
}

/// A file at schema version 1 with deliveries in it is migrated on open: the rows are still
/// claimed and purged.
#[tokio::test]
async fn a_version_1_file_is_upgraded_in_place() {
    use socialpub_core::schedule::DeliveryState;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v1.db");
    let (scheduled, published) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let now = chrono::Utc::now().timestamp_micros();
    let day = 86_400_000_000_i64;
    {
        let conn = rusqlite::Connection::open(&path).expect("create");
        conn.execute_batch(include_str!("../migrations/sqlite/0001_init.sql"))
            .expect("version 1");
        conn.execute_batch(
            "CREATE TABLE socialpub_migrations (
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL);
             INSERT INTO socialpub_migrations VALUES (1, 'init', 0);",
        )
        .expect("record version 1");
        let post = uuid::Uuid::now_v7();
        conn.execute(
            "INSERT INTO socialpub_deliveries (id, post_id, tenant, platform, account_id, post,
                 state, due_at, run_at, attempt, max_attempts, fence, had_failure, created_at,
                 updated_at)
             VALUES
                 (?1, ?3, 'acme', 'x', '1', '{\"text\": \"due\"}', 'scheduled',
                  ?4 - 60000000, ?4 - 60000000, 0, 5, 0, 0, ?4 - 2 * ?5, ?4 - 2 * ?5),
                 (?2, ?3, 'acme', 'x', '2', '{\"text\": \"sent\"}', 'published',
                  ?4 - 2 * ?5, NULL, 1, 5, 1, 0, ?4 - 3 * ?5, ?4 - 2 * ?5)",
            rusqlite::params![scheduled, published, post, now, day],
        )
        .expect("rows of version 1");
    }
    let store = SqliteStore::open(path.display().to_string())
        .await
        .expect("open and migrate");
    assert_eq!(store.schema_version().await.expect("version"), 3);
    let claimed = store
        .claim_due(
            "w",
            chrono::Utc::now(),
            10,
            std::time::Duration::from_secs(60),
        )
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![scheduled]
    );
    assert_eq!(claimed[0].state, DeliveryState::Claimed);
    let report = store
        .purge(chrono::Utc::now() - chrono::Duration::days(1))
        .await
        .expect("purge");
    assert_eq!(report.deliveries, 1, "the row published two days ago");
    assert!(store.get("acme", published).await.expect("get").is_none());
    assert!(store.get("acme", scheduled).await.expect("get").is_some());
}
