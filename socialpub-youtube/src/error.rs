//! Google's error object (`{"error":{"code","message","errors":[{"domain","reason"}]}}`) read
//! as socialpub's [`ErrorKind`]s by `errors[0].reason`: the [`YouTubeDialect`] the API client
//! speaks, and the Pacific-time quota reset.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use reqwest::header::HeaderMap;
use socialpub_core::http::{Classified, Dialect, RawAnswer, header_str};
use socialpub_core::{ErrorKind, Platform, ValidationReport};

/// How long `uploadLimitExceeded` ("try again in 24 hours") waits.
pub const UPLOAD_LIMIT_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The parts of Google's error object this crate reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GoogleError {
    pub(crate) message: String,
    pub(crate) reason: Option<String>,
    pub(crate) domain: Option<String>,
    pub(crate) location: Option<String>,
}

impl GoogleError {
    pub(crate) fn parse(body: &str) -> GoogleError {
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let err = json.get("error");
        // The token endpoint answers `{"error":"invalid_grant","error_description":…}`.
        if let Some(code) = err.and_then(|e| e.as_str()) {
            return GoogleError {
                message: json
                    .get("error_description")
                    .and_then(|d| d.as_str())
                    .unwrap_or("")
                    .to_owned(),
                reason: Some(code.to_owned()),
                ..GoogleError::default()
            };
        }
        let first = err
            .and_then(|e| e.get("errors"))
            .and_then(|e| e.get(0))
            .cloned()
            .unwrap_or_default();
        let s =
            |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        GoogleError {
            message: err
                .and_then(|e| s(e, "message"))
                .or_else(|| s(&first, "message"))
                .unwrap_or_default(),
            reason: s(&first, "reason").or_else(|| err.and_then(|e| s(e, "status"))),
            domain: s(&first, "domain"),
            location: s(&first, "location"),
        }
    }
}

/// The post field a metadata reason points at, for the validation report.
fn field_for_reason(reason: &str) -> &'static str {
    match reason {
        "invalidTitle" => "title",
        "invalidDescription" => "text",
        "invalidTags" => "options.youtube.tags",
        "invalidCategoryId" => "options.youtube.category_id",
        "invalidPublishAt" => "options.youtube.publish_at",
        "invalidFilename" => "media[0].filename",
        "defaultLanguageNotSet" | "invalidDefaultBroadcastPrivacySetting" => {
            "options.youtube.default_language"
        }
        "mediaBodyRequired" => "media[0]",
        "invalidRecordingDetails" => "options.youtube.recording_details",
        _ => "",
    }
}

/// How Google speaks HTTP: its error object, read by `errors[0].reason`, and the upload
/// server's `x-guploader-uploadid` as request id.
///
/// - `quotaExceeded` / `dailyLimitExceeded`: rate limited until midnight Pacific time, when
///   Google resets daily quotas; `uploadLimitExceeded`: the channel's daily upload cap, about a
///   day; `rateLimitExceeded` and its kin: rate limited as the headers say.
/// - `youtubeSignupRequired`: the account has no channel, reconnecting with one is the fix
///   (never refreshed); `authError`: the token was refused (refreshed once); `invalid_grant`:
///   reauth required; a missing scope: configuration.
/// - metadata reasons (`invalidTitle`, `invalidTags`, …): a validation error naming the field.
/// - `backendError` and other 5xx: transient.
#[derive(Debug, Clone, Copy, Default)]
pub struct YouTubeDialect;

impl Dialect for YouTubeDialect {
    fn platform(&self) -> Platform {
        Platform::YouTube
    }

