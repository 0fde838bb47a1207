//! OAuth 2.0 connect helpers: authorization URLs with PKCE (S256) and a single-use CSRF state,
//! the code exchange, refresh and revocation, with per-platform quirks as configuration.
//!
//! Platforms differ in small ways that break generic clients: TikTok names the client
//! `client_key`, Meta exchanges codes with GET, some separate scopes with commas, some omit
//! `token_type` or send `expires_in` as a string, some answer errors with a 200. [`OAuthConfig`]
//! holds those differences; [`OAuthClient`] does the rest.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use oauth2::{CsrfToken, PkceCodeChallenge};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::Url;

use super::manager::TokenRefresher;
use super::{AccountKey, Token};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::http::{RateLimit, kind_for_status, request_id, transport_error};
use crate::platform::Platform;

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (confidential clients; X, Pinterest).
    BasicHeader,
    /// The client id (and secret, if any) in the request body (public clients; Google, TikTok).
    RequestBody,
}

/// How the code exchange and refresh are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExchangeMethod {
    /// `POST` with a form body (the standard).
    PostForm,
    /// `GET` with query parameters (Meta's Graph API).
    Get,
}

/// One platform's OAuth settings. Start from [`OAuthConfig::new`], then adjust.
#[derive(Clone)]
#[non_exhaustive]
pub struct OAuthConfig {
    /// The platform.
    pub platform: Platform,
    /// The app's client id (TikTok: client key).
    pub client_id: String,
    /// The app's client secret, for confidential clients.
    pub client_secret: Option<SecretString>,
    /// The authorization endpoint.
    pub authorize_url: Url,
    /// The token endpoint.
    pub token_url: Url,
    /// The revocation endpoint, if the platform has one.
    pub revoke_url: Option<Url>,
    /// Where the platform sends the user back.
    pub redirect_uri: Url,
    /// Scopes to request.
    pub scopes: Vec<String>,
    /// How scopes are joined (`" "` by the standard; `","` for some platforms).
    pub scope_separator: String,
    /// How the client authenticates at the token endpoint.
    pub client_auth: ClientAuth,
    /// The name of the client id parameter (`client_id`; TikTok: `client_key`).
    pub client_id_param: String,
    /// How the exchange and refresh are sent.
    pub exchange_method: ExchangeMethod,
    /// Whether to use PKCE (S256).
    pub pkce: bool,
    /// Extra parameters on the authorization URL (`access_type=offline`, `prompt=consent`).
    pub extra_authorize_params: Vec<(String, String)>,
    /// How long a started authorization stays valid.
    pub state_ttl: chrono::Duration,
}

impl fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("platform", &self.platform)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("authorize_url", &self.authorize_url.as_str())
            .field("token_url", &self.token_url.as_str())
            .field("revoke_url", &self.revoke_url.as_ref().map(Url::as_str))
            .field("redirect_uri", &self.redirect_uri.as_str())
            .field("scopes", &self.scopes)
            .field("client_auth", &self.client_auth)
            .field("exchange_method", &self.exchange_method)
            .field("pkce", &self.pkce)
            .finish_non_exhaustive()
    }
}

impl OAuthConfig {
    /// Standard settings: PKCE, space-separated scopes, `client_id` in the body, POST exchange,
    /// states valid for 10 minutes.
    pub fn new(
        platform: Platform,
        client_id: impl Into<String>,
        authorize_url: Url,
        token_url: Url,
        redirect_uri: Url,
    ) -> Self {
        OAuthConfig {
            platform,
            client_id: client_id.into(),
            client_secret: None,
            authorize_url,
            token_url,
            revoke_url: None,
            redirect_uri,
            scopes: Vec::new(),
            scope_separator: " ".to_owned(),
            client_auth: ClientAuth::RequestBody,
            client_id_param: "client_id".to_owned(),
            exchange_method: ExchangeMethod::PostForm,
            pkce: true,
            extra_authorize_params: Vec::new(),
            state_ttl: chrono::Duration::minutes(10),
        }
    }

