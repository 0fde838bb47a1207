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

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::delivery::{
    CancelOutcome, Delivery, DeliveryError, DeliveryState, Fenced, HistoryEntry, NewDelivery,
    RescheduleOutcome, Transition,
};
use super::events::{Event, EventKind};
use super::pacing::Pacer;
use super::policy::{DeliveryPolicy, Quota, RetryPolicy};
use super::store::{Claimed, DeliveryFilter, NextTimes, ScheduleStore};
use crate::auth::{AccessTokens, AccountKey, TokenManager};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::http::{RateLimit, Window};
use crate::platform::Platform;
use crate::post::Post;
use crate::publish::{
    LookupOutcome, PublishContext, PublishJournal, Publisher, Receipt, RemoteState,
};

/// What [`Scheduler::schedule`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduledPost {
    /// The post's id (shared by its deliveries).
    pub post_id: Uuid,
    /// One delivery per target, in the order of the post's targets.
    pub deliveries: Vec<Uuid>,
}

/// Per-post settings for [`Scheduler::schedule_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleOptions {
    /// Fail instead of publishing after this instant (a post hours late can be worse than
    /// none). No deadline by default.
    pub deadline: Option<DateTime<Utc>>,
    /// Attempts before failing; the engine's [`RetryPolicy::max_attempts`] by default.
    pub max_attempts: Option<u32>,
}

impl ScheduleOptions {
    /// Sets the deadline.
    pub fn deadline(mut self, at: DateTime<Utc>) -> Self {
        self.deadline = Some(at);
        self
    }

    /// Sets the attempt budget.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }
}

/// The scheduling API. Every call is scoped by tenant: a delivery of another tenant is
/// invisible.
#[async_trait]
pub trait Scheduler: Send + Sync {
    /// Schedules `post` for `at` (now if past): one delivery per target, inserted atomically.
    /// Fails with [`ErrorKind::InvalidInput`] when the tenant or an account id is empty or
    /// holds a control character, or the post has no target or a target twice, and with
    /// [`ErrorKind::Validation`] when a registered publisher rejects it.
    async fn schedule(
        &self,
        tenant: &str,
        post: &Post,
        at: DateTime<Utc>,
    ) -> Result<ScheduledPost> {
        self.schedule_with(tenant, post, at, ScheduleOptions::default())
            .await
    }

    /// [`Scheduler::schedule`] with a deadline or attempt budget.
    async fn schedule_with(
        &self,
        tenant: &str,
        post: &Post,
        at: DateTime<Utc>,
        options: ScheduleOptions,
    ) -> Result<ScheduledPost>;

    /// Cancels a delivery; see [`CancelOutcome`] for when it is too late.
    async fn cancel(&self, tenant: &str, delivery: Uuid) -> Result<CancelOutcome>;

    /// Moves a delivery to `at`; see [`RescheduleOutcome`].
    async fn reschedule(
        &self,
        tenant: &str,
        delivery: Uuid,
        at: DateTime<Utc>,
    ) -> Result<RescheduleOutcome>;

    /// A delivery.
    async fn get(&self, tenant: &str, delivery: Uuid) -> Result<Option<Delivery>>;

    /// A delivery's history, oldest first.
    async fn history(&self, tenant: &str, delivery: Uuid) -> Result<Vec<HistoryEntry>>;

    /// Deliveries passing `filter`.
    async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>>;

    /// Cancels every delivery of a post (each target on its own: some may be too late).
    async fn cancel_post(&self, tenant: &str, post_id: Uuid) -> Result<Vec<(Uuid, CancelOutcome)>> {
        let deliveries = self
            .list(&DeliveryFilter::tenant(tenant).post(post_id).limit(10_000))
            .await?;
        let mut out = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            out.push((d.id, self.cancel(tenant, d.id).await?));
        }
        Ok(out)
    }
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    store: Arc<dyn ScheduleStore>,
    tokens: Arc<dyn AccessTokens>,
    token_manager: Option<Arc<TokenManager>>,
    publishers: HashMap<Platform, Arc<dyn Publisher>>,
    clock: Arc<dyn Clock>,
    workers: usize,
    batch: usize,
    concurrency: usize,
    claim_ahead: Duration,
    max_ahead: usize,
    lease: Duration,
    idle_poll: Duration,
    publish_timeout: Duration,
    retry: RetryPolicy,
    policy: DeliveryPolicy,
    name: String,
    token_warning: Duration,
    event_capacity: usize,
    app_quotas: HashMap<Platform, Quota>,
    account_quotas: HashMap<Platform, Quota>,
    retention: Option<Duration>,
}

