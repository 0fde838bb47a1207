//! The reconciliation of an unconfirmed delivery: a lookup on the platform settles or parks it.

use std::sync::Arc;

use super::lease::LeaseWatch;
use super::{Shared, std_to_chrono};
use crate::error::{ErrorKind, Result};
use crate::publish::LookupOutcome;
use crate::schedule::delivery::{Delivery, DeliveryError, DeliveryState, Transition};
use crate::schedule::events::EventKind;
use crate::schedule::policy::DeliveryPolicy;

impl Shared {
    pub(super) async fn reconcile_step(&self, d: Delivery, lost: &Arc<LeaseWatch>) -> Result<()> {
        let now = self.clock.now();
        let since = d.committed_at.unwrap_or(d.updated_at);
        let elapsed = (now - since).to_std().unwrap_or_default();
        let Some(publisher) = self.publishers.get(&d.target.platform).cloned() else {
            return self
                .park(
                    &d,
                    format!("no publisher for {} is registered", d.target.platform),
                )
                .await;
        };
        let fence = d.lease.as_ref().map_or(d.fence, |l| l.fence);
        let ctx = self.context(&d, self.journal(&d, fence, lost));
        let result = publisher.lookup_recent(&ctx, &d.post, since).await;
        if lost.is_lost() {
            return Ok(());
        }
        let now = self.clock.now();
        let unsure = |why: String| -> (bool, String) { (elapsed < self.retry.lookup_window, why) };
        let (retry_later, why) = match result {
            Ok(LookupOutcome::Found(receipt)) => {
                tracing::info!(delivery = %d.id, "an unconfirmed publish was found on the platform");
                return self.accepted(&d, receipt, true).await;
            }
            // The parts found stay in the checkpoint the publish resumes from: publishing again
            // continues after them, as for an absent post.
            Ok(outcome @ (LookupOutcome::Absent | LookupOutcome::Partial(_))) => {
                let what = match outcome {
                    LookupOutcome::Partial(found) => format!(
                        "the lookup found {} part(s) of the post and not the rest",
                        found.parts.len()
                    ),
                    _ => "the lookup shows the post is absent".to_owned(),
                };
                let trusted_from = since + std_to_chrono(self.retry.absent_after.max(self.lease));
                if now < trusted_from {
                    let t = Transition::new(&d, DeliveryState::Unconfirmed, now)
                        .run_at(trusted_from)
                        .message(format!(
                            "not found yet; a create still in flight could land until {}: \
                             looking again then",
                            trusted_from.to_rfc3339()
                        ));
                    return self.write(t).await.map(|_| ());
                }
                let t = Transition::new(&d, DeliveryState::RetryWaiting, now)
                    .run_at(now)
                    .message(format!("{what}: publishing again"));
                let t = self.with_event(&d, t, EventKind::Retrying);
                return self.write(t).await.map(|_| ());
            }
            Ok(LookupOutcome::Unknown { reason }) => {
                unsure(format!("the lookup could not tell: {reason}"))
            }
            Err(e) if e.kind() == ErrorKind::Unsupported => (
                false,
                format!("{} cannot look up recent posts", d.target.platform),
            ),
            Err(e) => unsure(format!("the lookup failed: {e}")),
        };
        if retry_later {
            let t = Transition::new(&d, DeliveryState::Unconfirmed, now)
                .run_at(now + std_to_chrono(self.retry.lookup_wait(elapsed)))
                .message(why);
            return self.write(t).await.map(|_| ());
        }
        match self.policy {
            DeliveryPolicy::AtLeastOnce => {
                let t = Transition::new(&d, DeliveryState::RetryWaiting, now)
                    .run_at(now)
                    .message(format!("{why}; publishing again (at-least-once policy)"));
                let t = self.with_event(&d, t, EventKind::Retrying);
                self.write(t).await.map(|_| ())
            }
            _ => self.park(&d, why).await,
        }
    }

    /// Leaves an unconfirmed delivery for a person, saying why.
    async fn park(&self, d: &Delivery, why: String) -> Result<()> {
        let message = format!(
            "{why}. The post may or may not be on the platform: check the account, then \
             reschedule the delivery to publish it again or cancel it"
        );
        let t = Transition::new(d, DeliveryState::Unconfirmed, self.clock.now())
            .error(DeliveryError::new(ErrorKind::Unconfirmed, message));
        let t = self.with_event(d, t, EventKind::Unconfirmed);
        self.write(t).await.map(|_| ())
    }
}
