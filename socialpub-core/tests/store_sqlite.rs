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
use socialpub_core::testkit::schedule::{check_against_model, random_ops, store_suite};

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
    assert_eq!(store.schema_version().await.expect("version"), 1);
    let (deliveries, events) = socialpub_core::testkit::schedule::new_post("t", &["1"], 10);
    store.insert(&deliveries, &events).await.expect("insert");
    store.close().await;

    let again = SqliteStore::builder(dir.path().join("reopen.db").display().to_string())
        .synchronous(Synchronous::Full)
        .open()
        .await
        .expect("reopen");
    assert_eq!(again.schema_version().await.expect("version"), 1);
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
        assert_eq!(store.schema_version().await.expect("version"), 1);
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
    let token =
        Token::new("ACCESS-b7d1e0c2-plaintext").with_refresh_token("REFRESH-5f3a-plaintext");
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
    for secret in [
        "ACCESS-b7d1e0c2-plaintext",
        "REFRESH-5f3a-plaintext",
        "b7d1e0c2",
        "5f3a-plain",
    ] {
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
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        path.display()
    ))
    .await
    .expect("connect");
    let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT id FROM socialpub_deliveries
         WHERE lease_owner IS NULL AND run_at IS NOT NULL
           AND state IN ('scheduled', 'retry_waiting', 'processing', 'unconfirmed')
           AND run_at <= 0 ORDER BY run_at, id LIMIT 10",
    )
    .fetch_all(&mut conn)
    .await
    .expect("explain");
    let plan: Vec<String> = rows.into_iter().map(|r| r.3).collect();
    let plan = plan.join("\n");
    assert!(plan.contains("socialpub_deliveries_due"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "no sort: {plan}");
}
