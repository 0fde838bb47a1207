//! Per-account state of the engine: one publish at a time per account, and rate-limit pauses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::{Shared, std_to_chrono};
use crate::auth::AccountKey;
use crate::http::{RateLimit, Window};

impl Shared {
    pub(super) fn account_lock(&self, key: &AccountKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = m.get(key) {
            return lock.clone();
        }
        m.entry(key.clone()).or_default().clone()
    }

    /// Until when publishes to `key` wait: its own pause or its platform's, the later.
    pub(super) fn paused_until(&self, key: &AccountKey) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        let account = still_paused(&self.paused, key, now);
        let app = still_paused(&self.paused_apps, &key.platform, now);
        account.max(app)
    }

    pub(super) fn pause(&self, key: &AccountKey, until: DateTime<Utc>) {
        extend_pause(&self.paused, key.clone(), until);
    }

    /// Paces from the limits a successful create reported: an exhausted window pauses the
    /// account (or, for the application's daily window, the whole platform) until it resets,
    /// so the next publish waits instead of drawing a `429`.
    pub(super) fn pace_from(&self, key: &AccountKey, limits: &RateLimit) {
        let now = self.clock.now();
        let reset = |w: Option<Window>| {
            w.filter(Window::exhausted)
                .and_then(|w| w.reset_at)
                .filter(|at| *at > now)
        };
        if let Some(at) = reset(limits.app_day) {
            tracing::info!(platform = %key.platform, until = %at.to_rfc3339(), "the application's daily window is spent; pausing the platform");
            extend_pause(&self.paused_apps, key.platform, at);
        }
        let mut account = [reset(limits.window), reset(limits.user_day)]
            .into_iter()
            .flatten()
            .max();
        if limits.usage_percent.is_some_and(|p| p >= 100.0) {
            let wait = limits
                .retry_after
                .unwrap_or(self.retry.default_rate_limit_wait);
            account = account.max(Some(now + std_to_chrono(wait)));
        }
        if let Some(at) = account {
            tracing::info!(account = %key, until = %at.to_rfc3339(), "the account's rate-limit window is spent; pausing it");
            self.pause(key, at);
        }
    }
}

/// The pause of `key` in `m` if it lasts beyond `now` (an ended one is removed).
fn still_paused<K: std::hash::Hash + Eq>(
    m: &Mutex<HashMap<K, DateTime<Utc>>>,
    key: &K,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
    match m.get(key) {
        Some(t) if *t > now => Some(*t),
        Some(_) => {
            m.remove(key);
            None
        }
        None => None,
    }
}

/// Pauses `key` in `m` until `until`, or later if it already was.
fn extend_pause<K: std::hash::Hash + Eq>(
    m: &Mutex<HashMap<K, DateTime<Utc>>>,
    key: K,
    until: DateTime<Utc>,
) {
    let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
    let slot = m.entry(key).or_insert(until);
    *slot = (*slot).max(until);
}
