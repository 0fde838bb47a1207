//! Tests of the batch writer against a real PostgreSQL.

use super::batch::{read_versions, write_locked, write_versions};
use super::rows::KEYED_COLUMNS;
use super::*;
use crate::schedule::{DeliveryState, Fenced, ScheduleStore, Transition};
use crate::store::common::{WriteOp, apply_batch};
use crate::testkit::schedule::{new_post, t0};

#[test]
fn keyed_columns_are_the_delivery_columns() {
    let prefixed: Vec<String> = DELIVERY_COLUMNS
        .split(',')
        .map(|c| format!("d.{}", c.trim()))
        .collect();
    let keyed: Vec<String> = KEYED_COLUMNS
        .split(',')
        .map(|c| c.trim().to_owned())
        .collect();
    assert_eq!(keyed, prefixed);
}

/// A store on a schema of its own. These tests are ignored unless asked for (`--ignored`), and
/// asked for without a database they fail, so a run without PostgreSQL never reads as a pass.
async fn test_store(prefix: &str) -> (PostgresStore, String) {
    let url = match std::env::var("SOCIALPUB_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "this test needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL (.ci/postgres.sh starts \
             a server and prints it)"
        ),
    };
    let schema = format!("{prefix}_{}", &Uuid::new_v4().simple().to_string()[..10]);
    let store = PostgresStore::builder(url)
        .schema(schema.clone())
        .max_connections(4)
        .connect()
        .await
        .expect("connect");
    (store, schema)
}

/// The compare-and-set refuses a row changed between its read and the write, and the
/// locked redo then applies the op once.
#[tokio::test]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn a_row_changed_after_the_read_is_refused_then_redone_locked() {
    let (store, schema) = test_store("t_cas").await;
    let (deliveries, events) = new_post("t", &["a"], 0);
    store.insert(&deliveries, &events).await.expect("insert");
    let claimed = store
        .claim_due("w", t0(), 1, Duration::from_secs(60))
        .await
        .expect("claim");
    let d = claimed.first().expect("one claimed");
    let fence = d.lease.as_ref().expect("lease").fence;
    let op = WriteOp::CommitPoint {
        id: d.id,
        fence,
        at: t0(),
    };
    let ops = std::slice::from_ref(&op);
    let pool = store.inner.pool.clone();

    // Read, then change the row behind the batch's back (a lease renewal), then write.
    let rows = read_versions(&pool, ops, false).await.expect("read");
    let renewed = store
        .renew_lease(d.id, fence, t0() + chrono::Duration::minutes(5))
        .await
        .expect("renew");
    assert!(renewed);
    let (results, planned) = apply_batch(ops, rows);
    assert!(matches!(results.first(), Some(Ok(Fenced::Applied(_)))));
    let written = write_versions(&pool, planned).await.expect("write");
    assert!(written.rows.is_empty());
    assert!(
        written.conflicts.contains(&d.id),
        "the changed row is refused"
    );
    let after = store.get("t", d.id).await.expect("get").expect("row");
    assert_eq!(after.state, DeliveryState::Claimed, "nothing of it landed");
    assert_eq!(store.history("t", d.id).await.expect("history").len(), 2);

    let redone = write_locked(&pool, ops).await.expect("redo");
    assert!(matches!(redone.first(), Some(Ok(Fenced::Applied(_)))));
    let after = store.get("t", d.id).await.expect("get").expect("row");
    assert_eq!(after.state, DeliveryState::Committing);
    assert_eq!(after.committed_at, Some(t0()));
    let states: Vec<DeliveryState> = store
        .history("t", d.id)
        .await
        .expect("history")
        .iter()
        .map(|h| h.to)
        .collect();
    assert_eq!(
        states,
        vec![
            DeliveryState::Scheduled,
            DeliveryState::Claimed,
            DeliveryState::Committing
        ]
    );
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&pool)
        .await
        .expect("drop schema");
}

/// A row kept from the claim is not trusted over the database: once another process has
/// taken the delivery (its fence moved on), the write through the group commit is stale;
/// a change that leaves the lease alone does not stop the next write.
#[tokio::test]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn a_kept_row_changed_by_another_process_is_not_trusted() {
    let (store, schema) = test_store("t_held").await;
    let pool = store.inner.pool.clone();
    let (deliveries, events) = new_post("t", &["a", "b"], 0);
    store.insert(&deliveries, &events).await.expect("insert");
    let claimed = store
        .claim_due("w", t0(), 2, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    let (taken, renewed) = (&claimed[0], &claimed[1]);
    let fence = |d: &Delivery| d.lease.as_ref().expect("lease").fence;

    // Another process rescued the first and claimed it again.
    sqlx::query(
        "UPDATE socialpub_deliveries SET fence = fence + 1, lease_owner = 'other'
         WHERE id = $1",
    )
    .bind(taken.id)
    .execute(&pool)
    .await
    .expect("take over");
    let out = store
        .commit_point(taken.id, fence(taken), t0())
        .await
        .expect("commit point");
    assert!(out.is_stale(), "the kept row said the lease was still held");
    let after = store.get("t", taken.id).await.expect("get").expect("row");
    assert_eq!(after.state, DeliveryState::Claimed);
    assert_eq!(after.lease.expect("lease").owner, "other");

    // The second's lease was extended by another connection: the write still lands.
    sqlx::query(
        "UPDATE socialpub_deliveries
         SET lease_expires_at = lease_expires_at + INTERVAL '1 minute' WHERE id = $1",
    )
    .bind(renewed.id)
    .execute(&pool)
    .await
    .expect("extend");
    let out = store
        .commit_point(renewed.id, fence(renewed), t0())
        .await
        .expect("commit point");
    assert!(matches!(out, Fenced::Applied(ref d) if d.state == DeliveryState::Committing));
    let after = store.get("t", renewed.id).await.expect("get").expect("row");
    assert_eq!(after.state, DeliveryState::Committing);
    // The write put back what it wrote: the next one needs no read and still lands.
    let t = Transition::new(&after, DeliveryState::Published, t0());
    let out = store.transition(&t).await.expect("published");
    assert!(matches!(out, Fenced::Applied(ref d) if d.state == DeliveryState::Published));
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&pool)
        .await
        .expect("drop schema");
}
