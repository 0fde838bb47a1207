//! The scheduling API applications call, and the engine's implementation of it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Engine;
use crate::error::{Error, Result};
use crate::post::Post;
use crate::schedule::delivery::{
    CancelOutcome, Delivery, DeliveryState, HistoryEntry, NewDelivery, RescheduleOutcome,
};
use crate::schedule::events::{Event, EventKind};
use crate::schedule::store::DeliveryFilter;

/// What [`Scheduler::schedule`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduledPost {
    /// The post's id (shared by its deliveries).
    pub post_id: Uuid,
    /// One delivery per target, in the order of the post's targets.
    pub deliveries: Vec<Uuid>,
}

/// Per-post settings for [`Scheduler::schedule_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleOptions {
    /// Fail instead of publishing after this instant (a post hours late can be worse than
    /// none). No deadline by default.
    pub deadline: Option<DateTime<Utc>>,
    /// Attempts before failing; the engine's [`RetryPolicy::max_attempts`] by default.
    ///
    /// [`RetryPolicy::max_attempts`]: crate::schedule::policy::RetryPolicy::max_attempts
    pub max_attempts: Option<u32>,
}

impl ScheduleOptions {
    /// Sets the deadline.
    pub fn deadline(mut self, at: DateTime<Utc>) -> Self {
        self.deadline = Some(at);
        self
    }

    /// Sets the attempt budget.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }
}

/// What [`Scheduler::retry`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RetryOutcome {
    /// Due now again, with a fresh attempt budget; its history keeps the earlier attempts.
    Retrying(Box<Delivery>),
    /// Not a delivery to retry: it is not `failed` or `needs_reauth` (a scheduled one is still
    /// to come, a published or cancelled one is final, an unconfirmed one may already be on
    /// the platform). Nothing changed.
    NotRetryable(DeliveryState),
    /// No such delivery in this tenant.
    NotFound,
}

/// The scheduling API. Every call is scoped by tenant: a delivery of another tenant is
/// invisible.
#[async_trait]
pub trait Scheduler: Send + Sync {
    /// Schedules `post` for `at` (now if past): one delivery per target, inserted atomically.
    /// Fails with [`ErrorKind::InvalidInput`] when the tenant or an account id is empty or
    /// holds a control character, or the post has no target or a target twice, and with
    /// [`ErrorKind::Validation`] when a registered publisher rejects it.
    ///
    /// [`ErrorKind::InvalidInput`]: crate::ErrorKind::InvalidInput
    /// [`ErrorKind::Validation`]: crate::ErrorKind::Validation
    async fn schedule(
        &self,
        tenant: &str,
        post: &Post,
        at: DateTime<Utc>,
    ) -> Result<ScheduledPost> {
        self.schedule_with(tenant, post, at, ScheduleOptions::default())
            .await
    }

    /// [`Scheduler::schedule`] with a deadline or attempt budget.
    async fn schedule_with(
        &self,
        tenant: &str,
        post: &Post,
        at: DateTime<Utc>,
        options: ScheduleOptions,
    ) -> Result<ScheduledPost>;

    /// Cancels a delivery; see [`CancelOutcome`] for when it is too late.
    async fn cancel(&self, tenant: &str, delivery: Uuid) -> Result<CancelOutcome>;

    /// Moves a delivery to `at`; see [`RescheduleOutcome`].
    async fn reschedule(
        &self,
        tenant: &str,
        delivery: Uuid,
        at: DateTime<Utc>,
    ) -> Result<RescheduleOutcome>;

    /// Publishes a `failed` or `needs_reauth` delivery again: the same delivery becomes
    /// `scheduled`, due now, with a fresh attempt budget, and its history keeps what happened
    /// before. Any other state is [`RetryOutcome::NotRetryable`]: an `unconfirmed` delivery may
    /// already be on the platform, so publishing it again is a decision for
    /// [`Scheduler::reschedule`] after checking the account.
    ///
    /// It is a [`Scheduler::reschedule`] to now taken only from those states, so every store
    /// applies it through the same state machine. Should the delivery change between the read
    /// and the reschedule, the reschedule's own rules still hold (it never moves a delivery
    /// whose create request may be out).
    async fn retry(&self, tenant: &str, delivery: Uuid) -> Result<RetryOutcome> {
        retry_at(self, tenant, delivery, chrono::Utc::now()).await
    }

    /// A delivery.
    async fn get(&self, tenant: &str, delivery: Uuid) -> Result<Option<Delivery>>;

    /// A delivery's history, oldest first.
    async fn history(&self, tenant: &str, delivery: Uuid) -> Result<Vec<HistoryEntry>>;

    /// Deliveries passing `filter`.
    async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>>;

