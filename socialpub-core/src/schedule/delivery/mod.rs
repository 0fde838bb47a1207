//! [`Delivery`] (one post to one target), its [`DeliveryState`], and the state machine every
//! [`super::ScheduleStore`] applies.
//!
//! The `apply_*` methods are the whole state machine as pure functions over one row: the
//! in-memory store calls them under its lock, and a SQL store may call them on a row it read
//! with `SELECT … FOR UPDATE` (or inside `BEGIN IMMEDIATE`) before writing it back in the same
//! transaction. A store that writes its own SQL for a hot path (claiming, rescuing) must produce
//! exactly what these functions produce; the conformance suite checks it.

mod machine;
mod state;
mod transition;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::events::Event;
use crate::error::{Error, ErrorKind};
use crate::post::{Post, Target};
use crate::publish::Receipt;

pub use state::DeliveryState;
pub use transition::Transition;

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
}
