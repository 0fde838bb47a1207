//! Redaction of secrets from text that may be logged or kept on an error.
//!
//! Platform bodies and URLs carry tokens in many shapes: JSON fields, query strings, form bodies
//! and `Authorization` headers. Everything socialpub logs or stores for support passes through
//! [`redact_text`] first.

use std::sync::LazyLock;

use regex::Regex;

/// The mask that replaces a secret.
pub const MASK: &str = "[REDACTED]";

/// Field and parameter names whose values are secret wherever they appear.
pub const SECRET_NAMES: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "code_verifier",
    "code",
    "token",
    "oauth_token",
    "oauth_token_secret",
    "password",
    "api_key",
    "apikey",
    "fb_exchange_token",
    "input_token",
    "upload_url",
    "authorization",
];

static JSON_FIELD: LazyLock<Regex> = LazyLock::new(|| {
    let names = SECRET_NAMES.join("|");
    // "name" : "value"  (string values only: numbers and booleans are not secret)
    Regex::new(&format!(
        r#"(?i)("(?:{names})"\s*:\s*")((?:[^"\\]|\\.)*)(")"#
    ))
    .unwrap_or_else(|_| unreachable_regex())
});

static PARAM: LazyLock<Regex> = LazyLock::new(|| {
    let names = SECRET_NAMES.join("|");
    // name=value in a query string or form body
    Regex::new(&format!(r#"(?i)((?:^|[?&\s;,])(?:{names})=)([^&\s"';,]+)"#))
        .unwrap_or_else(|_| unreachable_regex())
});

static BEARER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/=]+"#)
        .unwrap_or_else(|_| unreachable_regex())
});

/// What a pattern that failed to compile is replaced with: one matching the whole text, so a
/// build whose `regex` lacks a needed feature masks everything rather than nothing.
fn unreachable_regex() -> Regex {
    // The patterns above are constants tested below; this keeps `unwrap` out of library code.
    #[allow(clippy::unwrap_used)]
    Regex::new("(?s).+").unwrap()
}

/// Masks every secret found in `text`: JSON string fields and query or form parameters named in
/// [`SECRET_NAMES`], and `Bearer`/`Basic` credentials.
pub fn redact_text(text: &str) -> String {
    let s = JSON_FIELD.replace_all(text, format!("${{1}}{MASK}${{3}}"));
    let s = PARAM.replace_all(&s, format!("${{1}}{MASK}"));
    let s = BEARER.replace_all(&s, format!("$1 {MASK}"));
    s.into_owned()
}

/// A URL as it may be logged: secret query parameters masked.
pub fn redact_url(url: &url::Url) -> String {
    if url.query().is_none() {
        return url.to_string();
    }
    let mut u = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let secret = SECRET_NAMES.iter().any(|n| n.eq_ignore_ascii_case(&k));
            (
                k.into_owned(),
                if secret {
                    MASK.to_owned()
                } else {
                    v.into_owned()
                },
            )
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        // A pattern that needs a `regex` feature the build lacks falls back to masking all.
        for re in [&*JSON_FIELD, &*PARAM, &*BEARER] {
            assert_ne!(
                re.as_str(),
                "(?s).+",
                "a redaction pattern failed to compile"
            );
        }
        assert_eq!(redact_text("plain words stay"), "plain words stay");
    }

    #[test]
    fn masks_json_fields() {
        let s = redact_text(r#"{"access_token": "abc.def", "refresh_token":"r\"1", "n": 3}"#);
        assert!(!s.contains("abc.def"));
        assert!(!s.contains("r\\\"1"));
        assert!(s.contains(r#""n": 3"#));
    }

    #[test]
    fn masks_params_and_headers() {
        let s = redact_text("https://g.com/x?access_token=SECRET1&fields=id code=SECRET2");
        assert!(!s.contains("SECRET1") && !s.contains("SECRET2"), "{s}");
        assert!(s.contains("fields=id"));
        let s = redact_text("Authorization: Bearer tok-123.456");
        assert!(!s.contains("tok-123"), "{s}");
    }

    #[test]
    fn masks_url_query() {
        let u = url::Url::parse("https://graph.facebook.com/me?access_token=S3CR3T&fields=id")
            .expect("url");
        let s = redact_url(&u);
        assert!(!s.contains("S3CR3T") && s.contains("fields=id"));
    }

    #[test]
    fn truncates_on_char_boundary() {
        let t = truncate("ééééé", 3);
        assert_eq!(t, "é…");
    }
}
