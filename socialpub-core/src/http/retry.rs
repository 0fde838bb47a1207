//! Retry with exponential backoff and full jitter, for idempotent steps only; and the one-shot
//! wrapper for the commit.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use rand::Rng;

use crate::error::{Error, ErrorKind, Result};

/// How idempotent requests are retried: up to `max_retries` more times, waiting a random time
/// between zero and an exponentially growing delay (full jitter), or as long as the platform
/// asked (`Retry-After`, a reset time) when that is no longer than `max_wait`.
///
/// Only errors whose [`Error::is_retryable`] is true are retried. Never use it for the request
/// that creates a post: see [`commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub max_retries: usize,
    /// The first backoff ceiling.
    pub min_delay: Duration,
    /// The largest backoff ceiling.
    pub max_delay: Duration,
    /// The longest server-requested wait honored in place; a longer one fails fast with the
    /// rate-limit error so the caller (the scheduler) can park the work instead of a task.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_wait: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// Sets the retry count.
    pub fn with_max_retries(mut self, n: usize) -> Self {
        self.max_retries = n;
        self
    }

    /// Sets the backoff range.
    pub fn with_delays(mut self, min: Duration, max: Duration) -> Self {
        self.min_delay = min;
        self.max_delay = max;
        self
    }

    /// Sets the longest server-requested wait honored in place.
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Runs the idempotent operation `op`, retrying retryable errors.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries);
        let max_wait = self.max_wait;
        op.retry(backoff.build())
            .when(move |e: &Error| {
                e.is_retryable() && e.retry_after().is_none_or(|w| w <= max_wait)
            })
            .adjust(|e: &Error, planned: Option<Duration>| {
                // `None` means the retries are used up: keep it so.
                let planned = planned?;
                Some(match e.retry_after() {
                    Some(wait) => wait,
                    None => full_jitter(planned),
                })
            })
            .notify(|e: &Error, wait: Duration| {
                tracing::debug!(error = %e, wait_ms = wait.as_millis() as u64, "retrying");
            })
            .await
    }
}

fn full_jitter(ceiling: Duration) -> Duration {
    let max = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=max))
}

/// Runs the request that creates a post: once, never retried. A [`ErrorKind::Transient`]
/// failure becomes [`ErrorKind::Unconfirmed`] (the platform may have acted on it) unless the
/// request certainly never left ([`Error::is_not_sent`]).
pub async fn commit<T, Fut>(op: Fut) -> Result<T>
where
    Fut: Future<Output = Result<T>>,
{
    op.await.map_err(|e| {
        if e.kind() == ErrorKind::Transient && !e.is_not_sent() {
            let msg = format!(
                "{}; the outcome of the create request is unknown",
                e.message()
            );
            Error::new(ErrorKind::Unconfirmed, msg).with_source(e)
        } else {
            e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn retries_transient_then_succeeds() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let out = RetryPolicy::default()
            .run(|| {
                let c = c.clone();
                async move {
                    if c.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err(Error::new(ErrorKind::Transient, "503"))
                    } else {
                        Ok(7)
                    }
                }
            })
            .await
            .expect("succeeds");
        assert_eq!(out, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn honors_retry_after() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let start = tokio::time::Instant::now();
        RetryPolicy::default()
            .run(|| {
                let c = c.clone();
                async move {
                    if c.fetch_add(1, Ordering::SeqCst) == 0 {
                        Err(Error::new(ErrorKind::RateLimited, "429")
                            .with_retry_after(Duration::from_secs(30)))
                    } else {
                        Ok(())
                    }
                }
            })
            .await
            .expect("succeeds");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn long_waits_and_permanent_errors_fail_fast() {
        for err in [
            Error::new(ErrorKind::RateLimited, "429").with_retry_after(Duration::from_secs(3600)),
            Error::new(ErrorKind::Validation, "bad"),
            Error::new(ErrorKind::Unconfirmed, "?"),
        ] {
            let calls = AtomicUsize::new(0);
            let kind = err.kind();
            let err = std::sync::Mutex::new(Some(err));
            let e = RetryPolicy::default()
                .run(|| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let e = err.lock().expect("lock").take();
                    async move { Err::<(), _>(e.unwrap_or_else(|| Error::internal("second call"))) }
                })
                .await
                .expect_err("fails");
            assert_eq!(e.kind(), kind);
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn commit_is_never_retried_and_becomes_unconfirmed() {
        let calls = AtomicUsize::new(0);
        let e = commit(async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Error::new(ErrorKind::Transient, "502"))
        })
        .await
        .expect_err("fails");
        assert_eq!(e.kind(), ErrorKind::Unconfirmed);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let e = commit(async {
            Err::<(), _>(Error::new(ErrorKind::Transient, "refused").with_not_sent())
        })
        .await
        .expect_err("fails");
        assert_eq!(e.kind(), ErrorKind::Transient);
    }
}
