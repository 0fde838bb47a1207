//! The enqueue benchmark.

use std::sync::Arc;
use std::time::Instant;

use super::publisher::Noop;
use super::setup::{DEFAULTS, engine};
use super::stores::{Fresh, Kind};
use super::{ACCOUNTS, TENANT};
use chrono::Utc;
use socialpub_core::platform::Platform;
use socialpub_core::schedule::Scheduler;
use socialpub_core::{Post, Target};

/// `Scheduler::schedule` of `n` single-target posts from 8 concurrent tasks (validation,
/// one transaction per post, a `scheduled` event each).
pub(super) async fn enqueue(kind: Kind, n: usize) {
    let fresh = Fresh::new(kind).await;
    let noop = Arc::new(Noop::default());
    let engine = engine(fresh.store.clone(), noop, DEFAULTS);
    let at = Utc::now() + chrono::Duration::days(1);
    let t = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|k| {
            let engine = engine.clone();
            tokio::spawn(async move {
                for i in (k..n).step_by(8) {
                    let post = Post::new("enqueue").with_target(Target::new(
                        Platform::X,
                        format!("account-{}", i % ACCOUNTS),
                    ));
                    engine.schedule(TENANT, &post, at).await.expect("schedule");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("join");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "| enqueue (`Scheduler::schedule`, 8 tasks) | {} | {n} | {:.0}/s |",
        kind.label(),
        n as f64 / secs
    );
    fresh.finish().await;
}