impl fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("platforms", &self.publishers.keys().collect::<Vec<_>>())
            .field("workers", &self.workers)
            .field("batch", &self.batch)
            .field("concurrency", &self.concurrency)
            .field("claim_ahead", &self.claim_ahead)
            .field("max_ahead", &self.max_ahead)
            .field("lease", &self.lease)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Adds the publisher of its platform.
    pub fn publisher(mut self, publisher: Arc<dyn Publisher>) -> Self {
        self.publishers.insert(publisher.platform(), publisher);
        self
    }

    /// Warns ([`EventKind::TokenExpiresSoon`]) when an account's token, read from this
    /// manager's store, expires within the warning horizon.
    pub fn token_manager(mut self, manager: Arc<TokenManager>) -> Self {
        self.token_manager = Some(manager);
        self
    }

    /// The horizon of token expiry warnings (default 7 days).
    pub fn token_warning(mut self, horizon: Duration) -> Self {
        self.token_warning = horizon;
        self
    }

    /// Uses `clock` for due times, leases and waits (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Worker loops claiming deliveries (default 2).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Most due deliveries one claim takes (default 64); it may take as many again that are
    /// due within the claim-ahead window ([`EngineBuilder::claim_ahead`]).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Most deliveries handled at once by this engine (default 64): claimed for now,
    /// publishing, or polling a publish's status. Recording a publish's outcome once it
    /// returned takes no slot, nor does waiting for a due time after a claim ahead
    /// ([`EngineBuilder::claim_ahead`]). At most one publish per account is in flight whatever
    /// this is.
    ///
    /// With a SQL store, throughput grows with this number: the writes of one delivery are
    /// sequential, but those of the deliveries in flight share transactions. Memory grows with
    /// it too when many large uploads run at once (each holds at most two of its chunks, 16 MiB
    /// with YouTube's default chunk size): lower it where memory is tight.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long before their due time workers claim deliveries (default 500 ms; zero turns
    /// it off). A delivery claimed ahead waits in this engine until its time, so a slow
    /// commit of the claim (a busy disk flushing its log) does not delay it; it is published
    /// at its due time, never before. At most half the lease.
    ///
    /// The window costs nothing while the store is quiet, and holds at most
    /// [`EngineBuilder::max_ahead`] deliveries. Stopping the engine gives the ones not yet
    /// due back to the queue, at their time.
    pub fn claim_ahead(mut self, window: Duration) -> Self {
        self.claim_ahead = window;
        self
    }

    /// Most deliveries claimed ahead and waiting for their time, besides those taking a
    /// concurrency slot (default 256). A delivery waiting for its time holds no concurrency
    /// slot; it takes one when its time comes.
    pub fn max_ahead(mut self, n: usize) -> Self {
        self.max_ahead = n;
        self
    }

    /// The lease a claim takes; renewed every third of it (default 60 s).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// The longest an idle worker sleeps without a wake-up (default 30 s). Workers wake at the
    /// next due time and on notifications; this only bounds the delay for deliveries another
    /// process inserted through a store without wake-ups.
    pub fn idle_poll(mut self, wait: Duration) -> Self {
        self.idle_poll = wait;
        self
    }

    /// The longest one publish may take before it is abandoned (default 1 h). An abandoned
    /// publish that reached its commit point becomes `unconfirmed`.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// The retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The policy for unconfirmed publishes (default [`DeliveryPolicy::AtMostOnce`]).
    pub fn delivery_policy(mut self, policy: DeliveryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// A name for this engine, prefixed to its workers' ids in leases and history (default
    /// `engine-` and a random suffix). Give each process its own.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Paces publishes through one application of `platform` (all its accounts together) to
    /// `quota`, in this engine. A publish over the quota goes back to the queue until the
    /// quota allows it, without using up an attempt.
    pub fn app_quota(mut self, platform: Platform, quota: Quota) -> Self {
        self.app_quotas.insert(platform, quota);
        self
    }

    /// Paces publishes to each account of `platform` to `quota`, in this engine (e.g. a
    /// platform's posts-per-day cap).
    pub fn account_quota(mut self, platform: Platform, quota: Quota) -> Self {
        self.account_quotas.insert(platform, quota);
        self
    }

    /// Purges final deliveries and outbox events older than `retention` once an hour while
    /// the engine runs (off by default; [`Engine::purge_older_than`] does it on demand).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// The engine.
    pub fn build(self) -> Engine {
        let pacer = Pacer::new(&self.clock, &self.app_quotas, &self.account_quotas);
        let (events, _) = broadcast::channel(self.event_capacity.max(16));
        let store_wake = self.store.wakeups();
        Engine {
            shared: Arc::new(Shared {
                store: self.store,
                tokens: self.tokens,
                token_manager: self.token_manager,
                publishers: self.publishers,
                clock: self.clock,
                workers: self.workers,
                batch: self.batch,
                lease: self.lease,
                idle_poll: self.idle_poll,
                publish_timeout: self.publish_timeout,
                retry: self.retry,
                policy: self.policy,
                name: self.name,
                token_warning: self.token_warning,
                events,
                wake: Arc::new(Notify::new()),
                store_wake,
                concurrency: self.concurrency,
                permits: Arc::new(Semaphore::new(self.concurrency)),
                claim_ahead: std_to_chrono(self.claim_ahead.min(self.lease / 2)),
                ahead: Arc::new(Semaphore::new(self.max_ahead)),
                stop_signal: Notify::new(),
                accounts: Mutex::new(HashMap::new()),
                paused: Mutex::new(HashMap::new()),
                paused_apps: Mutex::new(HashMap::new()),
                warned: Mutex::new(HashMap::new()),
                pacer,
                retention: self.retention,
                stopping: AtomicBool::new(false),
                inflight: AtomicUsize::new(0),
                last_rescue: AtomicI64::new(i64::MIN),
                idle: Notify::new(),
            }),
        }
    }
}

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
///   length; at most one publish per account runs at a time in this engine.
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
        if grace == Duration::MAX {
            drained.await;
            true
        } else {
            tokio::time::timeout(grace, drained).await.is_ok()
        }
    }
}

impl Engine {
    /// Starts building an engine over `store`, taking tokens from `tokens` (usually a
    /// [`TokenManager`]).
    pub fn builder(store: impl ScheduleStore, tokens: Arc<dyn AccessTokens>) -> EngineBuilder {
        Self::builder_arc(Arc::new(store), tokens)
    }

    /// Starts building an engine over a shared store.
    pub fn builder_arc(
        store: Arc<dyn ScheduleStore>,
        tokens: Arc<dyn AccessTokens>,
    ) -> EngineBuilder {
        EngineBuilder {
            store,
            tokens,
            token_manager: None,
            publishers: HashMap::new(),
            clock: Arc::new(SystemClock),
            workers: 2,
            batch: 64,
            concurrency: 64,
            claim_ahead: Duration::from_millis(500),
            max_ahead: 256,
            lease: Duration::from_secs(60),
            idle_poll: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(3600),
            retry: RetryPolicy::default(),
            policy: DeliveryPolicy::default(),
            name: format!("engine-{}", &Uuid::new_v4().simple().to_string()[..8]),
            token_warning: Duration::from_secs(7 * 24 * 3600),
            event_capacity: 1024,
            app_quotas: HashMap::new(),
            account_quotas: HashMap::new(),
            retention: None,
        }
    }

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

#[async_trait]
impl Scheduler for Engine {
    async fn schedule_with(
        &self,
        tenant: &str,
        post: &Post,
        at: DateTime<Utc>,
        options: ScheduleOptions,
    ) -> Result<ScheduledPost> {
        let s = &self.shared;
        if tenant.is_empty() {
            return Err(Error::invalid_input("the tenant is empty"));
        }
        // Ids are keys in every store; PostgreSQL's text cannot even hold U+0000.
        if tenant.chars().any(char::is_control) {
            return Err(Error::invalid_input("the tenant holds a control character"));
        }
        if post.targets.is_empty() {
            return Err(Error::invalid_input("the post has no target"));
        }
        for (i, t) in post.targets.iter().enumerate() {
            if t.account_id.is_empty() || t.account_id.chars().any(char::is_control) {
                return Err(Error::invalid_input(format!(
                    "the {} account id of target {} is empty or holds a control character",
                    t.platform,
                    i + 1
                )));
            }
            if post.targets[..i].contains(t) {
                return Err(Error::invalid_input(format!(
                    "the post targets {}/{} twice",
                    t.platform, t.account_id
                )));
            }
            if let Some(p) = s.publishers.get(&t.platform) {
                p.validate(post).into_result()?;
            }
        }
        let now = s.clock.now();
        let post_id = Uuid::now_v7();
        let deliveries: Vec<Delivery> = post
            .targets
            .iter()
            .map(|t| {
                Delivery::new(NewDelivery {
                    post_id,
                    tenant,
                    target: t.clone(),
                    post,
                    due_at: at,
                    max_attempts: options.max_attempts.unwrap_or(s.retry.max_attempts),
                    deadline: options.deadline,
                    now,
                })
            })
            .collect();
        let events: Vec<Event> = deliveries
            .iter()
            .map(|d| Event::for_delivery(d, EventKind::Scheduled, now))
            .collect();
        s.store.insert(&deliveries, &events).await?;
        for e in events {
            let _ = s.events.send(e);
        }
        s.wake.notify_waiters();
        Ok(ScheduledPost {
            post_id,
            deliveries: deliveries.iter().map(|d| d.id).collect(),
        })
    }

