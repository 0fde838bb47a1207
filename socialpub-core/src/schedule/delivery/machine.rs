//! The state machine: every change of a delivery as a pure function over its row.

use chrono::{DateTime, Utc};

use super::state::DeliveryState;
use super::transition::Transition;
use super::{CancelOutcome, Delivery, DeliveryError, HistoryEntry, Lease, RescheduleOutcome};
use crate::error::{Error, ErrorKind, Result};
use crate::schedule::events::{Event, EventKind};

impl Delivery {
    /// Claims it for `worker` until `expires_at`, with the next fence. A `scheduled` or
    /// `retry_waiting` delivery becomes `claimed` and starts an attempt; a `processing` or
    /// `unconfirmed` one keeps its state (the worker polls or reconciles it). Returns the
    /// history entry when the state changed. Call only when [`Delivery::is_due`].
    pub fn apply_claim(
        &mut self,
        worker: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Option<HistoryEntry> {
        let from = self.state;
        self.fence += 1;
        self.lease = Some(Lease {
            owner: worker.to_owned(),
            fence: self.fence,
            expires_at,
        });
        self.run_at = None;
        self.updated_at = now;
        if matches!(from, DeliveryState::Scheduled | DeliveryState::RetryWaiting) {
            self.state = DeliveryState::Claimed;
            self.attempt += 1;
            Some(self.entry(from, now, Some(worker.to_owned()), None, None))
        } else {
            None
        }
    }

    /// Extends the lease of `fence` to `until`; `false` when the lease is not that one.
    pub fn apply_renew(&mut self, fence: i64, until: DateTime<Utc>) -> bool {
        match self.lease.as_mut() {
            Some(l) if l.fence == fence => {
                l.expires_at = l.expires_at.max(until);
                true
            }
            _ => false,
        }
    }

    /// Applies a worker's transition. `Ok(None)` when the fence is stale; an error when the
    /// transition is not one the state machine allows (a bug in the caller). Either way the
    /// delivery is left unchanged: stores apply writes in place and rely on it.
    pub fn apply_transition(&mut self, t: &Transition) -> Result<Option<HistoryEntry>> {
        if t.id != self.id {
            return Err(Error::internal("transition applied to the wrong delivery"));
        }
        if !self.holds(t.fence) {
            return Ok(None);
        }
        if !self.state.may_become(t.to) {
            return Err(Error::internal(format!(
                "delivery {} may not go from {} to {}",
                self.id, self.state, t.to
            )));
        }
        let from = self.state;
        let worker = self.lease.as_ref().map(|l| l.owner.clone());
        self.state = t.to;
        // Only a claimable state has a run time: the stores' due indexes rely on it.
        self.run_at = t.run_at.filter(|_| t.to.is_claimable());
        self.attempt = t.attempt;
        self.updated_at = t.at;
        if let Some(r) = &t.receipt {
            self.receipt = Some(r.clone());
        }
        if let Some(e) = &t.error {
            self.last_error = Some(e.clone());
            self.had_failure = true;
        }
        match t.to {
            DeliveryState::Claimed | DeliveryState::Preparing | DeliveryState::Committing => {}
            _ => self.lease = None,
        }
        match t.to {
            // Back in the queue: no create request is outstanding.
            DeliveryState::Scheduled | DeliveryState::RetryWaiting => self.committed_at = None,
            // An unconfirmed outcome always has a commit time, the lookup's lower bound.
            DeliveryState::Unconfirmed if self.committed_at.is_none() => {
                self.committed_at = Some(t.at)
            }
            _ => {}
        }
        Ok(Some(self.entry(
            from,
            t.at,
            worker,
            t.error.as_ref(),
            t.message.clone(),
        )))
    }

    /// Records the commit point: `preparing` (or `claimed`) becomes `committing` and
    /// `committed_at` is set if it was not. Calling it again while `committing` (a thread's
    /// next part) only confirms the lease. `Ok(None)` when the fence is stale, an error in a
    /// state with no commit point; either way the delivery is left unchanged.
    pub fn apply_commit_point(
        &mut self,
        fence: i64,
        at: DateTime<Utc>,
    ) -> Result<Option<Option<HistoryEntry>>> {
        if !self.holds(fence) {
            return Ok(None);
        }
        let from = self.state;
        match from {
            DeliveryState::Claimed | DeliveryState::Preparing => {
                self.state = DeliveryState::Committing;
                self.committed_at.get_or_insert(at);
                self.updated_at = at;
                let worker = self.lease.as_ref().map(|l| l.owner.clone());
                Ok(Some(Some(self.entry(from, at, worker, None, None))))
            }
            DeliveryState::Committing => {
                self.committed_at.get_or_insert(at);
                Ok(Some(None))
            }
            other => Err(Error::internal(format!(
                "commit point recorded for delivery {} in state {other}",
                self.id
            ))),
        }
    }

    /// Replaces the checkpoint; `false` when the fence is stale.
    pub fn apply_checkpoint(
        &mut self,
        fence: i64,
        checkpoint: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> bool {
        if !self.holds(fence) {
            return false;
        }
        self.checkpoint = Some(checkpoint.clone());
        self.updated_at = at;
        true
    }

    /// Rescues it if its lease expired before `now`: a delivery whose commit point was never
    /// recorded goes back to the queue (`retry_waiting`, due now, attempt kept); one whose
    /// commit may be out becomes `unconfirmed` (due now, to reconcile) with an
    /// [`EventKind::Unconfirmed`] event; one being polled or reconciled is due again now.
    pub fn apply_rescue(&mut self, now: DateTime<Utc>) -> Option<(HistoryEntry, Option<Event>)> {
        let lease = self.lease.as_ref()?;
        if lease.expires_at > now {
            return None;
        }
        let from = self.state;
        let owner = lease.owner.clone();
        self.lease = None;
        self.run_at = Some(now);
        self.updated_at = now;
        let mut event = None;
        let error;
        if from == DeliveryState::Processing {
            error = DeliveryError::new(
                ErrorKind::Transient,
                "the worker polling its status stopped renewing its lease",
            );
        } else if from == DeliveryState::Unconfirmed || self.committed_at.is_some() {
            self.state = DeliveryState::Unconfirmed;
            self.committed_at.get_or_insert(now);
            error = DeliveryError::new(
                ErrorKind::Unconfirmed,
                "the worker's lease expired after the commit point: the post may have been \
                 published; it will be reconciled before any new attempt",
            );
            if from != DeliveryState::Unconfirmed {
                event = Some(Event::for_delivery(self, EventKind::Unconfirmed, now));
            }
        } else {
            self.state = DeliveryState::RetryWaiting;
            error = DeliveryError::new(
                ErrorKind::Transient,
                "the worker's lease expired before the commit point; nothing was sent",
            );
        }
        self.last_error = Some(error.clone());
        self.had_failure = true;
        let mut entry = self.entry(from, now, None, Some(&error), None);
        entry.message = Some(format!("{} (lease of {owner})", error.message));
        if let Some(e) = event.as_mut() {
            e.message = Some(error.message.clone());
        }
        Some((entry, event))
    }

    /// Cancels it if nothing may have been sent yet. A worker's lease is revoked, so its
    /// commit point is refused. Returns the outcome and, when cancelled, the history entry.
    pub fn apply_cancel(&mut self, at: DateTime<Utc>) -> (CancelOutcome, Option<HistoryEntry>) {
        use DeliveryState::*;
        let from = self.state;
        let allowed = match from {
            Scheduled | RetryWaiting | Claimed | Preparing | NeedsReauth => {
                self.committed_at.is_none()
            }
            Unconfirmed => self.lease.is_none(),
            Cancelled => return (CancelOutcome::AlreadyCancelled, None),
            Committing | Processing | Published | Failed => false,
        };
        if !allowed {
            return (CancelOutcome::TooLate(from), None);
        }
        self.state = Cancelled;
        self.lease = None;
        self.run_at = None;
        self.updated_at = at;
        let entry = self.entry(from, at, None, None, Some("cancelled".to_owned()));
        (
            CancelOutcome::Cancelled(Box::new(self.clone())),
            Some(entry),
        )
    }

    /// Moves it to `due_at` if nothing may have been sent yet (or it is parked in `failed`,
    /// `needs_reauth` or an unleased `unconfirmed`, where a reschedule is the user's decision
    /// to try again). It becomes `scheduled` with a fresh attempt budget; a worker's lease is
    /// revoked.
    pub fn apply_reschedule(
        &mut self,
        due_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> (RescheduleOutcome, Option<HistoryEntry>) {
        use DeliveryState::*;
        let from = self.state;
        let allowed = match from {
            Scheduled | RetryWaiting | Claimed | Preparing => self.committed_at.is_none(),
            Failed | NeedsReauth => true,
            Unconfirmed => self.lease.is_none(),
            Committing | Processing | Published | Cancelled => false,
        };
        if !allowed {
            return (RescheduleOutcome::TooLate(from), None);
        }
        self.state = Scheduled;
        self.lease = None;
        self.due_at = due_at;
        self.run_at = Some(due_at);
        self.attempt = 0;
        self.committed_at = None;
        self.updated_at = at;
        let entry = self.entry(
            from,
            at,
            None,
            None,
            Some(format!("rescheduled to {}", due_at.to_rfc3339())),
        );
        (
            RescheduleOutcome::Rescheduled(Box::new(self.clone())),
            Some(entry),
        )
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::platform::Platform;
    use crate::post::{Post, Target};
    use crate::schedule::NewDelivery;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("a valid instant")
    }

    fn claimed() -> Delivery {
        let post = Post::new("hello").with_target(Target::new(Platform::X, "acct"));
        let mut d = Delivery::new(NewDelivery {
            post_id: Uuid::now_v7(),
            tenant: "t",
            target: post.targets[0].clone(),
            post: &post,
            due_at: at(0),
            max_attempts: 3,
            deadline: None,
            now: at(0),
        });
        d.apply_claim("w1", at(1), at(61));
        d
    }

    // The SQL stores apply a batch's ops in place and rely on this: an op the state machine
    // refuses (stale fence, or a move it does not allow) leaves the delivery as it was.
    #[test]
    fn a_refused_op_changes_nothing() {
        let d = claimed();
        let fence = d.lease.as_ref().map(|l| l.fence).expect("leased");

        let mut stale = Transition::new(&d, DeliveryState::Published, at(2))
            .receipt(crate::publish::Receipt::new(Platform::X, "1", None))
            .error(DeliveryError::new(ErrorKind::Transient, "boom"))
            .run_at(at(3))
            .attempt(7);
        stale.fence = fence + 1;
        let mut copy = d.clone();
        assert!(matches!(copy.apply_transition(&stale), Ok(None)));
        assert_eq!(copy, d);

        let illegal = Transition::new(&d, DeliveryState::Claimed, at(2))
            .error(DeliveryError::new(ErrorKind::Transient, "boom"))
            .attempt(7);
        let mut copy = d.clone();
        assert!(copy.apply_transition(&illegal).is_err());
        assert_eq!(copy, d);

        let mut copy = d.clone();
        assert!(matches!(
            copy.apply_commit_point(fence + 1, at(2)),
            Ok(None)
        ));
        assert_eq!(copy, d);

        let mut processing = d.clone();
        processing.state = DeliveryState::Processing;
        let before = processing.clone();
        assert!(processing.apply_commit_point(fence, at(2)).is_err());
        assert_eq!(processing, before);
    }
}
