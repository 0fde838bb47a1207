//! [`MockOAuth`]: an OAuth 2.0 authorization server for platform mocks. It plays the user who
//! approves, checks what real servers check (client authentication, registered redirect URIs,
//! PKCE S256, single-use codes that expire), issues tokens that expire, refreshes them with
//! fixed or rotating refresh tokens, revokes whole grants, and checks bearer tokens and scopes
//! on API calls. A platform's differences are settings ([`OAuthServerConfig`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::auth::Token;

/// How the token and revoke endpoints want the client to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuthRule {
    /// HTTP Basic; a secret in the form is refused (X).
    Basic,
    /// The client id (and secret) in the form (Google, TikTok, LinkedIn).
    Body,
    /// Either.
    Either,
}

/// Whether authorization requests must carry a PKCE S256 challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PkceRule {
    /// Every authorization needs one (X).
    Required,
    /// Checked when sent (Google).
    Optional,
}

/// When an authorization yields a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OfflineRule {
    /// Always.
    Always,
    /// When this scope was granted (X's `offline.access`).
    Scope(String),
    /// With `access_type=offline`, on a user's first consent or a forced one (`prompt=consent`),
    /// as Google does.
    AccessTypeOffline,
}

/// What refreshing does to the refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshRule {
    /// A new refresh token with every refresh; the used one stops working (X, Pinterest, TikTok).
    Rotating,
    /// The same refresh token keeps working; refresh answers carry none (Google).
    Fixed,
}

/// One platform's authorization server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OAuthServerConfig {
    /// The client id the server knows.
    pub client_id: String,
    /// Its secret; `None` for a public client.
    pub client_secret: Option<String>,
    /// The name of the client id parameter (`client_id`; TikTok: `client_key`).
    pub client_id_param: String,
    /// How the client authenticates at the token and revoke endpoints.
    pub client_auth: ClientAuthRule,
    /// Whether revocation authenticates the client (X: yes; Google: the token alone).
    pub revoke_needs_client: bool,
    /// The registered redirect URIs (exact match).
    pub redirect_uris: Vec<String>,
    /// PKCE.
    pub pkce: PkceRule,
    /// How scopes are separated (`' '`; `','` for some platforms).
    pub scope_separator: char,
    /// When a refresh token is issued.
    pub offline: OfflineRule,
    /// What a refresh does to the refresh token.
    pub refresh: RefreshRule,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime, if they expire.
    pub refresh_ttl: Option<Duration>,
    /// Authorization code lifetime.
    pub code_ttl: Duration,
    /// The `error` a bad code or refresh token gets (RFC 6749 says `invalid_grant`; X answers
    /// `invalid_request`).
    pub bad_grant_error: String,
    /// Whether revoking a token the server does not know is an error (`invalid_token`), as
    /// Google answers, or a 200, as RFC 7009 and X do.
    pub revoke_unknown_is_error: bool,
}

impl OAuthServerConfig {
    /// A confidential client `client_id` with `secret` authenticating in the form, one
    /// registered `redirect_uri`, optional PKCE, space-separated scopes, fixed refresh tokens
    /// always issued, one-hour access tokens, one-minute codes, RFC 6749 errors.
    pub fn new(
        client_id: impl Into<String>,
        secret: Option<String>,
        redirect_uri: impl Into<String>,
    ) -> Self {
        OAuthServerConfig {
            client_id: client_id.into(),
            client_secret: secret,
            client_id_param: "client_id".to_owned(),
            client_auth: ClientAuthRule::Body,
            revoke_needs_client: true,
            redirect_uris: vec![redirect_uri.into()],
            pkce: PkceRule::Optional,
            scope_separator: ' ',
            offline: OfflineRule::Always,
            refresh: RefreshRule::Fixed,
            access_ttl: Duration::from_secs(3600),
            refresh_ttl: None,
            code_ttl: Duration::from_secs(60),
            bad_grant_error: "invalid_grant".to_owned(),
            revoke_unknown_is_error: false,
        }
    }
}

/// Who a token was issued to, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Grant {
    /// The user.
    pub user: String,
    /// The scopes granted.
    pub scopes: Vec<String>,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one that is unknown, expired or revoked.
    Unauthorized,
    /// A valid token without this scope.
    MissingScope(String),
}

/// The scopes an API call needs.
#[derive(Debug, Clone, Copy)]
pub enum Scopes<'a> {
    /// None.
    None,
    /// Every one of these.
    All(&'a [&'a str]),
    /// At least one of these.
    Any(&'a [&'a str]),
}

struct Code {
    user: String,
    redirect_uri: String,
    challenge: Option<String>,
    scopes: Vec<String>,
    refresh: bool,
    issued: DateTime<Utc>,
}

struct Access {
    grant: u64,
    expires: DateTime<Utc>,
}

