//! The engine's settings, their defaults, and the assembly of an [`Engine`] from them.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, broadcast};
use uuid::Uuid;

use super::slots::{AccountSlots, LINGER};
use super::{Engine, Shared, std_to_chrono};
use crate::auth::{AccessTokens, TokenManager};
use crate::clock::{Clock, SystemClock};
use crate::platform::Platform;
use crate::publish::Publisher;
use crate::schedule::pacing::Pacer;
use crate::schedule::policy::{DeliveryPolicy, Quota, RetryPolicy};
use crate::schedule::store::ScheduleStore;

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
            account_slots: true,
            account_slot_linger: LINGER,
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
    account_slots: bool,
    account_slot_linger: Duration,
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
    ///
    /// [`EventKind::TokenExpiresSoon`]: crate::schedule::EventKind::TokenExpiresSoon
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

    /// Whether a publish takes its account's slot in the store (default `true`), so that at
    /// most one publish per account is in flight across every engine sharing the store, not
    /// only in this one: a thread's posts keep their order and the platform's per-account
    /// limits hold with many processes. The engine keeps a slot it took while more publishes to
    /// the account follow (giving it up half a second after the last), so a backlog costs one
    /// write to take each account's slot and one to give it up, plus one per third of the
    /// lease; turn it off only when this engine alone publishes to the store's accounts.
    pub fn account_slots(mut self, on: bool) -> Self {
        self.account_slots = on;
        self
    }

    /// How long (real time) the engine keeps an account's slot after its last publish to the
    /// account, for the next one (default 500 ms). Longer saves writes for accounts published
    /// to now and then, but keeps other engines waiting that much longer; zero gives it up at
    /// once. The engine gives up every slot it holds when it shuts down.
    pub fn account_slot_linger(mut self, linger: Duration) -> Self {
        self.account_slot_linger = linger;
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
        let slots = self.account_slots.then(|| {
            Arc::new(AccountSlots::new(
                self.store.clone(),
                self.clock.clone(),
                self.lease,
                self.account_slot_linger,
            ))
        });
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
                slots,
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
