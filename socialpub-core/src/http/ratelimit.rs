//! One [`RateLimit`] type for every platform. Core parses only the generic headers (the IETF
//! `ratelimit-*` draft and `Retry-After`); each adapter's [`super::Dialect`] adds its platform's
//! own headers with the helpers here.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

/// One rate-limit window: how many calls it allows, how many are left, when it resets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Calls allowed in the window.
    pub limit: Option<u64>,
    /// Calls left.
    pub remaining: Option<u64>,
    /// When the window resets.
    pub reset_at: Option<DateTime<Utc>>,
}

impl Window {
    /// The window of headers `{prefix}-limit`, `{prefix}-remaining` and `{prefix}-reset`, the
    /// reset in epoch seconds (X's `x-rate-limit-*`); `None` when none is present.
    pub fn from_epoch_headers(h: &HeaderMap, prefix: &str) -> Option<Window> {
        let w = Window {
            limit: header_u64(h, &format!("{prefix}-limit")),
            remaining: header_u64(h, &format!("{prefix}-remaining")),
            reset_at: header_u64(h, &format!("{prefix}-reset")).and_then(epoch),
        };
        (!w.is_empty()).then_some(w)
    }

    /// The window of headers `{prefix}-limit`, `{prefix}-remaining` and `{prefix}-reset`, the
    /// reset in seconds from `now` (the IETF draft's `ratelimit-*`); `None` when none is present.
    pub fn from_delta_headers(h: &HeaderMap, prefix: &str, now: DateTime<Utc>) -> Option<Window> {
        let w = Window {
            limit: header_u64(h, &format!("{prefix}-limit")),
            remaining: header_u64(h, &format!("{prefix}-remaining")),
            reset_at: header_u64(h, &format!("{prefix}-reset"))
                .map(|s| now + chrono::Duration::seconds(i64::try_from(s).unwrap_or(0))),
        };
        (!w.is_empty()).then_some(w)
    }

    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset_at.is_none()
    }

    /// Whether no call is left in this window.
    pub fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }
}

/// What a response's headers say about rate limits: an endpoint window, per-user and per-app
/// daily windows, a requested wait, and a usage percentage (platforms that report quota use as a
/// percent). [`RateLimit::from_headers`] reads the generic headers; adapters add the rest with
/// the `with_*` methods.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RateLimit {
    /// The endpoint's window.
    pub window: Option<Window>,
    /// A per-user 24-hour window.
    pub user_day: Option<Window>,
    /// A per-app 24-hour window.
    pub app_day: Option<Window>,
    /// How long the server asked to wait.
    pub retry_after: Option<Duration>,
    /// The highest usage percentage a Meta header reports (100 = throttled).
    pub usage_percent: Option<f64>,
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn epoch(secs: u64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(i64::try_from(secs).ok()?, 0).single()
}

/// Parses `Retry-After`: delay seconds, or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