struct Refresh {
    grant: u64,
    expires: Option<DateTime<Utc>>,
}

struct GrantRec {
    grant: Grant,
    revoked: bool,
}

#[derive(Default)]
struct State {
    login_as: String,
    consented: HashSet<String>,
    codes: HashMap<String, Code>,
    access: HashMap<String, Access>,
    refresh: HashMap<String, Refresh>,
    grants: HashMap<u64, GrantRec>,
    next_grant: u64,
    access_ttl: Option<Duration>,
    exchanges: usize,
    refreshes: usize,
    revocations: usize,
}

/// An OAuth answer: status and JSON body, or a redirect, or a plain-text refusal page.
#[derive(Debug, Clone, PartialEq)]
pub enum OAuthAnswer {
    /// `302` to this URL.
    Redirect(String),
    /// A refusal page (`400`, text), as consent pages show.
    Page(String),
    /// A JSON answer.
    Json(u16, Value),
}

/// The authorization server of one mock. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct MockOAuth {
    config: Arc<OAuthServerConfig>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MockOAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockOAuth")
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

fn random(prefix: &str) -> String {
    let s: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("{prefix}{s}")
}

/// The S256 challenge of `verifier` (RFC 7636 §4.2).
pub fn pkce_s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn oauth_error(status: u16, error: &str, description: &str) -> OAuthAnswer {
    OAuthAnswer::Json(
        status,
        json!({"error": error, "error_description": description}),
    )
}

