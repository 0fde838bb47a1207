//! Scheduler benchmarks (a bench binary, not timed tests): drain rate, enqueue rate, due-time
//! lag at a steady load, and claim cost against a growing table, for the in-memory, SQLite
//! and PostgreSQL stores; plus graphile-worker against the same PostgreSQL for comparison.
//!
//! ```text
//! cargo bench -p socialpub-core --features sqlite,postgres --bench scheduler -- \
//!     [all|drain|enqueue|lag|claim|graphile] [--stores memory,sqlite,postgres] [--n 100000]
//!     [--engine WORKERS,BATCH,CONCURRENCY] [--no-graphile]
//! ```
//!
//! PostgreSQL runs need `SOCIALPUB_BENCH_POSTGRES_URL` (or `SOCIALPUB_TEST_POSTGRES_URL`);
//! each run works in a fresh schema, dropped at the end. The graphile-worker comparison needs
//! `npm install` in `socialpub-core/benches/graphile`. Results are printed as Markdown rows;
//! docs/benchmarks.md records them.
#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use secrecy::SecretString;
use socialpub_core::auth::StaticToken;
use socialpub_core::platform::{Capabilities, Platform, TextCounting, TextRule};
use socialpub_core::schedule::{
    Delivery, DeliveryFilter, DeliveryState, Engine, MemoryScheduleStore, NewDelivery,
    ScheduleStore, Scheduler,
};
use socialpub_core::store::{PostgresStore, SqliteStore, Synchronous};
use socialpub_core::{Post, PublishContext, Publisher, Receipt, Result, Target, ValidationReport};
use uuid::Uuid;

const TENANT: &str = "bench";
const ACCOUNTS: usize = 1000;

// ---------------------------------------------------------------------------------------
// A publisher that does nothing but what the contract requires.

/// Records the commit point (as every adapter must, right before the create request) and
/// returns at once. Posts whose text is `due:<micros>` have their lag recorded.
#[derive(Debug, Default)]
struct Noop {
    calls: AtomicUsize,
    lags_us: Mutex<Vec<i64>>,
}

#[async_trait]
impl Publisher for Noop {
    fn platform(&self) -> Platform {
        Platform::X
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Platform::X, TextRule::new(280, TextCounting::Chars))
    }

    fn validate(&self, _post: &Post) -> ValidationReport {
        ValidationReport::new(Platform::X)
    }

    async fn publish(&self, ctx: &mut PublishContext, post: &Post) -> Result<Receipt> {
        if let Some(due) = post
            .text
            .strip_prefix("due:")
            .and_then(|s| s.parse::<i64>().ok())
        {
            let lag = Utc::now().timestamp_micros() - due;
            if let Ok(mut l) = self.lags_us.lock() {
                l.push(lag);
            }
        }
        ctx.commit_point().await?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Receipt::new(Platform::X, "noop", None))
    }
}

// ---------------------------------------------------------------------------------------
// Stores.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memory,
    Sqlite(Synchronous),
    Postgres,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Memory => "in-memory",
            Kind::Sqlite(Synchronous::Full) => "SQLite (synchronous=FULL)",
            Kind::Sqlite(_) => "SQLite (synchronous=NORMAL, default)",
            Kind::Postgres => "PostgreSQL",
        }
    }
}

/// A fresh store, and what to clean up after it.
struct Fresh {
    store: Arc<dyn ScheduleStore>,
    sqlite: Option<(SqliteStore, tempfile::TempDir)>,
    postgres: Option<PostgresStore>,
}

impl Fresh {
    async fn new(kind: Kind) -> Fresh {
        match kind {
            Kind::Memory => Fresh {
                store: Arc::new(MemoryScheduleStore::new()),
                sqlite: None,
                postgres: None,
            },
            Kind::Sqlite(sync) => {
                let dir = tempfile::tempdir().expect("tempdir");
                let s = SqliteStore::builder(dir.path().join("bench.db").display().to_string())
                    .synchronous(sync)
                    .open()
                    .await
                    .expect("open SQLite");
                Fresh {
                    store: Arc::new(s.clone()),
                    sqlite: Some((s, dir)),
                    postgres: None,
                }
            }
            Kind::Postgres => {
                let schema = format!("bench_{}", &Uuid::new_v4().simple().to_string()[..10]);
                let s = PostgresStore::builder(pg_url().expect("a PostgreSQL URL"))
                    .schema(schema)
                    .max_connections(16)
                    .connect()
                    .await
                    .expect("connect PostgreSQL");
                Fresh {
                    store: Arc::new(s.clone()),
                    sqlite: None,
                    postgres: Some(s),
                }
            }
        }
    }