    /// Sets the client secret.
    pub fn with_client_secret(mut self, secret: SecretString) -> Self {
        self.client_secret = Some(secret);
        self
    }

    /// Sets the scopes.
    pub fn with_scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the revocation endpoint.
    pub fn with_revoke_url(mut self, url: Url) -> Self {
        self.revoke_url = Some(url);
        self
    }

    /// Sets how the client authenticates.
    pub fn with_client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self
    }

    /// Adds a parameter to the authorization URL.
    pub fn with_authorize_param(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.extra_authorize_params.push((k.into(), v.into()));
        self
    }
}

/// A started authorization, kept until the user comes back. Single use.
#[derive(Clone)]
#[non_exhaustive]
pub struct PendingAuthorization {
    /// The tenant connecting an account.
    pub tenant: String,
    /// The platform.
    pub platform: Platform,
    /// The PKCE verifier, if PKCE is used.
    pub pkce_verifier: Option<SecretString>,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("tenant", &self.tenant)
            .field("platform", &self.platform)
            .field(
                "pkce_verifier",
                &self.pkce_verifier.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Keeps started authorizations by state. `take` removes: a state works once.
#[async_trait]
pub trait PendingStore: Send + Sync + 'static {
    /// Keeps `pending` under `state`.
    async fn put(&self, state: &str, pending: PendingAuthorization) -> Result<()>;
    /// Removes and returns the authorization of `state`, comparing states in constant time.
    async fn take(&self, state: &str) -> Result<Option<PendingAuthorization>>;
}

type PendingMap = HashMap<[u8; 32], (String, PendingAuthorization)>;

/// Started authorizations in process memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryPendingStore {
    inner: Arc<Mutex<PendingMap>>,
}

impl MemoryPendingStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn state_digest(state: &str) -> [u8; 32] {
    Sha256::digest(state.as_bytes()).into()
}

#[async_trait]
impl PendingStore for MemoryPendingStore {
    async fn put(&self, state: &str, pending: PendingAuthorization) -> Result<()> {
        let mut m = self
            .inner
            .lock()
            .map_err(|_| Error::internal("pending store lock poisoned"))?;
        let now = Utc::now();
        m.retain(|_, (_, p)| p.expires_at > now);
        m.insert(state_digest(state), (state.to_owned(), pending));
        Ok(())
    }

    async fn take(&self, state: &str) -> Result<Option<PendingAuthorization>> {
        let mut m = self
            .inner
            .lock()
            .map_err(|_| Error::internal("pending store lock poisoned"))?;
        // The map is keyed by a digest, so the lookup reveals nothing useful about the stored
        // state; the full comparison is constant-time.
        let Some((stored, pending)) = m.remove(&state_digest(state)) else {
            return Ok(None);
        };
        let same: bool = stored.as_bytes().ct_eq(state.as_bytes()).into();
        Ok(same.then_some(pending))
    }
}

/// The URL to send the user to, and the state that identifies the authorization.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthorizationRequest {
    /// Where to send the user's browser.
    pub url: Url,
    /// The CSRF state in the URL (not secret once sent, but single use).
    pub state: String,
}

/// The result of a completed authorization: who connected, and the token.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Authorized {
    /// The tenant that started it.
    pub tenant: String,
    /// The token issued.
    pub token: Token,
}