    fn classify(&self, a: &RawAnswer<'_>) -> Classified {
        let g = GoogleError::parse(a.body);
        let reason = g.reason.clone().unwrap_or_default();
        let detail = if g.message.is_empty() {
            format!("HTTP {}", a.status)
        } else {
            g.message.clone()
        };
        let c = Classified::new().code(reason.clone());
        match reason.as_str() {
            "quotaExceeded" | "dailyLimitExceeded" => {
                let at = next_pacific_midnight(a.now);
                c.kind(ErrorKind::RateLimited).retry_at(at).message(format!(
                    "the project's daily YouTube quota is used up; it resets at midnight Pacific time ({})",
                    at.to_rfc3339()
                ))
            }
            "rateLimitExceeded" | "userRateLimitExceeded" | "RESOURCE_EXHAUSTED" => c
                .kind(ErrorKind::RateLimited)
                .message(format!("YouTube asks to slow down: {detail}")),
            "uploadLimitExceeded" => c
                .kind(ErrorKind::RateLimited)
                .retry_after(UPLOAD_LIMIT_WAIT)
                .message(
                    "the channel reached its daily upload limit; try again in about 24 hours",
                ),
            "youtubeSignupRequired" => c.kind(ErrorKind::ReauthRequired).message(
                "the Google account has no YouTube channel: create one at https://www.youtube.com/create_channel, then connect the account again",
            ),
            "authError" | "unauthorized" | "UNAUTHENTICATED" => c
                .kind(ErrorKind::Unauthorized)
                .message(format!("Google rejected the access token: {detail}")),
            "invalid_grant" => c.kind(ErrorKind::ReauthRequired).message(format!(
                "the refresh token is no longer valid ({detail}); connect the account again"
            )),
            "insufficientPermissions" | "ACCESS_TOKEN_SCOPE_INSUFFICIENT" => {
                c.kind(ErrorKind::Configuration).message(format!(
                    "the token lacks a scope this call needs ({detail}); request it in the configuration and connect the account again"
                ))
            }
            "backendError" | "internalError" | "serviceUnavailable" => c
                .kind(ErrorKind::Transient)
                .message(format!("YouTube had a temporary failure: {detail}")),
            r if r.starts_with("invalid")
                || r == "mediaBodyRequired"
                || r == "defaultLanguageNotSet" =>
            {
                let mut report = ValidationReport::new(Platform::YouTube);
                report.push(
                    field_for_reason(r),
                    r,
                    format!("YouTube rejected the video metadata: {detail}"),
                );
                c.validation(report)
            }
            _ => {
                let what = if reason.is_empty() {
                    detail
                } else {
                    format!("{detail} ({reason})")
                };
                c.message(what)
            }
        }
    }

    fn request_id(&self, headers: &HeaderMap) -> Option<String> {
        header_str(headers, "x-guploader-uploadid").map(str::to_owned)
    }

    /// A 401 for an account without a channel is not a token problem.
    fn refreshes_on(&self, answer: &RawAnswer<'_>) -> bool {
        !is_signup_required(answer.body)
    }
}

/// Whether a 401 body says the account has no channel (no refresh will help).
pub(crate) fn is_signup_required(body: &str) -> bool {
    body.contains("youtubeSignupRequired")
}

/// The next midnight in America/Los_Angeles after `now`, when Google resets daily quotas.
///
/// Instead of a time-zone database this uses the United States daylight-saving rule in force
/// since 2007 (Energy Policy Act of 2005): Pacific daylight time (UTC−7) from 02:00 local on the
/// second Sunday of March to 02:00 local on the first Sunday of November, Pacific standard time
/// (UTC−8) otherwise. Should the rule change, this function changes with it.
pub fn next_pacific_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let offset = pacific_offset_hours(now);
    let local = now + chrono::Duration::hours(offset);
    let tomorrow = local.date_naive().succ_opt().unwrap_or(local.date_naive());
    // Midnight is never inside a transition (they happen at 02:00), so the offset of the
    // local date is unambiguous.
    let off = if dst_on_local_midnight(tomorrow) {
        -7
    } else {
        -8
    };
    let naive = tomorrow.and_time(NaiveTime::MIN) - chrono::Duration::hours(off);
    Utc.from_utc_datetime(&naive)
}

/// UTC offset of Pacific time at the instant `t`, in hours (−7 or −8).
pub fn pacific_offset_hours(t: DateTime<Utc>) -> i64 {
    let y = t.year();
    let (start, end) = (dst_start_utc(y), dst_end_utc(y));
    if t >= start && t < end { -7 } else { -8 }
}

fn nth_sunday(year: i32, month: u32, n: u32) -> NaiveDate {
    let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or_default();
    let to_sunday = (7 - first.weekday().num_days_from_sunday()) % 7;
    first + chrono::Duration::days(i64::from(to_sunday + 7 * (n - 1)))
}

fn dst_start_utc(year: i32) -> DateTime<Utc> {
    // 02:00 PST = 10:00 UTC on the second Sunday of March.
    let d = nth_sunday(year, 3, 2);
    Utc.from_utc_datetime(&d.and_time(NaiveTime::from_hms_opt(10, 0, 0).unwrap_or_default()))
}

fn dst_end_utc(year: i32) -> DateTime<Utc> {
    // 02:00 PDT = 09:00 UTC on the first Sunday of November.
    let d = nth_sunday(year, 11, 1);
    Utc.from_utc_datetime(&d.and_time(NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default()))
}