    async fn published(&self) -> usize {
        self.store
            .list(
                &DeliveryFilter::tenant(TENANT)
                    .states([DeliveryState::Published])
                    .limit(usize::MAX >> 1),
            )
            .await
            .expect("list")
            .len()
    }

    async fn finish(self) {
        if let Some(pg) = self.postgres {
            let _ = sqlx::query(&format!("DROP SCHEMA \"{}\" CASCADE", pg.schema()))
                .execute(pg.pool())
                .await;
            pg.close().await;
        }
        if let Some((s, dir)) = self.sqlite {
            s.close().await;
            drop(dir);
        }
    }
}

/// The PostgreSQL URL, without TLS unless it asks for it: graphile-worker's client (node-pg)
/// connects without TLS by default and sqlx negotiates it when the server offers it, so an
/// unqualified URL would compare an encrypted connection with a plain one.
/// CPU time this process has used, user and system, all threads (from `/proc/self/stat`, in
/// ticks of 1/100 s, Linux's `USER_HZ`); `None` where there is no such file. A drain's rate
/// moves with what else the machine runs; the CPU it took moves far less.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of the file (utime, stime) are the 12th and 13th after the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The CPU time every process on the machine has used since boot (user, nice, system, irq,
/// softirq and steal from the first line of `/proc/stat`, in its ticks of 10 ms): on
/// PostgreSQL, the server's part of the work as well as the bench's.
fn machine_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| ticks.get(i).copied().unwrap_or(0))
        .sum::<u64>();
    Some(Duration::from_millis(busy * 10))
}

/// The CPU used since `before`, per item, in microseconds, for the results table.
fn cpu_per_item(before: Option<Duration>, now: Option<Duration>, n: usize) -> String {
    match (before, now) {
        (Some(b), Some(a)) => format!(
            "{:.1} µs CPU each",
            a.saturating_sub(b).as_secs_f64() * 1e6 / n as f64
        ),
        _ => "CPU not measured".to_owned(),
    }
}

fn pg_url() -> Option<String> {
    let url = [
        "SOCIALPUB_BENCH_POSTGRES_URL",
        "SOCIALPUB_TEST_POSTGRES_URL",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))?;
    Some(if url.contains("sslmode=") {
        url
    } else if url.contains('?') {
        format!("{url}&sslmode=disable")
    } else {
        format!("{url}?sslmode=disable")
    })
}

