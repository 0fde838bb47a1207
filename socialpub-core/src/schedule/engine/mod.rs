//! The engine: workers that claim due deliveries and publish them through the registered
//! [`Publisher`]s, and the [`Scheduler`] API applications call.
//!
//! ```no_run
//! # async fn f(x: std::sync::Arc<dyn socialpub_core::Publisher>,
//! #            tokens: std::sync::Arc<socialpub_core::TokenManager>) -> socialpub_core::Result<()> {
//! use socialpub_core::schedule::{Engine, MemoryScheduleStore, Scheduler};
//! use socialpub_core::{Platform, Post, Target};
//!
//! let engine = Engine::builder(MemoryScheduleStore::new(), tokens)
//!     .publisher(x)
//!     .workers(2)
//!     .build();
//! let handle = engine.start();
//! let post = Post::new("Launch day").with_target(Target::new(Platform::X, "42"));
//! let scheduled = engine
//!     .schedule("acme", &post, chrono::Utc::now() + chrono::Duration::hours(1))
//!     .await?;
//! # let _ = scheduled;
//! // … later
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

mod accounts;
mod builder;
mod journal;
mod lease;
mod poll_step;
mod publish_step;
mod reconcile_step;
mod scheduler;
mod slots;
mod worker;
mod writes;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore, broadcast, watch};
use tokio::task::JoinHandle;

use super::events::Event;
use super::pacing::Pacer;
use super::policy::{DeliveryPolicy, RetryPolicy};
use super::store::ScheduleStore;
use crate::auth::{AccessTokens, AccountKey, TokenManager};
use crate::clock::Clock;
use crate::error::Result;
use crate::platform::Platform;
use crate::publish::Publisher;
use worker::{Slot, purge_loop, worker_loop};

pub use builder::EngineBuilder;
pub use publish_step::NO_PUBLISHER_WAIT;
pub use scheduler::{RetryOutcome, ScheduleOptions, ScheduledPost, Scheduler};

struct Shared {
    store: Arc<dyn ScheduleStore>,
    tokens: Arc<dyn AccessTokens>,
    token_manager: Option<Arc<TokenManager>>,
    publishers: HashMap<Platform, Arc<dyn Publisher>>,
    clock: Arc<dyn Clock>,
    workers: usize,
    batch: usize,
    concurrency: usize,
    lease: Duration,
    idle_poll: Duration,
    publish_timeout: Duration,
    /// The account slots this engine holds in the store; `None` when publishes take none.
    slots: Option<Arc<slots::AccountSlots>>,
    retry: RetryPolicy,
    policy: DeliveryPolicy,
    name: String,
    token_warning: Duration,
    events: broadcast::Sender<Event>,
    wake: Arc<Notify>,
    store_wake: Option<Arc<Notify>>,
    /// The concurrency slots: one per delivery being handled.
    permits: Arc<Semaphore>,
    /// How long before their due time deliveries are claimed.
    claim_ahead: chrono::Duration,
    /// Places for deliveries claimed ahead and waiting for their time.
    ahead: Arc<Semaphore>,
    /// Fired when the engine starts stopping (after `stopping` is set).
    stop_signal: Notify,
    /// One lock per account: at most one publish in flight per account.
    accounts: Mutex<HashMap<AccountKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Accounts a platform rate-limited, and until when.
    paused: Mutex<HashMap<AccountKey, DateTime<Utc>>>,
    /// Platforms whose application-wide window is spent, and until when.
    paused_apps: Mutex<HashMap<Platform, DateTime<Utc>>>,
    /// When each account was last warned about an expiring token.
    warned: Mutex<HashMap<AccountKey, DateTime<Utc>>>,
    pacer: Pacer,
    retention: Option<Duration>,
    stopping: AtomicBool,
    inflight: AtomicUsize,
    idle: Notify,
    /// When (engine clock, µs since the epoch) a worker last looked for expired leases.
    last_rescue: AtomicI64,
}