    async fn cancel(&self, tenant: &str, delivery: Uuid) -> Result<CancelOutcome> {
        self.shared
            .store
            .cancel(tenant, delivery, self.shared.clock.now())
            .await
    }

    async fn reschedule(
        &self,
        tenant: &str,
        delivery: Uuid,
        at: DateTime<Utc>,
    ) -> Result<RescheduleOutcome> {
        let out = self
            .shared
            .store
            .reschedule(tenant, delivery, at, self.shared.clock.now())
            .await?;
        self.shared.wake.notify_waiters();
        Ok(out)
    }

    async fn get(&self, tenant: &str, delivery: Uuid) -> Result<Option<Delivery>> {
        self.shared.store.get(tenant, delivery).await
    }

    async fn history(&self, tenant: &str, delivery: Uuid) -> Result<Vec<HistoryEntry>> {
        self.shared.store.history(tenant, delivery).await
    }

    async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        self.shared.store.list(filter).await
    }
}

fn std_to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

async fn worker_loop(shared: Arc<Shared>, id: String, mut stop: watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    let mut busy: u32 = 0;
    // The last round claimed a full batch: more is due than this engine has slots for.
    let mut backlog = false;
    // The last wait ended on a notification rather than at the planned time: something was
    // scheduled or changed, most often due later than this worker's next wake-up.
    let mut notified = false;
    // When this worker last planned to wake, before anything woke it sooner.
    let mut planned: Option<DateTime<Utc>> = None;
    // The earliest lease expiry it last read: the rescue runs when it has come (and at most
    // every `RESCUE_EVERY` besides). `MIN_UTC` makes the first round look at once.
    let mut lease_expiry = Some(DateTime::<Utc>::MIN_UTC);
    let store_wake = shared.store_wake.clone();
    loop {
        if *stop.borrow() {
            return;
        }
        // Register for wake-ups before reading the store, so a schedule that lands between
        // the read and the sleep still wakes this worker.
        let local = shared.wake.notified();
        tokio::pin!(local);
        local.as_mut().enable();
        let mut remote = store_wake.as_ref().map(|n| Box::pin(n.notified()));
        if let Some(r) = remote.as_mut() {
            r.as_mut().enable();
        }
        let remote = async {
            match remote.as_mut() {
                Some(r) => r.await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(remote);

        // Woken by a notification: one read of the next due time says whether to claim at
        // all. At a steady stream of schedules every one wakes every worker, and a full round
        // (rescue, claim, read) for each would load the store for nothing.
        let mut wake_at = None;
        if std::mem::take(&mut notified)
            && let Some(was) = planned
            && let Ok(next) = shared.store.next_times().await
        {
            lease_expiry = next.lease_expiry;
            let at = shared.wake_for(next).map_or(was, |t| was.min(t));
            if at > shared.clock.now() {
                wake_at = Some(at);
            }
        }
        let wake_at = match wake_at {
            Some(at) => at,
            None => {
                let rescue = lease_expiry.is_some_and(|t| t <= shared.clock.now());
                let round = shared.claim_round(&id, &mut stop, backlog, rescue).await;
                if rescue && round.is_ok() {
                    lease_expiry = None;
                }
                backlog = matches!(round, Ok(Round::Full));
                match round {
                    Ok(Round::Full) => {
                        failures = 0;
                        busy = 0;
                        continue;
                    }
                    Ok(Round::Stopped) => return,
                    Ok(Round::Partial) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(worker = %id, error = %e, "claiming deliveries failed");
                    }
                }

                let now = shared.clock.now();
                let mut wake_at = now + std_to_chrono(shared.idle_poll);
                if failures > 0 {
                    wake_at = now
                        + std_to_chrono(shared.retry.max_backoff(failures).min(shared.idle_poll));
                } else {
                    match shared.store.next_times().await {
                        Ok(next) => {
                            lease_expiry = next.lease_expiry;
                            if let Some(t) = shared.wake_for(next) {
                                wake_at = wake_at.min(t);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(worker = %id, error = %e, "reading the next due time failed")
                        }
                    }
                }
                if wake_at <= now {
                    // Something is due that this round did not take (another worker was
                    // faster). Look again at once, but never spin: a store whose due time and
                    // claim disagree would otherwise keep this loop busy.
                    busy += 1;
                    if busy > 3 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
                busy = 0;
                wake_at
            }
        };
        planned = Some(wake_at);
        let sleep = shared.clock.sleep_until(wake_at);
        tokio::select! {
            _ = &mut local => notified = true,
            _ = &mut remote => notified = true,
            _ = sleep => {}
            _ = stop.changed() => {}
        }
    }
}

/// How often a worker looks for expired leases besides when one is known to expire (another
/// process's claims and renewals move the expiries it read).
const RESCUE_EVERY: Duration = Duration::from_secs(1);

/// The longest a worker working through a backlog waits to gather slots for one claim.
const GATHER_WAIT: Duration = Duration::from_millis(5);

/// What a claimed delivery holds while it is handled. Dropping it frees the slot or place.
#[expect(dead_code, reason = "the permits are held for their drop, never read")]
enum Slot {
    /// A concurrency slot.
    Run(OwnedSemaphorePermit),
    /// A place among the deliveries claimed ahead; it takes a slot at its time.
    Ahead(OwnedSemaphorePermit),
    /// Neither: a delivery [`Engine::run_once`] handles, or one whose publish returned and
    /// which is only recording the outcome.
    Free,
}

enum Round {
    /// Claimed a full batch: more may be due.
    Full,
    /// Claimed less than asked: sleep until the next due time.
    Partial,
    /// Stopping.
    Stopped,
}

/// Counts a task in flight until dropped.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Shared {
    async fn rescue(&self) -> Result<()> {
        let now = self.clock.now();
        self.last_rescue
            .store(now.timestamp_micros(), Ordering::Relaxed);
        let rescued = self.store.rescue_expired(now).await?;
        for r in rescued {
            tracing::info!(delivery = %r.delivery.id, state = %r.delivery.state, "rescued a delivery whose lease expired");
            if let Some(e) = r.event {
                let _ = self.events.send(e);
            }
        }
        Ok(())
    }

    /// Takes free slots into `permits`, up to a batch, without waiting.
    fn take_free(&self, permits: &mut Vec<OwnedSemaphorePermit>) {
        while permits.len() < self.batch {
            match self.permits.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
    }

    /// When a worker has something to do next: `claim_ahead` before the next run time (at it
    /// when no place ahead is free), or at the next lease expiry.
    fn wake_for(&self, next: NextTimes) -> Option<DateTime<Utc>> {
        let window = if self.ahead.available_permits() > 0 {
            self.claim_ahead
        } else {
            chrono::Duration::zero()
        };
        let run = next
            .run_at
            .map(|t| t.checked_sub_signed(window).unwrap_or(t));
        NextTimes::new(run, next.lease_expiry).earliest()
    }

    /// One round of a worker: looks for expired leases (when `rescue`, because a lease
    /// expiry has come, and at most every [`RESCUE_EVERY`] besides), then claims as many due
    /// deliveries as there are free slots, waiting for at least one, and outside a backlog
    /// as many again due within the claim-ahead window.
    async fn claim_round(
        self: &Arc<Self>,
        worker: &str,
        stop: &mut watch::Receiver<bool>,
        backlog: bool,
        rescue: bool,
    ) -> Result<Round> {
        let since = self
            .clock
            .now()
            .timestamp_micros()
            .saturating_sub(self.last_rescue.load(Ordering::Relaxed));
        if rescue || since >= i64::try_from(RESCUE_EVERY.as_micros()).unwrap_or(i64::MAX) {
            self.rescue().await?;
        }
        let first = tokio::select! {
            p = self.permits.clone().acquire_owned() => p.map_err(|_| Error::internal("engine semaphore closed"))?,
            _ = stop.changed() => return Ok(Round::Stopped),
        };
        let mut permits = vec![first];
        self.take_free(&mut permits);
        if backlog {
            // Working through a backlog, slots free up one by one; a claim per freed slot
            // would cost the store a transaction per delivery. Gather a quarter of the slots
            // first, waiting a few milliseconds at most.
            let enough = (self.batch.min(self.concurrency) / 4).max(1);
            let deadline = tokio::time::Instant::now() + GATHER_WAIT;
            while permits.len() < enough {
                tokio::select! {
                    p = self.permits.clone().acquire_owned() => match p {
                        Ok(p) => permits.push(p),
                        Err(_) => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = stop.changed() => return Ok(Round::Stopped),
                }
                self.take_free(&mut permits);
            }
        }
        // Places for deliveries due in the next moments. Not while working through a backlog:
        // what is due already comes first, and those claims are sized by the free slots.
        let mut ahead = Vec::new();
        if !backlog && self.claim_ahead > chrono::Duration::zero() {
            while ahead.len() < self.batch {
                match self.ahead.clone().try_acquire_owned() {
                    Ok(p) => ahead.push(p),
                    Err(_) => break,
                }
            }
        }
        if *stop.borrow() {
            return Ok(Round::Stopped);
        }
        let want = permits.len();
        let now = self.clock.now();
        let due_by = if ahead.is_empty() {
            now
        } else {
            now.checked_add_signed(self.claim_ahead).unwrap_or(now)
        };
        let claimed = self
            .store
            .claim_ahead(worker, now, want, due_by, ahead.len(), self.lease)
            .await?;
        // Due deliveries take the concurrency slots and later ones the places ahead. The store
        // returns at most as many of each; should a delivery due within the claim's instant
        // be counted among the later ones, the other kind serves.
        let (due, later): (Vec<_>, Vec<_>) = claimed.into_iter().partition(|c| c.run_at <= now);
        let got = due.len();
        let spawn = |c: Claimed, slot: Option<Slot>| {
            let shared = self.clone();
            shared.inflight.fetch_add(1, Ordering::SeqCst);
            let slot = slot.unwrap_or(Slot::Free);
            // The step's future is some kilobytes: boxed, it is written once, where a task
            // holding it inline would be copied on every move of the task's stage.
            tokio::spawn(Box::pin(shared.handle_at(c.delivery, slot, c.run_at)));
        };
        for c in due {
            let slot = permits
                .pop()
                .map(Slot::Run)
                .or_else(|| ahead.pop().map(Slot::Ahead));
            spawn(c, slot);
        }
        for c in later {
            let slot = ahead
                .pop()
                .map(Slot::Ahead)
                .or_else(|| permits.pop().map(Slot::Run));
            spawn(c, slot);
        }
        Ok(if got == want {
            Round::Full
        } else {
            Round::Partial
        })
    }

    fn account_lock(&self, key: &AccountKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = m.get(key) {
            return lock.clone();
        }
        m.entry(key.clone()).or_default().clone()
    }

    /// Until when publishes to `key` wait: its own pause or its platform's, the later.
    fn paused_until(&self, key: &AccountKey) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        let account = still_paused(&self.paused, key, now);
        let app = still_paused(&self.paused_apps, &key.platform, now);
        account.max(app)
    }

    fn pause(&self, key: &AccountKey, until: DateTime<Utc>) {
        extend_pause(&self.paused, key.clone(), until);
    }

    /// Paces from the limits a successful create reported: an exhausted window pauses the
    /// account (or, for the application's daily window, the whole platform) until it resets,
    /// so the next publish waits instead of drawing a `429`.
    fn pace_from(&self, key: &AccountKey, limits: &RateLimit) {
        let now = self.clock.now();
        let reset = |w: Option<Window>| {
            w.filter(Window::exhausted)
                .and_then(|w| w.reset_at)
                .filter(|at| *at > now)
        };
        if let Some(at) = reset(limits.app_day) {
            tracing::info!(platform = %key.platform, until = %at.to_rfc3339(), "the application's daily window is spent; pausing the platform");
            extend_pause(&self.paused_apps, key.platform, at);
        }
        let mut account = [reset(limits.window), reset(limits.user_day)]
            .into_iter()
            .flatten()
            .max();
        if limits.usage_percent.is_some_and(|p| p >= 100.0) {
            let wait = limits
                .retry_after
                .unwrap_or(self.retry.default_rate_limit_wait);
            account = account.max(Some(now + std_to_chrono(wait)));
        }
        if let Some(at) = account {
            tracing::info!(account = %key, until = %at.to_rfc3339(), "the account's rate-limit window is spent; pausing it");
            self.pause(key, at);
        }
    }

    /// Handles one delivery claimed for now to the end of this step.
    async fn handle(self: Arc<Self>, d: Delivery, slot: Slot) {
        let now = self.clock.now();
        self.handle_at(d, slot, now).await
    }

    /// Handles one claimed delivery to the end of this step, renewing its lease meanwhile:
    /// waits until `run_at` if it was claimed ahead, then takes a concurrency slot if it has
    /// none.
    async fn handle_at(self: Arc<Self>, d: Delivery, mut slot: Slot, run_at: DateTime<Utc>) {
        let _inflight = InFlight(self.clone());
        let Some(fence) = d.lease.as_ref().map(|l| l.fence) else {
            return;
        };
        let lost = Arc::new(LeaseWatch::default());
        let id = d.id;
        let step = async {
            if !self.hold(&d, run_at, &mut slot).await? {
                return Ok(());
            }
            match d.state {
                DeliveryState::Claimed => self.publish_step(d, &lost, &mut slot).await,
                DeliveryState::Processing => self.poll_step(d, &lost).await,
                DeliveryState::Unconfirmed => self.reconcile_step(d, &lost).await,
                other => Err(Error::internal(format!(
                    "claimed delivery {id} in state {other}"
                ))),
            }
        };
        // The lease is renewed in this task rather than a task of its own: most steps end
        // long before the first renewal, and a spawn per delivery costs more than the step.
        // A lost lease ends the renewals, not the step: the step sees it and stops itself.
        let renew = async {
            renew_loop(&self, id, fence, &lost).await;
            std::future::pending::<Result<()>>().await
        };
        let result = tokio::select! {
            r = step => r,
            r = renew => r,
        };
        // The delivery may be due again sooner than any worker's next wake-up (a retry, a
        // status poll): let them look again.
        self.wake.notify_waiters();
        if let Err(e) = result {
            tracing::warn!(delivery = %id, error = %e, "handling a delivery failed; its lease will lapse and it will be rescued");
        }
    }

    /// Waits until `run_at` for a delivery claimed ahead, then trades its place ahead for a
    /// concurrency slot. `false` when the engine stopped first and gave the delivery back to
    /// the queue, at its time and with its attempt.
    async fn hold(&self, d: &Delivery, run_at: DateTime<Utc>, slot: &mut Slot) -> Result<bool> {
        if self.clock.now() < run_at {
            let stopped = self.stop_signal.notified();
            tokio::pin!(stopped);
            stopped.as_mut().enable();
            if !self.stopping.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = self.clock.sleep_until(run_at) => {}
                    _ = &mut stopped => {}
                }
            }
            let now = self.clock.now();
            if now < run_at {
                if d.state == DeliveryState::Claimed {
                    let t = Transition::new(d, DeliveryState::Scheduled, now)
                        .run_at(run_at)
                        .attempt(d.attempt.saturating_sub(1))
                        .message("released at shutdown before its time");
                    self.write(t).await?;
                    return Ok(false);
                }
                // A status poll or a reconciliation claimed ahead: not worth giving back for
                // the moments left.
                self.clock.sleep_until(run_at).await;
            }
        }
        if matches!(slot, Slot::Ahead(_)) {
            let run = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::internal("engine semaphore closed"))?;
            *slot = Slot::Run(run);
        }
        Ok(true)
    }

    fn journal(&self, d: &Delivery, fence: i64, lost: &Arc<LeaseWatch>) -> Arc<StoreJournal> {
        Arc::new(StoreJournal {
            store: self.store.clone(),
            clock: self.clock.clone(),
            id: d.id,
            fence,
            lost: lost.clone(),
            committed: AtomicBool::new(false),
            preparing: Mutex::new(None),
            prepared: AtomicBool::new(false),
        })
    }

    fn context(&self, d: &Delivery, journal: Arc<StoreJournal>) -> PublishContext {
        PublishContext::new(d.account(), self.tokens.clone())
            .with_journal(journal)
            .with_checkpoint(d.checkpoint.clone())
            .with_attempt(d.attempt.max(1))
            .with_idempotency_key(d.id.to_string())
    }

    /// Writes `t`; `None` when the lease was lost (then the caller stops). Broadcasts its
    /// event.
    async fn write(&self, mut t: Transition) -> Result<Option<Delivery>> {
        match self.store.transition(&t).await? {
            Fenced::Applied(d) => {
                if let Some(e) = t.event.take() {
                    let _ = self.events.send(*e);
                }
                Ok(Some(d))
            }
            Fenced::Stale => {
                tracing::info!(delivery = %t.id, to = %t.to, "lease lost; the write was refused");
                Ok(None)
            }
        }
    }

    /// A transition of `d` with an event of `kind` describing the state it leads to.
    fn with_event(&self, d: &Delivery, t: Transition, kind: EventKind) -> Transition {
        let e = Event::for_transition(d, &t, kind);
        t.event(e)
    }

    async fn fail(&self, d: &Delivery, error: DeliveryError, attempt: u32) -> Result<()> {
        let t = Transition::new(d, DeliveryState::Failed, self.clock.now())
            .attempt(attempt)
            .error(error);
        let t = self.with_event(d, t, EventKind::Failed);
        self.write(t).await.map(|_| ())
    }

    /// Puts `d` back in the queue at `at` after a rate limit or pause, giving back the attempt
    /// its claim started.
    async fn snooze(
        &self,
        d: &Delivery,
        at: DateTime<Utc>,
        error: DeliveryError,
        event: bool,
    ) -> Result<()> {
        let t = Transition::new(d, DeliveryState::RetryWaiting, self.clock.now())
            .run_at(at)
            .attempt(d.attempt.saturating_sub(1))
            .error(error);
        let t = if event {
            self.with_event(d, t, EventKind::Retrying)
        } else {
            t
        };
        self.write(t).await.map(|_| ())
    }

    async fn warn_expiring(&self, d: &Delivery) {
        let Some(tm) = &self.token_manager else {
            return;
        };
        let key = d.account();
        let now = self.clock.now();
        let horizon = std_to_chrono(self.token_warning);
        {
            let warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
            if warned
                .get(&key)
                .is_some_and(|t| *t + chrono::Duration::days(1) > now)
            {
                return;
            }
        }
        let Ok(Some(token)) = tm.store().get(&key).await else {
            return;
        };
        let end = if token.refresh_token.is_some() {
            token.refresh_expires_at
        } else {
            token.expires_at
        };
        let Some(end) = end.filter(|e| *e <= now + horizon) else {
            return;
        };
        self.warned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, now);
        let event = Event::token_expires_soon(d.tenant.clone(), d.target.clone(), end, now);
        if let Err(e) = self.store.append_event(&event).await {
            tracing::warn!(error = %e, "recording a token expiry warning failed");
        }
        let _ = self.events.send(event);
    }

    async fn publish_step(
        &self,
        d: Delivery,
        lost: &Arc<LeaseWatch>,
        slot: &mut Slot,
    ) -> Result<()> {
        let key = d.account();
        let now = self.clock.now();
        if d.attempt > d.max_attempts {
            let e = DeliveryError::new(
                d.last_error
                    .as_ref()
                    .map_or(ErrorKind::Transient, |e| e.kind),
                format!(
                    "gave up after {} attempts; last error: {}",
                    d.max_attempts,
                    d.last_error
                        .as_ref()
                        .map_or("none recorded".to_owned(), |e| e.message.clone())
                ),
            );
            return self.fail(&d, e, d.max_attempts).await;
        }
        if let Some(deadline) = d.deadline
            && deadline < now
        {
            let e = DeliveryError::new(
                ErrorKind::Transient,
                format!(
                    "the deadline {} passed before it could be published",
                    deadline.to_rfc3339()
                ),
            );
            return self.fail(&d, e, d.attempt.saturating_sub(1)).await;
        }
        let Some(publisher) = self.publishers.get(&d.target.platform).cloned() else {
            let e = DeliveryError::new(
                ErrorKind::Configuration,
                format!("no publisher is registered for {}", d.target.platform),
            );
            return self.fail(&d, e, d.attempt.saturating_sub(1)).await;
        };
        let report = publisher.validate(&d.post);
        if !report.is_ok() {
            let e = DeliveryError::from(&Error::validation(report));
            return self.fail(&d, e, d.attempt.saturating_sub(1)).await;
        }

        // One publish per account at a time; a delivery waiting here keeps its lease alive.
        let lock = self.account_lock(&key);
        let _account = lock.lock().await;
        if lost.is_lost() {
            return Ok(());
        }
        if self.stopping.load(Ordering::SeqCst) {
            let t = Transition::new(&d, DeliveryState::Scheduled, self.clock.now())
                .run_at(self.clock.now())
                .attempt(d.attempt.saturating_sub(1))
                .message("released at shutdown before it started");
            return self.write(t).await.map(|_| ());
        }
        if let Some(until) = self.paused_until(&key) {
            let wait = self.retry.rate_limit_wait(Some(Duration::ZERO));
            let e = DeliveryError::new(
                ErrorKind::RateLimited,
                format!(
                    "the account (or its platform's application) is rate-limited until {}",
                    until.to_rfc3339()
                ),
            );
            return self.snooze(&d, until + std_to_chrono(wait), e, false).await;
        }
        if let Some(at) = self.pacer.check(&key, self.clock.now()) {
            let e = DeliveryError::new(
                ErrorKind::RateLimited,
                format!(
                    "paced by the configured quota for {}: next slot at {}",
                    key.platform,
                    at.to_rfc3339()
                ),
            );
            return self.snooze(&d, at, e, false).await;
        }

        self.warn_expiring(&d).await;

        let fence = d.lease.as_ref().map_or(d.fence, |l| l.fence);
        let journal = self.journal(&d, fence, lost);
        // `preparing` is written with the publish's first checkpoint (an upload under way), not
        // here: a publish that goes straight to its create request moves from `claimed` to
        // `committing` at its commit point, one durable write fewer per delivery.
        journal.record_preparing(Transition::new(
            &d,
            DeliveryState::Preparing,
            self.clock.now(),
        ));
        let mut ctx = self.context(&d, journal.clone());
        let result = self
            .publish_with_refresh(&*publisher, &mut ctx, &d, &journal)
            .await;
        // The slot bounds publishes (and the uploads they buffer) in flight; recording the
        // outcome is the store's work, and the next publish need not wait for its commit.
        drop(ctx);
        *slot = Slot::Free;
        if lost.is_lost() {
            tracing::info!(delivery = %d.id, "lease lost during the publish; leaving the delivery to its new owner");
            return Ok(());
        }
        let committed = journal.committed.load(Ordering::SeqCst);
        // The journal's view is the freshest: a checkpoint moved the row to preparing, the
        // commit point to committing.
        let mut d = d;
        if committed {
            d.state = DeliveryState::Committing;
        } else if journal.prepared.load(Ordering::SeqCst) {
            d.state = DeliveryState::Preparing;
        }
        match result {
            Ok(receipt) => self.accepted(&d, receipt, false).await,
            Err(e) => self.publish_failed(&d, &e, committed).await,
        }
    }

    /// Publishes, and on an unauthorized answer refreshes the token once and publishes once
    /// more. Abandons a publish that outlives the publish timeout.
    async fn publish_with_refresh(
        &self,
        publisher: &dyn Publisher,
        ctx: &mut PublishContext,
        d: &Delivery,
        journal: &StoreJournal,
    ) -> Result<Receipt> {
        let before: Option<SecretString> = self.tokens.access_token(ctx.account()).await.ok();
        let first = self.timed_publish(publisher, ctx, &d.post, journal).await;
        match first {
            Err(e) if e.kind() == ErrorKind::Unauthorized => {
                let Some(before) = before else {
                    return Err(e);
                };
                let key = ctx.account().clone();
                tracing::info!(account = %key, "publish unauthorized; refreshing the token once");
                self.tokens.refresh_after_rejection(&key, &before).await?;
                self.timed_publish(publisher, ctx, &d.post, journal).await
            }
            other => other,
        }
    }

    async fn timed_publish(
        &self,
        publisher: &dyn Publisher,
        ctx: &mut PublishContext,
        post: &Post,
        journal: &StoreJournal,
    ) -> Result<Receipt> {
        let deadline = self.clock.now() + std_to_chrono(self.publish_timeout);
        let sleep = self.clock.sleep_until(deadline);
        tokio::select! {
            // Checked first: once another worker owns the delivery, this publish must not take
            // another step (its owner reconciles anything already sent).
            biased;
            () = journal.lost.lost() => Err(lease_lost(journal.id)),
            r = publisher.publish(ctx, post) => r,
            _ = sleep => {
                // Abandoned before its commit point, nothing was sent; after it, the create
                // may be out.
                let kind = if journal.committed.load(Ordering::SeqCst) {
                    ErrorKind::Unconfirmed
                } else {
                    ErrorKind::Transient
                };
                Err(Error::new(
                    kind,
                    format!("the publish did not finish within {:?}", self.publish_timeout),
                ))
            }
        }
    }

    /// The platform accepted the post (a publish, a status check, or a lookup that found it).
    async fn accepted(&self, d: &Delivery, receipt: Receipt, recovered: bool) -> Result<()> {
        let now = self.clock.now();
        if let Some(limits) = &receipt.rate_limit {
            self.pace_from(&d.account(), limits);
        }
        let kind = if recovered || d.had_failure {
            EventKind::Recovered
        } else {
            EventKind::Published
        };
        let t = match &receipt.state {
            RemoteState::Published => {
                let t = Transition::new(d, DeliveryState::Published, now).receipt(receipt);
                self.with_event(d, t, kind)
            }
            RemoteState::Processing => {
                let elapsed = d
                    .committed_at
                    .map_or(Duration::ZERO, |c| (now - c).to_std().unwrap_or_default());
                Transition::new(d, DeliveryState::Processing, now)
                    .receipt(receipt)
                    .run_at(now + std_to_chrono(self.retry.poll_wait(elapsed)))
                    .message("accepted; the platform is processing it")
            }
            RemoteState::Failed { reason } => {
                let e = DeliveryError::new(
                    ErrorKind::Platform,
                    format!("the platform failed the post after accepting it: {reason}"),
                );
                let t = Transition::new(d, DeliveryState::Failed, now)
                    .receipt(receipt.clone())
                    .error(e);
                self.with_event(d, t, EventKind::Failed)
            }
        };
        self.write(t).await.map(|_| ())
    }

    async fn publish_failed(&self, d: &Delivery, e: &Error, committed: bool) -> Result<()> {
        let now = self.clock.now();
        let key = d.account();
        let err = DeliveryError::from(e);
        let kind = e.kind();
        // After the commit point, only an error that says the create did not take effect
        // may be retried; anything else may have published.
        let maybe_sent = committed
            && !e.is_not_sent()
            && matches!(
                kind,
                ErrorKind::Unconfirmed | ErrorKind::Storage | ErrorKind::Internal
            );
        if kind == ErrorKind::Unconfirmed || maybe_sent {
            let t = Transition::new(d, DeliveryState::Unconfirmed, now)
                .run_at(now + std_to_chrono(self.retry.lookup_base))
                .error(err);
            let t = self.with_event(d, t, EventKind::Unconfirmed);
            return self.write(t).await.map(|_| ());
        }
        match kind {
            ErrorKind::RateLimited => {
                let until = e.retry_at().filter(|t| *t > now).unwrap_or_else(|| {
                    now + std_to_chrono(
                        e.retry_after()
                            .unwrap_or(self.retry.default_rate_limit_wait),
                    )
                });
                self.pause(&key, until);
                let at = until + std_to_chrono(self.retry.rate_limit_wait(Some(Duration::ZERO)));
                self.snooze(d, at, err, true).await
            }
            ErrorKind::Transient | ErrorKind::Storage => {
                if d.attempt >= d.max_attempts {
                    let e = DeliveryError {
                        message: format!("gave up after {} attempts: {}", d.attempt, err.message),
                        ..err
                    };
                    return self.fail(d, e, d.attempt).await;
                }
                let mut wait = self.retry.backoff(d.attempt);
                if let Some(told) = e.retry_after() {
                    wait = wait.max(told);
                }
                let at = now + std_to_chrono(wait);
                if let Some(deadline) = d.deadline
                    && at > deadline
                {
                    let e = DeliveryError {
                        message: format!("the deadline passes before a retry: {}", err.message),
                        ..err
                    };
                    return self.fail(d, e, d.attempt).await;
                }
                let t = Transition::new(d, DeliveryState::RetryWaiting, now)
                    .run_at(at)
                    .error(err);
                let t = self.with_event(d, t, EventKind::Retrying);
                self.write(t).await.map(|_| ())
            }
            ErrorKind::Unauthorized | ErrorKind::ReauthRequired => {
                let t = Transition::new(d, DeliveryState::NeedsReauth, now).error(err);
                let t = self.with_event(d, t, EventKind::NeedsReauth);
                self.write(t).await.map(|_| ())
            }
            ErrorKind::Validation | ErrorKind::InvalidInput => {
                self.fail(d, err, d.attempt.saturating_sub(1)).await
            }
            _ => self.fail(d, err, d.attempt).await,
        }
    }

    async fn poll_step(&self, d: Delivery, lost: &Arc<LeaseWatch>) -> Result<()> {
        let now = self.clock.now();
        let elapsed = d
            .committed_at
            .map_or(Duration::ZERO, |c| (now - c).to_std().unwrap_or_default());
        let (Some(publisher), Some(receipt)) = (
            self.publishers.get(&d.target.platform).cloned(),
            d.receipt.clone(),
        ) else {
            let t = Transition::new(&d, DeliveryState::Processing, now)
                .run_at(now + std_to_chrono(self.retry.poll_wait(elapsed)))
                .message(format!(
                    "no publisher for {} is registered here to check the status",
                    d.target.platform
                ));
            return self.write(t).await.map(|_| ());
        };
        let fence = d.lease.as_ref().map_or(d.fence, |l| l.fence);
        let ctx = self.context(&d, self.journal(&d, fence, lost));
        let result = publisher.status(&ctx, &receipt).await;
        if lost.is_lost() {
            return Ok(());
        }
        let now = self.clock.now();
        match result {
            Ok(r) if r.state == RemoteState::Processing => {
                if elapsed > self.retry.max_processing {
                    let e = DeliveryError::new(
                        ErrorKind::Platform,
                        format!("still processing after {elapsed:?}"),
                    );
                    return self.fail(&d, e, d.attempt).await;
                }
                let t = Transition::new(&d, DeliveryState::Processing, now)
                    .receipt(r)
                    .run_at(now + std_to_chrono(self.retry.poll_wait(elapsed)));
                self.write(t).await.map(|_| ())
            }
            Ok(r) => self.accepted(&d, r, false).await,
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                // The publisher reported processing but cannot check it: the platform has
                // accepted the post, which is all that can be known.
                let r = receipt.with_state(RemoteState::Published);
                self.accepted(&d, r, false).await
            }
            Err(e) => {
                let wait = e
                    .retry_after()
                    .unwrap_or_default()
                    .max(self.retry.poll_wait(elapsed));
                let t = Transition::new(&d, DeliveryState::Processing, now)
                    .run_at(now + std_to_chrono(wait))
                    .message(format!("status check failed: {e}"));
                self.write(t).await.map(|_| ())
            }
        }
    }

    async fn reconcile_step(&self, d: Delivery, lost: &Arc<LeaseWatch>) -> Result<()> {
        let now = self.clock.now();
        let since = d.committed_at.unwrap_or(d.updated_at);
        let elapsed = (now - since).to_std().unwrap_or_default();
        let Some(publisher) = self.publishers.get(&d.target.platform).cloned() else {
            return self
                .park(
                    &d,
                    format!("no publisher for {} is registered", d.target.platform),
                )
                .await;
        };
        let fence = d.lease.as_ref().map_or(d.fence, |l| l.fence);
        let ctx = self.context(&d, self.journal(&d, fence, lost));
        let result = publisher.lookup_recent(&ctx, &d.post, since).await;
        if lost.is_lost() {
            return Ok(());
        }
        let now = self.clock.now();
        let unsure = |why: String| -> (bool, String) { (elapsed < self.retry.lookup_window, why) };
        let (retry_later, why) = match result {
            Ok(LookupOutcome::Found(receipt)) => {
                tracing::info!(delivery = %d.id, "an unconfirmed publish was found on the platform");
                return self.accepted(&d, receipt, true).await;
            }
            Ok(LookupOutcome::Absent) => {
                let trusted_from = since + std_to_chrono(self.retry.absent_after.max(self.lease));
                if now < trusted_from {
                    let t = Transition::new(&d, DeliveryState::Unconfirmed, now)
                        .run_at(trusted_from)
                        .message(format!(
                            "not found yet; a create still in flight could land until {}: \
                             looking again then",
                            trusted_from.to_rfc3339()
                        ));
                    return self.write(t).await.map(|_| ());
                }
                let t = Transition::new(&d, DeliveryState::RetryWaiting, now)
                    .run_at(now)
                    .message("the lookup shows the post is absent: publishing again");
                let t = self.with_event(&d, t, EventKind::Retrying);
                return self.write(t).await.map(|_| ());
            }
            Ok(LookupOutcome::Unknown { reason }) => {
                unsure(format!("the lookup could not tell: {reason}"))
            }
            Err(e) if e.kind() == ErrorKind::Unsupported => (
                false,
                format!("{} cannot look up recent posts", d.target.platform),
            ),
            Err(e) => unsure(format!("the lookup failed: {e}")),
        };
        if retry_later {
            let t = Transition::new(&d, DeliveryState::Unconfirmed, now)
                .run_at(now + std_to_chrono(self.retry.lookup_wait(elapsed)))
                .message(why);
            return self.write(t).await.map(|_| ());
        }
        match self.policy {
            DeliveryPolicy::AtLeastOnce => {
                let t = Transition::new(&d, DeliveryState::RetryWaiting, now)
                    .run_at(now)
                    .message(format!("{why}; publishing again (at-least-once policy)"));
                let t = self.with_event(&d, t, EventKind::Retrying);
                self.write(t).await.map(|_| ())
            }
            _ => self.park(&d, why).await,
        }
    }

    /// Leaves an unconfirmed delivery for a person, saying why.
    async fn park(&self, d: &Delivery, why: String) -> Result<()> {
        let message = format!(
            "{why}. The post may or may not be on the platform: check the account, then \
             reschedule the delivery to publish it again or cancel it"
        );
        let t = Transition::new(d, DeliveryState::Unconfirmed, self.clock.now())
            .error(DeliveryError::new(ErrorKind::Unconfirmed, message));
        let t = self.with_event(d, t, EventKind::Unconfirmed);
        self.write(t).await.map(|_| ())
    }
}

