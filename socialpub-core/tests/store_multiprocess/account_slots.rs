//! Three worker processes publishing to one account never overlap: the account's slot in the
//! store keeps one publish per account in flight across the cluster, not only per process.

use std::time::Duration;

use super::cluster::{Cluster, assert_exactly_once, schedule};
use super::{Backend, SERIAL, fresh_schema, postgres_url};

/// The commit windows (start, end, worker) the workers recorded, sorted by start.
fn windows(cluster: &Cluster) -> Vec<(u128, u128, String)> {
    let text = std::fs::read_to_string(cluster.windows()).unwrap_or_default();
    let mut out: Vec<(u128, u128, String)> = text
        .lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            Some((
                p.next()?.parse().ok()?,
                p.next()?.parse().ok()?,
                p.next()?.to_owned(),
            ))
        })
        .collect();
    out.sort();
    out
}

async fn one_account_three_processes(backend: Backend) {
    const N: usize = 40;
    let store = backend.open().await;
    let mut cluster = Cluster::new(
        backend.clone(),
        tempfile::tempdir().expect("tempdir"),
        &[
            ("SP_BATCH", "8"),
            ("SP_CONCURRENCY", "8"),
            ("SP_LEASE_MS", "5000"),
            // Each half of a publish takes up to 30 ms: time enough to overlap.
            ("SP_DELAY_MS", "30"),
        ],
    );
    let names: Vec<String> = (0..3).map(|_| cluster.spawn(&[])).collect();
    cluster.wait_ready(&names);
    let ids = schedule(&*store, N, 1, Duration::ZERO).await;
    let counts = cluster
        .wait_until_published(N as i64, Duration::from_secs(90))
        .await;
    cluster.kill_all();
    assert_eq!(counts.get("published"), Some(&(N as i64)), "{counts:?}");
    assert_exactly_once(&cluster, &*store, &ids).await;

    let w = windows(&cluster);
    assert_eq!(w.len(), N, "a window per publish");
    let overlaps: Vec<_> = w
        .windows(2)
        .filter(|pair| pair[1].0 < pair[0].1)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect();
    assert!(
        overlaps.is_empty(),
        "{} of {N} commit windows overlap another process's: {:?}",
        overlaps.len(),
        &overlaps[..overlaps.len().min(3)]
    );
    let workers: std::collections::BTreeSet<&str> = w.iter().map(|x| x.2.as_str()).collect();
    eprintln!(
        "{N} publishes to one account by {} processes, none overlapping",
        workers.len()
    );
    backend.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_never_publishes_twice_at_once_across_processes_sqlite() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("slots.db");
    one_account_three_processes(Backend::Sqlite(path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn one_account_never_publishes_twice_at_once_across_processes_postgres() {
    let Some(url) = postgres_url("one_account_never_publishes_twice_at_once_across_processes")
    else {
        return;
    };
    let _serial = SERIAL.lock().await;
    one_account_three_processes(Backend::Postgres {
        url,
        schema: fresh_schema("slots"),
    })
    .await;
}
