//! Scheduling: publish posts at a given time, durably, with many workers, never twice.
//!
//! A scheduled [`crate::Post`] becomes one [`Delivery`] per target. Deliveries live in a
//! [`ScheduleStore`] (in memory here; SQLite and PostgreSQL behind the `sqlite` and `postgres`
//! features) and move through this state machine, one durable write per transition, each
//! recorded in the delivery's history:
//!
//! ```text
//!                        cancel / reschedule (before the commit point)
//!            ┌────────────────────────────────────────────┐
//!            ▼                                            │
//! Scheduled ─due─▶ Claimed ─▶ Preparing ─commit point─▶ Committing ─▶ Published
//!  │  ▲   ▲          │  (lease, fence)  │  (uploads;          │  │         ▲
//!  │  │   │          │                  │   retryable)        │  └──▶ Processing ─poll─┘
//!  │  │   │          ▼                  ▼                     │            └──▶ Failed
//!  │  │   └──── RetryWaiting ◀── transient / rate limited ────┤   (not sent)
//!  │  │         (backoff; a rate-limit wait keeps the attempt)│
//!  │  │                                 ▼                     ▼
//!  │  │                    Failed (validation, permanent,   Unconfirmed ◀── lease expired
//!  │  │                    attempts or deadline exhausted)   │   │          after the commit
//!  │  │                    NeedsReauth (reconnect, then      │   └─lookup: found─▶ Published
//!  │  └────────────────── reschedule) ◀─────────────────────┤       (recovered event)
//!  │                                                         └─lookup: absent─▶ RetryWaiting
//!  └─cancel─▶ Cancelled                                        (at-most-once policy)
//! ```
//!
//! - **Claims and leases.** A worker claims due deliveries in a batch, each under a lease it
//!   renews, with a fence token that grows with every claim. Every later write carries the
//!   fence; a store refuses a stale one ([`Fenced::Stale`]), so a worker that lost its lease
//!   can never overwrite newer state.
//! - **Commit point.** Right before the request that creates the post, the adapter calls
//!   [`crate::PublishContext::commit_point`], which records `committing` durably. A lease that
//!   expires before it returns the delivery to the queue; one that expires after it makes the
//!   delivery `unconfirmed`.
//! - **Never post twice.** An `unconfirmed` delivery is settled with
//!   [`crate::Publisher::lookup_recent`]: found → `published`; absent → re-queued (the default
//!   at-most-once policy); unknown or unsupported → it stays `unconfirmed` with a message
//!   saying why, for a person to decide (reschedule to publish again, cancel to give up).
//!   [`policy::DeliveryPolicy::AtLeastOnce`] re-queues unconfirmed deliveries instead.
//! - **Cancel and reschedule** are transactional with the delivery: they win while no create
//!   request can be out (before the commit point), revoking a worker's lease, and report
//!   [`CancelOutcome::TooLate`] after.
//! - **Events** ([`Event`]) are appended to the store's outbox in the same transaction as
//!   their transition and broadcast to in-process subscribers.
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
pub use engine::{Engine, EngineBuilder, EngineHandle, ScheduledPost, Scheduler};
pub use events::{Event, EventKind, OutboxEvent};
pub use memory::MemoryScheduleStore;
pub use store::{DeliveryFilter, PurgeReport, ScheduleStore, TenantExport};