    /// Cancels every delivery of a post (each target on its own: some may be too late).
    async fn cancel_post(&self, tenant: &str, post_id: Uuid) -> Result<Vec<(Uuid, CancelOutcome)>> {
        let deliveries = self
            .list(&DeliveryFilter::tenant(tenant).post(post_id).limit(10_000))
            .await?;
        let mut out = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            out.push((d.id, self.cancel(tenant, d.id).await?));
        }
        Ok(out)
    }
}

/// [`Scheduler::retry`], due at `now`.
async fn retry_at<S: Scheduler + ?Sized>(
    scheduler: &S,
    tenant: &str,
    delivery: Uuid,
    now: DateTime<Utc>,
) -> Result<RetryOutcome> {
    let Some(d) = scheduler.get(tenant, delivery).await? else {
        return Ok(RetryOutcome::NotFound);
    };
    if !matches!(d.state, DeliveryState::Failed | DeliveryState::NeedsReauth) {
        return Ok(RetryOutcome::NotRetryable(d.state));
    }
    Ok(match scheduler.reschedule(tenant, delivery, now).await? {
        RescheduleOutcome::Rescheduled(d) => RetryOutcome::Retrying(d),
        RescheduleOutcome::TooLate(state) => RetryOutcome::NotRetryable(state),
        _ => RetryOutcome::NotFound,
    })
}

#[async_trait]
impl Scheduler for Engine {
    async fn schedule_with(
        &self,
        tenant: &str,
        post: &Post,
        at: DateTime<Utc>,
        options: ScheduleOptions,
    ) -> Result<ScheduledPost> {
        let s = &self.shared;
        if tenant.is_empty() {
            return Err(Error::invalid_input("the tenant is empty"));
        }
        // Ids are keys in every store; PostgreSQL's text cannot even hold U+0000.
        if tenant.chars().any(char::is_control) {
            return Err(Error::invalid_input("the tenant holds a control character"));
        }
        if post.targets.is_empty() {
            return Err(Error::invalid_input("the post has no target"));
        }
        for (i, t) in post.targets.iter().enumerate() {
            if t.account_id.is_empty() || t.account_id.chars().any(char::is_control) {
                return Err(Error::invalid_input(format!(
                    "the {} account id of target {} is empty or holds a control character",
                    t.platform,
                    i + 1
                )));
            }
            if post.targets[..i].contains(t) {
                return Err(Error::invalid_input(format!(
                    "the post targets {}/{} twice",
                    t.platform, t.account_id
                )));
            }
            if let Some(p) = s.publishers.get(&t.platform) {
                p.validate(post).into_result()?;
            }
        }
        let now = s.clock.now();
        let post_id = Uuid::now_v7();
        let deliveries: Vec<Delivery> = post
            .targets
            .iter()
            .map(|t| {
                Delivery::new(NewDelivery {
                    post_id,
                    tenant,
                    target: t.clone(),
                    post,
                    due_at: at,
                    max_attempts: options.max_attempts.unwrap_or(s.retry.max_attempts),
                    deadline: options.deadline,
                    now,
                })
            })
            .collect();
        let events: Vec<Event> = deliveries
            .iter()
            .map(|d| Event::for_delivery(d, EventKind::Scheduled, now))
            .collect();
        s.store.insert(&deliveries, &events).await?;
        for e in events {
            let _ = s.events.send(e);
        }
        s.wake.notify_waiters();
        Ok(ScheduledPost {
            post_id,
            deliveries: deliveries.iter().map(|d| d.id).collect(),
        })
    }

    async fn cancel(&self, tenant: &str, delivery: Uuid) -> Result<CancelOutcome> {
        self.shared
            .store
            .cancel(tenant, delivery, self.shared.clock.now())
            .await
    }

    async fn reschedule(
        &self,
        tenant: &str,
        delivery: Uuid,
        at: DateTime<Utc>,
    ) -> Result<RescheduleOutcome> {
        let out = self
            .shared
            .store
            .reschedule(tenant, delivery, at, self.shared.clock.now())
            .await?;
        self.shared.wake.notify_waiters();
        Ok(out)
    }

    async fn retry(&self, tenant: &str, delivery: Uuid) -> Result<RetryOutcome> {
        retry_at(self, tenant, delivery, self.shared.clock.now()).await
    }

    async fn get(&self, tenant: &str, delivery: Uuid) -> Result<Option<Delivery>> {
        self.shared.store.get(tenant, delivery).await
    }

    async fn history(&self, tenant: &str, delivery: Uuid) -> Result<Vec<HistoryEntry>> {
        self.shared.store.history(tenant, delivery).await
    }

    async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        self.shared.store.list(filter).await
    }
}
