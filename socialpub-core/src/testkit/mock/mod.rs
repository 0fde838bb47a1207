//! The mock kit: what every platform mock is built on, so each mock keeps only its platform's
//! state and endpoints.
//!
//! - [`MockServer`]: the server on a free port of 127.0.0.1, with connections that can be
//!   killed mid-request.
//! - [`Routes`]: a mock's endpoints, each with the name faults and the log use
//!   (`tweets.create`), served through one fault layer with one meaning per [`Fault`]:
//!
//!   | fault | what the client sees |
//!   | --- | --- |
//!   | [`Fault::Status`] | the platform's error answer of that status ([`MockDialect::error`]), nothing done |
//!   | [`Fault::RateLimit`] | the platform's throttling answer with its reset headers ([`MockDialect::rate_limited`]) |
//!   | [`Fault::Delay`] | the answer after a wait (trips client timeouts before the platform acts) |
//!   | [`Fault::DelayAfter`] | the call handled, then the answer held back (the platform acted, the client timed out) |
//!   | [`Fault::Drop`] | the connection breaks mid-request: about half the body arrives, the mock acts on what arrived, no answer |
//!   | [`Fault::ExpireToken`] | the access token presented expires just before the call (a 401) |
//!
//! - [`MockOAuth`]: an OAuth 2.0 server (PKCE, Basic or form client credentials, fixed or
//!   rotating refresh tokens, scopes, revocation) and the bearer check of API calls.
//! - [`RequestLog`]: every request, by endpoint, with its status and the body bytes that
//!   arrived.
//!
//! A platform supplies a [`MockDialect`]: its error shapes.

mod log;
mod oauth;
mod server;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Query, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use futures::StreamExt;
use serde_json::{Value, json};

pub use log::{Counter, LoggedRequest, RequestLog};
pub use oauth::{
    ClientAuthRule, Denied, Grant, MockOAuth, OAuthAnswer, OAuthServerConfig, OfflineRule,
    PkceRule, RefreshRule, Scopes, bearer_token, pkce_s256,
};
pub use server::{Conn, MockServer};

use super::faults::{Fault, FaultPlan};
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
        let guard = Guard {
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
            .layer(axum::middleware::from_fn_with_state(guard, fault_layer))
            .with_state(state);
        MockServer::start(router).await
    }
}

