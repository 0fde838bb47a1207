//! The mock kit: what every platform mock is built on, so each mock keeps only its platform's
//! state and endpoints.
//!
//! - [`MockServer`]: the server on a free port of 127.0.0.1, with connections that can be
//!   killed mid-request.
//! - [`Routes`]: a mock's endpoints, each with the name faults and the log use
//!   (`tweets.create`), served through one fault layer with one meaning per [`Fault`](crate::testkit::Fault):
//!
//!   | fault | what the client sees |
//!   | --- | --- |
//!   | [`Fault::Status`](crate::testkit::Fault::Status) | the platform's error answer of that status ([`MockDialect::error`]), nothing done |
//!   | [`Fault::RateLimit`](crate::testkit::Fault::RateLimit) | the platform's throttling answer with its reset headers ([`MockDialect::rate_limited`]) |
//!   | [`Fault::Delay`](crate::testkit::Fault::Delay) | the answer after a wait (trips client timeouts before the platform acts) |
//!   | [`Fault::DelayAfter`](crate::testkit::Fault::DelayAfter) | the call handled, then the answer held back (the platform acted, the client timed out) |
//!   | [`Fault::Drop`](crate::testkit::Fault::Drop) | the connection breaks mid-request: about half the body arrives, the mock acts on what arrived, no answer |
//!   | [`Fault::ExpireToken`](crate::testkit::Fault::ExpireToken) | the access token presented expires just before the call (a 401) |
//!
//! - [`MockOAuth`]: an OAuth 2.0 server (PKCE, Basic or form client credentials, fixed or
//!   rotating refresh tokens, scopes, revocation) and the bearer check of API calls.
//! - [`RequestLog`]: every request, by endpoint, with its status and the body bytes that
//!   arrived.
//!
//! A platform supplies a [`MockDialect`]: its error shapes.

mod layer;
mod log;
mod oauth;
mod routes;
mod server;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub use log::{Counter, LoggedRequest, RequestLog};
pub use oauth::{
    ClientAuthRule, Denied, Grant, MockOAuth, OAuthAnswer, OAuthServerConfig, OfflineRule,
    PkceRule, RefreshRule, Scopes, bearer_token, pkce_s256,
};
pub use routes::{OAuthPaths, Routes};
pub use server::{Conn, MockServer};

use super::faults::FaultPlan;
use crate::error::Result;

/// A platform's error shapes, for the answers the kit sends on its behalf.
pub trait MockDialect: Send + Sync + 'static {
    /// The platform's error answer of `status` for `endpoint` (an injected fault).
    fn error(&self, endpoint: &str, status: u16) -> Response;

    /// The platform's answer to a call throttled for `wait`: by default a 429 with
    /// `Retry-After`. Platforms with reset headers send those.
    fn rate_limited(&self, endpoint: &str, wait: Duration) -> Response {
        let mut r = self.error(endpoint, 429);
        set_header(&mut r, "retry-after", &wait.as_secs().max(1).to_string());
        r
    }

    /// A missing, unknown, expired or revoked access token.
    fn unauthorized(&self) -> Response {
        self.error("", 401)
    }

    /// A valid token without `scope`.
    fn missing_scope(&self, scope: &str) -> Response {
        let _ = scope;
        self.error("", 403)
    }
}

/// A JSON answer of `status`.
pub fn json_response(status: u16, body: &Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body.clone())).into_response()
}

/// Sets header `name` on `r` (ignored when either part is not a valid header).
pub fn set_header(r: &mut Response, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        r.headers_mut().insert(n, v);
    }
}

/// The fields of a form (`application/x-www-form-urlencoded`) body.
pub fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

struct KitInner {
    faults: FaultPlan,
    log: RequestLog,
    oauth: MockOAuth,
    dialect: Arc<dyn MockDialect>,
}

/// What a platform mock is built on: its fault plan, request log, OAuth server and dialect.
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct MockKit {
    inner: Arc<KitInner>,
}

impl std::fmt::Debug for MockKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockKit")
            .field("oauth", &self.inner.oauth)
            .field("requests", &self.inner.log.requests())
            .finish_non_exhaustive()
    }
}

