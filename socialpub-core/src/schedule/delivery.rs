//! [`Delivery`] (one post to one target), its [`DeliveryState`], and the state machine every
//! [`super::ScheduleStore`] applies.
//!
//! The `apply_*` methods are the whole state machine as pure functions over one row: the
//! in-memory store calls them under its lock, and a SQL store may call them on a row it read
//! with `SELECT … FOR UPDATE` (or inside `BEGIN IMMEDIATE`) before writing it back in the same
//! transaction. A store that writes its own SQL for a hot path (claiming, rescuing) must produce
//! exactly what these functions produce; the conformance suite checks it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::events::{Event, EventKind};
use crate::error::{Error, ErrorKind, Result};
use crate::post::{Post, Target};
use crate::publish::Receipt;

/// Where a delivery stands. See the [module docs](super) for the diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeliveryState {
    /// Waiting for its due time.
    Scheduled,
    /// Taken by a worker under a lease; nothing created yet (the publish may have started:
    /// tokens, validation).
    Claimed,
    /// The publish saved a checkpoint before its commit point: media is being uploaded (all
    /// retryable). A publish with nothing to prepare goes from `claimed` to `committing`.
    Preparing,
    /// The request creating the post is about to go out or is out: recorded durably by
    /// [`crate::PublishContext::commit_point`] before it is sent.
    Committing,
    /// The platform accepted the post and is still processing it (e.g. a video); polled
    /// with [`crate::Publisher::status`] without holding a worker.
    Processing,
    /// Live on the platform. Final.
    Published,
    /// Failed before the commit with a retryable error; due again at `run_at`.
    RetryWaiting,
    /// Failed for good (validation, permanent refusal, attempts or deadline exhausted). Final.
    Failed,
    /// The account must be connected again; rescheduling re-queues it.
    NeedsReauth,
    /// The commit may have gone out but its outcome is unknown. Settled by a lookup when the
    /// publisher has one; otherwise it stays here for a person to decide.
    Unconfirmed,
    /// Cancelled before anything was sent. Final.
    Cancelled,
}

impl DeliveryState {
    /// Every state, in a stable order.
    pub const ALL: [DeliveryState; 11] = [
        DeliveryState::Scheduled,
        DeliveryState::Claimed,
        DeliveryState::Preparing,
        DeliveryState::Committing,
        DeliveryState::Processing,
        DeliveryState::Published,
        DeliveryState::RetryWaiting,
        DeliveryState::Failed,
        DeliveryState::NeedsReauth,
        DeliveryState::Unconfirmed,
        DeliveryState::Cancelled,
    ];

    /// The stable snake_case name used in storage (`retry_waiting`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Scheduled => "scheduled",
            DeliveryState::Claimed => "claimed",
            DeliveryState::Preparing => "preparing",
            DeliveryState::Committing => "committing",
            DeliveryState::Processing => "processing",
            DeliveryState::Published => "published",
            DeliveryState::RetryWaiting => "retry_waiting",
            DeliveryState::Failed => "failed",
            DeliveryState::NeedsReauth => "needs_reauth",
            DeliveryState::Unconfirmed => "unconfirmed",
            DeliveryState::Cancelled => "cancelled",
        }
    }

    /// Whether nothing will ever change this delivery again (`published`, `failed`,
    /// `cancelled`). Terminal deliveries are the ones [`super::ScheduleStore::purge`] removes.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DeliveryState::Published | DeliveryState::Failed | DeliveryState::Cancelled
        )
    }

    /// Whether a delivery in this state can only be in a worker's hands (it always has a
    /// lease): `claimed`, `preparing`, `committing`.
    pub fn is_leased(self) -> bool {
        matches!(
            self,
            DeliveryState::Claimed | DeliveryState::Preparing | DeliveryState::Committing
        )
    }

    /// Whether [`super::ScheduleStore::claim_due`] takes a delivery in this state once its
    /// `run_at` has come: `scheduled`, `retry_waiting`, `processing` (to poll its status) and
    /// `unconfirmed` (to reconcile it).
    pub fn is_claimable(self) -> bool {
        matches!(
            self,
            DeliveryState::Scheduled
                | DeliveryState::RetryWaiting
                | DeliveryState::Processing
                | DeliveryState::Unconfirmed
        )
    }

    /// Whether a fenced write may move a leased delivery from `self` to `to`.
    pub fn may_become(self, to: DeliveryState) -> bool {
        use DeliveryState::*;
        match self {
            // A publish with nothing to prepare goes from `claimed` wherever a prepared one
            // may go (through the commit point, when the publisher keeps the contract).
            Claimed => matches!(to, Scheduled | Preparing) || Preparing.may_become(to),
            Preparing => matches!(
                to,
                Committing
                    | Published
                    | Processing
                    | RetryWaiting
                    | Failed
                    | NeedsReauth
                    | Unconfirmed
            ),
            Committing => matches!(
                to,
                Published | Processing | RetryWaiting | Failed | NeedsReauth | Unconfirmed
            ),
            Processing => matches!(to, Processing | Published | Failed | Unconfirmed),
            Unconfirmed => matches!(
                to,
                Unconfirmed | Published | Processing | RetryWaiting | Failed
            ),
            Scheduled | RetryWaiting | Published | Failed | NeedsReauth | Cancelled => false,
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        DeliveryState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::invalid_input(format!("unknown delivery state {s:?}")))
    }
}

