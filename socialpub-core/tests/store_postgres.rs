//! The PostgreSQL store: the schedule store conformance suite and model test, migrations
//! under concurrent starts, sealed tokens, wake-ups across connections, and the claim's plan.
//!
//! Every test here needs a server: they are ignored unless asked for (`cargo test -- --ignored`
//! or `--include-ignored`, as `.ci/run` does), so a run without PostgreSQL shows them as
//! ignored, never as passed. Asked for, they read `SOCIALPUB_TEST_POSTGRES_URL` and fail
//! without it. Each test works in schemas of its own.
#![cfg(all(feature = "postgres", feature = "testkit"))]
#![allow(clippy::print_stderr)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use socialpub_core::auth::{
    AccountKey, EncryptedTokenStore, EncryptionKey, KeyRing, SealedTokenStore, Token, TokenStore,
};
use socialpub_core::platform::Platform;
use socialpub_core::schedule::ScheduleStore;
use socialpub_core::store::PostgresStore;
use socialpub_core::testkit::conformance::token_store_suite;
use socialpub_core::testkit::schedule::{check_against_model, new_post, random_ops, store_suite};

/// The test server's URL. A test asked to run without one fails: it would otherwise pass
/// without having tested anything.
fn url(test: &str) -> Option<String> {
    match std::env::var("SOCIALPUB_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => panic!(
            "{test} needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL (.ci/postgres.sh starts a \
             server and prints it)"
        ),
    }
}

/// Schemas made by one test, dropped at its end.
struct Schemas {
    url: String,
    test: String,
    made: Mutex<Vec<String>>,
}

impl Schemas {
    fn new(url: String, test: &str) -> Self {
        Schemas {
            url,
            test: test.to_owned(),
            made: Mutex::new(Vec::new()),
        }
    }

