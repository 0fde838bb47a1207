//! In-process crash soak: engines are killed at random points (their runtime is shut down
//! under them, dropping every task at whatever await it had reached, as SIGKILL would) while
//! deliveries are due and the fake platform answers with random failures. Afterwards none is
//! lost, none is published twice, and each one ended published, failed without a post, or
//! unconfirmed with at most one post.
#![cfg(feature = "testkit")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secrecy::SecretString;
use socialpub_core::auth::StaticToken;
use socialpub_core::clock::ManualClock;
use socialpub_core::schedule::policy::RetryPolicy;
use socialpub_core::schedule::{
    DeliveryFilter, DeliveryState, Engine, EngineBuilder, MemoryScheduleStore, ScheduleStore,
    Scheduler,
};
use socialpub_core::testkit::schedule::t0;
use socialpub_core::testkit::{FakeOutcome, FakePublisher};
use socialpub_core::{ErrorKind, Platform, Post, Target};

const TENANT: &str = "soak";

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
}

fn builder(
    store: &Arc<dyn ScheduleStore>,
    fake: &FakePublisher,
    clock: &ManualClock,
) -> EngineBuilder {
    let mut retry = RetryPolicy::default();
    retry.base = Duration::from_secs(5);
    retry.cap = Duration::from_secs(120);
    retry.lookup_base = Duration::from_secs(10);
    Engine::builder_arc(
        store.clone(),
        Arc::new(StaticToken(SecretString::from("t"))),
    )
    .publisher(Arc::new(fake.clone()))
    .clock(Arc::new(clock.clone()))
    .lease(Duration::from_secs(30))
    .publish_timeout(Duration::from_secs(300))
    .workers(2)
    .concurrency(8)
    .idle_poll(Duration::from_secs(3600))
    .retry(retry)
}

fn random_outcome(rng: &mut StdRng) -> FakeOutcome {
    match rng.random_range(0..10) {
        0 => FakeOutcome::Fail(ErrorKind::Transient),
        1 => FakeOutcome::RateLimited(Duration::from_secs(rng.random_range(1..60))),
        2 => FakeOutcome::CreateThenTimeout,
        3 => FakeOutcome::TimeoutWithoutCreate,
        4 => FakeOutcome::Processing,
        5 if rng.random_bool(0.2) => FakeOutcome::Fail(ErrorKind::Platform),
        6 if rng.random_bool(0.3) => FakeOutcome::Hang {
            created: rng.random_bool(0.5),
        },
        _ => FakeOutcome::Publish,
    }
}

