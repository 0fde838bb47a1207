//! Policies: how often and how late to retry ([`RetryPolicy`]), and what to do with a publish
//! whose outcome is unknown ([`DeliveryPolicy`]).

use std::time::Duration;

use rand::Rng;

/// A GCRA quota (from the `governor` crate), for [`crate::schedule::EngineBuilder::app_quota`]
/// and [`crate::schedule::EngineBuilder::account_quota`].
pub use governor::Quota;

/// What to do with an `unconfirmed` delivery (the create request may have gone out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryPolicy {
    /// Never publish twice (the default): publish again only when
    /// [`crate::Publisher::lookup_recent`] shows the post is absent. When the lookup cannot
    /// tell, or the publisher has none, the delivery stays `unconfirmed` for a person to decide.
    #[default]
    AtMostOnce,
    /// Never lose a post: as above, but when the lookup cannot tell (or there is none),
    /// publish again, accepting a possible duplicate.
    AtLeastOnce,
}

/// Retries of failures before the commit: exponential backoff with full jitter, capped, with
/// an attempt budget. Rate-limit waits follow the platform's `retry_after` / reset time instead
/// and do not use up an attempt.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts a new delivery gets (default 8).
    pub max_attempts: u32,
    /// The first backoff (default 5 s); attempt `n` waits up to `base · 2ⁿ⁻¹`.
    pub base: Duration,
    /// The longest backoff (default 30 min).
    pub cap: Duration,
    /// Whether to draw the wait uniformly from `[0, backoff]` (full jitter, the default), so
    /// retries of many accounts do not synchronise. Off, the wait is exactly the backoff.
    pub jitter: bool,
    /// Extra random wait, up to this long, added to a rate-limit wait so accounts limited at
    /// the same reset instant spread out (default 2 s).
    pub rate_limit_jitter: Duration,
    /// A rate-limit wait used when the platform gave none (default 60 s).
    pub default_rate_limit_wait: Duration,
    /// Status checks of a post the platform still processes: the first after this long
    /// (default 10 s); later ones wait half the time processing has taken so far, between
    /// `poll_base` and `poll_cap`.
    pub poll_base: Duration,
    /// The longest wait between status checks (default 5 min).
    pub poll_cap: Duration,
    /// How long a post may stay processing before the delivery fails (default 24 h).
    pub max_processing: Duration,
    /// The first lookup of an unconfirmed delivery waits this long after the commit, so the
    /// platform can show the post (default 30 s); later ones wait half the time since the
    /// commit, between this and `cap`.
    pub lookup_base: Duration,
    /// How long after the commit lookups that cannot tell keep being retried before the
    /// delivery is left `unconfirmed` for a person (default 1 h).
    pub lookup_window: Duration,
    /// A lookup that does not find the post is trusted only this long after the commit point
    /// (default 5 min); before, it is repeated then. A worker that lost its lease may still
    /// have its create request in flight (slow network, a paused process); this gives it time
    /// to land or be abandoned, so that re-publishing cannot duplicate it. Keep it above the
    /// lease and the adapters' request timeouts (the engine never uses less than its lease).
    pub absent_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(5),
            cap: Duration::from_secs(30 * 60),
            jitter: true,
            rate_limit_jitter: Duration::from_secs(2),
            default_rate_limit_wait: Duration::from_secs(60),
            poll_base: Duration::from_secs(10),
            poll_cap: Duration::from_secs(5 * 60),
            max_processing: Duration::from_secs(24 * 3600),
            lookup_base: Duration::from_secs(30),
            lookup_window: Duration::from_secs(3600),
            absent_after: Duration::from_secs(300),
        }
    }
}

fn doubled(base: Duration, cap: Duration, n: u32) -> Duration {
    let factor = 1u32
        .checked_shl(n.saturating_sub(1).min(30))
        .unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

fn up_to(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

impl RetryPolicy {
    /// The longest backoff after failed attempt `attempt` (1 for the first).
    pub fn max_backoff(&self, attempt: u32) -> Duration {
        doubled(self.base, self.cap, attempt)
    }

    /// The wait after failed attempt `attempt`: full jitter over [`RetryPolicy::max_backoff`].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let max = self.max_backoff(attempt);
        if self.jitter { up_to(max) } else { max }
    }

    /// The wait after a rate limit: the platform's wait (or the default) plus a little jitter.
    pub fn rate_limit_wait(&self, told: Option<Duration>) -> Duration {
        told.unwrap_or(self.default_rate_limit_wait) + up_to(self.rate_limit_jitter)
    }

    /// The wait before the next status check, `elapsed` after the commit.
    pub fn poll_wait(&self, elapsed: Duration) -> Duration {
        (elapsed / 2).clamp(self.poll_base, self.poll_cap.max(self.poll_base))
    }

    /// The wait before the next lookup, `elapsed` after the commit.
    pub fn lookup_wait(&self, elapsed: Duration) -> Duration {
        (elapsed / 2).clamp(self.lookup_base, self.cap.max(self.lookup_base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_full_jitter() {
        let p = RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        assert_eq!(p.max_backoff(1), Duration::from_secs(1));
        assert_eq!(p.max_backoff(3), Duration::from_secs(4));
        assert_eq!(p.max_backoff(5), Duration::from_secs(10));
        assert_eq!(p.max_backoff(400), Duration::from_secs(10));
        for _ in 0..100 {
            assert!(p.backoff(4) <= Duration::from_secs(8));
        }
        let fixed = RetryPolicy {
            jitter: false,
            ..p.clone()
        };
        assert_eq!(fixed.backoff(2), Duration::from_secs(2));
    }

    #[test]
    fn rate_limit_wait_honours_the_platform() {
        let p = RetryPolicy::default();
        let w = p.rate_limit_wait(Some(Duration::from_secs(900)));
        assert!(w >= Duration::from_secs(900) && w <= Duration::from_secs(902));
        assert!(p.rate_limit_wait(None) >= Duration::from_secs(60));
    }

    #[test]
    fn polls_slow_down_with_time() {
        let p = RetryPolicy::default();
        assert_eq!(p.poll_wait(Duration::ZERO), p.poll_base);
        assert_eq!(
            p.poll_wait(Duration::from_secs(120)),
            Duration::from_secs(60)
        );
        assert_eq!(p.poll_wait(Duration::from_secs(86_400)), p.poll_cap);
        assert_eq!(p.lookup_wait(Duration::ZERO), p.lookup_base);
    }
}