impl MockKit {
    /// A kit for a platform speaking `dialect`, whose OAuth server is `oauth`, taking faults
    /// from `faults` (share one plan between the mocks of several platforms).
    pub fn new(dialect: impl MockDialect, oauth: MockOAuth, faults: FaultPlan) -> MockKit {
        MockKit {
            inner: Arc::new(KitInner {
                faults,
                log: RequestLog::default(),
                oauth,
                dialect: Arc::new(dialect),
            }),
        }
    }

    /// Faults to inject, by endpoint name.
    pub fn faults(&self) -> &FaultPlan {
        &self.inner.faults
    }

    /// Every request received.
    pub fn log(&self) -> &RequestLog {
        &self.inner.log
    }

    /// The OAuth server.
    pub fn oauth(&self) -> &MockOAuth {
        &self.inner.oauth
    }

    /// The platform's error shapes.
    pub fn dialect(&self) -> &dyn MockDialect {
        self.inner.dialect.as_ref()
    }

    /// Checks an API call's bearer token and scopes: the grant, or the platform's 401 or 403
    /// answer to send.
    #[allow(clippy::result_large_err)]
    pub fn bearer(&self, headers: &HeaderMap, scopes: Scopes<'_>) -> Result<Grant, Response> {
        self.inner
            .oauth
            .check_bearer(headers, scopes)
            .map_err(|d| match d {
                Denied::Unauthorized => self.dialect().unauthorized(),
                Denied::MissingScope(s) => self.dialect().missing_scope(&s),
            })
    }