/// How a route's requests are named.
#[derive(Clone, Copy)]
enum Naming {
    Fixed(&'static str),
    By(fn(&Parts) -> &'static str),
}

/// A mock's endpoints: each route with the name its faults and log entries go under.
pub struct Routes<S> {
    paths: BTreeMap<String, MethodRouter<S>>,
    names: Vec<(Method, String, Naming)>,
}

impl<S> std::fmt::Debug for Routes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("paths", &self.paths.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes {
            paths: BTreeMap::new(),
            names: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(mut self, method: Method, path: &str, naming: Naming, mr: MethodRouter<S>) -> Self {
        let merged = match self.paths.remove(path) {
            Some(existing) => existing.merge(mr),
            None => mr,
        };
        self.paths.insert(path.to_owned(), merged);
        self.names.push((method, path.to_owned(), naming));
        self
    }

    /// `GET path`, named `endpoint`.
    pub fn get<H, T>(self, path: &str, endpoint: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let mr = axum::routing::get(handler);
        self.add(Method::GET, path, Naming::Fixed(endpoint), mr)
    }

    /// `POST path`, named `endpoint`.
    pub fn post<H, T>(self, path: &str, endpoint: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let mr = axum::routing::post(handler);
        self.add(Method::POST, path, Naming::Fixed(endpoint), mr)
    }

    /// `PUT path`, named `endpoint`.
    pub fn put<H, T>(self, path: &str, endpoint: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let mr = axum::routing::put(handler);
        self.add(Method::PUT, path, Naming::Fixed(endpoint), mr)
    }

    /// `DELETE path`, named `endpoint`.
    pub fn delete<H, T>(self, path: &str, endpoint: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let mr = axum::routing::delete(handler);
        self.add(Method::DELETE, path, Naming::Fixed(endpoint), mr)
    }

    /// `method path`, named per request by `name` (one URL serving two operations, as a
    /// resumable upload's chunk and status query do).
    pub fn route_by<H, T>(
        self,
        method: Method,
        path: &str,
        name: fn(&Parts) -> &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let mr = axum::routing::on(
            axum::routing::MethodFilter::try_from(method.clone())
                .unwrap_or(axum::routing::MethodFilter::GET),
            handler,
        );
        self.add(method, path, Naming::By(name), mr)
    }

    /// The OAuth server's endpoints at the platform's paths: the consent page (`GET`, named
    /// `oauth.authorize`), the token endpoint (`POST` form, or `GET` query for platforms that
    /// exchange with GET; `oauth.token`) and the revocation endpoint (`POST` form;
    /// `oauth.revoke`).
    pub fn oauth(self, kit: &MockKit, paths: OAuthPaths<'_>) -> Self {
        let o = kit.oauth().clone();
        let authorize = move |Query(q): Query<HashMap<String, String>>| {
            let o = o.clone();
            async move { oauth_response(o.authorize(&q)) }
        };
        let o = kit.oauth().clone();
        let token_post = move |headers: HeaderMap, body: Bytes| {
            let o = o.clone();
            async move {
                let form_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
                if !form_type {
                    return json_response(
                        400,
                        &json!({"error": "invalid_request", "error_description": "Content-Type must be application/x-www-form-urlencoded"}),
                    );
                }
                oauth_response(o.token(&headers, &form(&body)))
            }
        };
        let o = kit.oauth().clone();
        let token_get = move |headers: HeaderMap, Query(q): Query<HashMap<String, String>>| {
            let o = o.clone();
            async move { oauth_response(o.token(&headers, &q)) }
        };
        let o = kit.oauth().clone();
        let revoke =
            move |headers: HeaderMap, Query(q): Query<HashMap<String, String>>, body: Bytes| {
                let o = o.clone();
                async move {
                    let mut f = form(&body);
                    for (k, v) in q {
                        f.entry(k).or_insert(v);
                    }
                    oauth_response(o.revoke(&headers, &f))
                }
            };
        let mut routes = self
            .get(paths.authorize, "oauth.authorize", authorize)
            .post(paths.token, "oauth.token", token_post);
        if paths.token_by_get {
            routes = routes.get(paths.token, "oauth.token", token_get);
        }
        match paths.revoke {
            Some(p) => routes.post(p, "oauth.revoke", revoke),
            None => routes,
        }
    }
}

/// Where a platform serves its OAuth endpoints.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct OAuthPaths<'a> {
    /// The consent page.
    pub authorize: &'a str,
    /// The token endpoint.
    pub token: &'a str,
    /// The revocation endpoint, if any.
    pub revoke: Option<&'a str>,
    /// Whether the token endpoint also takes `GET` with query parameters (Meta).
    pub token_by_get: bool,
}

impl<'a> OAuthPaths<'a> {
    /// The consent page, token and revocation endpoints at these paths.
    pub fn new(authorize: &'a str, token: &'a str, revoke: Option<&'a str>) -> Self {
        OAuthPaths {
            authorize,
            token,
            revoke,
            token_by_get: false,
        }
    }

    /// The token endpoint also takes `GET`.
    pub fn token_by_get(mut self) -> Self {
        self.token_by_get = true;
        self
    }
}

fn oauth_response(a: OAuthAnswer) -> Response {
    match a {
        OAuthAnswer::Redirect(to) => {
            let mut r = StatusCode::FOUND.into_response();
            set_header(&mut r, "location", &to);
            r
        }
        OAuthAnswer::Page(msg) => (
            StatusCode::BAD_REQUEST,
            format!("Something went wrong: {msg}"),
        )
            .into_response(),
        OAuthAnswer::Json(status, body) => json_response(status, &body),
    }
}

#[derive(Clone)]
struct Guard {
    kit: MockKit,
    names: Arc<Vec<(Method, String, Naming)>>,
}

impl Guard {
    fn name(&self, parts: &Parts) -> &'static str {
        let Some(path) = parts.extensions.get::<MatchedPath>() else {
            return "unknown";
        };
        self.names
            .iter()
            .find(|(m, p, _)| *m == parts.method && p == path.as_str())
            .map_or("unknown", |(_, _, n)| match n {
                Naming::Fixed(s) => s,
                Naming::By(f) => f(parts),
            })
    }
}

/// Reads `body` to its end (or its first error).
async fn drain(body: Body) {
    let mut s = body.into_data_stream();
    while let Some(Ok(_)) = s.next().await {}
}

/// Where a watched body stands.
struct Watch {
    seen: Arc<AtomicU64>,
    /// Bytes after which the connection breaks.
    cut: Option<u64>,
    /// The bytes up to the cut were delivered: the break comes next.
    breaking: bool,
    done: bool,
}

fn broken() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "the connection dropped mid-request (fault injection)",
    )
}

