//! The status poll of a delivery the platform is still processing.

use std::sync::Arc;
use std::time::Duration;

use super::lease::LeaseWatch;
use super::{Shared, std_to_chrono, told_wait};
use crate::error::{ErrorKind, Result};
use crate::publish::RemoteState;
use crate::schedule::delivery::{Delivery, DeliveryError, DeliveryState, Transition};

impl Shared {
    pub(super) async fn poll_step(&self, d: Delivery, lost: &Arc<LeaseWatch>) -> Result<()> {
        let now = self.clock.now();
        let elapsed = d
            .committed_at
            .map_or(Duration::ZERO, |c| (now - c).to_std().unwrap_or_default());
        let (Some(publisher), Some(receipt)) = (
            self.publishers.get(&d.target.platform).cloned(),
            d.receipt.clone(),
        ) else {
            let t = Transition::new(&d, DeliveryState::Processing, now)
                .run_at(now + std_to_chrono(self.retry.poll_wait(elapsed)))
                .message(format!(
                    "no publisher for {} is registered here to check the status",
                    d.target.platform
                ));
            return self.write(t).await.map(|_| ());
        };
        let fence = d.lease.as_ref().map_or(d.fence, |l| l.fence);
        let ctx = self.context(&d, self.journal(&d, fence, lost));
        let result = publisher.status(&ctx, &receipt).await;
        if lost.is_lost() {
            return Ok(());
        }
        let now = self.clock.now();
        match result {
            Ok(r) if r.state == RemoteState::Processing => {
                if elapsed > self.retry.max_processing {
                    let e = DeliveryError::new(
                        ErrorKind::Platform,
                        format!("still processing after {elapsed:?}"),
                    );
                    return self.fail(&d, e, d.attempt).await;
                }
                let t = Transition::new(&d, DeliveryState::Processing, now)
                    .receipt(r)
                    .run_at(now + std_to_chrono(self.retry.poll_wait(elapsed)));
                self.write(t).await.map(|_| ())
            }
            Ok(r) => self.accepted(&d, r, false).await,
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                // The publisher reported processing but cannot check it: the platform has
                // accepted the post, which is all that can be known.
                let r = receipt.with_state(RemoteState::Published);
                self.accepted(&d, r, false).await
            }
            Err(e) => {
                let wait = told_wait(&e, now)
                    .unwrap_or_default()
                    .max(self.retry.poll_wait(elapsed));
                let t = Transition::new(&d, DeliveryState::Processing, now)
                    .run_at(now + std_to_chrono(wait))
                    .message(format!("status check failed: {e}"));
                self.write(t).await.map(|_| ())
            }
        }
    }
}
