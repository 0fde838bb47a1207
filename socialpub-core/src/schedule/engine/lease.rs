//! Lease renewal of a claimed delivery, and the signal that it was lost.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use uuid::Uuid;

use super::{Shared, std_to_chrono};
use crate::error::{Error, ErrorKind};

pub(super) async fn renew_loop(shared: &Shared, id: Uuid, fence: i64, lost: &LeaseWatch) {
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
pub(super) struct LeaseWatch {
    flag: AtomicBool,
    signal: Notify,
}

impl LeaseWatch {
    pub(super) fn lose(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.signal.notify_waiters();
    }

    pub(super) fn is_lost(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Completes once the lease is lost.
    pub(super) async fn lost(&self) {
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

pub(super) fn lease_lost(id: Uuid) -> Error {
    Error::new(
        ErrorKind::Storage,
        format!(
            "delivery {id} is no longer held by this worker (its lease expired, or it was \
             cancelled or rescheduled): nothing was sent"
        ),
    )
}
