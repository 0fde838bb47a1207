//! A publisher that does nothing but what the contract requires.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::Utc;
use socialpub_core::platform::{Capabilities, Platform, TextCounting, TextRule};
use socialpub_core::{Post, PublishContext, Publisher, Receipt, Result, ValidationReport};

/// Records the commit point (as every adapter must, right before the create request) and
/// returns at once. Posts whose text is `due:<micros>` have their lag recorded.
#[derive(Debug, Default)]
pub(super) struct Noop {
    pub(super) calls: AtomicUsize,
    pub(super) lags_us: Mutex<Vec<i64>>,
}

#[async_trait]
impl Publisher for Noop {
    fn platform(&self) -> Platform {
        Platform::X
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Platform::X, TextRule::new(280, TextCounting::Chars))
    }

    fn validate(&self, _post: &Post) -> ValidationReport {
        ValidationReport::new(Platform::X)
    }

    async fn publish(&self, ctx: &mut PublishContext, post: &Post) -> Result<Receipt> {
        if let Some(due) = post
            .text
            .strip_prefix("due:")
            .and_then(|s| s.parse::<i64>().ok())
        {
            let lag = Utc::now().timestamp_micros() - due;
            if let Ok(mut l) = self.lags_us.lock() {
                l.push(lag);
            }
        }
        ctx.commit_point().await?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Receipt::new(Platform::X, "noop", None))
    }
}
