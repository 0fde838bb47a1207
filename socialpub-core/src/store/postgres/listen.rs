//! Wake-ups across processes: `NOTIFY` on the way out, a `LISTEN`ing task on the way in.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions};
use tokio::sync::Notify;

use super::PostgresStore;
use crate::error::Result;
use crate::store::common::db;

impl PostgresStore {
    /// Wakes this process's workers, and (through `NOTIFY`, sent when `tx` commits) every
    /// other process's.
    pub(super) async fn notify_in(&self, conn: &mut PgConnection) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(&self.inner.channel)
            .execute(&mut *conn)
            .await
            .map_err(db("cannot notify workers"))?;
        Ok(())
    }

    pub(super) fn wake_local(&self) {
        self.inner.wake.notify_waiters();
    }

    /// Starts (once) the task that turns `NOTIFY`s from any process into wake-ups.
    pub(super) fn ensure_listener(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.inner.listener.get_or_init(|| {
            let options = self.inner.options.clone();
            let channel = self.inner.channel.clone();
            let wake = Arc::downgrade(&self.inner.wake);
            handle.spawn(listen(options, channel, wake))
        });
    }
}

/// Listens on `channel` until the store is dropped; reconnects after errors, waking workers so
/// they poll whatever a lost notification announced.
async fn listen(options: PgConnectOptions, channel: String, wake: Weak<Notify>) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to listen for wake-ups; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(&channel).await {
            tracing::warn!(error = %e, "cannot LISTEN for wake-ups; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.recv().await {
                Ok(_) => match wake.upgrade() {
                    Some(w) => w.notify_waiters(),
                    None => return,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "lost the wake-up listener; reconnecting");
                    match wake.upgrade() {
                        Some(w) => w.notify_waiters(),
                        None => return,
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}
