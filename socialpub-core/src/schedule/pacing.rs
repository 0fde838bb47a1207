//! Pacing the engine applies before each publish, on top of the platforms' own rate limits:
//! optional GCRA quotas (the `governor` crate) per platform application and per account,
//! driven by the engine's injectable clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::auth::AccountKey;
use crate::clock::Clock;
use crate::platform::Platform;

/// `governor`'s view of the engine's clock: time since the Unix epoch.
#[derive(Debug, Clone)]
struct GovernorClock(Arc<dyn Clock>);

impl governor::clock::Clock for GovernorClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        (self.0.now() - DateTime::UNIX_EPOCH)
            .to_std()
            .unwrap_or_default()
    }
}

type AppLimiter = RateLimiter<NotKeyed, InMemoryState, GovernorClock, NoOpMiddleware<Duration>>;
type AccountLimiter =
    RateLimiter<AccountKey, HashMapStateStore<AccountKey>, GovernorClock, NoOpMiddleware<Duration>>;

/// Quotas per platform application and per account, as configured on the engine builder.
#[derive(Default)]
pub(crate) struct Pacer {
    app: HashMap<Platform, AppLimiter>,
    account: HashMap<Platform, AccountLimiter>,
}

impl Pacer {
    pub(crate) fn new(
        clock: &Arc<dyn Clock>,
        app: &HashMap<Platform, Quota>,
        account: &HashMap<Platform, Quota>,
    ) -> Self {
        let gc = GovernorClock(clock.clone());
        Pacer {
            app: app
                .iter()
                .map(|(p, q)| (*p, RateLimiter::direct_with_clock(*q, gc.clone())))
                .collect(),
            account: account
                .iter()
                .map(|(p, q)| (*p, RateLimiter::hashmap_with_clock(*q, gc.clone())))
                .collect(),
        }
    }

    /// Takes a cell for a publish to `key` at `now`; when a quota is spent, the instant the
    /// publish may go instead.
    pub(crate) fn check(&self, key: &AccountKey, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let gc_now = (now - DateTime::UNIX_EPOCH).to_std().unwrap_or_default();
        let wait = |d: Duration| now + chrono::Duration::from_std(d).unwrap_or_default();
        if let Some(l) = self.app.get(&key.platform)
            && let Err(not_until) = l.check()
        {
            return Some(wait(not_until.wait_time_from(gc_now)));
        }
        if let Some(l) = self.account.get(&key.platform)
            && let Err(not_until) = l.check_key(key)
        {
            return Some(wait(not_until.wait_time_from(gc_now)));
        }
        None
    }
}
