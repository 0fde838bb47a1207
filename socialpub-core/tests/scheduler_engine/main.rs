//! The scheduler engine against the in-memory store and the scripted fake publisher, on a
//! manual clock: nothing here waits for real lease or backoff durations.
#![cfg(feature = "testkit")]

mod account_slots;
mod cancel;
mod claims;
mod crashes;
mod publishing;
mod rate_limits;
mod retention;
mod retries;
#[cfg(feature = "sqlite")]
mod sqlite;
mod tokens;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use socialpub_core::auth::{AccessTokens, StaticToken};
use socialpub_core::clock::ManualClock;
use socialpub_core::schedule::policy::RetryPolicy;
use socialpub_core::schedule::{
    Delivery, DeliveryState, Engine, EngineBuilder, Event, EventKind, MemoryScheduleStore,
    ScheduleStore, Scheduler,
};
use socialpub_core::testkit::FakePublisher;
use socialpub_core::testkit::schedule::t0;
use socialpub_core::{Platform, Post, Target};
use tokio::sync::broadcast;

const TENANT: &str = "acme";
const LEASE: Duration = Duration::from_secs(60);

/// No jitter, 10 s base backoff, 30 s before the first lookup.
fn test_policy() -> RetryPolicy {
    let mut p = RetryPolicy::default();
    p.base = Duration::from_secs(10);
    p.jitter = false;
    p.rate_limit_jitter = Duration::ZERO;
    p.lookup_base = Duration::from_secs(30);
    p
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

struct Rig {
    clock: ManualClock,
    store: Arc<dyn ScheduleStore>,
    fake: FakePublisher,
}

impl Rig {
    fn new() -> Self {
        Self::on(Arc::new(MemoryScheduleStore::new()))
    }

    fn on(store: Arc<dyn ScheduleStore>) -> Self {
        let clock = ManualClock::new(t0());
        Rig {
            store,
            fake: FakePublisher::new(Platform::X).with_clock(Arc::new(clock.clone())),
            clock,
        }
    }

    fn builder(&self) -> EngineBuilder {
        self.builder_with(Arc::new(StaticToken(SecretString::from("token"))))
    }

    fn builder_with(&self, tokens: Arc<dyn AccessTokens>) -> EngineBuilder {
        Engine::builder_arc(self.store.clone(), tokens)
            .publisher(Arc::new(self.fake.clone()))
            .clock(Arc::new(self.clock.clone()))
            .lease(LEASE)
            .idle_poll(Duration::from_secs(3600))
            .retry(test_policy())
    }

    fn now(&self) -> DateTime<Utc> {
        use socialpub_core::clock::Clock;
        self.clock.now()
    }

    async fn get(&self, id: uuid::Uuid) -> Delivery {
        self.store
            .get(TENANT, id)
            .await
            .expect("get")
            .expect("the delivery exists")
    }

    async fn wait_state(&self, id: uuid::Uuid, state: DeliveryState) -> Delivery {
        let mut last = None;
        for _ in 0..3000 {
            let d = self.get(id).await;
            if d.state == state {
                return d;
            }
            last = Some(d.state);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("delivery {id} never reached {state}; it is {last:?}");
    }
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..3000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Lets the engine's tasks run for a while without moving the clock.
async fn settle() {
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Schedules a post to one account at `at` and returns its one delivery.
async fn schedule_one(engine: &Engine, text: &str, account: &str, at: DateTime<Utc>) -> uuid::Uuid {
    engine
        .schedule(TENANT, &post(text, &[account]), at)
        .await
        .expect("schedule")
        .deliveries[0]
}

fn post(text: &str, accounts: &[&str]) -> Post {
    let mut p = Post::new(text);
    for a in accounts {
        p = p.with_target(Target::new(Platform::X, *a));
    }
    p
}

async fn next_event(rx: &mut broadcast::Receiver<Event>, kind: EventKind) -> Event {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind} event"))
            .expect("event channel open");
        if e.kind == kind {
            return e;
        }
    }
}

fn path(history: &[socialpub_core::schedule::HistoryEntry]) -> Vec<DeliveryState> {
    history.iter().map(|h| h.to).collect()
}
