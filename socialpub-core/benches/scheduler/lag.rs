//! The lag benchmark: due time to publish at a steady offered load.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::measure::percentile;
use super::publisher::Noop;
use super::setup::{EngineConfig, engine};
use super::stores::{Fresh, Kind, checkpoint};
use super::{ACCOUNTS, TENANT};
use chrono::Utc;
use socialpub_core::platform::Platform;
use socialpub_core::schedule::Scheduler;
use socialpub_core::{Post, Target};

/// Offers `rate` posts per second for `secs` seconds, each due 1 s after it is scheduled,
/// and measures the lag from its due time to the start of its publish.
pub(super) async fn lag(kind: Kind, rate: u32, secs: u32, cfg: EngineConfig) {
    checkpoint().await;
    let fresh = Fresh::new(kind).await;
    let noop = Arc::new(Noop::default());
    let engine = engine(fresh.store.clone(), noop.clone(), cfg);
    let handle = engine.start();
    let total = (rate * secs) as usize;
    let interval = Duration::from_secs(1) / rate;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let due = Utc::now() + chrono::Duration::seconds(1);
            let post = Post::new(format!("due:{}", due.timestamp_micros())).with_target(
                Target::new(Platform::X, format!("account-{}", i % ACCOUNTS)),
            );
            engine.schedule(TENANT, &post, due).await.expect("schedule");
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while noop.calls.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown().await;
    let mut lags = noop.lags_us.lock().map(|l| l.clone()).unwrap_or_default();
    lags.sort_unstable();
    println!(
        "| lag | {} | {} | {rate}/s for {secs} s | {} of {total} | p50 {:.1} ms | p95 {:.1} ms | p99 {:.1} ms | max {:.1} ms |",
        kind.label(),
        cfg.label,
        lags.len(),
        percentile(&lags, 0.50),
        percentile(&lags, 0.95),
        percentile(&lags, 0.99),
        percentile(&lags, 1.0),
    );
    fresh.finish().await;
}
