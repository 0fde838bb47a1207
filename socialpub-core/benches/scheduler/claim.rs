//! The claim-cost benchmark against a growing table.

use std::time::{Duration, Instant};

use super::TENANT;
use super::measure::percentile;
use super::setup::deliveries;
use super::stores::{Fresh, Kind};
use chrono::Utc;
use socialpub_core::platform::Platform;
use socialpub_core::schedule::ScheduleStore;
use socialpub_core::{Post, Target};

/// Adds `m` deliveries due tomorrow (generated in SQL for the SQL stores), then 1,000 due
/// ones, and times 100 claims of 10.
pub(super) async fn claim_cost(kind: Kind, m: usize) {
    let fresh = Fresh::new(kind).await;
    let future = Utc::now() + chrono::Duration::days(1);
    let post = Post::new("future").with_target(Target::new(Platform::X, "account-0"));
    let post_json = serde_json::to_string(&post).expect("json");
    let t = Instant::now();
    match (&fresh.sqlite, &fresh.postgres) {
        (Some((s, _)), _) => {
            let conn = rusqlite::Connection::open(s.path()).expect("connect");
            let base = future.timestamp_micros();
            conn.execute(
                "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < ?1)
                 INSERT INTO socialpub_deliveries (id, post_id, tenant, platform, account_id,
                     post, state, due_at, run_at, attempt, max_attempts, fence, had_failure,
                     created_at, updated_at)
                 SELECT randomblob(16), randomblob(16), ?2, 'x', 'account-' || (i % 1000), ?3,
                     'scheduled', ?4 + i, ?4 + i, 0, 5, 0, 0, ?5, ?5 FROM g",
                rusqlite::params![
                    m as i64,
                    TENANT,
                    post_json,
                    base,
                    Utc::now().timestamp_micros()
                ],
            )
            .expect("fill");
        }
        (_, Some(pg)) => {
            sqlx::query(
                "INSERT INTO socialpub_deliveries (id, post_id, tenant, platform, account_id,
                     post, state, due_at, run_at, attempt, max_attempts, fence, had_failure,
                     created_at, updated_at)
                 SELECT gen_random_uuid(), gen_random_uuid(), $2, 'x', 'account-' || (i % 1000),
                     $3::jsonb, 'scheduled', $4 + i * interval '1 microsecond',
                     $4 + i * interval '1 microsecond', 0, 5, 0, false, now(), now()
                 FROM generate_series(1, $1) i",
            )
            .bind(m as i64)
            .bind(TENANT)
            .bind(&post_json)
            .bind(future)
            .execute(pg.pool())
            .await
            .expect("fill");
            sqlx::query("ANALYZE socialpub_deliveries")
                .execute(pg.pool())
                .await
                .expect("analyze");
        }
        _ => {
            let all = deliveries(m, future, "future");
            for chunk in all.chunks(10_000) {
                fresh.store.insert(chunk, &[]).await.expect("fill");
            }
        }
    }
    let fill = t.elapsed();
    let due = deliveries(1000, Utc::now() - chrono::Duration::seconds(1), "due");
    fresh.store.insert(&due, &[]).await.expect("insert due");
    let mut times = Vec::with_capacity(100);
    let mut claimed = 0;
    for _ in 0..100 {
        let t = Instant::now();
        let got = fresh
            .store
            .claim_due("bench", Utc::now(), 10, Duration::from_secs(60))
            .await
            .expect("claim");
        times.push(t.elapsed().as_micros() as i64);
        claimed += got.len();
    }
    assert_eq!(claimed, 1000, "every due delivery claimed, no future one");
    times.sort_unstable();
    let mean = times.iter().sum::<i64>() as f64 / times.len() as f64 / 1000.0;
    println!(
        "| claim 10 | {} | {m} future rows (filled in {:.1} s) | mean {:.2} ms | p50 {:.2} ms | p99 {:.2} ms |",
        kind.label(),
        fill.as_secs_f64(),
        mean,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
    );
    fresh.finish().await;
}
