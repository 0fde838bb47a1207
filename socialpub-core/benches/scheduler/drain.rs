//! The drain benchmarks: with the engine, and with the store alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::measure::{cpu_per_item, machine_cpu, process_cpu};
use super::publisher::Noop;
use super::setup::{EngineConfig, deliveries, engine};
use super::stores::{Fresh, Kind};
use chrono::Utc;
use socialpub_core::schedule::{DeliveryState, ScheduleStore};

/// Bulk-inserts `n` due deliveries (the enqueue rate of `ScheduleStore::insert`, 1,000 per
/// call), then drains them with a no-op publisher, timing until the last delivery's
/// `published` state is committed.
pub(super) async fn drain(kind: Kind, n: usize, cfg: EngineConfig) {
    let fresh = Fresh::new(kind).await;
    let all = deliveries(n, Utc::now() - chrono::Duration::seconds(1), "drain");
    let t = Instant::now();
    for chunk in all.chunks(1000) {
        fresh.store.insert(chunk, &[]).await.expect("insert");
    }
    let insert_rate = n as f64 / t.elapsed().as_secs_f64();
    drop(all);

    let noop = Arc::new(Noop::default());
    let engine = engine(fresh.store.clone(), noop.clone(), cfg);
    let t = Instant::now();
    let (cpu, machine) = (process_cpu(), machine_cpu());
    let handle = engine.start();
    while noop.calls.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Done when nothing is due or leased any more: every `published` write has committed.
    while fresh.store.next_due_at().await.expect("next due").is_some() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let (cpu, machine) = (
        cpu_per_item(cpu, process_cpu(), n),
        cpu_per_item(machine, machine_cpu(), n),
    );
    handle.shutdown().await;
    let published = fresh.published().await;
    assert_eq!(published, n, "every delivery published");
    println!(
        "| drain | {} | {} | {n} | {:.0}/s | {:.1} s | bulk insert {:.0}/s | bench process {cpu} | machine {machine} |",
        kind.label(),
        cfg.label,
        n as f64 / secs,
        secs,
        insert_rate
    );
    fresh.finish().await;
}

/// The store alone, without the engine: claims of `batch`, and for each delivery the three
/// writes a publish makes (`preparing`, the commit point, `published` with its event), with
/// `concurrency` deliveries in flight.
pub(super) async fn store_drain(kind: Kind, n: usize, batch: usize, concurrency: usize) {
    use socialpub_core::schedule::{Event, EventKind, Fenced, Transition};
    let fresh = Fresh::new(kind).await;
    let all = deliveries(n, Utc::now() - chrono::Duration::seconds(1), "drain");
    for chunk in all.chunks(1000) {
        fresh.store.insert(chunk, &[]).await.expect("insert");
    }
    drop(all);
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    loop {
        let free = permits.available_permits().clamp(1, batch);
        let claimed = fresh
            .store
            .claim_due("bench", Utc::now(), free, Duration::from_secs(60))
            .await
            .expect("claim");
        if claimed.is_empty() {
            if tasks.len() >= n {
                break;
            }
            tokio::task::yield_now().await;
            continue;
        }
        for d in claimed {
            let permit = permits.clone().acquire_owned().await.expect("permit");
            let store = fresh.store.clone();
            tasks.push(tokio::spawn(async move {
                // The engine's writes for a post with nothing to prepare: the commit point
                // (claimed to committing), then published.
                let fence = d.lease.as_ref().map_or(0, |l| l.fence);
                let Fenced::Applied(d) = store
                    .commit_point(d.id, fence, Utc::now())
                    .await
                    .expect("commit point")
                else {
                    panic!("stale")
                };
                let at = Utc::now();
                let t = Transition::new(&d, DeliveryState::Published, at)
                    .event(Event::for_delivery(&d, EventKind::Published, at));
                assert!(!store.transition(&t).await.expect("published").is_stale());
                drop(permit);
            }));
        }
    }
    for t in tasks {
        t.await.expect("join");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "| store-only drain | {} | claim {batch}, {concurrency} in flight | {n} | {:.0}/s | {:.1} s |",
        kind.label(),
        n as f64 / secs,
        secs
    );
    fresh.finish().await;
}