/// A request body that counts the bytes read into `seen` and, when `cut` is set, ends with an
/// error after that many bytes, as a connection breaking mid-upload does.
fn watched(body: Body, seen: Arc<AtomicU64>, cut: Option<u64>) -> Body {
    let watch = Watch {
        seen,
        cut,
        breaking: false,
        done: false,
    };
    let stream = futures::stream::unfold(
        (body.into_data_stream(), watch),
        |(mut s, mut w)| async move {
            if w.done {
                return None;
            }
            if w.breaking {
                w.done = true;
                return Some((Err(broken()), (s, w)));
            }
            let mut frame = match s.next().await? {
                Ok(f) => f,
                Err(e) => {
                    w.done = true;
                    return Some((Err(std::io::Error::other(e)), (s, w)));
                }
            };
            if let Some(cut) = w.cut {
                let before = w.seen.load(Ordering::SeqCst);
                if before + frame.len() as u64 >= cut {
                    let keep = usize::try_from(cut.saturating_sub(before)).unwrap_or(0);
                    frame = frame.slice(..keep.min(frame.len()));
                    w.breaking = true;
                    if frame.is_empty() {
                        w.done = true;
                        return Some((Err(broken()), (s, w)));
                    }
                }
            }
            w.seen.fetch_add(frame.len() as u64, Ordering::SeqCst);
            Some((Ok::<Bytes, std::io::Error>(frame), (s, w)))
        },
    );
    Body::from_stream(stream)
}

fn has_body(parts: &Parts) -> bool {
    let len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    len.is_some_and(|l| l > 0) || parts.headers.contains_key(header::TRANSFER_ENCODING)
}

/// The fault layer every mock route runs behind: names the request, logs it, applies the next
/// fault queued for its endpoint, and counts the body bytes that arrive.
async fn fault_layer(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let kit = &guard.kit;
    let (parts, body) = req.into_parts();
    let endpoint = guard.name(&parts);
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let entry = kit.log().start(endpoint, parts.method.as_str(), &path);
    let conn = parts
        .extensions
        .get::<ConnectInfo<Conn>>()
        .map(|c| c.0.clone());
    let seen = Arc::new(AtomicU64::new(0));
    let fault = kit.faults().take(endpoint);
    let cut = match &fault {
        Some(Fault::Drop) => {
            let len = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            // About half arrives; a body of unknown length breaks after its first bytes.
            Some(len.map_or(1, |l| (l / 2).max(1)))
        }
        _ => None,
    };
    let body_present = has_body(&parts);
    let token = bearer_token(&parts.headers).map(str::to_owned);
    let req = Request::from_parts(parts, watched(body, seen.clone(), cut));
    let response = match fault {
        Some(Fault::Status {
            status,
            body,
            headers,
        }) => {
            drain(req.into_body()).await;
            let mut r = match body {
                Some(b) => {
                    let mut r = (
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        b,
                    )
                        .into_response();
                    set_header(&mut r, "content-type", "application/json");
                    r
                }
                None => kit.dialect().error(endpoint, status),
            };
            for (k, v) in &headers {
                set_header(&mut r, k, v);
            }
            r
        }
        Some(Fault::RateLimit(wait)) => {
            drain(req.into_body()).await;
            kit.dialect().rate_limited(endpoint, wait)
        }
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(Fault::DelayAfter(d)) => {
            let r = next.run(req).await;
            tokio::time::sleep(d).await;
            r
        }
        Some(Fault::Drop) => {
            if body_present {
                // The platform acts on what arrived before the break; the answer never leaves.
                let _ = next.run(req).await;
            }
            if let Some(c) = &conn {
                c.kill();
            }
            kit.log().finish(entry, 0, seen.load(Ordering::SeqCst));
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Some(Fault::ExpireToken) => {
            if let Some(t) = &token {
                kit.oauth().expire_access_token(t);
            }
            next.run(req).await
        }
        _ => next.run(req).await,
    };
    kit.log().finish(
        entry,
        response.status().as_u16(),
        seen.load(Ordering::SeqCst),
    );
    response
}
