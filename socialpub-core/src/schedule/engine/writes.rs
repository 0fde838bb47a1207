//! The fenced state writes every step makes, with their events.

use chrono::{DateTime, Utc};

use super::Shared;
use crate::error::Result;
use crate::schedule::delivery::{Delivery, DeliveryError, DeliveryState, Fenced, Transition};
use crate::schedule::events::{Event, EventKind};

impl Shared {
    /// Writes `t`; `None` when the lease was lost (then the caller stops). Broadcasts its
    /// event.
    pub(super) async fn write(&self, mut t: Transition) -> Result<Option<Delivery>> {
        match self.store.transition(&t).await? {
            Fenced::Applied(d) => {
                if let Some(e) = t.event.take() {
                    let _ = self.events.send(*e);
                }
                Ok(Some(d))
            }
            Fenced::Stale => {
                tracing::info!(delivery = %t.id, to = %t.to, "lease lost; the write was refused");
                Ok(None)
            }
        }
    }

    /// A transition of `d` with an event of `kind` describing the state it leads to.
    pub(super) fn with_event(&self, d: &Delivery, t: Transition, kind: EventKind) -> Transition {
        let e = Event::for_transition(d, &t, kind);
        t.event(e)
    }

    pub(super) async fn fail(
        &self,
        d: &Delivery,
        error: DeliveryError,
        attempt: u32,
    ) -> Result<()> {
        let t = Transition::new(d, DeliveryState::Failed, self.clock.now())
            .attempt(attempt)
            .error(error);
        let t = self.with_event(d, t, EventKind::Failed);
        self.write(t).await.map(|_| ())
    }

    /// Puts `d` back in the queue at `at` after a rate limit or pause, giving back the attempt
    /// its claim started.
    pub(super) async fn snooze(
        &self,
        d: &Delivery,
        at: DateTime<Utc>,
        error: DeliveryError,
        event: bool,
    ) -> Result<()> {
        let t = Transition::new(d, DeliveryState::RetryWaiting, self.clock.now())
            .run_at(at)
            .attempt(d.attempt.saturating_sub(1))
            .error(error);
        let t = if event {
            self.with_event(d, t, EventKind::Retrying)
        } else {
            t
        };
        self.write(t).await.map(|_| ())
    }
}
