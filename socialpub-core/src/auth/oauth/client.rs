//! [`OAuthClient`]: one platform's OAuth flows (authorize, complete, exchange, refresh,
//! revoke) sent through the platform's [`ApiClient`].

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use oauth2::{CsrfToken, PkceCodeChallenge};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::config::{ClientAuth, ExchangeMethod, OAuthConfig};
use super::pending::{MemoryPendingStore, PendingAuthorization, PendingStore};
use super::token::{classify_token_error, parse_token};
use crate::auth::manager::TokenRefresher;
use crate::auth::{AccountKey, Token};
use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::http::{Answer, ApiClient, Bearer, Call, RawAnswer, error_from_answer};
use crate::platform::Platform;

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
/// use socialpub_core::http::{ApiClient, GenericDialect};
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
/// let api = ApiClient::new(GenericDialect(Platform::X), reqwest::Client::new());
/// let client = OAuthClient::new(config, api);
/// let request = client.authorize("tenant-1").await?;
/// println!("open {}", request.url);
/// // … the user comes back to the redirect URI with ?code=…&state=…
/// let done = client.complete("the-code", &request.state).await?;
/// # let _ = done; Ok(()) }
/// ```
pub struct OAuthClient {
    config: OAuthConfig,
    api: ApiClient,
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
    /// A client sending through `api` (its HTTP client, timeout, clock, and the platform's
    /// request-id header), with an in-memory pending store.
    pub fn new(config: OAuthConfig, api: ApiClient) -> Self {
        OAuthClient {
            clock: api.clock().clone(),
            config,
            api,
            pending: Arc::new(MemoryPendingStore::new()),
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

    /// The API client OAuth requests go through.
    pub fn api(&self) -> &ApiClient {
        &self.api
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

    /// Revokes `token` at the platform (`token_type_hint` when given). A token the platform no
    /// longer knows counts as revoked (RFC 7009 §2.2 has servers answer 200 for those; some
    /// answer `invalid_token`).
    pub async fn revoke_token(&self, token: &SecretString, hint: Option<&str>) -> Result<()> {
        let c = &self.config;
        let url = c.revoke_url.clone().ok_or_else(|| {
            Error::unsupported(format!("{} has no revocation endpoint", c.platform))
                .with_platform(c.platform)
        })?;
        let mut params = vec![("token", token.expose_secret().to_owned())];
        if let Some(h) = hint {
            params.push(("token_type_hint", h.to_owned()));
        }
        let basic = if c.revoke_with_client_auth {
            self.client_auth(&mut params)
        } else {
            None
        };
        let answer = self
            .api
            .send(
                Bearer::None,
                &Call::once("oauth.revoke").accept_all(),
                |http| with_basic(http.post(url.clone()), basic.as_ref()).form(&params),
            )
            .await?;
        if (200..300).contains(&answer.status()) {
            return Ok(());
        }
        let e = self.token_error("oauth.revoke", &answer);
        if e.code() == Some("invalid_token") {
            return Ok(());
        }
        Err(e)
    }

    /// Adds the client's credentials to `params` (the body style), or returns the `Basic`
    /// header value to send.
    fn client_auth(&self, params: &mut Vec<(&'static str, String)>) -> Option<SecretString> {
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
                Some(SecretString::from(format!("Basic {basic}")))
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
                None
            }
        }
    }

    async fn token_request(
        &self,
        operation: &'static str,
        mut params: Vec<(&'static str, String)>,
    ) -> Result<Token> {
        let c = &self.config;
        let basic = self.client_auth(&mut params);
        let url = c.token_url.clone();
        let method = c.exchange_method;
        let answer = self
            .api
            .send(Bearer::None, &Call::once(operation).accept_all(), |http| {
                let req = match method {
                    ExchangeMethod::PostForm => http.post(url.clone()).form(&params),
                    ExchangeMethod::Get => http.get(url.clone()).query(&params),
                };
                with_basic(req, basic.as_ref()).header(reqwest::header::ACCEPT, "application/json")
            })
            .await?;
        let status = answer.status();
        if !(200..300).contains(&status) {
            return Err(self.token_error(operation, &answer));
        }
        let json: serde_json::Value = serde_json::from_str(answer.body()).map_err(|_| {
            Error::new(
                ErrorKind::Transient,
                "the token endpoint answered with something other than JSON",
            )
            .with_platform(c.platform)
            .with_operation(operation)
            .with_status(status)
            .with_body(answer.body())
        })?;
        // Some platforms (TikTok) answer errors with a 200 and an `error` field.
        if json
            .get("error")
            .is_some_and(|e| !e.is_null() && e.as_str() != Some("ok"))
            && json.get("access_token").is_none()
        {
            return Err(self.token_error(operation, &answer));
        }
        parse_token(&json, &c.scope_separator, self.clock.now()).map_err(|e| {
            e.with_platform(c.platform)
                .with_operation(operation)
                .with_status(status)
        })
    }

    fn token_error(&self, operation: &'static str, answer: &Answer) -> Error {
        let now = self.clock.now();
        let raw = RawAnswer::new(
            operation,
            answer.status(),
            answer.headers(),
            answer.body(),
            now,
        );
        error_from_answer(self.api.dialect(), &raw, classify_token_error(&raw))
    }
}

fn with_basic(
    req: reqwest::RequestBuilder,
    basic: Option<&SecretString>,
) -> reqwest::RequestBuilder {
    match basic.map(|b| reqwest::header::HeaderValue::from_str(b.expose_secret())) {
        Some(Ok(mut value)) => {
            // Sensitive values are hidden from the header map's Debug.
            value.set_sensitive(true);
            req.header(reqwest::header::AUTHORIZATION, value)
        }
        _ => req,
    }
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
                format!("{key} has no refresh token; connect the account again"),
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
    use std::collections::HashMap;

    use chrono::Utc;

    use crate::clock::ManualClock;
    use crate::http::GenericDialect;

    fn api() -> ApiClient {
        ApiClient::new(GenericDialect(Platform::X), reqwest::Client::new())
    }

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
        let client = OAuthClient::new(config(), api());
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
        let client = OAuthClient::new(config(), api()).with_clock(Arc::new(clock.clone()));
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
}