/// Runs one platform's OAuth flows.
///
/// ```no_run
/// # async fn f() -> socialpub_core::Result<()> {
/// use socialpub_core::auth::oauth::{OAuthClient, OAuthConfig};
/// use socialpub_core::Platform;
/// use url::Url;
///
/// let config = OAuthConfig::new(
///     Platform::X,
///     "client-id",
///     Url::parse("https://x.com/i/oauth2/authorize").unwrap(),
///     Url::parse("https://api.x.com/2/oauth2/token").unwrap(),
///     Url::parse("http://127.0.0.1:8080/callback").unwrap(),
/// )
/// .with_scopes(["tweet.read", "tweet.write", "users.read", "offline.access"]);
/// let client = OAuthClient::new(config, reqwest::Client::new());
/// let request = client.authorize("tenant-1").await?;
/// println!("open {}", request.url);
/// // … the user comes back to the redirect URI with ?code=…&state=…
/// let done = client.complete("the-code", &request.state).await?;
/// # let _ = done; Ok(()) }
/// ```
pub struct OAuthClient {
    config: OAuthConfig,
    http: reqwest::Client,
    pending: Arc<dyn PendingStore>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OAuthClient {
    /// A client with an in-memory pending store.
    pub fn new(config: OAuthConfig, http: reqwest::Client) -> Self {
        OAuthClient {
            config,
            http,
            pending: Arc::new(MemoryPendingStore::new()),
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `store` for started authorizations (share one across processes for a cluster).
    pub fn with_pending_store(mut self, store: Arc<dyn PendingStore>) -> Self {
        self.pending = store;
        self
    }

    /// Uses `clock` for expiry.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    /// The HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Starts an authorization for `tenant`: a URL with a fresh state and PKCE challenge.
    pub async fn authorize(&self, tenant: &str) -> Result<AuthorizationRequest> {
        let c = &self.config;
        let state = CsrfToken::new_random();
        let mut url = c.authorize_url.clone();
        let verifier = {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair(&c.client_id_param, &c.client_id)
                .append_pair("redirect_uri", c.redirect_uri.as_str())
                .append_pair("state", state.secret());
            if !c.scopes.is_empty() {
                q.append_pair("scope", &c.scopes.join(&c.scope_separator));
            }
            let verifier = if c.pkce {
                let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
                q.append_pair("code_challenge", challenge.as_str())
                    .append_pair("code_challenge_method", "S256");
                Some(SecretString::from(verifier.secret().to_owned()))
            } else {
                None
            };
            for (k, v) in &c.extra_authorize_params {
                q.append_pair(k, v);
            }
            verifier
        };
        self.pending
            .put(
                state.secret(),
                PendingAuthorization {
                    tenant: tenant.to_owned(),
                    platform: c.platform,
                    pkce_verifier: verifier,
                    expires_at: self.clock.now() + c.state_ttl,
                },
            )
            .await?;
        Ok(AuthorizationRequest {
            url,
            state: state.secret().to_owned(),
        })
    }

    /// Completes an authorization: checks the state (known, unused, unexpired), then exchanges
    /// the code.
    pub async fn complete(&self, code: &str, state: &str) -> Result<Authorized> {
        let pending = self.pending.take(state).await?.ok_or_else(|| {
            Error::invalid_input("unknown or already used OAuth state; start the connection again")
                .with_platform(self.config.platform)
        })?;
        if pending.expires_at <= self.clock.now() {
            return Err(Error::invalid_input(
                "the OAuth state expired; start the connection again",
            )
            .with_platform(self.config.platform));
        }
        let token = self
            .exchange_code(code, pending.pkce_verifier.as_ref())
            .await?;
        Ok(Authorized {
            tenant: pending.tenant,
            token,
        })
    }

    /// Exchanges an authorization code for a token.
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: Option<&SecretString>,
    ) -> Result<Token> {
        let mut params = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", self.config.redirect_uri.to_string()),
        ];
        if let Some(v) = verifier {
            params.push(("code_verifier", v.expose_secret().to_owned()));
        }
        self.token_request("oauth.exchange", params).await
    }

    /// Exchanges a refresh token for a new token.
    pub async fn refresh_token(&self, refresh: &SecretString) -> Result<Token> {
        let params = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh.expose_secret().to_owned()),
        ];
        self.token_request("oauth.refresh", params).await
    }

    /// Revokes `token` at the platform (`token_type_hint` when given).
    pub async fn revoke_token(&self, token: &SecretString, hint: Option<&str>) -> Result<()> {
        let url = self.config.revoke_url.clone().ok_or_else(|| {
            Error::unsupported(format!(
                "{} has no revocation endpoint",
                self.config.platform
            ))
        })?;
        let mut params = vec![("token", token.expose_secret().to_owned())];
        if let Some(h) = hint {
            params.push(("token_type_hint", h.to_owned()));
        }
        let req = self
            .with_client_auth(self.http.post(url), &mut params)
            .form(&params);
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(e, self.config.platform, "oauth.revoke", false))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(self.token_error("oauth.revoke", status, &headers, &body))
    }

    fn with_client_auth(
        &self,
        req: reqwest::RequestBuilder,
        params: &mut Vec<(&'static str, String)>,
    ) -> reqwest::RequestBuilder {
        let c = &self.config;
        match c.client_auth {
            ClientAuth::BasicHeader => {
                // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
                let id: String =
                    url::form_urlencoded::byte_serialize(c.client_id.as_bytes()).collect();
                let secret: String = c
                    .client_secret
                    .as_ref()
                    .map(|s| {
                        url::form_urlencoded::byte_serialize(s.expose_secret().as_bytes()).collect()
                    })
                    .unwrap_or_default();
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
                req.header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"))
            }
            ClientAuth::RequestBody => {
                let name: &'static str = if c.client_id_param == "client_key" {
                    "client_key"
                } else {
                    "client_id"
                };
                params.push((name, c.client_id.clone()));
                if let Some(s) = &c.client_secret {
                    params.push(("client_secret", s.expose_secret().to_owned()));
                }
                req
            }
        }
    }

    async fn token_request(
        &self,
        operation: &'static str,
        mut params: Vec<(&'static str, String)>,
    ) -> Result<Token> {
        let c = &self.config;
        let req = match c.exchange_method {
            ExchangeMethod::PostForm => {
                let req = self.with_client_auth(self.http.post(c.token_url.clone()), &mut params);
                req.form(&params)
            }
            ExchangeMethod::Get => {
                let req = self.with_client_auth(self.http.get(c.token_url.clone()), &mut params);
                req.query(&params)
            }
        };
        let resp = req
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport_error(e, c.platform, operation, false))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .text()
            .await
            .map_err(|e| transport_error(e, c.platform, operation, false))?;
        if !(200..300).contains(&status) {
            return Err(self.token_error(operation, status, &headers, &body));
        }
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|_| {
            Error::new(
                ErrorKind::Transient,
                "the token endpoint answered with something other than JSON",
            )
            .with_platform(c.platform)
            .with_operation(operation)
            .with_status(status)
            .with_body(&body)
        })?;
        // Some platforms (TikTok) answer errors with a 200 and an `error` field.
        if json
            .get("error")
            .is_some_and(|e| !e.is_null() && e.as_str() != Some("ok"))
            && json.get("access_token").is_none()
        {
            return Err(self.token_error(operation, status, &headers, &body));
        }
        parse_token(&json, &c.scope_separator, self.clock.now()).map_err(|e| {
            e.with_platform(c.platform)
                .with_operation(operation)
                .with_status(status)
        })
    }

    fn token_error(
        &self,
        operation: &'static str,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &str,
    ) -> Error {
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let code = json
            .get("error")
            .and_then(|e| {
                e.as_str()
                    .map(str::to_owned)
                    .or_else(|| e.get("code").map(|c| c.to_string()))
            })
            .unwrap_or_default();
        let description = json
            .get("error_description")
            .or_else(|| json.get("error").and_then(|e| e.get("message")))
            .and_then(|d| d.as_str())
            .unwrap_or("");
        let kind = match code.as_str() {
            "invalid_grant" => ErrorKind::ReauthRequired,
            "invalid_client"
            | "unauthorized_client"
            | "unsupported_grant_type"
            | "invalid_scope" => ErrorKind::Configuration,
            "invalid_request" => ErrorKind::InvalidInput,
            "temporarily_unavailable" | "server_error" => ErrorKind::Transient,
            _ if status == 401 && operation == "oauth.refresh" => ErrorKind::ReauthRequired,
            _ => kind_for_status(status),
        };
        let what = if code.is_empty() {
            format!("HTTP {status}")
        } else {
            code.clone()
        };
        let mut e = Error::new(
            kind,
            format!(
                "{operation} failed: {what}{}{}",
                if description.is_empty() { "" } else { ": " },
                description
            ),
        )
        .with_platform(self.config.platform)
        .with_operation(operation)
        .with_status(status)
        .with_body(body);
        if !code.is_empty() {
            e = e.with_code(code);
        }
        if let Some(id) = request_id(headers) {
            e = e.with_request_id(id);
        }
        if kind == ErrorKind::RateLimited
            && let Some(wait) =
                RateLimit::from_headers(headers, self.clock.now()).wait(self.clock.now())
        {
            e = e.with_retry_after(wait);
        }
        e
    }
}

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

