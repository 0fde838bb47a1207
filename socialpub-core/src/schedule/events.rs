//! [`Event`]s the scheduler emits: to in-process subscribers (a `tokio::sync::broadcast`
//! channel) and to the store's outbox, written in the same transaction as the state change, so
//! an application can deliver them (e.g. as signed webhooks) without losing any.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::delivery::{Delivery, DeliveryError, DeliveryState, Transition};
use crate::post::Target;
use crate::publish::Receipt;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A delivery was scheduled.
    Scheduled,
    /// A delivery was published (or the platform accepted it for processing and then
    /// published it).
    Published,
    /// A delivery failed for good.
    Failed,
    /// A delivery failed with a retryable error and will be tried again at `run_at`.
    Retrying,
    /// A delivery was published after an earlier failure, or an unconfirmed one was found on
    /// the platform.
    Recovered,
    /// A delivery's outcome is unknown: the create request may have gone out.
    Unconfirmed,
    /// An account must be connected again.
    NeedsReauth,
    /// An account's token (its refresh token, or an access token that cannot be refreshed)
    /// expires soon.
    TokenExpiresSoon,
}

impl EventKind {
    /// The stable snake_case name (`needs_reauth`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Scheduled => "scheduled",
            EventKind::Published => "published",
            EventKind::Failed => "failed",
            EventKind::Retrying => "retrying",
            EventKind::Recovered => "recovered",
            EventKind::Unconfirmed => "unconfirmed",
            EventKind::NeedsReauth => "needs_reauth",
            EventKind::TokenExpiresSoon => "token_expires_soon",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened to a delivery or an account. Serializes to the JSON an outbox row
/// holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// A unique id, for consumers that deduplicate (an outbox is read at least once).
    pub id: Uuid,
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: DateTime<Utc>,
    /// The tenant.
    pub tenant: String,
    /// The account (for every kind).
    pub target: Target,
    /// The delivery, for delivery events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<Uuid>,
    /// The post, for delivery events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_id: Option<Uuid>,
    /// The delivery's state after the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DeliveryState>,
    /// The delivery's attempt count.
    #[serde(default)]
    pub attempt: u32,
    /// The receipt, for published and recovered deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    /// The error, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeliveryError>,
    /// When a retrying delivery is due again, or when an expiring token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<DateTime<Utc>>,
    /// A human-readable note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Event {
    /// An event of `kind` about `delivery` as it now stands.
    pub fn for_delivery(delivery: &Delivery, kind: EventKind, at: DateTime<Utc>) -> Self {
        Event {
            id: Uuid::now_v7(),
            kind,
            at,
            tenant: delivery.tenant.clone(),
            target: delivery.target.clone(),
            delivery_id: Some(delivery.id),
            post_id: Some(delivery.post_id),
            state: Some(delivery.state),
            attempt: delivery.attempt,
            receipt: delivery.receipt.clone(),
            error: None,
            next_at: delivery.run_at,
            message: None,
        }
    }

    /// An event of `kind` about `delivery` as `transition` leaves it: its state, attempt, run
    /// time and receipt after the move, with the transition's error or note.
    pub fn for_transition(delivery: &Delivery, transition: &Transition, kind: EventKind) -> Self {
        let event = Event {
            id: Uuid::now_v7(),
            kind,
            at: transition.at,
            tenant: delivery.tenant.clone(),
            target: delivery.target.clone(),
            delivery_id: Some(delivery.id),
            post_id: Some(delivery.post_id),
            state: Some(transition.to),
            attempt: transition.attempt,
            receipt: transition
                .receipt
                .as_ref()
                .or(delivery.receipt.as_ref())
                .cloned(),
            error: None,
            next_at: transition.run_at,
            message: None,
        };
        match (&transition.error, &transition.message) {
            (Some(error), _) => event.with_error(error.clone()),
            (None, Some(message)) => event.with_message(message.clone()),
            (None, None) => event,
        }
    }

    /// A [`EventKind::TokenExpiresSoon`] event for an account.
    pub fn token_expires_soon(
        tenant: impl Into<String>,
        target: Target,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Self {
        Event {
            id: Uuid::now_v7(),
            kind: EventKind::TokenExpiresSoon,
            at,
            tenant: tenant.into(),
            target,
            delivery_id: None,
            post_id: None,
            state: None,
            attempt: 0,
            receipt: None,
            error: None,
            next_at: Some(expires_at),
            message: Some("the account's token expires soon: reconnect it".to_owned()),
        }
    }

    /// Sets the error (and the message, if none).
    pub fn with_error(mut self, error: DeliveryError) -> Self {
        if self.message.is_none() {
            self.message = Some(error.message.clone());
        }
        self.error = Some(error);
        self
    }

    /// Sets the message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Sets the state, attempt, receipt and next time from `delivery` (after a transition).
    pub fn with_state_of(mut self, delivery: &Delivery) -> Self {
        self.state = Some(delivery.state);
        self.attempt = delivery.attempt;
        if delivery.receipt.is_some() {
            self.receipt = delivery.receipt.clone();
        }
        self.next_at = delivery.run_at;
        self
    }
}

/// An event in a store's outbox, with its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Its position in the outbox (increasing in insertion order within one store).
    pub seq: i64,
    /// The event.
    pub event: Event,
}