async fn purge_loop(shared: Arc<Shared>, retention: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        let sleep = crate::clock::sleep(&*shared.clock, Duration::from_secs(3600));
        tokio::select! {
            _ = sleep => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let before = shared.clock.now() - std_to_chrono(retention);
        match shared.store.purge(before).await {
            Ok(r) => tracing::info!(
                deliveries = r.deliveries,
                events = r.events,
                "purged old deliveries and events"
            ),
            Err(e) => tracing::warn!(error = %e, "purging old deliveries failed"),
        }
    }
}

async fn renew_loop(shared: &Shared, id: Uuid, fence: i64, lost: &LeaseWatch) {
    let every = shared.lease / 3;
    loop {
        crate::clock::sleep(&*shared.clock, every).await;
        let until = shared.clock.now() + std_to_chrono(shared.lease);
        match shared.store.renew_lease(id, fence, until).await {
            Ok(true) => {}
            Ok(false) => {
                lost.lose();
                return;
            }
            Err(e) => tracing::warn!(delivery = %id, error = %e, "renewing a lease failed"),
        }
    }
}

/// Whether a worker lost its lease on a delivery, and a signal when it does.
#[derive(Debug, Default)]
struct LeaseWatch {
    flag: AtomicBool,
    signal: Notify,
}

