//! X's error answers, read as socialpub's [`ErrorKind`]s: the [`XDialect`] the API client
//! speaks.
//!
//! X answers errors in two shapes: RFC 7807 problem JSON (`type`, `title`, `detail`, `status`,
//! plus `reason`, `period`, `scope` on some types), and the older `{"errors":[{"code":88,
//! "message":"…"}]}` that still appears on some 429s. A 200 may also carry `errors[]` next to
//! (or instead of) `data`. Problem types are matched on their path, since X sends both the
//! `api.twitter.com` and `api.x.com` hosts.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use reqwest::header::HeaderMap;
use serde_json::Value;
use socialpub_core::http::{Classified, Dialect, RateLimit, RawAnswer, Window, header_str};
use socialpub_core::{ErrorKind, Platform};

/// The detail X sends for a post whose text repeats a recent one.
const DUPLICATE_MARK: &str = "duplicate content";

/// The problem type's last path segment (`usage-capped`), or `about:blank`.
fn problem_type(json: &Value) -> Option<String> {
    let t = json.get("type")?.as_str()?;
    Some(
        t.rsplit_once("/problems/")
            .map_or(t, |(_, name)| name)
            .to_owned(),
    )
}

fn text_of(json: &Value, key: &str) -> Option<String> {
    json.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// How X speaks HTTP: its two error shapes, `x-transaction-id`, and its rate-limit headers
/// (`x-rate-limit-*` per endpoint and 15 minutes, `x-user-limit-24hour-*` and
/// `x-app-limit-24hour-*` on posting, resets in epoch seconds).
///
/// - 401 is [`ErrorKind::Unauthorized`] (the client refreshes once).
/// - 429 and legacy code 88 are [`ErrorKind::RateLimited`], waiting until the exhausted window
///   resets, or as `retry-after` says.
/// - `usage-capped` is [`ErrorKind::RateLimited`] with a retry time at the end of its period
///   (daily or monthly): nothing helps before then.
/// - duplicate content (403, legacy 187) is [`ErrorKind::Platform`] with code
///   `duplicate-content`.
/// - `client-forbidden` (and `unsupported-authentication`, legacy 261/453) is
///   [`ErrorKind::Configuration`]: the app, not the post, must change.
/// - 5xx and 408 are [`ErrorKind::Transient`]; other 4xx are [`ErrorKind::Platform`].
#[derive(Debug, Clone, Copy, Default)]
pub struct XDialect;

impl Dialect for XDialect {
    fn platform(&self) -> Platform {
        Platform::X
    }

    fn classify(&self, a: &RawAnswer<'_>) -> Classified {
        let json = a.json();
        let first_error = json
            .get("errors")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or(Value::Null);
        let ptype = problem_type(json).or_else(|| problem_type(&first_error));
        let legacy_code = first_error.get("code").and_then(Value::as_i64);
        let detail = text_of(json, "detail")
            .or_else(|| text_of(&first_error, "detail"))
            .or_else(|| text_of(&first_error, "message"))
            .or_else(|| text_of(json, "title"))
            .unwrap_or_default();
        let title = text_of(json, "title").or_else(|| text_of(&first_error, "title"));
        let duplicate =
            detail.to_ascii_lowercase().contains(DUPLICATE_MARK) || legacy_code == Some(187);

        let kind = match (ptype.as_deref(), legacy_code) {
            _ if duplicate => Some(ErrorKind::Platform),
            (Some("usage-capped" | "rate-limit-exceeded"), _) | (_, Some(88)) => {
                Some(ErrorKind::RateLimited)
            }
            (Some("client-forbidden" | "unsupported-authentication"), _) | (_, Some(261 | 453)) => {
                Some(ErrorKind::Configuration)
            }
            (_, Some(32 | 89)) => Some(ErrorKind::Unauthorized),
            (Some("internal-error"), _) => Some(ErrorKind::Transient),
            _ => None,
        };
        let code = if duplicate {
            Some("duplicate-content".to_owned())
        } else {
            text_of(json, "reason")
                .or(ptype.clone().filter(|t| t != "about:blank"))
                .or(legacy_code.map(|c| c.to_string()))
        };
        let what = match (&title, detail.is_empty()) {
            (Some(t), false) if !detail.starts_with(t.as_str()) => format!("{t}: {detail}"),
            (_, false) => detail.clone(),
            (Some(t), true) => t.clone(),
            (None, true) => String::new(),
        };
        let mut c = Classified::new()
            .kind_opt(kind)
            .code(code.unwrap_or_default())
            .message(what);
        if ptype.as_deref() == Some("usage-capped") {
            let at = period_end(text_of(json, "period").as_deref(), a.now);
            let limits = self.rate_limit(a.headers, a.now);
            c = c.retry_at(limits.reset_at_exhausted().map_or(at, |r| r.max(at)));
        }
        c
    }

    fn request_id(&self, headers: &HeaderMap) -> Option<String> {
        header_str(headers, "x-transaction-id").map(str::to_owned)
    }

    fn rate_limit(&self, headers: &HeaderMap, now: DateTime<Utc>) -> RateLimit {
        RateLimit::from_headers(headers, now)
            .with_window(Window::from_epoch_headers(headers, "x-rate-limit"))
            .with_user_day(Window::from_epoch_headers(headers, "x-user-limit-24hour"))
            .with_app_day(Window::from_epoch_headers(headers, "x-app-limit-24hour"))
    }

    /// A 2xx answer that carries `errors[]` and no `data`: X refused (e.g. a post that no
    /// longer exists). Read like the error answer X would have sent, a 404 for
    /// `resource-not-found`, and never retried.
    fn refusal(&self, a: &RawAnswer<'_>) -> Option<Classified> {
        let json = a.json();
        let errors = json.get("errors")?.as_array()?;
        if errors.is_empty() || json.get("data").is_some_and(|d| !d.is_null()) {
            return None;
        }
        let effective = match errors.first().and_then(problem_type).as_deref() {
            Some("resource-not-found") => 404,
            Some("not-authorized-for-resource" | "not-authorized-for-field") => 403,
            _ => a.status,
        };
        let c = self.classify(a).status(effective);
        Some(if (200..300).contains(&effective) {
            c.kind(ErrorKind::Platform)
        } else {
            c
        })
    }
}

/// When a usage cap of `period` (`Daily`, `Monthly`) lifts: the next UTC midnight or the first
/// of next month. Unknown periods count as daily.
fn period_end(period: Option<&str>, now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = (now + chrono::Duration::days(1)).date_naive();
    let midnight =
        |d: chrono::NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
    if period.is_some_and(|p| p.eq_ignore_ascii_case("monthly")) {
        let (y, m) = if now.month() == 12 {
            (now.year() + 1, 1)
        } else {
            (now.year(), now.month() + 1)
        };
        chrono::NaiveDate::from_ymd_opt(y, m, 1).map_or_else(|| midnight(tomorrow), midnight)
    } else {
        midnight(tomorrow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socialpub_core::Error;
    use socialpub_core::http::error_from_answer;

    fn classify(status: u16, headers: &HeaderMap, body: &str, operation: &'static str) -> Error {
        let a = RawAnswer::new(operation, status, headers, body, Utc::now());
        error_from_answer(&XDialect, &a, XDialect.classify(&a))
    }

    fn errors_without_data(
        status: u16,
        headers: &HeaderMap,
        body: &str,
        operation: &'static str,
    ) -> Option<Error> {
        let a = RawAnswer::new(operation, status, headers, body, Utc::now());
        XDialect
            .refusal(&a)
            .map(|c| error_from_answer(&XDialect, &a, c))
    }
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
    fn problem_json_classes() {
        let h = HeaderMap::new();
        let dup = classify(
            403,
            &h,
            r#"{"detail":"You are not allowed to create a Tweet with duplicate content.","type":"about:blank","title":"Forbidden","status":403}"#,
            "tweets.create",
        );
        assert_eq!(dup.kind(), ErrorKind::Platform);
        assert_eq!(dup.code(), Some("duplicate-content"));

        let forbidden = classify(
            403,
            &h,
            r#"{"client_id":"1","required_enrollment":"Appropriate Level of API Access","registration_url":"https://developer.x.com","title":"Client Forbidden","detail":"This request must be made using an approved developer account.","reason":"client-not-enrolled","type":"https://api.twitter.com/2/problems/client-forbidden"}"#,
            "tweets.create",
        );
        assert_eq!(forbidden.kind(), ErrorKind::Configuration);
        assert_eq!(forbidden.code(), Some("client-not-enrolled"));

        let invalid = classify(
            400,
            &h,
            r#"{"errors":[{"parameters":{"media.media_ids":["1"]},"message":"Your media IDs are invalid."}],"title":"Invalid Request","detail":"One or more parameters to your request was invalid.","type":"https://api.x.com/2/problems/invalid-request"}"#,
            "tweets.create",
        );
        assert_eq!(invalid.kind(), ErrorKind::Platform);
        assert_eq!(invalid.code(), Some("invalid-request"));

        let unauthorized = classify(
            401,
            &h,
            r#"{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}"#,
            "users.me",
        );
        assert_eq!(unauthorized.kind(), ErrorKind::Unauthorized);

        let internal = classify(503, &h, "<html>busy</html>", "media.append");
        assert_eq!(internal.kind(), ErrorKind::Transient);
        assert_eq!(internal.status(), Some(503));
    }

    #[test]
    fn rate_limits_wait_for_the_reset() {
        let reset = Utc::now().timestamp() + 120;
        let h = headers(&[
            ("x-rate-limit-limit", "100"),
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", &reset.to_string()),
            ("x-transaction-id", "abc123"),
        ]);
        let e = classify(
            429,
            &h,
            r#"{"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}"#,
            "tweets.create",
        );
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        let wait = e.retry_after().expect("wait").as_secs();
        assert!((115..=120).contains(&wait), "{wait}");
        assert_eq!(e.request_id(), Some("abc123"));

        // The legacy shape.
        let e = classify(
            429,
            &HeaderMap::new(),
            r#"{"errors":[{"code":88,"message":"Rate limit exceeded"}]}"#,
            "media.status",
        );
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.code(), Some("88"));

        // A 24-hour user cap.
        let day = Utc::now().timestamp() + 3600;
        let h = headers(&[
            ("x-user-limit-24hour-limit", "17"),
            ("x-user-limit-24hour-remaining", "0"),
            ("x-user-limit-24hour-reset", &day.to_string()),
        ]);
        let e = classify(429, &h, "{}", "tweets.create");
        assert!(e.retry_after().expect("wait").as_secs() > 3500);
    }

    #[test]
    fn usage_capped_waits_for_its_period() {
        let e = classify(
            429,
            &HeaderMap::new(),
            r#"{"title":"UsageCapExceeded","detail":"Usage cap exceeded: Monthly product cap","type":"https://api.twitter.com/2/problems/usage-capped","period":"Monthly","scope":"Product"}"#,
            "tweets.create",
        );
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.code(), Some("usage-capped"));
        let at = e.retry_at().expect("a period end");
        assert!(at > Utc::now() && at.day() == 1);
        let daily = classify(
            429,
            &HeaderMap::new(),
            r#"{"type":"https://api.x.com/2/problems/usage-capped","period":"Daily"}"#,
            "tweets.create",
        );
        assert!(daily.retry_after().expect("wait").as_secs() <= 86_400);
    }

    #[test]
    fn ok_with_errors_only() {
        let body = r#"{"errors":[{"value":"1","detail":"Could not find tweet with id: [1].","title":"Not Found Error","resource_type":"tweet","parameter":"id","resource_id":"1","type":"https://api.twitter.com/2/problems/resource-not-found"}]}"#;
        let e = errors_without_data(200, &HeaderMap::new(), body, "tweets.get").expect("error");
        assert_eq!(e.kind(), ErrorKind::Platform);
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.code(), Some("resource-not-found"));
        assert!(
            errors_without_data(
                200,
                &HeaderMap::new(),
                r#"{"data":{"id":"1"},"errors":[{}]}"#,
                "x"
            )
            .is_none()
        );
    }

    #[test]
    fn bodies_are_redacted() {
        let e = classify(
            400,
            &HeaderMap::new(),
            r#"{"error":"invalid_request","access_token":"sekrit-token-value"}"#,
            "oauth",
        );
        assert!(!format!("{e:?}{e}").contains("sekrit-token-value"));
    }
}
