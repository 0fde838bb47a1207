//! Rate-limit headers in their common shapes, parsed into one [`RateLimit`].

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
    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset_at.is_none()
    }

    /// Whether no call is left in this window.
    pub fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }
}

/// What a response's headers say about rate limits.
///
/// Understands `x-rate-limit-{limit,remaining,reset}` (X; reset in epoch seconds), the IETF
/// draft `ratelimit-{limit,remaining,reset}` (reset in seconds from now),
/// `x-user-limit-24hour-*` and `x-app-limit-24hour-*` (X's daily caps), `Retry-After` (seconds or
/// an HTTP date) and Meta's `x-app-usage` / `x-business-use-case-usage` (percent of quota used,
/// and the time to regain access).
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

fn window_epoch(h: &HeaderMap, prefix: &str) -> Option<Window> {
    let w = Window {
        limit: header_u64(h, &format!("{prefix}-limit")),
        remaining: header_u64(h, &format!("{prefix}-remaining")),
        reset_at: header_u64(h, &format!("{prefix}-reset")).and_then(epoch),
    };
    (!w.is_empty()).then_some(w)
}

/// Parses `Retry-After`: delay seconds, or an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

fn meta_usage(h: &HeaderMap) -> (Option<f64>, Option<Duration>) {
    let mut max: Option<f64> = None;
    let mut regain: Option<Duration> = None;
    let mut see = |v: &serde_json::Value| {
        for key in [
            "call_count",
            "total_time",
            "total_cputime",
            "acc_id_util_pct",
        ] {
            if let Some(p) = v.get(key).and_then(serde_json::Value::as_f64) {
                max = Some(max.map_or(p, |m: f64| m.max(p)));
            }
        }
        if let Some(m) = v
            .get("estimated_time_to_regain_access")
            .and_then(serde_json::Value::as_u64)
            && m > 0
        {
            let d = Duration::from_secs(m * 60);
            regain = Some(regain.map_or(d, |r: Duration| r.max(d)));
        }
    };
    for name in ["x-app-usage", "x-ad-account-usage"] {
        if let Some(v) = h
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        {
            see(&v);
        }
    }
    for name in ["x-business-use-case-usage", "x-page-usage"] {
        if let Some(v) = h
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        {
            match &v {
                serde_json::Value::Object(m)
                    if m.values().all(|x| x.is_array()) && !m.is_empty() =>
                {
                    for entries in m.values() {
                        for e in entries.as_array().into_iter().flatten() {
                            see(e);
                        }
                    }
                }
                other => see(other),
            }
        }
    }
    (max, regain)
}

impl RateLimit {
    /// Parses `headers`, reading relative times against `now`.
    pub fn from_headers(headers: &HeaderMap, now: DateTime<Utc>) -> RateLimit {
        let mut window = window_epoch(headers, "x-rate-limit");
        if window.is_none() {
            let w = Window {
                limit: header_u64(headers, "ratelimit-limit"),
                remaining: header_u64(headers, "ratelimit-remaining"),
                reset_at: header_u64(headers, "ratelimit-reset")
                    .map(|s| now + chrono::Duration::seconds(i64::try_from(s).unwrap_or(0))),
            };
            window = (!w.is_empty()).then_some(w);
        }
        let (usage_percent, regain) = meta_usage(headers);
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now))
            .or(regain);
        RateLimit {
            window,
            user_day: window_epoch(headers, "x-user-limit-24hour"),
            app_day: window_epoch(headers, "x-app-limit-24hour"),
            retry_after,
            usage_percent,
        }
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

    /// Whether the caller should pause: a window is exhausted, or Meta usage is at or above
    /// `threshold` percent.
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
    fn x_headers() {
        let now = Utc.timestamp_opt(1_700_000_000, 0).single().expect("t");
        let h = headers(&[
            ("x-rate-limit-limit", "300"),
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", "1700000090"),
            ("x-user-limit-24hour-limit", "17"),
            ("x-user-limit-24hour-remaining", "16"),
            ("x-user-limit-24hour-reset", "1700050000"),
        ]);
        let r = RateLimit::from_headers(&h, now);
        assert_eq!(r.window.and_then(|w| w.remaining), Some(0));
        assert_eq!(r.user_day.and_then(|w| w.limit), Some(17));
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
    fn ietf_and_meta() {
        let now = Utc::now();
        let r = RateLimit::from_headers(
            &headers(&[
                ("ratelimit-limit", "10"),
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "30"),
                (
                    "x-app-usage",
                    r#"{"call_count":91,"total_time":5,"total_cputime":2}"#,
                ),
                (
                    "x-business-use-case-usage",
                    r#"{"123":[{"type":"pages","call_count":100,"total_cputime":1,"total_time":1,"estimated_time_to_regain_access":2}]}"#,
                ),
            ]),
            now,
        );
        assert_eq!(r.usage_percent, Some(100.0));
        assert_eq!(r.retry_after, Some(Duration::from_secs(120)));
        assert!(r.window.is_some_and(|w| w.exhausted()));
        assert!(RateLimit::from_headers(&HeaderMap::new(), now).is_empty());
    }
}