    /// Starts a server for `routes` with `state`, every route behind the fault layer.
    pub async fn serve<S>(&self, routes: Routes<S>, state: S) -> Result<MockServer>
    where
        S: Clone + Send + Sync + 'static,
    {
        let guard = layer::Guard {
            kit: self.clone(),
            names: Arc::new(routes.names),
        };
        let mut router: Router<S> = Router::new();
        for (path, method_router) in routes.paths {
            router = router.route(&path, method_router);
        }
        let dialect = self.inner.dialect.clone();
        let router = router
            .fallback(move || {
                let dialect = dialect.clone();
                async move { dialect.error("unknown", 404) }
            })
            .layer(axum::middleware::from_fn_with_state(
                guard,
                layer::fault_layer,
            ))
            .with_state(state);
        MockServer::start(router).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::extract::State;
    use futures::StreamExt;
    use serde_json::json;

    use super::*;

    struct Plain;

    impl MockDialect for Plain {
        fn error(&self, endpoint: &str, status: u16) -> Response {
            json_response(status, &json!({"error": endpoint, "status": status}))
        }
    }

    /// What the `echo` handler saw: the body bytes it read, and whether the body broke.
    type Seen = Arc<Mutex<Vec<(usize, bool)>>>;

    async fn echo(State(seen): State<Seen>, body: Body) -> Response {
        let mut s = body.into_data_stream();
        let (mut n, mut broke) = (0, false);
        while let Some(frame) = s.next().await {
            match frame {
                Ok(f) => n += f.len(),
                Err(_) => {
                    broke = true;
                    break;
                }
            }
        }
        if let Ok(mut v) = seen.lock() {
            v.push((n, broke));
        }
        json_response(200, &json!({"read": n}))
    }

    async fn start() -> (MockServer, MockKit, Seen) {
        let oauth = MockOAuth::new(OAuthServerConfig::new("c", None, "http://cb"), "u");
        let kit = MockKit::new(Plain, oauth, FaultPlan::new());
        let seen: Seen = Arc::default();
        let k = kit.clone();
        let guarded = move |headers: HeaderMap| {
            let k = k.clone();
            async move {
                match k.bearer(&headers, Scopes::None) {
                    Ok(g) => json_response(200, &json!({"user": g.user})),
                    Err(r) => r,
                }
            }
        };
        let routes = Routes::new()
            .post("/echo", "echo", echo)
            .get("/me", "me", guarded);
        let server = kit.serve(routes, seen.clone()).await.expect("serve");
        (server, kit, seen)
    }

    #[tokio::test]
    async fn each_fault_means_one_thing() {
        let (server, kit, seen) = start().await;
        let http = reqwest::Client::new();
        let echo = format!("{}/echo", server.base());
        let body = vec![7u8; 100_000];

        // Status: the platform's error shape, nothing handled.
        kit.faults()
            .fail_next_with("echo", 503, &[("x-extra", "1")]);
        let r = http
            .post(&echo)
            .body(body.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(r.headers()["x-extra"], "1");
        let answer: Value = r.json().await.expect("json");
        assert_eq!(answer["error"], "echo");
        assert!(
            seen.lock().expect("lock").is_empty(),
            "a status fault handles nothing"
        );

        // RateLimit: a 429 with the wait in Retry-After.
        kit.faults().rate_limit_next("echo", Duration::from_secs(3));
        let r = http
            .post(&echo)
            .body(body.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers()["retry-after"], "3");

        // Drop: half the body arrives, the handler sees it break, the client gets no answer.
        kit.faults().drop_next("echo", 1);
        let dropped = http.post(&echo).body(body.clone()).send().await;
        assert!(dropped.is_err(), "no answer after a drop");
        assert_eq!(seen.lock().expect("lock").last(), Some(&(50_000, true)));

        // Pass, then Delay: the second call answers late (a client timeout), the first at once.
        kit.faults().pass_next("echo", 1);
        kit.faults()
            .delay_next("echo", 1, Duration::from_millis(400));
        let r = http
            .post(&echo)
            .body(body.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 200);
        let slow = http
            .post(&echo)
            .body(body.clone())
            .timeout(Duration::from_millis(100))
            .send()
            .await;
        assert!(slow.is_err_and(|e| e.is_timeout()));

        // DelayAfter: handled at once (the platform acted), answered late.
        let handled = seen.lock().expect("lock").len();
        kit.faults()
            .delay_answer_next("echo", Duration::from_millis(400));
        let late = http
            .post(&echo)
            .body(body.clone())
            .timeout(Duration::from_millis(100))
            .send()
            .await;
        assert!(late.is_err_and(|e| e.is_timeout()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            seen.lock().expect("lock").len() > handled,
            "handled before the delay"
        );

        // The log has every call, with its status and the bytes that arrived.
        let log = kit.log();
        assert_eq!(log.calls("echo"), 6);
        let statuses: Vec<u16> = log.entries().iter().map(|e| e.status).collect();
        assert_eq!(&statuses[..4], &[503, 429, 0, 200]);
        assert_eq!(log.entries()[2].bytes_in, 50_000);
        assert_eq!(log.entries()[3].bytes_in, 100_000);
    }

    #[tokio::test]
    async fn tokens_expire_in_flight_and_unknown_paths_are_logged() {
        let (server, kit, _) = start().await;
        let http = reqwest::Client::new();
        let me = format!("{}/me", server.base());
        let token = kit.oauth().issue_token("u", &[]);
        let access = secrecy::ExposeSecret::expose_secret(&token.access_token).to_owned();
        let ok = http
            .get(&me)
            .bearer_auth(&access)
            .send()
            .await
            .expect("send");
        assert_eq!(ok.status().as_u16(), 200);
        kit.faults().expire_token_next("me");
        let refused = http
            .get(&me)
            .bearer_auth(&access)
            .send()
            .await
            .expect("send");
        assert_eq!(refused.status().as_u16(), 401, "the token lapsed in flight");
        let again = http
            .get(&me)
            .bearer_auth(&access)
            .send()
            .await
            .expect("send");
        assert_eq!(again.status().as_u16(), 401, "and stays expired");
        let fresh = kit.oauth().issue_token("u", &[]);
        let fresh = secrecy::ExposeSecret::expose_secret(&fresh.access_token).to_owned();
        let ok = http
            .get(&me)
            .bearer_auth(&fresh)
            .send()
            .await
            .expect("send");
        assert_eq!(ok.status().as_u16(), 200);

        kit.faults().drop_next("me", 1);
        assert!(http.get(&me).bearer_auth(&fresh).send().await.is_err());
        let missing = http
            .get(format!("{}/nowhere", server.base()))
            .send()
            .await
            .expect("send");
        assert_eq!(missing.status().as_u16(), 404);
        assert_eq!(kit.log().calls("unknown"), 1);
    }
}