/// Runs one soak from `seed` on the store `make_store` returns.
fn soak(seed: u64, make_store: impl Fn() -> Arc<dyn ScheduleStore>) -> Coverage {
    let mut rng = StdRng::seed_from_u64(seed);
    let main = runtime(1);
    let store = make_store();
    let clock = ManualClock::new(t0());
    let fake = FakePublisher::new(Platform::X).with_clock(Arc::new(clock.clone()));
    let accounts: Vec<String> = (0..8).map(|i| format!("acct-{i}")).collect();
    for a in &accounts {
        let script: Vec<FakeOutcome> = (0..60).map(|_| random_outcome(&mut rng)).collect();
        fake.script(a, script);
    }

    // 150 posts, one target each, with unique texts so lookups are exact.
    let api = builder(&store, &fake, &clock).build();
    let mut ids = Vec::new();
    for i in 0..150 {
        let account = &accounts[rng.random_range(0..accounts.len())];
        let post =
            Post::new(format!("soak post {i}")).with_target(Target::new(Platform::X, account));
        let at = t0() + chrono::Duration::seconds(rng.random_range(0..40));
        let s = main
            .block_on(api.schedule(TENANT, &post, at))
            .expect("schedule");
        ids.extend(s.deliveries);
    }

    // Twenty engines, each killed at a random moment.
    for _ in 0..20 {
        let rt = runtime(1);
        let engine = builder(&store, &fake, &clock).build();
        let handle = {
            let _enter = rt.enter();
            engine.start()
        };
        for _ in 0..rng.random_range(1..6) {
            clock.advance(chrono::Duration::seconds(rng.random_range(0..12)));
            std::thread::sleep(Duration::from_millis(rng.random_range(0..4)));
        }
        drop(handle);
        rt.shutdown_background();
    }

    // A last engine runs until every delivery has settled.
    let rt = runtime(2);
    let engine = builder(&store, &fake, &clock).build();
    let handle = {
        let _enter = rt.enter();
        engine.start()
    };
    let settled = |d: &socialpub_core::schedule::Delivery| {
        matches!(
            d.state,
            DeliveryState::Published | DeliveryState::Failed | DeliveryState::Cancelled
        ) || (d.state == DeliveryState::Unconfirmed && d.run_at.is_none() && d.lease.is_none())
    };
    let mut all = Vec::new();
    for _ in 0..4000 {
        all = main
            .block_on(store.list(&DeliveryFilter::tenant(TENANT).limit(10_000)))
            .expect("list");
        if all.iter().all(settled) {
            break;
        }
        clock.advance(chrono::Duration::seconds(2));
        std::thread::sleep(Duration::from_millis(1));
    }
    // A publish that hung with its lease lost waits for its timeout on a clock that no
    // longer moves: do not wait for it.
    main.block_on(handle.shutdown_within(Duration::from_secs(2)));
    rt.shutdown_background();

    assert_eq!(all.len(), ids.len(), "seed {seed}: no delivery lost");
    let mut creates: HashMap<String, usize> = HashMap::new();
    for p in fake.posts() {
        *creates.entry(p.key.unwrap_or_default()).or_default() += 1;
    }
    let mut by_state: HashMap<DeliveryState, usize> = HashMap::new();
    for d in &all {
        *by_state.entry(d.state).or_default() += 1;
        let n = creates.get(&d.id.to_string()).copied().unwrap_or(0);
        assert!(
            n <= 1,
            "seed {seed}: delivery {} was published {n} times",
            d.id
        );
        match d.state {
            DeliveryState::Published => {
                assert_eq!(n, 1, "seed {seed}: {} published without a post", d.id);
                let r = d.receipt.as_ref().expect("a receipt");
                let post = fake
                    .posts()
                    .into_iter()
                    .find(|p| p.key.as_deref() == Some(&d.id.to_string()))
                    .expect("its post");
                assert_eq!(r.remote_id, post.remote_id, "seed {seed}: the right post");
            }
            DeliveryState::Failed => {
                assert_eq!(n, 0, "seed {seed}: {} failed yet has a post", d.id)
            }
            DeliveryState::Unconfirmed => {}
            other => panic!("seed {seed}: delivery {} never settled: {other}", d.id),
        }
    }
    assert!(
        by_state
            .get(&DeliveryState::Published)
            .copied()
            .unwrap_or(0)
            > ids.len() / 2,
        "seed {seed}: most deliveries publish: {by_state:?}"
    );

    // What the run went through, so a soak that stopped exercising crashes fails.
    let mut seen = Coverage::default();
    for d in &all {
        let h = main.block_on(store.history(TENANT, d.id)).expect("history");
        for w in h.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            if b.message.as_deref().is_some_and(|m| m.contains("lease of")) {
                seen.rescued += 1;
                if b.to == DeliveryState::Unconfirmed {
                    seen.rescued_after_commit += 1;
                }
            }
            if a.to == DeliveryState::Unconfirmed && b.to == DeliveryState::Published {
                seen.found_by_lookup += 1;
            }
            if a.to == DeliveryState::Unconfirmed && b.to == DeliveryState::RetryWaiting {
                seen.absent_by_lookup += 1;
            }
        }
    }
    seen
}

#[derive(Debug, Default)]
struct Coverage {
    rescued: usize,
    rescued_after_commit: usize,
    found_by_lookup: usize,
    absent_by_lookup: usize,
}

impl std::ops::AddAssign for Coverage {
    fn add_assign(&mut self, o: Coverage) {
        self.rescued += o.rescued;
        self.rescued_after_commit += o.rescued_after_commit;
        self.found_by_lookup += o.found_by_lookup;
        self.absent_by_lookup += o.absent_by_lookup;
    }
}

fn assert_covered(c: &Coverage) {
    assert!(c.rescued > 0, "no lease was ever rescued: {c:?}");
    assert!(
        c.rescued_after_commit > 0,
        "no crash after a commit point: {c:?}"
    );
    assert!(c.found_by_lookup > 0, "no lookup found a post: {c:?}");
    assert!(
        c.absent_by_lookup > 0,
        "no lookup found a post absent: {c:?}"
    );
}

#[test]
fn killed_engines_lose_nothing_and_publish_nothing_twice() {
    let mut c = Coverage::default();
    for seed in 0..4 {
        c += soak(seed, || Arc::new(MemoryScheduleStore::new()));
    }
    assert_covered(&c);
}

#[cfg(feature = "sqlite")]
#[test]
fn killed_engines_lose_nothing_and_publish_nothing_twice_on_sqlite() {
    use socialpub_core::store::SqliteStore;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Coverage::default();
    for seed in 10..12 {
        let path = dir.path().join(format!("soak-{seed}.db"));
        let rt = runtime(1);
        let store: Arc<dyn ScheduleStore> = Arc::new(
            rt.block_on(SqliteStore::open(format!("sqlite://{}", path.display())))
                .expect("open"),
        );
        c += soak(seed, move || store.clone());
        drop(rt);
    }
    assert_covered(&c);
}
