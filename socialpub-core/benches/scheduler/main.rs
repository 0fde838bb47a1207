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

mod claim;
mod drain;
mod enqueue;
mod graphile;
mod lag;
mod measure;
mod publisher;
mod setup;
mod stores;

use claim::claim_cost;
use drain::{drain, store_drain};
use enqueue::enqueue;
use graphile::graphile;
use lag::lag;
use setup::{DEFAULTS, EngineConfig, TUNED, TUNED_POSTGRES};
use socialpub_core::store::Synchronous;
use stores::{Kind, pg_url, server_settings};

const TENANT: &str = "bench";
const ACCOUNTS: usize = 1000;

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
    if args.iter().any(|a| a == "--no-account-slots") {
        setup::ACCOUNT_SLOTS.store(false, std::sync::atomic::Ordering::Relaxed);
    }
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
