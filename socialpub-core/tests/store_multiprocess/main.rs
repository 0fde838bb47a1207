//! Worker processes against one database: several engines in separate processes drain
//! deliveries exactly once (PostgreSQL), and workers killed with SIGKILL at random points
//! lose nothing and publish nothing twice (SQLite and PostgreSQL).
//!
//! The test binary re-runs itself as a worker (`SOCIALPUB_TEST_CHILD=worker`, running only
//! the `child_worker` test). Workers publish through a counting publisher that appends every
//! post it "creates" to a log file shared by all processes — the platform's side of the
//! story, which the checks read afterwards.
//!
//! PostgreSQL tests are ignored unless asked for (`--ignored` or `--include-ignored`, as
//! `.ci/run` does), so a run without a server shows them as ignored, never as passed; asked
//! for, they read `SOCIALPUB_TEST_POSTGRES_URL` and fail without it.
#![cfg(all(feature = "sqlite", feature = "postgres"))]
#![allow(clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::SecretString;
use socialpub_core::auth::StaticToken;
use socialpub_core::platform::{Capabilities, Platform, TextCounting, TextRule};
use socialpub_core::schedule::policy::RetryPolicy;
use socialpub_core::schedule::{Engine, ScheduleStore};
use socialpub_core::store::{PostgresStore, SqliteStore};
use socialpub_core::{
    LookupOutcome, Post, PublishContext, Publisher, Receipt, Result, ValidationReport,
};
use uuid::Uuid;

mod account_slots;
mod cluster;

use cluster::{Cluster, assert_exactly_once, schedule};

/// The multi-process tests share two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TENANT: &str = "acme";

// ---------------------------------------------------------------------------------------
// Where the deliveries live.

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "SQLite",
            Backend::Postgres { .. } => "PostgreSQL",
        }
    }

    fn to_env(&self, cmd: &mut Command) {
        match self {
            Backend::Sqlite(path) => {
                cmd.env("SP_BACKEND", "sqlite").env("SP_TARGET", path);
            }
            Backend::Postgres { url, schema } => {
                cmd.env("SP_BACKEND", "postgres")
                    .env("SP_TARGET", url)
                    .env("SP_SCHEMA", schema);
            }
        }
    }

    fn from_env() -> Backend {
        let target = std::env::var("SP_TARGET").expect("SP_TARGET");
        match std::env::var("SP_BACKEND").as_deref() {
            Ok("sqlite") => Backend::Sqlite(PathBuf::from(target)),
            _ => Backend::Postgres {
                url: target,
                schema: std::env::var("SP_SCHEMA").expect("SP_SCHEMA"),
            },
        }
    }

    async fn open(&self) -> Arc<dyn ScheduleStore> {
        match self {
            Backend::Sqlite(path) => Arc::new(
                SqliteStore::open(path.display().to_string())
                    .await
                    .expect("open SQLite"),
            ),
            Backend::Postgres { url, schema } => Arc::new(
                PostgresStore::builder(url.clone())
                    .schema(schema.clone())
                    .max_connections(8)
                    .connect()
                    .await
                    .expect("connect PostgreSQL"),
            ),
        }
    }

    /// `(state, count)` of every delivery.
    async fn counts(&self) -> BTreeMap<String, i64> {
        let sql = "SELECT state, COUNT(*) FROM socialpub_deliveries GROUP BY state";
        let rows: Vec<(String, i64)> = match self {
            Backend::Sqlite(path) => {
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .expect("connect");
                let mut stmt = conn.prepare(sql).expect("count");
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .expect("count")
                    .collect::<Result<_, _>>()
                    .expect("count")
            }
            Backend::Postgres { url, schema } => {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
                    .await
                    .expect("connect");
                sqlx::query(&format!("SET search_path = \"{schema}\""))
                    .execute(&mut conn)
                    .await
                    .expect("schema");
                sqlx::query_as(sql)
                    .fetch_all(&mut conn)
                    .await
                    .expect("count")
            }
        };
        rows.into_iter().collect()
    }

    /// How many history rows went from `from` to `to`.
    async fn transitions(&self, store: &dyn ScheduleStore, ids: &[Uuid]) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for id in ids {
            for h in store.history(TENANT, *id).await.expect("history") {
                let key = format!(
                    "{}->{}",
                    h.from.map_or("new", |s| s.as_str()),
                    h.to.as_str()
                );
                *out.entry(key).or_default() += 1;
            }
        }
        out
    }

    async fn drop_schema(&self) {
        if let Backend::Postgres { url, schema } = self {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
                .await
                .expect("connect");
            sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(&mut conn)
                .await
                .expect("drop schema");
        }
    }
}

fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("SOCIALPUB_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => panic!(
            "{test} needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL (.ci/postgres.sh starts a \
             server and prints it)"
        ),
    }
}

fn fresh_schema(test: &str) -> String {
    format!("t_{test}_{}", &Uuid::new_v4().simple().to_string()[..10])
}