/// The scheduler engine: the [`Scheduler`] API plus the workers started by
/// [`Engine::start`]. Cheap to clone; clones share everything.
///
/// - Each worker rescues expired leases, claims due deliveries in batches (as many as free
///   concurrency slots) together with those due within the claim-ahead window (held until
///   their time), and sleeps until the next due time less that window, an in-process
///   notification (a schedule or reschedule), or the store's own wake-up signal.
/// - Each claimed delivery runs in its own task under a lease renewed every third of its
///   length; at most one publish per account runs at a time across the engines sharing the
///   store ([`EngineBuilder::account_slots`]).
/// - Retries follow the [`RetryPolicy`]; a rate limit pauses only the account it names.
/// - Events go to [`Engine::subscribe`] and, through the store, to its outbox.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.shared.name)
            .field("workers", &self.shared.workers)
            .field(
                "platforms",
                &self.shared.publishers.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Stops the workers of a started [`Engine`]. Dropping it leaves the workers running until
/// the runtime stops; call [`EngineHandle::shutdown`] to stop them cleanly.
pub struct EngineHandle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineHandle")
            .field("engine", &self.shared.name)
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl EngineHandle {
    /// Stops claiming, releases deliveries claimed but not started (back to the queue, their
    /// attempt given back), and waits for publishes in flight to finish. A publish is never
    /// cut short: cutting it after its commit point would leave it unconfirmed.
    pub async fn shutdown(self) {
        self.shutdown_within(Duration::MAX).await;
    }

    /// Like [`EngineHandle::shutdown`], but waits at most `grace` (real time) for publishes in
    /// flight; their leases then lapse and another worker rescues them. Returns whether
    /// everything finished in time.
    pub async fn shutdown_within(self, grace: Duration) -> bool {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.stop_signal.notify_waiters();
        let _ = self.stop.send(true);
        for w in self.workers {
            let _ = w.await;
        }
        let shared = self.shared.clone();
        let drained = async move {
            loop {
                let idle = shared.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if shared.inflight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let finished = if grace == Duration::MAX {
            drained.await;
            true
        } else {
            tokio::time::timeout(grace, drained).await.is_ok()
        };
        // Other engines need not wait the linger time for the accounts this one published to.
        if let Some(slots) = &self.shared.slots {
            slots.release_idle().await;
        }
        finished
    }
}

impl Engine {
    /// The store.
    pub fn store(&self) -> &Arc<dyn ScheduleStore> {
        &self.shared.store
    }

    /// Events this engine causes, as they happen. A slow subscriber misses events
    /// (`RecvError::Lagged`); the store's outbox keeps every one.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Starts the workers.
    pub fn start(&self) -> EngineHandle {
        let (stop, stop_rx) = watch::channel(false);
        self.shared.stopping.store(false, Ordering::SeqCst);
        let mut workers: Vec<JoinHandle<()>> = (0..self.shared.workers)
            .map(|i| {
                let shared = self.shared.clone();
                let stop = stop_rx.clone();
                let id = format!("{}-{i}", shared.name);
                tokio::spawn(worker_loop(shared, id, stop))
            })
            .collect();
        if let Some(retention) = self.shared.retention {
            workers.push(tokio::spawn(purge_loop(
                self.shared.clone(),
                retention,
                stop_rx.clone(),
            )));
        }
        EngineHandle {
            shared: self.shared.clone(),
            stop,
            workers,
        }
    }

    /// Runs one pass by hand, as worker `worker` (no background task): rescues expired
    /// leases, claims what is due and handles it to the end. Returns how many deliveries it
    /// handled. For tests and for applications that drive the engine from their own loop.
    pub async fn run_once(&self, worker: &str) -> Result<usize> {
        let shared = &self.shared;
        shared.rescue().await?;
        let claimed = shared
            .store
            .claim_due(worker, shared.clock.now(), shared.batch, shared.lease)
            .await?;
        let n = claimed.len();
        let tasks: Vec<_> = claimed
            .into_iter()
            .map(|d| {
                let shared = shared.clone();
                shared.inflight.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move { shared.handle(d, Slot::Free).await })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        Ok(n)
    }

    /// Purges final deliveries and events older than `retention` (data retention).
    pub async fn purge_older_than(&self, retention: Duration) -> Result<super::PurgeReport> {
        let before = self.shared.clock.now()
            - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        self.shared.store.purge(before).await
    }

    /// Everything kept about `tenant`, as JSON: its deliveries, history and pending events
    /// (tokens are not exported: they are secrets).
    pub async fn export_tenant(&self, tenant: &str) -> Result<serde_json::Value> {
        let export = self.shared.store.export_tenant(tenant).await?;
        Ok(serde_json::to_value(export)?)
    }

    /// Deletes everything kept about `tenant`: deliveries, history, events and, when a
    /// [`TokenManager`] was given, its tokens. Returns how many deliveries there were.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<u64> {
        if let Some(tm) = &self.shared.token_manager {
            for key in tm.store().list(tenant).await? {
                tm.store().delete(&key).await?;
            }
        }
        self.shared.store.delete_tenant(tenant).await
    }
}

fn std_to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// How long `e` asks to wait, read against the engine's clock: until its retry time when it has
/// one (`Error::retry_after` reads that against the system clock, which a test's clock is not),
/// else its requested wait.
fn told_wait(e: &crate::Error, now: DateTime<Utc>) -> Option<Duration> {
    match e.retry_at() {
        Some(at) => Some((at - now).to_std().unwrap_or(Duration::ZERO)),
        None => e.retry_after(),
    }
}
