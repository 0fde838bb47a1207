//! An injectable clock, so expiry and scheduling logic can be tested without sleeping.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

/// A boxed sleep, as [`Clock::sleep_until`] returns it.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The current time, as socialpub sees it.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;

    /// Completes once this clock reads `at` or later. The default sleeps on tokio's timer for
    /// the time left, so tokio's paused test time drives it too; [`ManualClock`] completes
    /// when it is moved past `at`.
    fn sleep_until(&self, at: DateTime<Utc>) -> Sleep {
        let wait = (at - self.now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// Sleeps for `wait` by `clock`.
pub fn sleep(clock: &dyn Clock, wait: std::time::Duration) -> Sleep {
    let at = clock.now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
    clock.sleep_until(at)
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told: for tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
    moved: Arc<Notify>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
            moved: Arc::new(Notify::new()),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        if let Ok(mut now) = self.now.lock() {
            *now += by;
        }
        self.moved.notify_waiters();
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        if let Ok(mut now) = self.now.lock() {
            *now = at;
        }
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.now
            .lock()
            .map(|n| *n)
            .unwrap_or_else(|p| *p.into_inner())
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Sleep {
        let clock = self.clone();
        Box::pin(async move {
            loop {
                let moved = clock.moved.notified();
                tokio::pin!(moved);
                // Registered before the check, so a move between the check and the wait is
                // not missed.
                moved.as_mut().enable();
                if clock.now() >= at {
                    return;
                }
                moved.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleep_wakes_when_moved_past() {
        let start = Utc::now();
        let clock = ManualClock::new(start);
        let at = start + chrono::Duration::seconds(10);
        let mut sleeping = tokio::spawn(clock.sleep_until(at));
        clock.advance(chrono::Duration::seconds(5));
        tokio::task::yield_now().await;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), &mut sleeping)
                .await
                .is_err(),
            "still asleep before the deadline"
        );
        clock.advance(chrono::Duration::seconds(5));
        tokio::time::timeout(std::time::Duration::from_secs(5), sleeping)
            .await
            .expect("woken")
            .expect("joined");
    }
}