// ---------------------------------------------------------------------------------------
// The worker process.

/// A publisher whose "platform" is an append-only log shared by every process: one line per
/// post created, keyed by the delivery id (the idempotency key).
#[derive(Debug)]
struct CountingPublisher {
    log: PathBuf,
    worker: String,
    /// Most milliseconds each half of a publish takes (before and after the commit point).
    delay_ms: u64,
    /// Chance in 1,000 that the process kills itself with SIGKILL right after the commit
    /// point, and again right after the create: the two windows that matter.
    self_kill_permille: u32,
    /// Where to append each publish's commit window (commit point to created), if anywhere.
    windows: Option<PathBuf>,
}

impl CountingPublisher {
    fn created(&self, key: &str) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').next() == Some(key))
    }

    fn create(&self, key: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the publish log");
        // One write of a short line to an O_APPEND file: atomic between processes.
        f.write_all(format!("{key} {}\n", self.worker).as_bytes())
            .expect("append to the publish log");
    }

    /// Appends `start end worker` (µs since the epoch) to the windows file, if there is one.
    fn window(&self, start: u128) {
        let Some(path) = &self.windows else {
            return;
        };
        let end = micros_now();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the windows log");
        f.write_all(format!("{start} {end} {}\n", self.worker).as_bytes())
            .expect("append to the windows log");
    }

    async fn pause(&self) {
        if self.delay_ms > 0 {
            let ms = rand::rng().random_range(0..=self.delay_ms);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    fn maybe_die(&self) {
        if self.self_kill_permille > 0
            && rand::rng().random_range(0..1000) < self.self_kill_permille
        {
            let _ = Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(30));
        }
    }
}

#[async_trait]
impl Publisher for CountingPublisher {
    fn platform(&self) -> Platform {
        Platform::X
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::new(Platform::X, TextRule::new(280, TextCounting::Chars));
        c.lookup = true;
        c
    }

    fn validate(&self, _post: &Post) -> ValidationReport {
        ValidationReport::new(Platform::X)
    }

    async fn publish(&self, ctx: &mut PublishContext, _post: &Post) -> Result<Receipt> {
        let key = ctx.idempotency_key().unwrap_or_default().to_owned();
        ctx.access_token().await?;
        self.pause().await;
        ctx.commit_point().await?;
        let start = micros_now();
        self.maybe_die();
        self.pause().await;
        self.create(&key);
        self.window(start);
        self.maybe_die();
        Ok(Receipt::new(Platform::X, format!("post-{key}"), None))
    }

    async fn lookup_recent(
        &self,
        ctx: &PublishContext,
        _post: &Post,
        _since: DateTime<Utc>,
    ) -> Result<LookupOutcome> {
        let key = ctx.idempotency_key().unwrap_or_default();
        Ok(if self.created(key) {
            LookupOutcome::Found(Receipt::new(Platform::X, format!("post-{key}"), None))
        } else {
            LookupOutcome::Absent
        })
    }
}

/// Microseconds since the epoch, on the clock every process shares.
fn micros_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The default policy, except that an absent lookup is trusted 3 s after the commit point
/// (the default waits 5 minutes for a slow create to land; a SIGKILLed worker sends
/// nothing late, and the workers' publishes take under 0.1 s).
fn retry_policy() -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    policy.absent_after = Duration::from_secs(3);
    policy
}