#[async_trait]
impl TokenRefresher for OAuthClient {
    fn platform(&self) -> Platform {
        self.config.platform
    }

    async fn refresh(&self, key: &AccountKey, token: &Token) -> Result<Token> {
        let refresh = token.refresh_token.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::ReauthRequired,
                format!("{key} has no refresh token"),
            )
            .with_platform(key.platform)
        })?;
        self.refresh_token(refresh).await
    }

    async fn revoke(&self, _key: &AccountKey, token: &Token) -> Result<()> {
        // Revoking the refresh token ends the whole grant where the platform supports it.
        match &token.refresh_token {
            Some(r) => self.revoke_token(r, Some("refresh_token")).await,
            None => {
                self.revoke_token(&token.access_token, Some("access_token"))
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn config() -> OAuthConfig {
        OAuthConfig::new(
            Platform::X,
            "cid",
            Url::parse("https://auth.example/authorize").expect("url"),
            Url::parse("https://auth.example/token").expect("url"),
            Url::parse("http://127.0.0.1:1/cb").expect("url"),
        )
        .with_scopes(["a", "b"])
    }

    #[tokio::test]
    async fn authorize_url_has_pkce_and_state() {
        let client = OAuthClient::new(config(), reqwest::Client::new());
        let req = client.authorize("t").await.expect("authorize");
        let q: HashMap<_, _> = req.url.query_pairs().into_owned().collect();
        assert_eq!(
            q.get("code_challenge_method").map(String::as_str),
            Some("S256")
        );
        assert_eq!(q.get("state"), Some(&req.state));
        assert_eq!(q.get("scope").map(String::as_str), Some("a b"));
        assert_eq!(q.get("client_id").map(String::as_str), Some("cid"));
        assert!(q.get("code_challenge").is_some_and(|c| c.len() == 43));
    }

    #[tokio::test]
    async fn spent_wrong_and_expired_states_are_rejected() {
        let clock = ManualClock::new(Utc::now());
        let client =
            OAuthClient::new(config(), reqwest::Client::new()).with_clock(Arc::new(clock.clone()));
        let req = client.authorize("t").await.expect("authorize");
        // A wrong state, then the right state expired: both refused before any request.
        assert_eq!(
            client
                .complete("c", "nope")
                .await
                .expect_err("wrong")
                .kind(),
            ErrorKind::InvalidInput
        );
        clock.advance(chrono::Duration::minutes(11));
        assert_eq!(
            client
                .complete("c", &req.state)
                .await
                .expect_err("expired")
                .kind(),
            ErrorKind::InvalidInput
        );
        // And it was consumed by that attempt.
        assert!(
            client
                .pending
                .take(&req.state)
                .await
                .expect("take")
                .is_none()
        );
    }

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