fn dst_on_local_midnight(d: NaiveDate) -> bool {
    let start = nth_sunday(d.year(), 3, 2);
    let end = nth_sunday(d.year(), 11, 1);
    debug_assert_eq!(start.weekday(), Weekday::Sun);
    d > start && d <= end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn pacific_midnight_in_winter_and_summer() {
        // 2026-01-15 12:00 UTC is 04:00 PST; next midnight is 2026-01-16 08:00 UTC.
        assert_eq!(
            next_pacific_midnight(utc("2026-01-15T12:00:00Z")),
            utc("2026-01-16T08:00:00Z")
        );
        // 2026-07-01 06:59 UTC is 23:59 PDT on June 30: midnight is a minute away.
        assert_eq!(
            next_pacific_midnight(utc("2026-07-01T06:59:00Z")),
            utc("2026-07-01T07:00:00Z")
        );
        // At exactly midnight the next reset is a day later.
        assert_eq!(
            next_pacific_midnight(utc("2026-07-01T07:00:00Z")),
            utc("2026-07-02T07:00:00Z")
        );
    }

    #[test]
    fn pacific_midnight_across_transitions() {
        // 2026: DST starts Sunday March 8, ends Sunday November 1.
        // Saturday March 7, 20:00 PST (= March 8 04:00 UTC): midnight of the 8th is still PST.
        assert_eq!(
            next_pacific_midnight(utc("2026-03-08T04:00:00Z")),
            utc("2026-03-08T08:00:00Z")
        );
        // Sunday March 8, 12:00 PDT (19:00 UTC): midnight of the 9th is PDT.
        assert_eq!(
            next_pacific_midnight(utc("2026-03-08T19:00:00Z")),
            utc("2026-03-09T07:00:00Z")
        );
        // Saturday Oct 31, 20:00 PDT (Nov 1 03:00 UTC): midnight of Nov 1 is still PDT.
        assert_eq!(
            next_pacific_midnight(utc("2026-11-01T03:00:00Z")),
            utc("2026-11-01T07:00:00Z")
        );
        // Sunday Nov 1, 12:00 PST (20:00 UTC): midnight of Nov 2 is PST.
        assert_eq!(
            next_pacific_midnight(utc("2026-11-01T20:00:00Z")),
            utc("2026-11-02T08:00:00Z")
        );
        assert_eq!(pacific_offset_hours(utc("2026-03-08T09:59:59Z")), -8);
        assert_eq!(pacific_offset_hours(utc("2026-03-08T10:00:00Z")), -7);
        assert_eq!(pacific_offset_hours(utc("2026-11-01T08:59:59Z")), -7);
        assert_eq!(pacific_offset_hours(utc("2026-11-01T09:00:00Z")), -8);
    }

    fn api_error(
        operation: &'static str,
        status: u16,
        headers: &HeaderMap,
        body: &str,
        now: DateTime<Utc>,
    ) -> socialpub_core::Error {
        let a = RawAnswer::new(operation, status, headers, body, now);
        socialpub_core::http::error_from_answer(&YouTubeDialect, &a, YouTubeDialect.classify(&a))
    }

    #[test]
    fn reasons_map_to_kinds() {
        let now = utc("2026-01-15T12:00:00Z");
        let body = |reason: &str, code: u16| {
            format!(
                r#"{{"error":{{"code":{code},"message":"m","errors":[{{"domain":"youtube","reason":"{reason}","message":"m"}}]}}}}"#
            )
        };
        let h = HeaderMap::new();
        let e = api_error("videos.insert", 403, &h, &body("quotaExceeded", 403), now);
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.retry_at(), Some(utc("2026-01-16T08:00:00Z")));
        assert_eq!(e.code(), Some("quotaExceeded"));
        let e = api_error(
            "videos.insert",
            400,
            &h,
            &body("uploadLimitExceeded", 400),
            now,
        );
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.retry_after(), Some(UPLOAD_LIMIT_WAIT));
        let e = api_error("videos.insert", 400, &h, &body("invalidTags", 400), now);
        assert_eq!(e.kind(), ErrorKind::Validation);
        assert!(
            e.validation_report()
                .is_some_and(|r| r.issues()[0].path == "options.youtube.tags")
        );
        let e = api_error(
            "videos.insert",
            401,
            &h,
            &body("youtubeSignupRequired", 401),
            now,
        );
        assert_eq!(e.kind(), ErrorKind::ReauthRequired);
        assert!(e.message().contains("no YouTube channel"));
        let e = api_error("videos.insert", 503, &h, &body("backendError", 503), now);
        assert_eq!(e.kind(), ErrorKind::Transient);
        let e = api_error(
            "videos.insert",
            403,
            &h,
            &body("rateLimitExceeded", 403),
            now,
        );
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        let e = api_error("videos.insert", 502, &h, "<html>bad gateway</html>", now);
        assert_eq!(e.kind(), ErrorKind::Transient);
        let e = api_error("thumbnails.set", 403, &h, &body("forbidden", 403), now);
        assert_eq!(e.kind(), ErrorKind::Platform);
    }
}