impl RateLimit {
    /// Reads the generic headers of `headers`: the IETF draft's `ratelimit-{limit,remaining,
    /// reset}` (reset in seconds from now) and `Retry-After` (seconds or an HTTP date), relative
    /// times against `now`.
    pub fn from_headers(headers: &HeaderMap, now: DateTime<Utc>) -> RateLimit {
        RateLimit {
            window: Window::from_delta_headers(headers, "ratelimit", now),
            retry_after: headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now)),
            ..RateLimit::default()
        }
    }

    /// Sets the endpoint window, when there is one.
    pub fn with_window(mut self, window: Option<Window>) -> Self {
        self.window = window.or(self.window);
        self
    }

    /// Sets the per-user daily window, when there is one.
    pub fn with_user_day(mut self, window: Option<Window>) -> Self {
        self.user_day = window.or(self.user_day);
        self
    }

    /// Sets the per-app daily window, when there is one.
    pub fn with_app_day(mut self, window: Option<Window>) -> Self {
        self.app_day = window.or(self.app_day);
        self
    }

    /// Sets the requested wait, when there is one and none was read yet.
    pub fn with_retry_after(mut self, wait: Option<Duration>) -> Self {
        self.retry_after = self.retry_after.or(wait);
        self
    }

    /// Sets the usage percentage, when there is one (the highest wins).
    pub fn with_usage_percent(mut self, percent: Option<f64>) -> Self {
        self.usage_percent = match (self.usage_percent, percent) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self
    }

    /// Whether any limit was reported.
    pub fn is_empty(&self) -> bool {
        self.window.is_none()
            && self.user_day.is_none()
            && self.app_day.is_none()
            && self.retry_after.is_none()
            && self.usage_percent.is_none()
    }

    /// How long to wait before the next call: `Retry-After` if given, else until the latest
    /// reset of an exhausted window; `None` when nothing is exhausted.
    pub fn wait(&self, now: DateTime<Utc>) -> Option<Duration> {
        if let Some(d) = self.retry_after {
            return Some(d);
        }
        self.reset_at_exhausted()
            .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO))
    }

    /// The latest reset among exhausted windows.
    pub fn reset_at_exhausted(&self) -> Option<DateTime<Utc>> {
        [self.window, self.user_day, self.app_day]
            .into_iter()
            .flatten()
            .filter(Window::exhausted)
            .filter_map(|w| w.reset_at)
            .max()
    }

    /// Whether the caller should pause: a window is exhausted, or the reported usage is at or
    /// above `threshold` percent.
    pub fn should_pause(&self, threshold: f64) -> bool {
        self.reset_at_exhausted().is_some() || self.usage_percent.is_some_and(|p| p >= threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn epoch_windows_for_adapters() {
        let now = Utc.timestamp_opt(1_700_000_000, 0).single().expect("t");
        let h = headers(&[
            ("x-rate-limit-limit", "300"),
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", "1700000090"),
            ("x-user-limit-24hour-limit", "17"),
            ("x-user-limit-24hour-remaining", "16"),
            ("x-user-limit-24hour-reset", "1700050000"),
        ]);
        let generic = RateLimit::from_headers(&h, now);
        assert!(generic.is_empty(), "core reads no platform headers");
        let r = generic
            .with_window(Window::from_epoch_headers(&h, "x-rate-limit"))
            .with_user_day(Window::from_epoch_headers(&h, "x-user-limit-24hour"))
            .with_app_day(Window::from_epoch_headers(&h, "x-app-limit-24hour"));
        assert_eq!(r.window.and_then(|w| w.remaining), Some(0));
        assert_eq!(r.user_day.and_then(|w| w.limit), Some(17));
        assert!(r.app_day.is_none());
        assert_eq!(r.wait(now), Some(Duration::from_secs(90)));
        assert!(r.should_pause(90.0));
    }

    #[test]
    fn retry_after_seconds_and_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let r = RateLimit::from_headers(&headers(&[("retry-after", "120")]), now);
        assert_eq!(r.wait(now), Some(Duration::from_secs(120)));
        let r = RateLimit::from_headers(
            &headers(&[("retry-after", "Wed, 21 Oct 2015 07:29:00 GMT")]),
            now,
        );
        assert_eq!(r.wait(now), Some(Duration::from_secs(60)));
    }

    #[test]
    fn ietf_draft_and_usage() {
        let now = Utc::now();
        let r = RateLimit::from_headers(
            &headers(&[
                ("ratelimit-limit", "10"),
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "30"),
            ]),
            now,
        );
        assert!(r.window.is_some_and(|w| w.exhausted()));
        assert!(!r.should_pause(100.0) || r.reset_at_exhausted().is_some());
        let r = r
            .with_usage_percent(Some(91.0))
            .with_usage_percent(Some(40.0));
        assert_eq!(r.usage_percent, Some(91.0));
        assert!(r.should_pause(90.0));
        assert!(RateLimit::from_headers(&HeaderMap::new(), now).is_empty());
    }
}
