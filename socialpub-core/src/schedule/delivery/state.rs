//! Where a delivery stands, and the moves between states a worker may write.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a delivery stands. See the [module docs](crate::schedule) for the diagram.
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
    ///
    /// [`super::ScheduleStore::purge`]: crate::schedule::ScheduleStore::purge
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
    ///
    /// [`super::ScheduleStore::claim_due`]: crate::schedule::ScheduleStore::claim_due
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
