//! Scheduling: publish posts at a given time, durably, with many workers, never twice.
//!
//! A scheduled [`crate::Post`] becomes one [`Delivery`] per target. Deliveries live in a
//! [`ScheduleStore`] (in memory here; SQLite and PostgreSQL behind the `sqlite` and `postgres`
//! features) and move through this state machine, one durable write per transition, each
//! recorded in the delivery's history:
//!
//! ```text
//!              ┌──────────── cancel / reschedule win until the commit point ────────────┐
//!              ▼                                                                         │
//!  Scheduled ─due─▶ Claimed ─▶ Preparing ─commit point─▶ Committing ─▶ Published         │
//!    ▲   ▲            │  lease,     │ uploads,               │  │                        │
//!    │   │            │  fence      │ retryable              │  └─▶ Processing ─status─▶ Published
//!    │   │            ▼             ▼                        │          (no worker held)  or Failed
//!    │   └──── RetryWaiting ◀─ transient, rate limited, ─────┤
//!    │         (backoff)        lease lost before commit     │ Unconfirmed error,
//!    │            ▲                 │                        │ lease lost after commit
//!    │            │                 ├─▶ Failed (validation,  ▼
//!    │            │                 │   permanent, attempts  Unconfirmed ─lookup: found──▶ Published
//!    │            │                 │   or deadline spent)     │   │                  (recovered)
//!    │            │                 └─▶ NeedsReauth            │   └─lookup: cannot tell─▶ parked
//!    │            └──────────── lookup: absent ────────────────┘        for a person
//!    │
//!    └── reschedule, from Failed, NeedsReauth or a parked Unconfirmed
//!
//!  Scheduled, RetryWaiting, Claimed, Preparing, NeedsReauth, parked Unconfirmed ─cancel─▶ Cancelled
//! ```
//!
//! `preparing` is recorded when the publish saves its first checkpoint before the commit point
//! (an upload under way); a publish with nothing to prepare, such as a text post, goes from
//! `claimed` straight to `committing` at its commit point.
//!
//! `published`, `failed` and `cancelled` are final (a reschedule of a failed delivery is a new
//! try). [`DeliveryState::may_become`] lists the transitions a worker may write.
//!
//! - **Claims and leases.** A worker claims due deliveries in a batch, each under a lease it
//!   renews, with a fence token that grows with every claim. Every later write carries the
//!   fence; a store refuses a stale one ([`Fenced::Stale`]), so a worker that lost its lease
//!   can never overwrite newer state. The engine claims a little ahead of the due time
//!   ([`EngineBuilder::claim_ahead`]) and holds the delivery, `claimed`, until then.
//! - **Commit point.** Right before the request that creates the post, the adapter calls
//!   [`crate::PublishContext::commit_point`], which records `committing` durably. A lease that
//!   expires before it returns the delivery to the queue; one that expires after it makes the
//!   delivery `unconfirmed`.
//! - **Never post twice.** An `unconfirmed` delivery is settled with
//!   [`crate::Publisher::lookup_recent`]: found → `published`; absent → re-queued (the default
//!   at-most-once policy, once a create still in flight from a worker that lost its lease can
//!   no longer land: [`policy::RetryPolicy::absent_after`]); unknown or unsupported → it stays
//!   `unconfirmed` with a message
//!   saying why, for a person to decide (reschedule to publish again, cancel to give up).
//!   [`policy::DeliveryPolicy::AtLeastOnce`] re-queues unconfirmed deliveries instead.
//! - **Cancel and reschedule** are transactional with the delivery: they win while no create
//!   request can be out (before the commit point), revoking a worker's lease, and report
//!   [`CancelOutcome::TooLate`] after.
//! - **Retrying by hand.** [`Scheduler::retry`] publishes a `failed` or `needs_reauth`
//!   delivery again: the same delivery, due now, with a fresh attempt budget and its history
//!   kept.
//! - **A platform with no publisher.** A due delivery whose platform has no publisher in this
//!   engine is not failed: the worker gives it back, `scheduled`, for
//!   [`NO_PUBLISHER_WAIT`] later, without using an attempt, and the history says why. Another
//!   process that has the publisher, or this one once configured for it, publishes it.
//! - **Retries** ([`policy::RetryPolicy`]): only transient and rate-limited failures before
//!   the commit are retried, with exponential backoff and full jitter; a rate limit waits as
//!   long as the platform says and pauses only that account, without using up an attempt. An
//!   unauthorized answer refreshes the token once and publishes once more.
//! - **Pacing**: at most one publish in flight per account across every engine sharing the
//!   store (the account's slot in the store, [`ScheduleStore::acquire_account_slot`]), a
//!   concurrency limit overall, and optional GCRA quotas per platform application and per
//!   account.
//! - **Events** ([`Event`]) are appended to the store's outbox in the same transaction as
//!   their transition and broadcast to in-process subscribers.
//! - **Time** comes from an injectable [`crate::clock::Clock`]: workers sleep until the
//!   store's next due time (or a wake-up), never on a fixed polling interval, and tests drive
//!   everything with a [`crate::clock::ManualClock`].
//!
//! The engine ([`Engine`]) runs the workers; the [`Scheduler`] trait is the API applications
//! call.

mod delivery;
pub mod engine;
mod events;
mod memory;
mod pacing;
pub mod policy;
mod store;

pub use delivery::{
    CancelOutcome, Delivery, DeliveryError, DeliveryState, Fenced, HistoryEntry, Lease,
    NewDelivery, RescheduleOutcome, Rescued, Transition,
};
pub use engine::{
    Engine, EngineBuilder, EngineHandle, NO_PUBLISHER_WAIT, RetryOutcome, ScheduleOptions,
    ScheduledPost, Scheduler,
};
pub use events::{Event, EventKind, OutboxEvent};
pub use memory::MemoryScheduleStore;
pub use store::{Claimed, DeliveryFilter, NextTimes, PurgeReport, ScheduleStore, TenantExport};