/// Runs a worker engine until killed, when this binary was started as one.
#[test]
fn child_worker() {
    if std::env::var("SOCIALPUB_TEST_CHILD").as_deref() != Ok("worker") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Never outlive the test that started us.
        let parent = std::os::unix::process::parent_id();
        let started = Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if std::os::unix::process::parent_id() != parent
                    || started.elapsed() > Duration::from_secs(300)
                {
                    std::process::exit(3);
                }
            }
        });
        let name = std::env::var("SP_NAME").expect("SP_NAME");
        let store = Backend::from_env().open().await;
        let publisher = CountingPublisher {
            log: PathBuf::from(std::env::var("SP_LOG").expect("SP_LOG")),
            worker: name.clone(),
            delay_ms: env_u64("SP_DELAY_MS", 0),
            self_kill_permille: env_u64("SP_SELF_KILL", 0) as u32,
            windows: std::env::var("SP_WINDOWS").ok().map(PathBuf::from),
        };
        let engine = Engine::builder_arc(
            store,
            Arc::new(StaticToken(SecretString::from("test-token".to_owned()))),
        )
        .publisher(Arc::new(publisher))
        .workers(2)
        .batch(env_u64("SP_BATCH", 32) as usize)
        .concurrency(env_u64("SP_CONCURRENCY", 16) as usize)
        .lease(Duration::from_millis(env_u64("SP_LEASE_MS", 1000)))
        .idle_poll(Duration::from_millis(200))
        .retry(retry_policy())
        .name(name.clone())
        .build();
        let _handle = engine.start();
        if let Ok(ready) = std::env::var("SP_READY") {
            std::fs::write(ready, b"ready").expect("ready file");
        }
        std::future::pending::<()>().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn four_processes_publish_ten_thousand_deliveries_exactly_once() {
    let Some(url) = postgres_url("four_processes_publish_ten_thousand_deliveries_exactly_once")
    else {
        return;
    };
    let _serial = SERIAL.lock().await;
    const N: usize = 10_000;
    let backend = Backend::Postgres {
        url,
        schema: fresh_schema("mp4"),
    };
    let store = backend.open().await;
    let mut cluster = Cluster::new(
        backend.clone(),
        tempfile::tempdir().expect("tempdir"),
        &[
            ("SP_BATCH", "64"),
            ("SP_CONCURRENCY", "64"),
            ("SP_LEASE_MS", "10000"),
        ],
    );
    let names: Vec<String> = (0..4).map(|_| cluster.spawn(&[])).collect();
    cluster.wait_ready(&names);

    let started = Instant::now();
    let ids = schedule(&*store, N, 500, Duration::ZERO).await;
    let counts = cluster
        .wait_until_published(N as i64, Duration::from_secs(110))
        .await;
    let took = started.elapsed();
    cluster.kill_all();
    assert_eq!(counts.get("published"), Some(&(N as i64)), "{counts:?}");

    assert_exactly_once(&cluster, &*store, &ids).await;
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    for (_, (_, worker)) in cluster.creates() {
        *per_worker.entry(worker).or_default() += 1;
    }
    eprintln!("{N} deliveries by 4 processes in {took:?}: {per_worker:?}");
    assert!(per_worker.len() >= 2, "the work was shared: {per_worker:?}");
    backend.drop_schema().await;
}

/// Two workers publish 1,000 deliveries due within 3 s; a chaos loop SIGKILLs one of them at
/// a random moment 20 times (restarting it), while the workers also kill themselves now and
/// then right after the commit point or right after the create. Then one clean worker
/// settles what is left. Nothing may be lost or published twice.
async fn crash_soak(backend: Backend) {
    const N: usize = 1000;
    const KILLS: usize = 20;
    let store = backend.open().await;
    let mut cluster = Cluster::new(
        backend.clone(),
        tempfile::tempdir().expect("tempdir"),
        &[
            ("SP_BATCH", "8"),
            ("SP_CONCURRENCY", "8"),
            ("SP_LEASE_MS", "1000"),
            ("SP_DELAY_MS", "40"),
            ("SP_SELF_KILL", "3"),
        ],
    );
    let ids = schedule(&*store, N, 50, Duration::from_secs(3)).await;
    let first: Vec<String> = (0..2).map(|_| cluster.spawn(&[])).collect();
    cluster.wait_ready(&first);

    let mut rng = rand::rng();
    let mut self_kills = 0;
    let mut kills = 0;
    let mut killed_while_due = 0;
    while kills < KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..350))).await;
        let dead = cluster.reap();
        self_kills += dead;
        for _ in 0..dead {
            cluster.spawn(&[]);
        }
        if cluster.children.is_empty() {
            continue;
        }
        let counts = backend.counts().await;
        if counts.get("published").copied().unwrap_or(0) < N as i64 {
            killed_while_due += 1;
        }
        let victim = rng.random_range(0..cluster.children.len());
        cluster.kill(victim);
        kills += 1;
        cluster.spawn(&[]);
    }
    cluster.kill_all();
    self_kills += cluster.reap();

    // A clean worker settles everything: rescues expired leases, reconciles unconfirmed
    // deliveries by lookup, publishes the rest.
    cluster.spawn(&[
        ("SP_SELF_KILL", "0"),
        ("SP_DELAY_MS", "0"),
        ("SP_CONCURRENCY", "64"),
    ]);
    let counts = cluster
        .wait_until_published(N as i64, Duration::from_secs(60))
        .await;
    cluster.kill_all();
    assert_eq!(counts.get("published"), Some(&(N as i64)), "{counts:?}");
    assert_exactly_once(&cluster, &*store, &ids).await;

    let transitions = backend.transitions(&*store, &ids).await;
    eprintln!(
        "{}: {kills} SIGKILLs by the driver ({killed_while_due} while deliveries were \
         due), {self_kills} at failpoints; transitions: {:?}",
        backend.name(),
        transitions
            .iter()
            .filter(|(k, _)| k.contains("unconfirmed") || k.contains("retry"))
            .collect::<BTreeMap<_, _>>()
    );
    assert!(killed_while_due >= KILLS / 2, "the kills hit a busy system");
    backend.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_soak_sqlite() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    crash_soak(Backend::Sqlite(dir.path().join("soak.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set SOCIALPUB_TEST_POSTGRES_URL, then run with --include-ignored"]
async fn crash_soak_postgres() {
    let Some(url) = postgres_url("crash_soak_postgres") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    crash_soak(Backend::Postgres {
        url,
        schema: fresh_schema("soak"),
    })
    .await;
}
