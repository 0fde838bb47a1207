//! Reading a token endpoint's answers: the token itself ([`parse_token`]) and RFC 6749's error
//! shape mapped to socialpub's error kinds.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::auth::Token;
use crate::error::{Error, ErrorKind, Result};
use crate::http::{Classified, RawAnswer};

fn number(v: Option<&serde_json::Value>) -> Option<i64> {
    let v = v?;
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Reads a token endpoint's JSON answer: `access_token`, and when present `refresh_token`,
/// `expires_in` (number or string), `refresh_token_expires_in` / `refresh_expires_in`, `scope`
/// (split on `separator`, or on spaces and commas) and `token_type`. Other non-secret fields go
/// to [`Token::extras`].
pub fn parse_token(json: &serde_json::Value, separator: &str, now: DateTime<Utc>) -> Result<Token> {
    // TikTok wraps the token in `data` on some versions.
    let obj = match json.get("data") {
        Some(d) if d.get("access_token").is_some() => d,
        _ => json,
    };
    let access = obj
        .get("access_token")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Platform,
                "the token response has no access_token",
            )
        })?;
    let mut token = Token::new(access);
    token.obtained_at = now;
    token.refresh_token = obj
        .get("refresh_token")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(|s| SecretString::from(s.to_owned()));
    token.expires_at = number(obj.get("expires_in")).map(|s| now + chrono::Duration::seconds(s));
    token.refresh_expires_at = number(
        obj.get("refresh_token_expires_in")
            .or_else(|| obj.get("refresh_expires_in")),
    )
    .map(|s| now + chrono::Duration::seconds(s));
    if let Some(scope) = obj.get("scope").and_then(|v| v.as_str()) {
        token.scopes = scope
            .split(|c: char| separator.contains(c) || c == ' ' || c == ',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
    }
    token.token_type = obj
        .get("token_type")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let secret = ["access_token", "refresh_token", "id_token"];
    let known = [
        "expires_in",
        "refresh_token_expires_in",
        "refresh_expires_in",
        "scope",
        "token_type",
    ];
    if let Some(map) = obj.as_object() {
        let extras: BTreeMap<String, serde_json::Value> = map
            .iter()
            .filter(|(k, _)| !secret.contains(&k.as_str()) && !known.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        token.extras = extras;
    }
    Ok(token)
}

/// Reads an OAuth error answer (RFC 6749 §5.2 `error` and `error_description`, or an `error`
/// object with a `code` and `message`): `invalid_grant` (and a 401 on a refresh) means the
/// account must connect again; a refused client, grant type or scope is the app's
/// configuration; `invalid_request` is bad input; the server's own trouble is transient.
pub(crate) fn classify_token_error(a: &RawAnswer<'_>) -> Classified {
    let json = a.json();
    let code = json
        .get("error")
        .and_then(|e| {
            e.as_str().map(str::to_owned).or_else(|| {
                e.get("code")
                    .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_owned))
            })
        })
        .unwrap_or_default();
    let description = json
        .get("error_description")
        .or_else(|| json.get("error").and_then(|e| e.get("message")))
        .and_then(|d| d.as_str())
        .unwrap_or("");
    let kind = match code.as_str() {
        "invalid_grant" => Some(ErrorKind::ReauthRequired),
        "invalid_client" | "unauthorized_client" | "unsupported_grant_type" | "invalid_scope" => {
            Some(ErrorKind::Configuration)
        }
        "invalid_request" => Some(ErrorKind::InvalidInput),
        "temporarily_unavailable" | "server_error" => Some(ErrorKind::Transient),
        _ if a.status == 401 && a.operation == "oauth.refresh" => Some(ErrorKind::ReauthRequired),
        _ => None,
    };
    let message = match (code.is_empty(), description.is_empty()) {
        (true, true) => format!("HTTP {}", a.status),
        (true, false) => description.to_owned(),
        (false, true) => code.clone(),
        (false, false) => format!("{code}: {description}"),
    };
    Classified::new().kind_opt(kind).code(code).message(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn parses_token_quirks() {
        let now = Utc::now();
        let t = parse_token(
            &serde_json::json!({"access_token":"a","expires_in":"3600","scope":"x,y","open_id":"o1","refresh_token":"r","refresh_expires_in":86400}),
            ",",
            now,
        )
        .expect("token");
        assert_eq!(t.scopes, vec!["x", "y"]);
        assert_eq!(t.expires_at, Some(now + chrono::Duration::seconds(3600)));
        assert!(t.refresh_expires_at.is_some());
        assert_eq!(t.extras.get("open_id").and_then(|v| v.as_str()), Some("o1"));
        assert!(t.token_type.is_none());
        assert!(parse_token(&serde_json::json!({"nope":1}), " ", now).is_err());
    }
}
