//! The publish journal of a claimed delivery, and the publish context that carries it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use uuid::Uuid;

use super::Shared;
use super::lease::{LeaseWatch, lease_lost};
use crate::clock::Clock;
use crate::error::Result;
use crate::publish::{PublishContext, PublishJournal};
use crate::schedule::delivery::{Delivery, Fenced, Transition};
use crate::schedule::store::ScheduleStore;

impl Shared {
    pub(super) fn journal(
        &self,
        d: &Delivery,
        fence: i64,
        lost: &Arc<LeaseWatch>,
    ) -> Arc<StoreJournal> {
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

    pub(super) fn context(&self, d: &Delivery, journal: Arc<StoreJournal>) -> PublishContext {
        PublishContext::new(d.account(), self.tokens.clone())
            .with_journal(journal)
            .with_checkpoint(d.checkpoint.clone())
            .with_attempt(d.attempt.max(1))
            .with_idempotency_key(d.id.to_string())
    }
}

/// The publish journal of one claimed delivery: commit points and checkpoints are fenced
/// store writes.
pub(super) struct StoreJournal {
    store: Arc<dyn ScheduleStore>,
    clock: Arc<dyn Clock>,
    pub(super) id: Uuid,
    fence: i64,
    pub(super) lost: Arc<LeaseWatch>,
    pub(super) committed: AtomicBool,
    /// The `preparing` transition, written with the first checkpoint saved before the commit
    /// point and dropped at the commit point.
    preparing: Mutex<Option<Transition>>,
    pub(super) prepared: AtomicBool,
}

impl StoreJournal {
    /// Writes `t` (a move to `preparing`) with the first checkpoint, if one comes before the
    /// commit point.
    pub(super) fn record_preparing(&self, t: Transition) {
        *self.preparing.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    }

    fn take_preparing(&self) -> Option<Transition> {
        self.preparing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
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