impl MockOAuth {
    /// A server with `config`; `user` approves authorizations.
    pub fn new(config: OAuthServerConfig, user: impl Into<String>) -> Self {
        MockOAuth {
            config: Arc::new(config),
            state: Arc::new(Mutex::new(State {
                login_as: user.into(),
                next_grant: 1,
                ..State::default()
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration.
    pub fn config(&self) -> &OAuthServerConfig {
        &self.config
    }

    /// Makes `user` the one who approves the next authorizations.
    pub fn login_as(&self, user: &str) {
        self.state().login_as = user.to_owned();
    }

    /// Access tokens issued from now on live `ttl` (the configured lifetime otherwise).
    pub fn set_access_ttl(&self, ttl: Duration) {
        self.state().access_ttl = Some(ttl);
    }

    /// Issues a token for `user` with `scopes` (and a refresh token), as if it had connected.
    pub fn issue_token(&self, user: &str, scopes: &[&str]) -> Token {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let mut st = self.state();
        let grant = self.new_grant(&mut st, user, &scopes);
        let (access, expires) = self.new_access(&mut st, grant);
        let refresh = self.new_refresh(&mut st, grant);
        Token::new(access)
            .with_refresh_token(refresh)
            .with_expires_at(expires)
            .with_scopes(scopes)
    }

    /// Makes `access_token` expired: API calls with it answer 401 from now on.
    pub fn expire_access_token(&self, access_token: &str) {
        if let Some(a) = self.state().access.get_mut(access_token) {
            a.expires = Utc::now() - chrono::Duration::seconds(1);
        }
    }

    /// Makes every access token issued so far expired.
    pub fn expire_access_tokens(&self) {
        let past = Utc::now() - chrono::Duration::seconds(1);
        for a in self.state().access.values_mut() {
            a.expires = past;
        }
    }

    /// Makes every refresh token issued so far unusable: refreshing answers the bad-grant
    /// error, as for a token revoked by the user or expired.
    pub fn expire_refresh_tokens(&self) {
        self.state().refresh.clear();
    }

    /// Revokes every grant of `user`, as the user disconnecting the app does.
    pub fn revoke_user(&self, user: &str) {
        for g in self.state().grants.values_mut() {
            if g.grant.user == user {
                g.revoked = true;
            }
        }
    }

    /// Code exchanges so far.
    pub fn exchanges(&self) -> usize {
        self.state().exchanges
    }

    /// Successful refreshes so far.
    pub fn refreshes(&self) -> usize {
        self.state().refreshes
    }

    /// Revocations that ended a grant so far.
    pub fn revocations(&self) -> usize {
        self.state().revocations
    }

    /// The grant behind a live access token.
    pub fn grant_of(&self, access_token: &str) -> Option<Grant> {
        let st = self.state();
        let a = st.access.get(access_token)?;
        let g = st.grants.get(&a.grant)?;
        (!g.revoked && a.expires > Utc::now()).then(|| g.grant.clone())
    }

    /// Checks the `Authorization: Bearer` token of an API call and the scopes it needs.
    pub fn check_bearer(&self, headers: &HeaderMap, scopes: Scopes<'_>) -> Result<Grant, Denied> {
        let token = bearer_token(headers).ok_or(Denied::Unauthorized)?;
        let grant = self.grant_of(token).ok_or(Denied::Unauthorized)?;
        let has = |s: &&str| grant.scopes.iter().any(|g| g == s);
        match scopes {
            Scopes::None => {}
            Scopes::All(all) => {
                if let Some(missing) = all.iter().find(|s| !has(s)) {
                    return Err(Denied::MissingScope((*missing).to_owned()));
                }
            }
            Scopes::Any(any) => {
                if !any.is_empty() && !any.iter().any(has) {
                    return Err(Denied::MissingScope(any.join(" or ")));
                }
            }
        }
        Ok(grant)
    }

    fn new_grant(&self, st: &mut State, user: &str, scopes: &[String]) -> u64 {
        let id = st.next_grant;
        st.next_grant += 1;
        st.grants.insert(
            id,
            GrantRec {
                grant: Grant {
                    user: user.to_owned(),
                    scopes: scopes.to_vec(),
                },
                revoked: false,
            },
        );
        id
    }

    fn new_access(&self, st: &mut State, grant: u64) -> (String, DateTime<Utc>) {
        let ttl = st.access_ttl.unwrap_or(self.config.access_ttl);
        let expires = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default();
        let token = random("mock-at-");
        st.access.insert(token.clone(), Access { grant, expires });
        (token, expires)
    }

    fn new_refresh(&self, st: &mut State, grant: u64) -> String {
        let token = random("mock-rt-");
        let expires = self
            .config
            .refresh_ttl
            .map(|t| Utc::now() + chrono::Duration::from_std(t).unwrap_or_default());
        st.refresh.insert(token.clone(), Refresh { grant, expires });
        token
    }

    fn split_scopes(&self, s: &str) -> Vec<String> {
        s.split(self.config.scope_separator)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The consent page: checks the request, then approves as the current user and redirects
    /// back with a code and the state.
    pub fn authorize(&self, q: &HashMap<String, String>) -> OAuthAnswer {
        let c = &self.config;
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
        if get("response_type") != "code" {
            return OAuthAnswer::Page("response_type must be code".into());
        }
        if get(&c.client_id_param) != c.client_id {
            return OAuthAnswer::Page(format!("unknown {}", c.client_id_param));
        }
        let redirect = get("redirect_uri");
        if !c.redirect_uris.iter().any(|r| r == redirect) {
            return OAuthAnswer::Page("redirect_uri does not match a registered one".into());
        }
        let state = get("state");
        if state.is_empty() || state.len() > 500 {
            return OAuthAnswer::Page("state is required (at most 500 characters)".into());
        }
        let scope = get("scope");
        let other = if c.scope_separator == ' ' { ',' } else { ' ' };
        if scope.is_empty() || scope.contains(other) {
            return OAuthAnswer::Page(format!(
                "scope must be scopes separated by {:?}",
                c.scope_separator
            ));
        }
        let challenge = q.get("code_challenge").cloned();
        match (&challenge, c.pkce) {
            (None, PkceRule::Required) => {
                return OAuthAnswer::Page("code_challenge is required".into());
            }
            (Some(ch), _) if get("code_challenge_method") != "S256" || ch.len() != 43 => {
                return OAuthAnswer::Page("code_challenge must be an S256 challenge".into());
            }
            _ => {}
        }
        let scopes = self.split_scopes(scope);
        let mut st = self.state();
        let user = st.login_as.clone();
        let first = st.consented.insert(user.clone());
        let refresh = match &c.offline {
            OfflineRule::Always => true,
            OfflineRule::Scope(s) => scopes.iter().any(|g| g == s),
            OfflineRule::AccessTypeOffline => {
                get("access_type") == "offline"
                    && (first || get("prompt").split(' ').any(|p| p == "consent"))
            }
        };
        let code = random("mock-code-");
        st.codes.insert(
            code.clone(),
            Code {
                user,
                redirect_uri: redirect.to_owned(),
                challenge,
                scopes,
                refresh,
                issued: Utc::now(),
            },
        );
        let Ok(mut back) = url::Url::parse(redirect) else {
            return OAuthAnswer::Page("redirect_uri is not a URL".into());
        };
        back.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", state);
        OAuthAnswer::Redirect(back.to_string())
    }

    /// Checks the client's authentication; `Err` is the answer to send.
    fn client_ok(
        &self,
        headers: &HeaderMap,
        f: &HashMap<String, String>,
    ) -> Result<(), OAuthAnswer> {
        let c = &self.config;
        let basic = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let in_body = f.get(&c.client_id_param).is_some() || f.contains_key("client_secret");
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("v={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let from_basic = basic
            .as_deref()
            .and_then(|b| b.split_once(':'))
            .map(|(id, secret)| (decode(id), decode(secret)));
        let from_body = in_body.then(|| {
            (
                f.get(&c.client_id_param).cloned().unwrap_or_default(),
                f.get("client_secret").cloned().unwrap_or_default(),
            )
        });
        let presented = match c.client_auth {
            ClientAuthRule::Basic if c.client_secret.is_some() => {
                if f.contains_key("client_secret") || from_basic.is_none() {
                    return Err(oauth_error(
                        401,
                        "unauthorized_client",
                        "Missing valid authorization header",
                    ));
                }
                from_basic
            }
            ClientAuthRule::Basic => from_body.or(from_basic),
            ClientAuthRule::Body => from_body,
            ClientAuthRule::Either => from_basic.or(from_body),
        };
        let Some((id, secret)) = presented else {
            return Err(oauth_error(
                400,
                "invalid_request",
                &format!("Missing required parameter [{}].", c.client_id_param),
            ));
        };
        let secret_ok = match &c.client_secret {
            Some(s) => &secret == s,
            None => true,
        };
        if id != c.client_id || !secret_ok {
            return Err(oauth_error(
                401,
                "invalid_client",
                "Client authentication failed",
            ));
        }
        Ok(())
    }

    /// The token endpoint: `authorization_code` and `refresh_token` grants, with the
    /// parameters of the form (or the query, for servers that take GET).
    pub fn token(&self, headers: &HeaderMap, f: &HashMap<String, String>) -> OAuthAnswer {
        if let Err(a) = self.client_ok(headers, f) {
            return a;
        }
        let c = &self.config;
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
        let bad = |what: &str| oauth_error(400, &c.bad_grant_error, what);
        let mut st = self.state();
        let (grant, issue_refresh) = match get("grant_type") {
            "authorization_code" => {
                let Some(code) = st.codes.remove(get("code")) else {
                    return bad("The authorization code is invalid or was already used.");
                };
                let age = Utc::now() - code.issued;
                if age > chrono::Duration::from_std(c.code_ttl).unwrap_or_default() {
                    return bad("The authorization code expired.");
                }
                if code.redirect_uri != get("redirect_uri") {
                    return bad("redirect_uri does not match the authorization request.");
                }
                if let Some(ch) = &code.challenge
                    && pkce_s256(get("code_verifier")) != *ch
                {
                    return bad("The code verifier does not match the code challenge.");
                }
                st.exchanges += 1;
                let grant = self.new_grant(&mut st, &code.user, &code.scopes);
                (grant, code.refresh)
            }
            "refresh_token" => {
                let token = get("refresh_token").to_owned();
                let Some(r) = st.refresh.get(&token) else {
                    return bad("The refresh token is invalid.");
                };
                let grant = r.grant;
                let expired = r.expires.is_some_and(|e| e <= Utc::now());
                let revoked = st.grants.get(&grant).is_none_or(|g| g.revoked);
                if expired || revoked {
                    return bad("The refresh token expired or was revoked.");
                }
                st.refreshes += 1;
                let rotate = c.refresh == RefreshRule::Rotating;
                if rotate {
                    st.refresh.remove(&token);
                }
                (grant, rotate)
            }
            _ => {
                return oauth_error(
                    400,
                    "unsupported_grant_type",
                    "grant_type must be authorization_code or refresh_token",
                );
            }
        };
        let scopes = st
            .grants
            .get(&grant)
            .map(|g| g.grant.scopes.clone())
            .unwrap_or_default();
        let (access, expires) = self.new_access(&mut st, grant);
        let mut answer = json!({
            "access_token": access,
            "token_type": "bearer",
            "expires_in": (expires - Utc::now()).num_seconds().max(0) + 1,
            "scope": scopes.join(&c.scope_separator.to_string()),
        });
        if issue_refresh {
            answer["refresh_token"] = json!(self.new_refresh(&mut st, grant));
            if let Some(ttl) = c.refresh_ttl {
                answer["refresh_token_expires_in"] = json!(ttl.as_secs());
            }
        }
        OAuthAnswer::Json(200, answer)
    }

    /// The revocation endpoint: revoking either token of a grant ends the whole grant.
    pub fn revoke(&self, headers: &HeaderMap, f: &HashMap<String, String>) -> OAuthAnswer {
        if self.config.revoke_needs_client
            && let Err(a) = self.client_ok(headers, f)
        {
            return a;
        }
        let token = f.get("token").cloned().unwrap_or_default();
        let mut st = self.state();
        let grant = st
            .refresh
            .get(&token)
            .map(|r| r.grant)
            .or_else(|| st.access.get(&token).map(|a| a.grant));
        match grant.and_then(|g| st.grants.get_mut(&g)) {
            Some(g) if !g.revoked => {
                g.revoked = true;
                st.revocations += 1;
                OAuthAnswer::Json(200, json!({}))
            }
            _ if self.config.revoke_unknown_is_error => {
                oauth_error(400, "invalid_token", "Token expired or revoked")
            }
            _ => OAuthAnswer::Json(200, json!({})),
        }
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_the_rfc_example() {
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