/// A worker's hold on a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker holding it.
    pub owner: String,
    /// The fence token of this claim: every write the worker makes carries it, and the store
    /// rejects a write whose fence is not the current lease's.
    pub fence: i64,
    /// When the lease lapses unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// The last error a delivery met, as kept in storage (no secrets: built from an [`Error`]'s
/// message, which never holds one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryError {
    /// Its class.
    pub kind: ErrorKind,
    /// The platform's error code, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The HTTP status, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// A human-readable message.
    pub message: String,
}

impl DeliveryError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        DeliveryError {
            kind,
            code: None,
            status: None,
            message: message.into(),
        }
    }
}

impl From<&Error> for DeliveryError {
    fn from(e: &Error) -> Self {
        DeliveryError {
            kind: e.kind(),
            code: e.code().map(str::to_owned),
            status: e.status(),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

/// One post to one target, and everything the scheduler knows about publishing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Delivery {
    /// Its id (a UUIDv7, so ids sort by creation time).
    pub id: Uuid,
    /// The post it belongs to; the post's other targets are sibling deliveries.
    pub post_id: Uuid,
    /// The tenant it belongs to; every API call is scoped by tenant.
    pub tenant: String,
    /// Where it goes.
    pub target: Target,
    /// What is published, as it was scheduled. Shared: a delivery is copied at each step
    /// of its life, its post never changes.
    pub post: Arc<Post>,
    /// Where it stands.
    pub state: DeliveryState,
    /// When the user wants it published (changed only by a reschedule).
    pub due_at: DateTime<Utc>,
    /// When a worker should next act on it: the due time, a retry, the next status poll or
    /// reconciliation. `None` while a worker holds it and once nothing is left to do (final
    /// states, `needs_reauth`, an `unconfirmed` delivery no lookup can settle).
    pub run_at: Option<DateTime<Utc>>,
    /// Publish attempts started (a claim starts one; a rate-limit wait gives it back).
    pub attempt: u32,
    /// Most attempts before it fails.
    pub max_attempts: u32,
    /// After this instant it fails instead of being published late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// The fence of the latest claim (0 before the first). Kept after the lease ends so the
    /// next claim's fence is larger.
    pub fence: i64,
    /// The current lease, while a worker holds the delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Adapter state saved through [`crate::PublishContext::save_checkpoint`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<serde_json::Value>,
    /// When the commit point was first recorded for the current attempt family; set while a
    /// create request may be outstanding, cleared when it is known not to have taken effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<DateTime<Utc>>,
    /// What the platform returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    /// The last error met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<DeliveryError>,
    /// Whether a publish of it ever failed (so its publication is a recovery).
    #[serde(default)]
    pub had_failure: bool,
    /// When it was scheduled.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One transition in a delivery's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The delivery.
    pub delivery_id: Uuid,
    /// When.
    pub at: DateTime<Utc>,
    /// The state before (`None` for the insert).
    pub from: Option<DeliveryState>,
    /// The state after.
    pub to: DeliveryState,
    /// The attempt count after.
    pub attempt: u32,
    /// The worker that made it, if a worker did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The error class, when the transition was caused by an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    /// A message: the error, or why the transition happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A fenced write by the worker holding a delivery's lease: the whole new state in one write.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Transition {
    /// The delivery.
    pub id: Uuid,
    /// The fence of the worker's lease; a write with another fence is [`Fenced::Stale`].
    pub fence: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The new state. The lease is kept only when it is `claimed`, `preparing` or
    /// `committing`; any other state releases it.
    pub to: DeliveryState,
    /// The new `run_at`.
    pub run_at: Option<DateTime<Utc>>,
    /// The new attempt count.
    pub attempt: u32,
    /// The receipt, when there is one (kept otherwise).
    pub receipt: Option<Receipt>,
    /// The error that caused the transition (also becomes `last_error`).
    pub error: Option<DeliveryError>,
    /// A note for the history when there is no error.
    pub message: Option<String>,
    /// The event to append to the outbox in the same transaction (boxed: a transition is
    /// moved through every step of a publish, most of them without an event).
    pub event: Option<Box<Event>>,
}

impl Transition {
    /// A transition of `delivery` (as the worker holds it) to `to` at `at`, keeping the
    /// attempt count, with no run time, receipt, error or event.
    pub fn new(delivery: &Delivery, to: DeliveryState, at: DateTime<Utc>) -> Self {
        Transition {
            id: delivery.id,
            fence: delivery.lease.as_ref().map_or(delivery.fence, |l| l.fence),
            at,
            to,
            run_at: None,
            attempt: delivery.attempt,
            receipt: None,
            error: None,
            message: None,
            event: None,
        }
    }

    /// Sets when the delivery is next due.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Sets the attempt count.
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Sets the receipt.
    pub fn receipt(mut self, receipt: Receipt) -> Self {
        self.receipt = Some(receipt);
        self
    }

    /// Sets the error.
    pub fn error(mut self, error: DeliveryError) -> Self {
        self.error = Some(error);
        self
    }

    /// Sets the history note.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Sets the event.
    pub fn event(mut self, event: Event) -> Self {
        self.event = Some(Box::new(event));
        self
    }
}

/// The result of a fenced write.
#[derive(Debug, Clone, PartialEq)]
pub enum Fenced<T> {
    /// Written.
    Applied(T),
    /// Refused: the writer's lease is gone (it expired and was rescued, the delivery was
    /// cancelled or rescheduled, or another worker claimed it since). The writer must stop
    /// working on the delivery and write nothing more.
    Stale,
}

impl<T> Fenced<T> {
    /// The written value, or `None` when stale.
    pub fn applied(self) -> Option<T> {
        match self {
            Fenced::Applied(t) => Some(t),
            Fenced::Stale => None,
        }
    }

    /// Whether the write was refused.
    pub fn is_stale(&self) -> bool {
        matches!(self, Fenced::Stale)
    }
}

/// What [`super::ScheduleStore::cancel`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// Cancelled: it will never be sent. A worker holding it loses its lease; its commit point
    /// is refused, so it sends nothing.
    Cancelled(Box<Delivery>),
    /// It was already cancelled.
    AlreadyCancelled,
    /// Too late: the create request may already be out (`committing`, `processing`, a leased
    /// `unconfirmed`) or the delivery is final. Nothing changed.
    TooLate(DeliveryState),
    /// No such delivery in this tenant.
    NotFound,
}

/// What [`super::ScheduleStore::reschedule`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RescheduleOutcome {
    /// Now `scheduled` at the new time, with a fresh attempt budget.
    Rescheduled(Box<Delivery>),
    /// Too late: the create request may already be out, or it is published or cancelled.
    TooLate(DeliveryState),
    /// No such delivery in this tenant.
    NotFound,
}

