//! The deliveries the benchmarks work on, and the engine settings they run with.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::publisher::Noop;
use super::{ACCOUNTS, TENANT};
use chrono::Utc;
use secrecy::SecretString;
use socialpub_core::auth::StaticToken;
use socialpub_core::platform::Platform;
use socialpub_core::schedule::{Delivery, Engine, NewDelivery, ScheduleStore};
use socialpub_core::{Post, Target};
use uuid::Uuid;

pub(super) fn deliveries(n: usize, due: chrono::DateTime<Utc>, text: &str) -> Vec<Delivery> {
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let target = Target::new(Platform::X, format!("account-{}", i % ACCOUNTS));
            let post = Post::new(text).with_target(target.clone());
            Delivery::new(NewDelivery {
                post_id: Uuid::now_v7(),
                tenant: TENANT,
                target,
                post: &post,
                due_at: due,
                max_attempts: 5,
                deadline: None,
                now,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
pub(super) struct EngineConfig {
    pub(super) label: &'static str,
    pub(super) workers: usize,
    pub(super) batch: usize,
    pub(super) concurrency: usize,
}

pub(super) const DEFAULTS: EngineConfig = EngineConfig {
    label: "engine defaults (2 workers, batch 64, concurrency 64)",
    workers: 2,
    batch: 64,
    concurrency: 64,
};

/// A setting for a bulk backlog: many deliveries in flight, so that many share each commit.
pub(super) const TUNED: EngineConfig = EngineConfig {
    label: "4 workers, batch 256, concurrency 512",
    workers: 4,
    batch: 256,
    concurrency: 512,
};

/// The same for PostgreSQL, whose commits are shared by more writers at once: 1,024 in flight
/// drained faster than 512 and 2,048 here.
pub(super) const TUNED_POSTGRES: EngineConfig = EngineConfig {
    label: "4 workers, batch 256, concurrency 1024",
    workers: 4,
    batch: 256,
    concurrency: 1024,
};

/// Whether the engines take account slots (`--no-account-slots` turns them off, to measure
/// what they cost).
pub(super) static ACCOUNT_SLOTS: AtomicBool = AtomicBool::new(true);

pub(super) fn engine(
    store: Arc<dyn ScheduleStore>,
    publisher: Arc<Noop>,
    cfg: EngineConfig,
) -> Engine {
    Engine::builder_arc(
        store,
        Arc::new(StaticToken(SecretString::from("bench".to_owned()))),
    )
    .publisher(publisher)
    .workers(cfg.workers)
    .batch(cfg.batch)
    .concurrency(cfg.concurrency)
    .lease(Duration::from_secs(60))
    .idle_poll(Duration::from_secs(1))
    .account_slots(ACCOUNT_SLOTS.load(Ordering::Relaxed))
    .name("bench")
    .build()
}
