//! The publish step of a claimed delivery, and the recording of its outcome.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use secrecy::SecretString;

use super::journal::StoreJournal;
use super::lease::{LeaseWatch, lease_lost};
use super::worker::Slot;
use super::{Shared, std_to_chrono, told_wait};
use crate::error::{Error, ErrorKind, Result};
use crate::post::Post;
use crate::publish::{PublishContext, Publisher, Receipt, RemoteState};
use crate::schedule::delivery::{Delivery, DeliveryError, DeliveryState, Transition};
use crate::schedule::events::{Event, EventKind};

/// How long a delivery waits when another engine is publishing to its account.
const ACCOUNT_BUSY_WAIT: Duration = Duration::from_secs(1);

/// How long a delivery for a platform with no publisher in this engine waits before a worker
/// looks at it again.
pub const NO_PUBLISHER_WAIT: Duration = Duration::from_secs(60);

impl Shared {
    async fn warn_expiring(&self, d: &Delivery) {
        let Some(tm) = &self.token_manager else {
            return;
        };
        let key = d.account();
        let now = self.clock.now();
        let horizon = std_to_chrono(self.token_warning);
        {
            let warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
            if warned
                .get(&key)
                .is_some_and(|t| *t + chrono::Duration::days(1) > now)
            {
                return;
            }
        }
        let Ok(Some(token)) = tm.store().get(&key).await else {
            return;
        };
        let end = if token.refresh_token.is_some() {
            token.refresh_expires_at
        } else {
            token.expires_at
        };
        let Some(end) = end.filter(|e| *e <= now + horizon) else {
            return;
        };
        self.warned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, now);
        let event = Event::token_expires_soon(d.tenant.clone(), d.target.clone(), end, now);
        if let Err(e) = self.store.append_event(&event).await {
            tracing::warn!(error = %e, "recording a token expiry warning failed");
        }
        let _ = self.events.send(event);
    }

    pub(super) async fn publish_step(
        &self,
        d: Delivery,
        lost: &Arc<LeaseWatch>,
        slot: &mut Slot,
    ) -> Result<()> {
        let key = d.account();
        let now = self.clock.now();
        let Some(publisher) = self.publishers.get(&d.target.platform).cloned() else {
            return self.release_without_publisher(&d).await;
        };
        if d.attempt > d.max_attempts {
            let e = DeliveryError::new(
                d.last_error
                    .as_ref()
                    .map_or(ErrorKind::Transient, |e| e.kind),
                format!(
                    "gave up after {} attempts; last error: {}",
                    d.max_attempts,
                    d.last_error
                        .as_ref()
                        .map_or("none recorded".to_owned(), |e| e.message.clone())
                ),
            );
            return self.fail(&d, e, d.max_attempts).await;
        }
        if let Some(deadline) = d.deadline
            && deadline < now
        {
            let e = DeliveryError::new(
                ErrorKind::Transient,
                format!(
                    "the deadline {} passed before it could be published",
                    deadline.to_rfc3339()
                ),
            );
            return self.fail(&d, e, d.attempt.saturating_sub(1)).await;
        }
        let report = publisher.validate(&d.post);
        if !report.is_ok() {
            let e = DeliveryError::from(&Error::validation(report));
            return self.fail(&d, e, d.attempt.saturating_sub(1)).await;
        }

        // One publish per account at a time; a delivery waiting here keeps its lease alive.
        let lock = self.account_lock(&key);
        let _account = lock.lock().await;
        if lost.is_lost() {
            return Ok(());
        }
        if self.stopping.load(Ordering::SeqCst) {
            let t = Transition::new(&d, DeliveryState::Scheduled, self.clock.now())
                .run_at(self.clock.now())
                .attempt(d.attempt.saturating_sub(1))
                .message("released at shutdown before it started");
            return self.write(t).await.map(|_| ());
        }
        if let Some(until) = self.paused_until(&key) {
            let wait = self.retry.rate_limit_wait(Some(Duration::ZERO));
            let e = DeliveryError::new(
                ErrorKind::RateLimited,
                format!(
                    "the account (or its platform's application) is rate-limited until {}",
                    until.to_rfc3339()
                ),
            );
            return self.snooze(&d, until + std_to_chrono(wait), e, false).await;
        }
        if let Some(at) = self.pacer.check(&key, self.clock.now()) {
            let e = DeliveryError::new(
                ErrorKind::RateLimited,
                format!(
                    "paced by the configured quota for {}: next slot at {}",
                    key.platform,
                    at.to_rfc3339()
                ),
            );
            return self.snooze(&d, at, e, false).await;
        }

        // One publish per account across every engine sharing the store, too: the slot is
        // held with the lease, renewed with it and given up when the publish returns.
        let account_slot = match &self.slots {
            Some(slots) => match slots.take(&key).await? {
                Some(used) => Some(used),
                None => {
                    let now = self.clock.now();
                    let t = Transition::new(&d, DeliveryState::Scheduled, now)
                        .run_at(now + std_to_chrono(ACCOUNT_BUSY_WAIT))
                        .attempt(d.attempt.saturating_sub(1))
                        .message("another worker is publishing to this account; waiting for it");
                    return self.write(t).await.map(|_| ());
                }
            },
            None => None,
        };

        self.warn_expiring(&d).await;

        let fence = d.lease.as_ref().map_or(d.fence, |l| l.fence);
        let journal = self.journal(&d, fence, lost);
        // `preparing` is written with the publish's first checkpoint (an upload under way), not
        // here: a publish that goes straight to its create request moves from `claimed` to
        // `committing` at its commit point, one durable write fewer per delivery.
        journal.record_preparing(Transition::new(
            &d,
            DeliveryState::Preparing,
            self.clock.now(),
        ));
        let mut ctx = self.context(&d, journal.clone());
        let result = {
            let publish = self.publish_with_refresh(&*publisher, &mut ctx, &d, &journal);
            tokio::pin!(publish);
            tokio::select! {
                r = &mut publish => r,
                // The slot was lost (it expired and another delivery took it): the lease is
                // treated as lost, so the publish sends no create request from now on.
                () = async {
                    match &account_slot {
                        Some(used) => used.lost().await,
                        None => std::future::pending().await,
                    }
                } => {
                    lost.lose();
                    publish.await
                }
            }
        };
        drop(account_slot);
        // The slot bounds publishes (and the uploads they buffer) in flight; recording the
        // outcome is the store's work, and the next publish need not wait for its commit.
        drop(ctx);
        *slot = Slot::Free;
        if lost.is_lost() {
            tracing::info!(delivery = %d.id, "lease lost during the publish; leaving the delivery to its new owner");
            return Ok(());
        }
        let committed = journal.committed.load(Ordering::SeqCst);
        // The journal's view is the freshest: a checkpoint moved the row to preparing, the
        // commit point to committing.
        let mut d = d;
        if committed {
            d.state = DeliveryState::Committing;
        } else if journal.prepared.load(Ordering::SeqCst) {
            d.state = DeliveryState::Preparing;
        }
        match result {
            Ok(receipt) => self.accepted(&d, receipt, false).await,
            Err(e) => self.publish_failed(&d, &e, committed).await,
        }
    }

    /// Gives back a delivery whose platform has no publisher in this engine, unchanged but for
    /// a later run time: the missing publisher is this process's configuration, not the post's
    /// fault, and another process (or this one, restarted with the platform configured) can
    /// still publish it. The claim's attempt is returned, so waiting never uses up the budget.
    async fn release_without_publisher(&self, d: &Delivery) -> Result<()> {
        let now = self.clock.now();
        let again = now + std_to_chrono(NO_PUBLISHER_WAIT);
        tracing::warn!(
            delivery = %d.id,
            platform = %d.target.platform,
            "no publisher is registered for this platform here; the delivery stays scheduled"
        );
        let t = Transition::new(d, DeliveryState::Scheduled, now)
            .run_at(again)
            .attempt(d.attempt.saturating_sub(1))
            .message(format!(
                "no publisher for {} is registered in this process: left waiting, looked at \
                 again at {}",
                d.target.platform,
                again.to_rfc3339()
            ));
        self.write(t).await.map(|_| ())
    }

    /// Publishes, and on an unauthorized answer refreshes the token once and publishes once
    /// more. Abandons a publish that outlives the publish timeout.
    async fn publish_with_refresh(
        &self,
        publisher: &dyn Publisher,
        ctx: &mut PublishContext,
        d: &Delivery,
        journal: &StoreJournal,
    ) -> Result<Receipt> {
        let before: Option<SecretString> = self.tokens.access_token(ctx.account()).await.ok();
        let first = self.timed_publish(publisher, ctx, &d.post, journal).await;
        match first {
            Err(e) if e.kind() == ErrorKind::Unauthorized => {
                let Some(before) = before else {
                    return Err(e);
                };
                let key = ctx.account().clone();
                tracing::info!(account = %key, "publish unauthorized; refreshing the token once");
                self.tokens.refresh_after_rejection(&key, &before).await?;
                self.timed_publish(publisher, ctx, &d.post, journal).await
            }
            other => other,
        }
    }

    async fn timed_publish(
        &self,
        publisher: &dyn Publisher,
        ctx: &mut PublishContext,
        post: &Post,
        journal: &StoreJournal,
    ) -> Result<Receipt> {
        let deadline = self.clock.now() + std_to_chrono(self.publish_timeout);
        let sleep = self.clock.sleep_until(deadline);
        tokio::select! {
            // Checked first: once another worker owns the delivery, this publish must not take
            // another step (its owner reconciles anything already sent).
            biased;
            () = journal.lost.lost() => Err(lease_lost(journal.id)),
            r = publisher.publish(ctx, post) => r,
            _ = sleep => {
                // Abandoned before its commit point, nothing was sent; after it, the create
                // may be out.
                let kind = if journal.committed.load(Ordering::SeqCst) {
                    ErrorKind::Unconfirmed
                } else {
                    ErrorKind::Transient
                };
                Err(Error::new(
                    kind,
                    format!("the publish did not finish within {:?}", self.publish_timeout),
                ))
            }
        }
    }

    /// The platform accepted the post (a publish, a status check, or a lookup that found it).
    pub(super) async fn accepted(
        &self,
        d: &Delivery,
        receipt: Receipt,
        recovered: bool,
    ) -> Result<()> {
        let now = self.clock.now();
        if let Some(limits) = &receipt.rate_limit {
            self.pace_from(&d.account(), limits);
        }
        let kind = if recovered || d.had_failure {
            EventKind::Recovered
        } else {
            EventKind::Published
        };
        let t = match &receipt.state {
            RemoteState::Published => {
                let t = Transition::new(d, DeliveryState::Published, now).receipt(receipt);
                self.with_event(d, t, kind)
            }
            RemoteState::Processing => {
                let elapsed = d
                    .committed_at
                    .map_or(Duration::ZERO, |c| (now - c).to_std().unwrap_or_default());
                Transition::new(d, DeliveryState::Processing, now)
                    .receipt(receipt)
                    .run_at(now + std_to_chrono(self.retry.poll_wait(elapsed)))
                    .message("accepted; the platform is processing it")
            }
            RemoteState::Failed { reason } => {
                let e = DeliveryError::new(
                    ErrorKind::Platform,
                    format!("the platform failed the post after accepting it: {reason}"),
                );
                let t = Transition::new(d, DeliveryState::Failed, now)
                    .receipt(receipt.clone())
                    .error(e);
                self.with_event(d, t, EventKind::Failed)
            }
        };
        self.write(t).await.map(|_| ())
    }

    async fn publish_failed(&self, d: &Delivery, e: &Error, committed: bool) -> Result<()> {
        let now = self.clock.now();
        let key = d.account();
        let err = DeliveryError::from(e);
        let kind = e.kind();
        // After the commit point, only an error that says the create did not take effect
        // may be retried; anything else may have published.
        let maybe_sent = committed
            && !e.is_not_sent()
            && matches!(
                kind,
                ErrorKind::Unconfirmed | ErrorKind::Storage | ErrorKind::Internal
            );
        if kind == ErrorKind::Unconfirmed || maybe_sent {
            let t = Transition::new(d, DeliveryState::Unconfirmed, now)
                .run_at(now + std_to_chrono(self.retry.lookup_base))
                .error(err);
            let t = self.with_event(d, t, EventKind::Unconfirmed);
            return self.write(t).await.map(|_| ());
        }
        match kind {
            ErrorKind::RateLimited => {
                let until = now
                    + std_to_chrono(
                        told_wait(e, now).unwrap_or(self.retry.default_rate_limit_wait),
                    );
                self.pause(&key, until);
                let at = until + std_to_chrono(self.retry.rate_limit_wait(Some(Duration::ZERO)));
                self.snooze(d, at, err, true).await
            }
            ErrorKind::Transient | ErrorKind::Storage => {
                if d.attempt >= d.max_attempts {
                    let e = DeliveryError {
                        message: format!("gave up after {} attempts: {}", d.attempt, err.message),
                        ..err
                    };
                    return self.fail(d, e, d.attempt).await;
                }
                let mut wait = self.retry.backoff(d.attempt);
                if let Some(told) = told_wait(e, now) {
                    wait = wait.max(told);
                }
                let at = now + std_to_chrono(wait);
                if let Some(deadline) = d.deadline
                    && at > deadline
                {
                    let e = DeliveryError {
                        message: format!("the deadline passes before a retry: {}", err.message),
                        ..err
                    };
                    return self.fail(d, e, d.attempt).await;
                }
                let t = Transition::new(d, DeliveryState::RetryWaiting, now)
                    .run_at(at)
                    .error(err);
                let t = self.with_event(d, t, EventKind::Retrying);
                self.write(t).await.map(|_| ())
            }
            ErrorKind::Unauthorized | ErrorKind::ReauthRequired => {
                let t = Transition::new(d, DeliveryState::NeedsReauth, now).error(err);
                let t = self.with_event(d, t, EventKind::NeedsReauth);
                self.write(t).await.map(|_| ())
            }
            ErrorKind::Validation | ErrorKind::InvalidInput => {
                self.fail(d, err, d.attempt.saturating_sub(1)).await
            }
            _ => self.fail(d, err, d.attempt).await,
        }
    }
}