/// A delivery whose lease had expired, as [`super::ScheduleStore::rescue_expired`] left it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rescued {
    /// The delivery after the rescue.
    pub delivery: Delivery,
    /// The event appended with it (an `unconfirmed` rescue has one).
    pub event: Option<Event>,
}

/// The parameters of a new delivery.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    /// The post's id.
    pub post_id: Uuid,
    /// The tenant.
    pub tenant: &'a str,
    /// The target.
    pub target: Target,
    /// The post.
    pub post: &'a Post,
    /// When it is due.
    pub due_at: DateTime<Utc>,
    /// Most attempts.
    pub max_attempts: u32,
    /// Give up after this instant.
    pub deadline: Option<DateTime<Utc>>,
    /// When it is created.
    pub now: DateTime<Utc>,
}

impl Delivery {
    /// A new `scheduled` delivery.
    pub fn new(n: NewDelivery<'_>) -> Self {
        Delivery {
            id: Uuid::now_v7(),
            post_id: n.post_id,
            tenant: n.tenant.to_owned(),
            target: n.target,
            post: Arc::new(n.post.clone()),
            state: DeliveryState::Scheduled,
            due_at: n.due_at,
            run_at: Some(n.due_at),
            attempt: 0,
            max_attempts: n.max_attempts.max(1),
            deadline: n.deadline,
            fence: 0,
            lease: None,
            checkpoint: None,
            committed_at: None,
            receipt: None,
            last_error: None,
            had_failure: false,
            created_at: n.now,
            updated_at: n.now,
        }
    }

    /// The account it publishes to.
    pub fn account(&self) -> crate::auth::AccountKey {
        crate::auth::AccountKey::new(
            self.tenant.clone(),
            self.target.platform,
            self.target.account_id.clone(),
        )
    }

    /// The history entry of its insertion.
    pub fn inserted_entry(&self) -> HistoryEntry {
        HistoryEntry {
            delivery_id: self.id,
            at: self.created_at,
            from: None,
            to: self.state,
            attempt: self.attempt,
            worker: None,
            error_kind: None,
            message: None,
        }
    }

    fn entry(
        &self,
        from: DeliveryState,
        at: DateTime<Utc>,
        worker: Option<String>,
        error: Option<&DeliveryError>,
        message: Option<String>,
    ) -> HistoryEntry {
        HistoryEntry {
            delivery_id: self.id,
            at,
            from: Some(from),
            to: self.state,
            attempt: self.attempt,
            worker,
            error_kind: error.map(|e| e.kind),
            message: error.map(|e| e.message.clone()).or(message),
        }
    }

    fn holds(&self, fence: i64) -> bool {
        self.lease.as_ref().is_some_and(|l| l.fence == fence)
    }

    /// Whether [`Delivery::apply_claim`] would take it at `now`.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.lease.is_none() && self.state.is_claimable() && self.run_at.is_some_and(|t| t <= now)
    }

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
    use super::*;
    use crate::platform::Platform;

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
