//! The stores under test, each fresh for a run, and the PostgreSQL server they share.

use std::sync::Arc;

use super::TENANT;
use socialpub_core::schedule::{DeliveryFilter, DeliveryState, MemoryScheduleStore, ScheduleStore};
use socialpub_core::store::{PostgresStore, SqliteStore, Synchronous};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Memory,
    Sqlite(Synchronous),
    Postgres,
}

impl Kind {
    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::Memory => "in-memory",
            Kind::Sqlite(Synchronous::Full) => "SQLite (synchronous=FULL)",
            Kind::Sqlite(_) => "SQLite (synchronous=NORMAL, default)",
            Kind::Postgres => "PostgreSQL",
        }
    }
}

/// A fresh store, and what to clean up after it.
pub(super) struct Fresh {
    pub(super) store: Arc<dyn ScheduleStore>,
    pub(super) sqlite: Option<(SqliteStore, tempfile::TempDir)>,
    pub(super) postgres: Option<PostgresStore>,
}

impl Fresh {
    pub(super) async fn new(kind: Kind) -> Fresh {
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

    pub(super) async fn published(&self) -> usize {
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

    pub(super) async fn finish(self) {
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

pub(super) fn pg_url() -> Option<String> {
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

/// Flushes PostgreSQL's dirty pages now (when the role may: `pg_checkpoint`), so that a
/// checkpoint of earlier benchmarks' writes does not run during a latency measurement: its
/// disk traffic slows every commit on this machine's one disk, SQLite's included.
pub(super) async fn checkpoint() {
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

pub(super) async fn server_settings() {
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