    fn fresh_name(&self) -> String {
        let name = format!(
            "t_{}_{}",
            self.test,
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        self.made.lock().expect("lock").push(name.clone());
        name
    }

    async fn store(&self) -> PostgresStore {
        PostgresStore::builder(self.url.clone())
            .schema(self.fresh_name())
            .max_connections(4)
            .connect()
            .await
            .expect("connect")
    }

    async fn drop_all(self) {
        let admin = PostgresStore::connect(self.url.clone())
            .await
            .expect("connect");
        let names = self.made.lock().expect("lock").clone();
        for name in names {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .execute(admin.pool())
                .await
                .expect("drop schema");
        }
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn conformance_suite() {
    let Some(url) = url("conformance_suite") else {
        return;
    };
    let schemas = Schemas::new(url, "suite");
    store_suite(|| async { Arc::new(schemas.store().await) as Arc<dyn ScheduleStore> }).await;
    schemas.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn model_based_random_operations() {
    let Some(url) = url("model_based_random_operations") else {
        return;
    };
    let schemas = Schemas::new(url, "model");
    for seed in 0..6 {
        let store = schemas.store().await;
        check_against_model(Arc::new(store.clone()), &random_ops(seed, 120)).await;
        store.close().await;
    }
    schemas.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn concurrent_connects_migrate_once() {
    let Some(url) = url("concurrent_connects_migrate_once") else {
        return;
    };
    let schemas = Schemas::new(url.clone(), "race");
    let name = schemas.fresh_name();
    let connects = (0..6).map(|_| {
        let (url, name) = (url.clone(), name.clone());
        tokio::spawn(async move {
            PostgresStore::builder(url)
                .schema(name)
                .max_connections(1)
                .connect()
                .await
        })
    });
    for handle in connects {
        let store = handle.await.expect("join").expect("connect");
        assert_eq!(store.schema_version().await.expect("version"), 4);
        assert_eq!(store.schema(), name);
    }
    schemas.drop_all().await;
}

/// A database at schema version 1 with deliveries in it is migrated on connect: the rows
/// keep being listed, claimed and purged through the new lookup keys and finish times.
#[tokio::test]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn a_version_1_database_is_upgraded_in_place() {
    use socialpub_core::schedule::{DeliveryFilter, DeliveryState};
    use sqlx::{Connection, Executor};
    let Some(url) = url("a_version_1_database_is_upgraded_in_place") else {
        return;
    };
    let schemas = Schemas::new(url.clone(), "upgrade");
    let name = schemas.fresh_name();
    let (post, scheduled, published) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    {
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        conn.execute(format!("CREATE SCHEMA \"{name}\"; SET search_path TO \"{name}\"").as_str())
            .await
            .expect("schema");
        conn.execute(include_str!("../migrations/postgres/0001_init.sql"))
            .await
            .expect("version 1");
        conn.execute(
            "CREATE TABLE socialpub_migrations (
                 version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL);
             INSERT INTO socialpub_migrations VALUES (1, 'init', now())",
        )
        .await
        .expect("record version 1");
        sqlx::query(
            "INSERT INTO socialpub_deliveries (id, post_id, tenant, platform, account_id, post,
                 state, due_at, run_at, attempt, max_attempts, fence, had_failure, created_at,
                 updated_at)
             VALUES
                 ($1, $3, 'acme', 'x', '1', '{\"text\": \"due\"}', 'scheduled',
                  now() - interval '1 minute', now() - interval '1 minute', 0, 5, 0, false,
                  now() - interval '2 days', now() - interval '2 days'),
                 ($2, $3, 'acme', 'x', '2', '{\"text\": \"sent\"}', 'published',
                  now() - interval '2 days', NULL, 1, 5, 1, false,
                  now() - interval '3 days', now() - interval '2 days')",
        )
        .bind(scheduled)
        .bind(published)
        .bind(post)
        .execute(&mut conn)
        .await
        .expect("rows of version 1");
        conn.close().await.expect("close");
    }

    let store = PostgresStore::builder(url)
        .schema(name)
        .max_connections(2)
        .connect()
        .await
        .expect("connect and migrate");
    assert_eq!(store.schema_version().await.expect("version"), 4);
    let listed = store
        .list(&DeliveryFilter::tenant("acme"))
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![published, scheduled],
        "both rows, in due order"
    );
    let mut by_post = DeliveryFilter::tenant("acme");
    by_post.post_id = Some(post);
    assert_eq!(store.list(&by_post).await.expect("list").len(), 2);
    assert!(
        store
            .list(&DeliveryFilter::tenant("other"))
            .await
            .expect("list")
            .is_empty()
    );

    let claimed = store
        .claim_due("w", chrono::Utc::now(), 10, Duration::from_secs(60))
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
    let left = store
        .list(&DeliveryFilter::tenant("acme"))
        .await
        .expect("list");
    assert_eq!(
        left.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![scheduled]
    );
    store.close().await;
    schemas.drop_all().await;
}

/// Schedules arriving together share a commit; one caller's duplicate id fails that caller
/// alone, and every other caller's rows are stored with their history and events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn concurrent_inserts_fail_only_for_their_own_rows() {
    use socialpub_core::schedule::DeliveryFilter;
    let Some(url) = url("concurrent_inserts_fail_only_for_their_own_rows") else {
        return;
    };
    let schemas = Schemas::new(url, "inserts");
    let store = schemas.store().await;
    let (first, first_events) = new_post("t", &["0"], 0);
    store.insert(&first, &first_events).await.expect("insert");
    for round in 0..5 {
        let calls: Vec<_> = (0..24)
            .map(|i| {
                let store = store.clone();
                let (mut d, e) = new_post("t", &[&format!("{round}-{i}")], 0);
                if i == 7 {
                    // The id of a stored delivery: this call must fail, alone.
                    d[0].id = first[0].id;
                }
                tokio::spawn(async move { (i, store.insert(&d, &e).await, d[0].id) })
            })
            .collect();
        for call in calls {
            let (i, result, id) = call.await.expect("join");
            if i == 7 {
                let err = result.expect_err("a duplicate id is refused");
                assert_eq!(err.kind(), socialpub_core::ErrorKind::InvalidInput, "{err}");
            } else {
                result.expect("the other calls succeed");
                let d = store.get("t", id).await.expect("get").expect("stored");
                assert_eq!(store.history("t", id).await.expect("history").len(), 1);
                assert_eq!(d.tenant, "t");
            }
        }
    }
    let mut all = DeliveryFilter::tenant("t");
    all.limit = 1_000;
    assert_eq!(store.list(&all).await.expect("list").len(), 1 + 5 * 23);
    assert_eq!(
        store.events(None, 1_000).await.expect("events").len(),
        1 + 5 * 23,
        "one scheduled event per stored delivery, none for the refused ones"
    );
    schemas.drop_all().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn rejects_a_bad_schema_name_and_hides_the_password() {
    let err = PostgresStore::builder("postgres://u:hunter2@127.0.0.1:1/db")
        .schema("x; DROP TABLE y")
        .connect()
        .await
        .expect_err("bad schema");
    assert_eq!(err.kind(), socialpub_core::ErrorKind::InvalidInput);
    let builder = PostgresStore::builder("postgres://u:hunter2@127.0.0.1:1/db");
    assert!(!format!("{builder:?}").contains("hunter2"));
    let err = PostgresStore::connect("postgres://u:hunter2@127.0.0.1:1/db")
        .await
        .expect_err("nothing listens on port 1");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"));
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn sealed_tokens_pass_the_token_store_suite() {
    let Some(url) = url("sealed_tokens_pass_the_token_store_suite") else {
        return;
    };
    let schemas = Schemas::new(url, "tokens");
    let tokens = EncryptedTokenStore::new(
        schemas.store().await,
        KeyRing::new("k1", EncryptionKey::generate()),
    );
    token_store_suite(&tokens).await;
    schemas.drop_all().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn the_database_holds_no_token() {
    let Some(url) = url("the_database_holds_no_token") else {
        return;
    };
    let schemas = Schemas::new(url, "sealed");
    let store = schemas.store().await;
    let tokens =
        EncryptedTokenStore::new(store.clone(), KeyRing::new("k1", EncryptionKey::generate()));
    let key = AccountKey::new("acme", Platform::LinkedIn, "urn:li:person:7");
    tokens
        .put(
            &key,
            &Token::new("ACCESS-zqwk-plaintext").with_refresh_token("REFRESH-vymj-plaintext"),
        )
        .await
        .expect("put");

    // Every row of every table of the schema, as text.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(store.schema())
    .fetch_all(store.pool())
    .await
    .expect("tables");
    assert!(tables.iter().any(|t| t == "socialpub_tokens"));
    let mut dump = String::new();
    for t in &tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::TEXT FROM \"{t}\" t"))
            .fetch_all(store.pool())
            .await
            .expect("dump");
        dump.extend(rows);
    }
    assert!(dump.contains("urn:li:person:7"), "the account is there");
    // Only the strings that were stored: a short hex-like needle would turn up by chance in
    // the hex text of a ciphertext or a UUID.
    for secret in ["ACCESS-zqwk-plaintext", "REFRESH-vymj-plaintext"] {
        assert!(!dump.contains(secret), "{secret} found in the database");
    }
    let sealed = store.get_sealed(&key).await.expect("get").expect("sealed");
    assert_eq!(sealed.key_id, "k1");
    assert!(!String::from_utf8_lossy(&sealed.ciphertext).contains("plaintext"));
    schemas.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn an_insert_wakes_workers_of_another_store() {
    let Some(url) = url("an_insert_wakes_workers_of_another_store") else {
        return;
    };
    let schemas = Schemas::new(url.clone(), "wake");
    let name = schemas.fresh_name();
    let connect = || {
        PostgresStore::builder(url.clone())
            .schema(name.clone())
            .max_connections(2)
            .connect()
    };
    // Two pools stand for two processes: only NOTIFY links them.
    let sleeper = connect().await.expect("connect");
    let writer = connect().await.expect("connect");
    let wake = sleeper.wakeups().expect("a PostgreSQL store has wake-ups");
    // Let the listener start before the insert.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let notified = wake.notified();
    let (d, e) = new_post("t", &["1"], 5);
    writer.insert(&d, &e).await.expect("insert");
    tokio::time::timeout(Duration::from_secs(5), notified)
        .await
        .expect("the other store's insert woke this one");
    schemas.drop_all().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn claiming_uses_the_due_index() {
    let Some(url) = url("claiming_uses_the_due_index") else {
        return;
    };
    let schemas = Schemas::new(url, "plan");
    let store = schemas.store().await;
    // Enough rows that a sequential scan would be chosen if the index did not fit.
    sqlx::query(
        "INSERT INTO socialpub_deliveries (id, post_id, tenant, platform, account_id, post,
             state, due_at, run_at, attempt, max_attempts, fence, had_failure, created_at,
             updated_at)
         SELECT gen_random_uuid(), gen_random_uuid(), 't', 'x', '1', '{}'::jsonb,
             CASE WHEN g % 2 = 0 THEN 'published' ELSE 'scheduled' END,
             now() + g * interval '1 second', CASE WHEN g % 2 = 0 THEN NULL
             ELSE now() + g * interval '1 second' END, 0, 5, 0, false, now(), now()
         FROM generate_series(1, 20000) g",
    )
    .execute(store.pool())
    .await
    .expect("fill");
    sqlx::query("ANALYZE socialpub_deliveries")
        .execute(store.pool())
        .await
        .expect("analyze");
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM socialpub_deliveries
         WHERE lease_owner IS NULL AND run_at IS NOT NULL
           AND state IN ('scheduled', 'retry_waiting', 'processing', 'unconfirmed')
           AND run_at <= now() ORDER BY run_at, id LIMIT 100 FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(store.pool())
    .await
    .expect("explain");
    let plan = plan.join("\n");
    assert!(plan.contains("socialpub_deliveries_due"), "{plan}");
    schemas.drop_all().await;
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
        let states: Vec<_> = store
            .history("t", d.id)
            .await
            .expect("history")
            .iter()
            .map(|h| h.to)
            .collect();
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
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn concurrent_writes_are_grouped_and_stay_fenced() {
    let Some(url) = url("concurrent_writes_are_grouped_and_stay_fenced") else {
        return;
    };
    let schemas = Schemas::new(url, "group");
    concurrent_fenced_writes(Arc::new(schemas.store().await)).await;
    schemas.drop_all().await;
}

/// Run without a server, these tests must read as ignored, not as passed.
#[test]
fn every_postgres_test_is_ignored_unless_asked_for() {
    let list = |ignored: bool| -> Vec<String> {
        let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
        cmd.arg("--list");
        if ignored {
            cmd.arg("--ignored");
        }
        let out = cmd.output().expect("list the tests");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(str::to_owned)
            .collect()
    };
    let ignored = list(true);
    let all = list(false);
    assert!(all.len() > 5, "{all:?}");
    for name in all {
        if name != "every_postgres_test_is_ignored_unless_asked_for" {
            assert!(ignored.contains(&name), "{name} runs without PostgreSQL");
        }
    }
}
