//! The workers: rescues, claims, the handling of each claimed delivery, and the purge loop.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, watch};

use super::lease::{LeaseWatch, renew_loop};
use super::{Shared, std_to_chrono};
use crate::error::{Error, Result};
use crate::schedule::delivery::{Delivery, DeliveryState, Transition};
use crate::schedule::store::{Claimed, NextTimes};

pub(super) async fn worker_loop(shared: Arc<Shared>, id: String, mut stop: watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    let mut busy: u32 = 0;
    // The last round claimed a full batch: more is due than this engine has slots for.
    let mut backlog = false;
    // The last wait ended on a notification rather than at the planned time: something was
    // scheduled or changed, most often due later than this worker's next wake-up.
    let mut notified = false;
    // When this worker last planned to wake, before anything woke it sooner.
    let mut planned: Option<DateTime<Utc>> = None;
    // The earliest lease expiry it last read: the rescue runs when it has come (and at most
    // every `RESCUE_EVERY` besides). `MIN_UTC` makes the first round look at once.
    let mut lease_expiry = Some(DateTime::<Utc>::MIN_UTC);
    let store_wake = shared.store_wake.clone();
    loop {
        if *stop.borrow() {
            return;
        }
        // Register for wake-ups before reading the store, so a schedule that lands between
        // the read and the sleep still wakes this worker.
        let local = shared.wake.notified();
        tokio::pin!(local);
        local.as_mut().enable();
        let mut remote = store_wake.as_ref().map(|n| Box::pin(n.notified()));
        if let Some(r) = remote.as_mut() {
            r.as_mut().enable();
        }
        let remote = async {
            match remote.as_mut() {
                Some(r) => r.await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(remote);

        // Woken by a notification: one read of the next due time says whether to claim at
        // all. At a steady stream of schedules every one wakes every worker, and a full round
        // (rescue, claim, read) for each would load the store for nothing.
        let mut wake_at = None;
        if std::mem::take(&mut notified)
            && let Some(was) = planned
            && let Ok(next) = shared.store.next_times().await
        {
            lease_expiry = next.lease_expiry;
            let at = shared.wake_for(next).map_or(was, |t| was.min(t));
            if at > shared.clock.now() {
                wake_at = Some(at);
            }
        }
        let wake_at = match wake_at {
            Some(at) => at,
            None => {
                let rescue = lease_expiry.is_some_and(|t| t <= shared.clock.now());
                let round = shared.claim_round(&id, &mut stop, backlog, rescue).await;
                if rescue && round.is_ok() {
                    lease_expiry = None;
                }
                backlog = matches!(round, Ok(Round::Full));
                match round {
                    Ok(Round::Full) => {
                        failures = 0;
                        busy = 0;
                        continue;
                    }
                    Ok(Round::Stopped) => return,
                    Ok(Round::Partial) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(worker = %id, error = %e, "claiming deliveries failed");
                    }
                }

                let now = shared.clock.now();
                let mut wake_at = now + std_to_chrono(shared.idle_poll);
                if failures > 0 {
                    wake_at = now
                        + std_to_chrono(shared.retry.max_backoff(failures).min(shared.idle_poll));
                } else {
                    match shared.store.next_times().await {
                        Ok(next) => {
                            lease_expiry = next.lease_expiry;
                            if let Some(t) = shared.wake_for(next) {
                                wake_at = wake_at.min(t);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(worker = %id, error = %e, "reading the next due time failed")
                        }
                    }
                }
                if wake_at <= now {
                    // Something is due that this round did not take (another worker was
                    // faster). Look again at once, but never spin: a store whose due time and
                    // claim disagree would otherwise keep this loop busy.
                    busy += 1;
                    if busy > 3 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
                busy = 0;
                wake_at
            }
        };
        planned = Some(wake_at);
        let sleep = shared.clock.sleep_until(wake_at);
        tokio::select! {
            _ = &mut local => notified = true,
            _ = &mut remote => notified = true,
            _ = sleep => {}
            _ = stop.changed() => {}
        }
    }
}

/// How often a worker looks for expired leases besides when one is known to expire (another
/// process's claims and renewals move the expiries it read).
const RESCUE_EVERY: Duration = Duration::from_secs(1);

/// The longest a worker working through a backlog waits to gather slots for one claim.
const GATHER_WAIT: Duration = Duration::from_millis(5);

/// What a claimed delivery holds while it is handled. Dropping it frees the slot or place.
#[expect(dead_code, reason = "the permits are held for their drop, never read")]
pub(super) enum Slot {
    /// A concurrency slot.
    Run(OwnedSemaphorePermit),
    /// A place among the deliveries claimed ahead; it takes a slot at its time.
    Ahead(OwnedSemaphorePermit),
    /// Neither: a delivery [`Engine::run_once`] handles, or one whose publish returned and
    /// which is only recording the outcome.
    ///
    /// [`Engine::run_once`]: super::Engine::run_once
    Free,
}

enum Round {
    /// Claimed a full batch: more may be due.
    Full,
    /// Claimed less than asked: sleep until the next due time.
    Partial,
    /// Stopping.
    Stopped,
}

/// Counts a task in flight until dropped.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Shared {
    pub(super) async fn rescue(&self) -> Result<()> {
        let now = self.clock.now();
        self.last_rescue
            .store(now.timestamp_micros(), Ordering::Relaxed);
        let rescued = self.store.rescue_expired(now).await?;
        for r in rescued {
            tracing::info!(delivery = %r.delivery.id, state = %r.delivery.state, "rescued a delivery whose lease expired");
            if let Some(e) = r.event {
                let _ = self.events.send(e);
            }
        }
        Ok(())
    }

    /// Takes free slots into `permits`, up to a batch, without waiting.
    fn take_free(&self, permits: &mut Vec<OwnedSemaphorePermit>) {
        while permits.len() < self.batch {
            match self.permits.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
    }

    /// When a worker has something to do next: `claim_ahead` before the next run time (at it
    /// when no place ahead is free), or at the next lease expiry.
    fn wake_for(&self, next: NextTimes) -> Option<DateTime<Utc>> {
        let window = if self.ahead.available_permits() > 0 {
            self.claim_ahead
        } else {
            chrono::Duration::zero()
        };
        let run = next
            .run_at
            .map(|t| t.checked_sub_signed(window).unwrap_or(t));
        NextTimes::new(run, next.lease_expiry).earliest()
    }

    /// One round of a worker: looks for expired leases (when `rescue`, because a lease
    /// expiry has come, and at most every [`RESCUE_EVERY`] besides), then claims as many due
    /// deliveries as there are free slots, waiting for at least one, and outside a backlog
    /// as many again due within the claim-ahead window.
    async fn claim_round(
        self: &Arc<Self>,
        worker: &str,
        stop: &mut watch::Receiver<bool>,
        backlog: bool,
        rescue: bool,
    ) -> Result<Round> {
        let since = self
            .clock
            .now()
            .timestamp_micros()
            .saturating_sub(self.last_rescue.load(Ordering::Relaxed));
        if rescue || since >= i64::try_from(RESCUE_EVERY.as_micros()).unwrap_or(i64::MAX) {
            self.rescue().await?;
        }
        let first = tokio::select! {
            p = self.permits.clone().acquire_owned() => p.map_err(|_| Error::internal("engine semaphore closed"))?,
            _ = stop.changed() => return Ok(Round::Stopped),
        };
        let mut permits = vec![first];
        self.take_free(&mut permits);
        if backlog {
            // Working through a backlog, slots free up one by one; a claim per freed slot
            // would cost the store a transaction per delivery. Gather a quarter of the slots
            // first, waiting a few milliseconds at most.
            let enough = (self.batch.min(self.concurrency) / 4).max(1);
            let deadline = tokio::time::Instant::now() + GATHER_WAIT;
            while permits.len() < enough {
                tokio::select! {
                    p = self.permits.clone().acquire_owned() => match p {
                        Ok(p) => permits.push(p),
                        Err(_) => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = stop.changed() => return Ok(Round::Stopped),
                }
                self.take_free(&mut permits);
            }
        }
        // Places for deliveries due in the next moments. Not while working through a backlog:
        // what is due already comes first, and those claims are sized by the free slots.
        let mut ahead = Vec::new();
        if !backlog && self.claim_ahead > chrono::Duration::zero() {
            while ahead.len() < self.batch {
                match self.ahead.clone().try_acquire_owned() {
                    Ok(p) => ahead.push(p),
                    Err(_) => break,
                }
            }
        }
        if *stop.borrow() {
            return Ok(Round::Stopped);
        }
        let want = permits.len();
        let now = self.clock.now();
        let due_by = if ahead.is_empty() {
            now
        } else {
            now.checked_add_signed(self.claim_ahead).unwrap_or(now)
        };
        let claimed = self
            .store
            .claim_ahead(worker, now, want, due_by, ahead.len(), self.lease)
            .await?;
        // Due deliveries take the concurrency slots and later ones the places ahead. The store
        // returns at most as many of each; should a delivery due within the claim's instant
        // be counted among the later ones, the other kind serves.
        let (due, later): (Vec<_>, Vec<_>) = claimed.into_iter().partition(|c| c.run_at <= now);
        let got = due.len();
        let spawn = |c: Claimed, slot: Option<Slot>| {
            let shared = self.clone();
            shared.inflight.fetch_add(1, Ordering::SeqCst);
            let slot = slot.unwrap_or(Slot::Free);
            // The step's future is some kilobytes: boxed, it is written once, where a task
            // holding it inline would be copied on every move of the task's stage.
            tokio::spawn(Box::pin(shared.handle_at(c.delivery, slot, c.run_at)));
        };
        for c in due {
            let slot = permits
                .pop()
                .map(Slot::Run)
                .or_else(|| ahead.pop().map(Slot::Ahead));
            spawn(c, slot);
        }
        for c in later {
            let slot = ahead
                .pop()
                .map(Slot::Ahead)
                .or_else(|| permits.pop().map(Slot::Run));
            spawn(c, slot);
        }
        Ok(if got == want {
            Round::Full
        } else {
            Round::Partial
        })
    }

    /// Handles one delivery claimed for now to the end of this step.
    pub(super) async fn handle(self: Arc<Self>, d: Delivery, slot: Slot) {
        let now = self.clock.now();
        self.handle_at(d, slot, now).await
    }

    /// Handles one claimed delivery to the end of this step, renewing its lease meanwhile:
    /// waits until `run_at` if it was claimed ahead, then takes a concurrency slot if it has
    /// none.
    async fn handle_at(self: Arc<Self>, d: Delivery, mut slot: Slot, run_at: DateTime<Utc>) {
        let _inflight = InFlight(self.clone());
        let Some(fence) = d.lease.as_ref().map(|l| l.fence) else {
            return;
        };
        let lost = Arc::new(LeaseWatch::default());
        let id = d.id;
        let step = async {
            if !self.hold(&d, run_at, &mut slot).await? {
                return Ok(());
            }
            match d.state {
                DeliveryState::Claimed => self.publish_step(d, &lost, &mut slot).await,
                DeliveryState::Processing => self.poll_step(d, &lost).await,
                DeliveryState::Unconfirmed => self.reconcile_step(d, &lost).await,
                other => Err(Error::internal(format!(
                    "claimed delivery {id} in state {other}"
                ))),
            }
        };
        // The lease is renewed in this task rather than a task of its own: most steps end
        // long before the first renewal, and a spawn per delivery costs more than the step.
        // A lost lease ends the renewals, not the step: the step sees it and stops itself.
        let renew = async {
            renew_loop(&self, id, fence, &lost).await;
            std::future::pending::<Result<()>>().await
        };
        let result = tokio::select! {
            r = step => r,
            r = renew => r,
        };
        // The delivery may be due again sooner than any worker's next wake-up (a retry, a
        // status poll): let them look again.
        self.wake.notify_waiters();
        if let Err(e) = result {
            tracing::warn!(delivery = %id, error = %e, "handling a delivery failed; its lease will lapse and it will be rescued");
        }
    }

    /// Waits until `run_at` for a delivery claimed ahead, then trades its place ahead for a
    /// concurrency slot. `false` when the engine stopped first and gave the delivery back to
    /// the queue, at its time and with its attempt.
    async fn hold(&self, d: &Delivery, run_at: DateTime<Utc>, slot: &mut Slot) -> Result<bool> {
        if self.clock.now() < run_at {
            let stopped = self.stop_signal.notified();
            tokio::pin!(stopped);
            stopped.as_mut().enable();
            if !self.stopping.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = self.clock.sleep_until(run_at) => {}
                    _ = &mut stopped => {}
                }
            }
            let now = self.clock.now();
            if now < run_at {
                if d.state == DeliveryState::Claimed {
                    let t = Transition::new(d, DeliveryState::Scheduled, now)
                        .run_at(run_at)
                        .attempt(d.attempt.saturating_sub(1))
                        .message("released at shutdown before its time");
                    self.write(t).await?;
                    return Ok(false);
                }
                // A status poll or a reconciliation claimed ahead: not worth giving back for
                // the moments left.
                self.clock.sleep_until(run_at).await;
            }
        }
        if matches!(slot, Slot::Ahead(_)) {
            let run = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::internal("engine semaphore closed"))?;
            *slot = Slot::Run(run);
        }
        Ok(true)
    }
}

pub(super) async fn purge_loop(
    shared: Arc<Shared>,
    retention: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let sleep = crate::clock::sleep(&*shared.clock, Duration::from_secs(3600));
        tokio::select! {
            _ = sleep => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let before = shared.clock.now() - std_to_chrono(retention);
        match shared.store.purge(before).await {
            Ok(r) => tracing::info!(
                deliveries = r.deliveries,
                events = r.events,
                "purged old deliveries and events"
            ),
            Err(e) => tracing::warn!(error = %e, "purging old deliveries failed"),
        }
    }
}