fn deliveries(n: usize, due: chrono::DateTime<Utc>, text: &str) -> Vec<Delivery> {
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
struct EngineConfig {
    label: &'static str,
    workers: usize,
    batch: usize,
    concurrency: usize,
}

const DEFAULTS: EngineConfig = EngineConfig {
    label: "engine defaults (2 workers, batch 64, concurrency 64)",
    workers: 2,
    batch: 64,
    concurrency: 64,
};

/// A setting for a bulk backlog: many deliveries in flight, so that many share each commit.
const TUNED: EngineConfig = EngineConfig {
    label: "4 workers, batch 256, concurrency 512",
    workers: 4,
    batch: 256,
    concurrency: 512,
};

/// The same for PostgreSQL, whose commits are shared by more writers at once: 1,024 in flight
/// drained faster than 512 and 2,048 here.
const TUNED_POSTGRES: EngineConfig = EngineConfig {
    label: "4 workers, batch 256, concurrency 1024",
    workers: 4,
    batch: 256,
    concurrency: 1024,
};

fn engine(store: Arc<dyn ScheduleStore>, publisher: Arc<Noop>, cfg: EngineConfig) -> Engine {
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
    .name("bench")
    .build()
}

// ---------------------------------------------------------------------------------------
// The benchmarks.

/// Bulk-inserts `n` due deliveries (the enqueue rate of `ScheduleStore::insert`, 1,000 per
/// call), then drains them with a no-op publisher, timing until the last delivery's
/// `published` state is committed.
async fn drain(kind: Kind, n: usize, cfg: EngineConfig) {
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
async fn store_drain(kind: Kind, n: usize, batch: usize, concurrency: usize) {
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

/// `Scheduler::schedule` of `n` single-target posts from 8 concurrent tasks (validation,
/// one transaction per post, a `scheduled` event each).
async fn enqueue(kind: Kind, n: usize) {
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

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Offers `rate` posts per second for `secs` seconds, each due 1 s after it is scheduled,
/// and measures the lag from its due time to the start of its publish.
async fn lag(kind: Kind, rate: u32, secs: u32, cfg: EngineConfig) {
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

/// Adds `m` deliveries due tomorrow (generated in SQL for the SQL stores), then 1,000 due
/// ones, and times 100 claims of 10.
async fn claim_cost(kind: Kind, m: usize) {
    let fresh = Fresh::new(kind).await;
    let future = Utc::now() + chrono::Duration::days(1);
    let post = Post::new("future").with_target(Target::new(Platform::X, "account-0"));
    let post_json = serde_json::to_string(&post).expect("json");
    let t = Instant::now();
    match (&fresh.sqlite, &fresh.postgres) {
        (Some((s, _)), _) => {
            let conn = rusqlite::Connection::open(s.path()).expect("connect");
            let base = future.timestamp_micros();
            conn.execute(
                "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < ?1)
                 INSERT INTO socialpub_deliveries (id, post_id, tenant, platform, account_id,
                     post, state, due_at, run_at, attempt, max_attempts, fence, had_failure,
                     created_at, updated_at)
                 SELECT randomblob(16), randomblob(16), ?2, 'x', 'account-' || (i % 1000), ?3,
                     'scheduled', ?4 + i, ?4 + i, 0, 5, 0, 0, ?5, ?5 FROM g",
                rusqlite::params![
                    m as i64,
                    TENANT,
                    post_json,
                    base,
                    Utc::now().timestamp_micros()
                ],
            )
            .expect("fill");
        }
        (_, Some(pg)) => {
            sqlx::query(
                "INSERT INTO socialpub_deliveries (id, post_id, tenant, platform, account_id,
                     post, state, due_at, run_at, attempt, max_attempts, fence, had_failure,
                     created_at, updated_at)
                 SELECT gen_random_uuid(), gen_random_uuid(), $2, 'x', 'account-' || (i % 1000),
                     $3::jsonb, 'scheduled', $4 + i * interval '1 microsecond',
                     $4 + i * interval '1 microsecond', 0, 5, 0, false, now(), now()
                 FROM generate_series(1, $1) i",
            )
            .bind(m as i64)
            .bind(TENANT)
            .bind(&post_json)
            .bind(future)
            .execute(pg.pool())
            .await
            .expect("fill");
            sqlx::query("ANALYZE socialpub_deliveries")
                .execute(pg.pool())
                .await
                .expect("analyze");
        }
        _ => {
            let all = deliveries(m, future, "future");
            for chunk in all.chunks(10_000) {
                fresh.store.insert(chunk, &[]).await.expect("fill");
            }
        }
    }
    let fill = t.elapsed();
    let due = deliveries(1000, Utc::now() - chrono::Duration::seconds(1), "due");
    fresh.store.insert(&due, &[]).await.expect("insert due");
    let mut times = Vec::with_capacity(100);
    let mut claimed = 0;
    for _ in 0..100 {
        let t = Instant::now();
        let got = fresh
            .store
            .claim_due("bench", Utc::now(), 10, Duration::from_secs(60))
            .await
            .expect("claim");
        times.push(t.elapsed().as_micros() as i64);
        claimed += got.len();
    }
    assert_eq!(claimed, 1000, "every due delivery claimed, no future one");
    times.sort_unstable();
    let mean = times.iter().sum::<i64>() as f64 / times.len() as f64 / 1000.0;
    println!(
        "| claim 10 | {} | {m} future rows (filled in {:.1} s) | mean {:.2} ms | p50 {:.2} ms | p99 {:.2} ms |",
        kind.label(),
        fill.as_secs_f64(),
        mean,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
    );
    fresh.finish().await;
}

/// graphile-worker 0.18 (Node) against the same server, default and batched settings.
fn graphile(n: usize) {
    let Some(url) = pg_url() else {
        println!("graphile-worker: no PostgreSQL URL");
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/graphile");
    if !dir.join("node_modules").exists() {
        println!(
            "graphile-worker: run `npm install` in {} first",
            dir.display()
        );
        return;
    }
    for mode in ["default", "batched"] {
        let out = Command::new("node")
            .current_dir(&dir)
            .args(["gw.mjs", &url, &n.to_string(), mode])
            .output()
            .expect("run node");
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        {
            Some(v) => println!(
                "| drain | graphile-worker 0.18.0 ({mode}, concurrency 10) | {n} | {}/s | {} s | bulk insert {}/s | machine {} | autovacuums of its jobs table during the drain: {} |",
                v["drain_per_s"],
                v["drain_s"],
                v["enqueue_per_s"],
                v["machine_cpu_us_per_job"]
                    .as_f64()
                    .map_or("CPU not measured".to_owned(), |c| format!(
                        "{c:.1} µs CPU each"
                    )),
                v["jobs_autovacuums"]
                    .as_i64()
                    .map_or("not counted".to_owned(), |c| c.to_string())
            ),
            None => println!(
                "graphile-worker {mode} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

/// Flushes PostgreSQL's dirty pages now (when the role may: `pg_checkpoint`), so that a
/// checkpoint of earlier benchmarks' writes does not run during a latency measurement: its
/// disk traffic slows every commit on this machine's one disk, SQLite's included.
async fn checkpoint() {
    let Some(url) = pg_url() else {
        return;
    };
    let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await else {
        return;
    };
    if let Err(e) = sqlx::query("CHECKPOINT").execute(&mut conn).await {
        eprintln!("no CHECKPOINT before the lag run ({e}); grant pg_checkpoint to the role");
    }
}

async fn server_settings() {
    let Some(url) = pg_url() else {
        return;
    };
    let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await else {
        return;
    };
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting || COALESCE(' ' || unit, '') FROM pg_settings
         WHERE name IN ('server_version', 'shared_buffers', 'synchronous_commit', 'fsync',
                        'max_connections', 'wal_level', 'commit_delay')
         ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    let mut s: Vec<String> = rows.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let tls: Option<bool> =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_optional(&mut conn)
            .await
            .ok()
            .flatten();
    s.push(format!(
        "bench connections use TLS: {}",
        tls.unwrap_or(false)
    ));
    println!("PostgreSQL: {}", s.join(", "));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args
        .iter()
        .find(|a| !a.starts_with("--") && !a.contains(',') && a.parse::<usize>().is_err())
        .cloned()
        .unwrap_or_else(|| "all".to_owned());
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let n: usize = flag("--n").and_then(|v| v.parse().ok()).unwrap_or(100_000);
    // `--engine W,B,C`: drain (and lag) with W workers, claims of B and C publishes in
    // flight only.
    let custom = flag("--engine").and_then(|v| {
        let parts: Vec<usize> = v.split(',').filter_map(|p| p.parse().ok()).collect();
        match parts[..] {
            [workers, batch, concurrency] => Some(EngineConfig {
                label: Box::leak(
                    format!("{workers} workers, batch {batch}, concurrency {concurrency}")
                        .into_boxed_str(),
                ),
                workers,
                batch,
                concurrency,
            }),
            _ => None,
        }
    });
    let stores = flag("--stores").unwrap_or_else(|| "memory,sqlite,postgres".to_owned());
    let mut kinds = Vec::new();
    for s in stores.split(',') {
        match s {
            "memory" => kinds.push(Kind::Memory),
            "sqlite" => kinds.push(Kind::Sqlite(Synchronous::Normal)),
            "sqlite-full" => kinds.push(Kind::Sqlite(Synchronous::Full)),
            "postgres" if pg_url().is_some() => kinds.push(Kind::Postgres),
            "postgres" => eprintln!("skipping PostgreSQL: set SOCIALPUB_BENCH_POSTGRES_URL"),
            other => eprintln!("unknown store {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!(
            "machine: {} cores; {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(
                    |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                        .split(':')
                        .nth(1)
                        .unwrap_or("")
                        .trim()
                        .to_owned())
                )
                .unwrap_or_default()
        );
        if kinds.contains(&Kind::Postgres) {
            server_settings().await;
        }
        let all = what == "all";
        // Lag first: after the drains PostgreSQL spends minutes checkpointing their gigabytes
        // of write-ahead log, and that disk traffic (shared with SQLite here) would be
        // measured as the scheduler's lag.
        if all || what == "lag" {
            for &k in &kinds {
                lag(k, 500, 20, custom.unwrap_or(DEFAULTS)).await;
            }
        }
        if all || what == "drain" {
            for &k in &kinds {
                match custom {
                    Some(cfg) => drain(k, n, cfg).await,
                    None => {
                        drain(k, n, DEFAULTS).await;
                        let tuned = if k == Kind::Postgres {
                            TUNED_POSTGRES
                        } else {
                            TUNED
                        };
                        drain(k, n, tuned).await;
                    }
                }
            }
        }
        if all || what == "store" {
            for &k in &kinds {
                store_drain(k, n, 32, 16).await;
                store_drain(k, n, 128, 128).await;
                store_drain(k, n, 256, 512).await;
            }
        }
        let skip_graphile = args.iter().any(|a| a == "--no-graphile");
        if (all || what == "graphile" || (what == "drain" && !skip_graphile))
            && kinds.contains(&Kind::Postgres)
        {
            graphile(n);
        }
        if all || what == "enqueue" {
            for &k in &kinds {
                enqueue(k, n.min(20_000)).await;
            }
        }
        if all || what == "claim" {
            for &k in &kinds {
                claim_cost(k, 1_000).await;
                claim_cost(k, 1_000_000).await;
            }
        }
    });
}