impl LeaseWatch {
    fn lose(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.signal.notify_waiters();
    }

    fn is_lost(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Completes once the lease is lost.
    async fn lost(&self) {
        loop {
            let signal = self.signal.notified();
            tokio::pin!(signal);
            signal.as_mut().enable();
            if self.is_lost() {
                return;
            }
            signal.await;
        }
    }
}

/// The publish journal of one claimed delivery: commit points and checkpoints are fenced
/// store writes.
struct StoreJournal {
    store: Arc<dyn ScheduleStore>,
    clock: Arc<dyn Clock>,
    id: Uuid,
    fence: i64,
    lost: Arc<LeaseWatch>,
    committed: AtomicBool,
    /// The `preparing` transition, written with the first checkpoint saved before the commit
    /// point and dropped at the commit point.
    preparing: Mutex<Option<Transition>>,
    prepared: AtomicBool,
}

impl StoreJournal {
    /// Writes `t` (a move to `preparing`) with the first checkpoint, if one comes before the
    /// commit point.
    fn record_preparing(&self, t: Transition) {
        *self.preparing.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    }

    fn take_preparing(&self) -> Option<Transition> {
        self.preparing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

fn lease_lost(id: Uuid) -> Error {
    Error::new(
        ErrorKind::Storage,
        format!(
            "delivery {id} is no longer held by this worker (its lease expired, or it was \
             cancelled or rescheduled): nothing was sent"
        ),
    )
}

#[async_trait]
impl PublishJournal for StoreJournal {
    async fn commit_point(&self) -> Result<()> {
        if self.lost.is_lost() {
            return Err(lease_lost(self.id));
        }
        // Straight from `claimed` when nothing was saved before: the history shows no
        // `preparing` step for a publish that had none worth recording.
        self.take_preparing();
        match self
            .store
            .commit_point(self.id, self.fence, self.clock.now())
            .await?
        {
            Fenced::Applied(_) => {
                self.committed.store(true, Ordering::SeqCst);
                Ok(())
            }
            Fenced::Stale => {
                self.lost.lose();
                Err(lease_lost(self.id))
            }
        }
    }

    async fn save_checkpoint(&self, checkpoint: &serde_json::Value) -> Result<()> {
        if self.lost.is_lost() {
            return Err(lease_lost(self.id));
        }
        if let Some(mut t) = self.take_preparing() {
            t.at = self.clock.now();
            match self.store.transition(&t).await? {
                Fenced::Applied(_) => self.prepared.store(true, Ordering::SeqCst),
                Fenced::Stale => {
                    self.lost.lose();
                    return Err(lease_lost(self.id));
                }
            }
        }
        match self
            .store
            .save_checkpoint(self.id, self.fence, checkpoint, self.clock.now())
            .await?
        {
            Fenced::Applied(()) => Ok(()),
            Fenced::Stale => {
                self.lost.lose();
                Err(lease_lost(self.id))
            }
        }
    }
}

/// The pause of `key` in `m` if it lasts beyond `now` (an ended one is removed).
fn still_paused<K: std::hash::Hash + Eq>(
    m: &Mutex<HashMap<K, DateTime<Utc>>>,
    key: &K,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
    match m.get(key) {
        Some(t) if *t > now => Some(*t),
        Some(_) => {
            m.remove(key);
            None
        }
        None => None,
    }
}

/// Pauses `key` in `m` until `until`, or later if it already was.
fn extend_pause<K: std::hash::Hash + Eq>(
    m: &Mutex<HashMap<K, DateTime<Utc>>>,
    key: K,
    until: DateTime<Utc>,
) {
    let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
    let slot = m.entry(key).or_insert(until);
    *slot = (*slot).max(until);
}
