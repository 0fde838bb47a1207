//! The fenced write a worker makes to move a delivery on.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::state::DeliveryState;
use super::{Delivery, DeliveryError};
use crate::publish::Receipt;
use crate::schedule::events::Event;

/// A fenced write by the worker holding a delivery's lease: the whole new state in one write.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Transition {
    /// The delivery.
    pub id: Uuid,
    /// The fence of the worker's lease; a write with another fence is [`Fenced::Stale`].
    ///
    /// [`Fenced::Stale`]: super::Fenced::Stale
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
