//! A stateful mock of the X API v2 endpoints this crate uses (feature `mock`), for your own
//! tests: start it, point [`crate::XConfig`] at it, and publish as if to X.
//!
//! ```no_run
//! # async fn f() -> socialpub_core::Result<()> {
//! use std::sync::Arc;
//! use socialpub_core::auth::{AccountKey, StaticToken};
//! use socialpub_core::{Platform, Post, PublishContext, Publisher};
//! use socialpub_x::XPublisher;
//! use socialpub_x::mock::XMock;
//!
//! let mock = XMock::start().await;
//! let publisher = XPublisher::new(mock.config_builder().build()?);
//! let token = mock.issue_token(mock.user_id());
//! let key = AccountKey::new("t", Platform::X, mock.user_id());
//! let mut ctx = PublishContext::new(key, Arc::new(StaticToken(token.access_token.clone())));
//! mock.faults().fail_next("media.append", 1, 503); // inject a fault
//! publisher.publish(&mut ctx, &Post::new("hello")).await?;
//! assert_eq!(mock.posts().len(), 1);
//! # Ok(()) }
//! ```
//!
//! What it enforces, the way X does:
//!
//! - **OAuth**: `GET /i/oauth2/authorize` checks the client, the registered redirect URI, the
//!   scopes, the state and an S256 PKCE challenge, then redirects back with a code (as if the
//!   user approved) that lives 30 seconds and works once. `POST /2/oauth2/token` requires
//!   HTTP Basic from a confidential client (and refuses a secret in the form) or `client_id`
//!   from a public one, checks the verifier, and rotates refresh tokens: a used refresh token
//!   stops working. `POST /2/oauth2/revoke` revokes a token.
//! - **Tokens and scopes** on every API call, with X's `401` problem.
//! - **Uploads**: `initialize` checks the media type, category and size cap; `append` takes
//!   multipart `segment_index` + `media`, in order (resending the last segment replaces it), at
//!   most 5 MiB a segment and 1000 segments, never more than `total_bytes`; `finalize` refuses
//!   missing bytes; videos and GIFs go `pending` → `in_progress` → `succeeded` (or `failed`)
//!   over `STATUS` polls with `check_after_secs`; a post may attach media only once
//!   `succeeded`. Upload bytes are counted and hashed, never kept.
//! - **Posts**: weighted length (280, or a per-user limit), duplicate content, media/poll/quote
//!   exclusivity, poll bounds, reply and quote targets.
//! - **Rate limits**: `x-rate-limit-*` on every answer (and the 24-hour headers on
//!   `POST /2/tweets`), with a `429` once a window is spent.
//!
//! Faults come from core's [`FaultPlan`] ([`XMock::faults`]) by endpoint name:
//! `oauth2.authorize`, `oauth2.token`, `oauth2.revoke`, `users.me`, `users.tweets`,
//! `tweets.create`, `tweets.get`, `tweets.delete`, `media.initialize`, `media.append`,
//! `media.finalize`, `media.status`, `media.metadata`. [`Fault::Drop`] answers headers and
//! then breaks the connection; [`Fault::DelayAfter`] handles the call (the post is created)
//! and then holds the answer back.

// Handlers answer refusals as ready `Response`s; their size is irrelevant in a test server.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{delete, get, post};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use socialpub_core::Token;
use socialpub_core::testkit::{Fault, FaultPlan};
use url::Url;

use crate::api;
use crate::config::{DEFAULT_SCOPES, XConfig, XConfigBuilder};
use crate::text;

/// The mock's default confidential client id.
pub const CLIENT_ID: &str = "mock-client-id";
/// The mock's default client secret.
pub const CLIENT_SECRET: &str = "mock-client-secret";
/// The redirect URI registered by default.
pub const REDIRECT_URI: &str = "http://127.0.0.1/callback";
/// The id of the user that exists from the start (and approves authorizations).
pub const USER_ID: &str = "2244994945";
/// Largest accepted `append` segment.
pub const MAX_SEGMENT_BYTES: usize = 5 * 1024 * 1024;
/// How long an authorization code works.
const CODE_TTL: chrono::Duration = chrono::Duration::seconds(30);
/// Access tokens last 2 hours, as X's do.
const ACCESS_TTL_SECS: i64 = 7200;
/// The rate-limit window.
const WINDOW_SECS: i64 = 15 * 60;

/// The endpoint names faults are queued under.
pub const ENDPOINTS: [&str; 13] = [
    "oauth2.authorize",
    "oauth2.token",
    "oauth2.revoke",
    "users.me",
    "users.tweets",
    "tweets.create",
    "tweets.get",
    "tweets.delete",
    "media.initialize",
    "media.append",
    "media.finalize",
    "media.status",
    "media.metadata",
];

/// Requests per 15 minutes per user, from X's rate-limit table.
fn window_limit(endpoint: &str) -> u64 {
    match endpoint {
        "tweets.create" | "tweets.delete" => 100,
        "users.me" => 75,
        "users.tweets" => 900,
        "media.status" => 1000,
        "media.initialize" | "media.append" | "media.finalize" | "media.metadata" => 1875,
        _ => 900,
    }
}

/// A post the mock holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MockPost {
    /// Its id.
    pub id: String,
    /// Who posted it.
    pub author_id: String,
    /// Its text as sent.
    pub text: String,
    /// The post it replies to.
    pub in_reply_to: Option<String>,
    /// The post it quotes.
    pub quote_of: Option<String>,
    /// Attached media ids.
    pub media_ids: Vec<String>,
    /// Poll options.
    pub poll_options: Vec<String>,
    /// Poll duration in minutes.
    pub poll_minutes: Option<u64>,
    /// Who may reply.
    pub reply_settings: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Where an upload stands, as the mock saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MockUpload {
    /// The media id.
    pub id: String,
    /// The owner's user id.
    pub owner: String,
    /// `media_type` from INIT.
    pub media_type: String,
    /// `media_category` (given or inferred).
    pub category: String,
    /// `total_bytes` from INIT.
    pub total_bytes: u64,
    /// Bytes received so far.
    pub received_bytes: u64,
    /// How many `append` calls each segment got (a retried segment shows 2).
    pub append_calls: Vec<u32>,
    /// `uploading`, `pending`, `in_progress`, `succeeded` or `failed`.
    pub state: String,
    /// The SHA-256 of the bytes received, hex, once all arrived.
    pub sha256: Option<String>,
    /// Alt text set through `/2/media/metadata`.
    pub alt_text: Option<String>,
}

#[derive(Clone)]
struct Upload {
    info: MockUpload,
    hasher: Sha256,
    hasher_before_last: Sha256,
    last_len: u64,
    polls: u32,
    will_fail: bool,
}

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    user: String,
    scopes: Vec<String>,
    issued: DateTime<Utc>,
}

struct AccessGrant {
    user: String,
    scopes: Vec<String>,
    expires: DateTime<Utc>,
}

struct RefreshGrant {
    user: String,
    scopes: Vec<String>,
}

#[derive(Default)]
struct Data {
    users: HashMap<String, (String, String)>,
    max_text: HashMap<String, usize>,
    codes: HashMap<String, CodeGrant>,
    access: HashMap<String, AccessGrant>,
    refresh: HashMap<String, RefreshGrant>,
    uploads: HashMap<String, Upload>,
    posts: Vec<MockPost>,
    next_id: u64,
    windows: HashMap<(String, String), (DateTime<Utc>, u64)>,
    calls: HashMap<String, usize>,
    requests: usize,
    refreshes: usize,
    fail_next_processing: bool,
    login_as: String,
}

struct Settings {
    client_id: String,
    client_secret: Option<String>,
    redirect_uris: Vec<String>,
    check_after_secs: u64,
    processing_polls: u32,
    max_text: usize,
}

struct Shared {
    settings: Settings,
    data: Mutex<Data>,
    faults: FaultPlan,
}

impl Shared {
    fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Configures an [`XMock`] before it starts.
#[derive(Debug, Clone)]
pub struct XMockBuilder {
    client_id: String,
    client_secret: Option<String>,
    redirect_uris: Vec<String>,
    check_after_secs: u64,
    processing_polls: u32,
    max_text: usize,
    faults: FaultPlan,
}

impl Default for XMockBuilder {
    fn default() -> Self {
        XMockBuilder {
            client_id: CLIENT_ID.to_owned(),
            client_secret: Some(CLIENT_SECRET.to_owned()),
            redirect_uris: vec![REDIRECT_URI.to_owned()],
            check_after_secs: 0,
            processing_polls: 2,
            max_text: text::MAX_WEIGHTED_LENGTH,
            faults: FaultPlan::new(),
        }
    }
}

impl XMockBuilder {
    /// A public client (no secret): the token endpoint then wants `client_id` in the form.
    pub fn public_client(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self.client_secret = None;
        self
    }

    /// A confidential client: the token endpoint then wants HTTP Basic.
    pub fn confidential_client(
        mut self,
        client_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        self.client_id = client_id.into();
        self.client_secret = Some(secret.into());
        self
    }

    /// Registers another redirect URI.
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uris.push(uri.into());
        self
    }

    /// `check_after_secs` in processing answers (default 0, so tests run fast).
    pub fn check_after_secs(mut self, secs: u64) -> Self {
        self.check_after_secs = secs;
        self
    }

    /// How many `STATUS` polls a video or GIF takes to finish (default 2: `in_progress`,
    /// then `succeeded`).
    pub fn processing_polls(mut self, polls: u32) -> Self {
        self.processing_polls = polls.max(1);
        self
    }

    /// The default weighted text limit (280).
    pub fn max_text(mut self, max: usize) -> Self {
        self.max_text = max;
        self
    }

    /// Takes faults from `plan` (share one plan between the mocks of several platforms).
    pub fn faults(mut self, plan: FaultPlan) -> Self {
        self.faults = plan;
        self
    }

    /// Starts the mock on a free port of 127.0.0.1.
    ///
    /// # Panics
    ///
    /// If no local port can be bound (a broken test environment); [`XMockBuilder::try_start`]
    /// returns that as an error instead.
    pub async fn start(self) -> XMock {
        match self.try_start().await {
            Ok(mock) => mock,
            Err(e) => panic!("the X mock could not start: {e}"),
        }
    }

    /// Starts the mock on a free port of 127.0.0.1, or says why it could not.
    pub async fn try_start(self) -> socialpub_core::Result<XMock> {
        let mut data = Data {
            next_id: 1_860_000_000_000_000_000,
            login_as: USER_ID.to_owned(),
            ..Data::default()
        };
        data.users.insert(
            USER_ID.to_owned(),
            ("socialpub_test".to_owned(), "socialpub test".to_owned()),
        );
        let shared = Arc::new(Shared {
            settings: Settings {
                client_id: self.client_id,
                client_secret: self.client_secret,
                redirect_uris: self.redirect_uris,
                check_after_secs: self.check_after_secs,
                processing_polls: self.processing_polls,
                max_text: self.max_text,
            },
            data: Mutex::new(data),
            faults: self.faults,
        });
        let app = Router::new()
            .route("/i/oauth2/authorize", get(authorize))
            .route("/2/oauth2/token", post(token))
            .route("/2/oauth2/revoke", post(revoke))
            .route("/2/users/me", get(users_me))
            .route("/2/users/{id}/tweets", get(users_tweets))
            .route("/2/tweets", post(create_tweet))
            .route("/2/tweets/{id}", get(get_tweet))
            .route("/2/tweets/{id}", delete(delete_tweet))
            .route("/2/media/upload/initialize", post(media_initialize))
            .route("/2/media/upload/{id}/append", post(media_append))
            .route("/2/media/upload/{id}/finalize", post(media_finalize))
            .route("/2/media/upload", get(media_status))
            .route("/2/media/metadata", post(media_metadata))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let base = Url::parse(&format!("http://{addr}/"))
            .map_err(|e| socialpub_core::Error::internal(format!("mock URL: {e}")))?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "X mock server stopped");
            }
        });
        Ok(XMock { base, shared, task })
    }
}

/// A running X mock. Stops when dropped.
pub struct XMock {
    base: Url,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for XMock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XMock")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Drop for XMock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A counter the conformance suite reads.
pub type Counter = Arc<dyn Fn() -> usize + Send + Sync>;

impl XMock {
    /// Starts a mock with the default confidential client ([`CLIENT_ID`], [`CLIENT_SECRET`]).
    pub async fn start() -> XMock {
        XMockBuilder::default().start().await
    }

    /// Configures a mock before starting it.
    pub fn builder() -> XMockBuilder {
        XMockBuilder::default()
    }

    /// The mock's base URL (`http://127.0.0.1:PORT/`): API base, token endpoint and
    /// authorization page all live under it.
    pub fn base_url(&self) -> Url {
        self.base.clone()
    }

    /// An [`XConfig`] builder pointed at the mock, with its client and redirect URI.
    pub fn config_builder(&self) -> XConfigBuilder {
        let base = self.base.as_str().trim_end_matches('/');
        let s = &self.shared.settings;
        let mut b = XConfig::builder()
            .client_id(s.client_id.clone())
            .api_base(base)
            .authorize_url(format!("{base}/i/oauth2/authorize"))
            .web_base(base)
            .redirect_uri(s.redirect_uris.first().cloned().unwrap_or_default());
        if let Some(secret) = &s.client_secret {
            b = b.client_secret(secret.clone());
        }
        b
    }

    /// Faults to inject, by endpoint name (see the module docs).
    pub fn faults(&self) -> &FaultPlan {
        &self.shared.faults
    }

    /// The user that exists from the start.
    pub fn user_id(&self) -> &'static str {
        USER_ID
    }

    /// Adds a user.
    pub fn add_user(&self, id: &str, username: &str) {
        self.shared
            .data()
            .users
            .insert(id.to_owned(), (username.to_owned(), username.to_owned()));
    }

    /// Makes `user` the one who approves the next authorizations.
    pub fn login_as(&self, user: &str) {
        self.shared.data().login_as = user.to_owned();
    }

    /// Gives `user` a longer (or shorter) text limit, as X Premium does.
    pub fn set_max_text(&self, user: &str, max: usize) {
        self.shared.data().max_text.insert(user.to_owned(), max);
    }

    /// Issues a token for `user` with the default scopes, as if it had connected.
    pub fn issue_token(&self, user: &str) -> Token {
        let scopes: Vec<String> = DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect();
        let (access, refresh) = issue(&mut self.shared.data(), user, &scopes);
        Token::new(access)
            .with_refresh_token(refresh)
            .with_expires_at(Utc::now() + chrono::Duration::seconds(ACCESS_TTL_SECS))
            .with_scopes(scopes)
    }

    /// Makes `access_token` expired: X answers 401 to it from now on.
    pub fn expire_access_token(&self, access_token: &str) {
        if let Some(g) = self.shared.data().access.get_mut(access_token) {
            g.expires = Utc::now() - chrono::Duration::seconds(1);
        }
    }

    /// Makes every access token issued so far expired.
    pub fn expire_all_access_tokens(&self) {
        let past = Utc::now() - chrono::Duration::seconds(1);
        for g in self.shared.data().access.values_mut() {
            g.expires = past;
        }
    }

    /// The next video or GIF to finish processing fails (`failed`, "InvalidMedia").
    pub fn fail_next_processing(&self) {
        self.shared.data().fail_next_processing = true;
    }

    /// Requests received so far, all endpoints.
    pub fn requests(&self) -> usize {
        self.shared.data().requests
    }

    /// Calls of one endpoint so far.
    pub fn calls(&self, endpoint: &str) -> usize {
        self.shared.data().calls.get(endpoint).copied().unwrap_or(0)
    }

    /// Successful refresh-token grants so far.
    pub fn refreshes(&self) -> usize {
        self.shared.data().refreshes
    }

    /// A counter of all requests, for core's conformance suite.
    pub fn request_counter(&self) -> Counter {
        let s = self.shared.clone();
        Arc::new(move || s.data().requests)
    }

    /// A counter of `POST /2/tweets` calls, for core's conformance suite.
    pub fn create_counter(&self) -> Counter {
        let s = self.shared.clone();
        Arc::new(move || s.data().calls.get("tweets.create").copied().unwrap_or(0))
    }

    /// The posts that exist, oldest first.
    pub fn posts(&self) -> Vec<MockPost> {
        self.shared.data().posts.clone()
    }

    /// What the mock knows of upload `media_id`.
    pub fn upload(&self, media_id: &str) -> Option<MockUpload> {
        self.shared
            .data()
            .uploads
            .get(media_id)
            .map(|u| u.info.clone())
    }

    /// Every upload, in no order.
    pub fn uploads(&self) -> Vec<MockUpload> {
        self.shared
            .data()
            .uploads
            .values()
            .map(|u| u.info.clone())
            .collect()
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

fn issue(d: &mut Data, user: &str, scopes: &[String]) -> (String, String) {
    let access = random("mock-at-");
    let refresh = random("mock-rt-");
    d.access.insert(
        access.clone(),
        AccessGrant {
            user: user.to_owned(),
            scopes: scopes.to_vec(),
            expires: Utc::now() + chrono::Duration::seconds(ACCESS_TTL_SECS),
        },
    );
    d.refresh.insert(
        refresh.clone(),
        RefreshGrant {
            user: user.to_owned(),
            scopes: scopes.to_vec(),
        },
    );
    (access, refresh)
}

fn next_id(d: &mut Data) -> String {
    d.next_id += 1;
    d.next_id.to_string()
}

// ---------------------------------------------------------------- responses

fn respond(status: u16, content_type: &str, body: Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn ok(status: u16, body: Value) -> Response {
    respond(status, "application/json; charset=utf-8", body)
}

fn problem(status: u16, body: Value) -> Response {
    respond(status, "application/problem+json", body)
}

fn unauthorized() -> Response {
    problem(
        401,
        json!({"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}),
    )
}

fn forbidden(detail: &str) -> Response {
    problem(
        403,
        json!({"detail":detail,"type":"about:blank","title":"Forbidden","status":403}),
    )
}

fn invalid(parameter: &str, message: &str) -> Response {
    problem(
        400,
        json!({
            "errors":[{"parameters":{parameter:[]},"message":message}],
            "title":"Invalid Request",
            "detail":"One or more parameters to your request was invalid.",
            "type":"https://api.twitter.com/2/problems/invalid-request"
        }),
    )
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    ok(
        status,
        json!({"error":error,"error_description":description}),
    )
}

fn too_many() -> Response {
    problem(
        429,
        json!({"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}),
    )
}

fn not_found_post(id: &str) -> Response {
    ok(
        200,
        json!({"errors":[{
            "value":id,"detail":format!("Could not find tweet with id: [{id}]."),
            "title":"Not Found Error","resource_type":"tweet","parameter":"id","resource_id":id,
            "type":"https://api.twitter.com/2/problems/resource-not-found"
        }]}),
    )
}

fn set_header(r: &mut Response, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        r.headers_mut().insert(n, v);
    }
}

fn fault_response(
    endpoint: &str,
    status: u16,
    body: Option<String>,
    headers: &[(String, String)],
) -> Response {
    let mut r = match body {
        Some(b) => {
            let mut r = Response::new(Body::from(b));
            *r.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            set_header(&mut r, "content-type", "application/json");
            r
        }
        None if endpoint.starts_with("oauth2.") && status == 400 => oauth_error(
            400,
            "invalid_request",
            "Value passed for the token was invalid.",
        ),
        None if endpoint.starts_with("oauth2.") && status == 401 => oauth_error(
            401,
            "unauthorized_client",
            "Missing valid authorization header",
        ),
        None => match status {
            401 => unauthorized(),
            403 => forbidden("Forbidden"),
            429 => too_many(),
            s => {
                let title = StatusCode::from_u16(s)
                    .ok()
                    .and_then(|c| c.canonical_reason())
                    .unwrap_or("Error");
                problem(
                    s,
                    json!({"title":title,"detail":title,"type":"about:blank","status":s}),
                )
            }
        },
    };
    if status == 429
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("x-rate-limit-reset"))
    {
        let reset = (Utc::now().timestamp() + 1).to_string();
        set_header(
            &mut r,
            "x-rate-limit-limit",
            &window_limit(endpoint).to_string(),
        );
        set_header(&mut r, "x-rate-limit-remaining", "0");
        set_header(&mut r, "x-rate-limit-reset", &reset);
    }
    for (k, v) in headers {
        set_header(&mut r, k, v);
    }
    r
}

/// Headers sent, then the connection breaks: the client sees a failed body.
fn dropped() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other(
            "connection dropped by fault injection",
        ))
    });
    let mut r = Response::new(Body::from_stream(stream));
    set_header(&mut r, "content-type", "application/json");
    r
}

/// Counts the call, applies a queued fault, runs the handler.
async fn with_faults<F>(s: &Shared, endpoint: &'static str, handler: F) -> Response
where
    F: Future<Output = Response>,
{
    with_faults_reading(s, endpoint, None, handler).await
}

/// [`with_faults`] for a call with a request body: a [`Fault::Drop`] reads part of the body
/// first, as a connection that breaks mid-upload does.
async fn with_faults_reading<F>(
    s: &Shared,
    endpoint: &'static str,
    body: Option<&Mutex<Option<Body>>>,
    handler: F,
) -> Response
where
    F: Future<Output = Response>,
{
    {
        let mut d = s.data();
        d.requests += 1;
        *d.calls.entry(endpoint.to_owned()).or_default() += 1;
    }
    let mut after = None;
    match s.faults.take(endpoint) {
        Some(Fault::Status {
            status,
            body,
            headers,
        }) => return fault_response(endpoint, status, body, &headers),
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::DelayAfter(d)) => after = Some(d),
        Some(Fault::Drop) => {
            let taken = body.and_then(|b| b.lock().ok().and_then(|mut b| b.take()));
            if let Some(body) = taken {
                use futures::StreamExt;
                let mut frames = body.into_data_stream();
                let _ = frames.next().await;
            }
            return dropped();
        }
        _ => {}
    }
    let response = handler.await;
    if let Some(d) = after {
        tokio::time::sleep(d).await;
    }
    response
}

/// Checks the bearer token and scopes, and counts the call against the user's window.
fn authorize_call(
    s: &Shared,
    headers: &HeaderMap,
    endpoint: &str,
    scopes: &[&str],
) -> Result<(String, Vec<(String, String)>), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let mut d = s.data();
    let grant = d.access.get(token).ok_or_else(unauthorized)?;
    if grant.expires <= Utc::now() {
        return Err(unauthorized());
    }
    if let Some(missing) = scopes
        .iter()
        .find(|sc| !grant.scopes.iter().any(|g| g == *sc))
    {
        return Err(forbidden(&format!(
            "This request requires the `{missing}` scope."
        )));
    }
    let user = grant.user.clone();
    let now = Utc::now();
    let limit = window_limit(endpoint);
    let window = d
        .windows
        .entry((endpoint.to_owned(), user.clone()))
        .or_insert((now, 0));
    if (now - window.0).num_seconds() >= WINDOW_SECS {
        *window = (now, 0);
    }
    let reset = window.0.timestamp() + WINDOW_SECS;
    let mut rate = vec![
        ("x-rate-limit-limit".to_owned(), limit.to_string()),
        ("x-rate-limit-reset".to_owned(), reset.to_string()),
    ];
    if window.1 >= limit {
        rate.push(("x-rate-limit-remaining".to_owned(), "0".to_owned()));
        let mut r = too_many();
        for (k, v) in &rate {
            set_header(&mut r, k, v);
        }
        return Err(r);
    }
    window.1 += 1;
    rate.push((
        "x-rate-limit-remaining".to_owned(),
        (limit - window.1).to_string(),
    ));
    if endpoint == "tweets.create" {
        let day = (now + chrono::Duration::hours(24)).timestamp().to_string();
        let posted = d.posts.iter().filter(|p| p.author_id == user).count();
        rate.push(("x-user-limit-24hour-limit".to_owned(), "17000".to_owned()));
        rate.push((
            "x-user-limit-24hour-remaining".to_owned(),
            17000usize.saturating_sub(posted + 1).to_string(),
        ));
        rate.push(("x-user-limit-24hour-reset".to_owned(), day.clone()));
        rate.push(("x-app-limit-24hour-limit".to_owned(), "10000".to_owned()));
        rate.push((
            "x-app-limit-24hour-remaining".to_owned(),
            10000usize.saturating_sub(d.posts.len() + 1).to_string(),
        ));
        rate.push(("x-app-limit-24hour-reset".to_owned(), day));
    }
    Ok((user, rate))
}

/// Runs an authorized API handler with the user id, adding the rate-limit headers.
async fn api_call<F, Fut>(
    s: &Shared,
    headers: &HeaderMap,
    endpoint: &'static str,
    scopes: &[&str],
    handler: F,
) -> Response
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Response>,
{
    api_call_reading(s, headers, endpoint, scopes, None, handler).await
}

/// [`api_call`] for a handler that reads a streamed body (an upload segment).
async fn api_call_reading<F, Fut>(
    s: &Shared,
    headers: &HeaderMap,
    endpoint: &'static str,
    scopes: &[&str],
    body: Option<&Mutex<Option<Body>>>,
    handler: F,
) -> Response
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Response>,
{
    with_faults_reading(s, endpoint, body, async {
        match authorize_call(s, headers, endpoint, scopes) {
            Err(r) => r,
            Ok((user, rate)) => {
                let mut r = handler(user).await;
                for (k, v) in &rate {
                    set_header(&mut r, k, v);
                }
                set_header(&mut r, "x-transaction-id", &random(""));
                r
            }
        }
    })
    .await
}

// ---------------------------------------------------------------- OAuth

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn pkce_s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

async fn authorize(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    with_faults(&s, "oauth2.authorize", async {
        let page = |msg: &str| {
            let mut r = Response::new(Body::from(format!("Something went wrong: {msg}")));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        };
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
        if get("response_type") != "code" {
            return page("response_type must be code");
        }
        if get("client_id") != s.settings.client_id {
            return page("unknown client_id");
        }
        let redirect = get("redirect_uri");
        if !s.settings.redirect_uris.iter().any(|r| r == redirect) {
            return page("redirect_uri does not match a registered callback URL");
        }
        let state = get("state");
        if state.is_empty() || state.len() > 500 {
            return page("state is required (at most 500 characters)");
        }
        let scopes: Vec<String> = get("scope")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if scopes.is_empty() || get("scope").contains(',') {
            return page("scope must be space-separated scopes");
        }
        if get("code_challenge_method") != "S256" {
            return page("code_challenge_method must be S256");
        }
        let challenge = get("code_challenge");
        if challenge.len() != 43 {
            return page("code_challenge must be a base64url SHA-256");
        }
        let code = random("mock-code-");
        {
            let mut d = s.data();
            let user = d.login_as.clone();
            d.codes.insert(
                code.clone(),
                CodeGrant {
                    client_id: s.settings.client_id.clone(),
                    redirect_uri: redirect.to_owned(),
                    challenge: challenge.to_owned(),
                    user,
                    scopes,
                    issued: Utc::now(),
                },
            );
        }
        let Ok(mut back) = Url::parse(redirect) else {
            return page("redirect_uri is not a URL");
        };
        back.query_pairs_mut()
            .append_pair("state", state)
            .append_pair("code", &code);
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::FOUND;
        set_header(&mut r, "location", back.as_str());
        r
    })
    .await
}

/// Checks the client's authentication at the token and revoke endpoints.
fn client_auth(
    s: &Shared,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
) -> Result<(), Response> {
    match &s.settings.client_secret {
        Some(secret) => {
            if f.contains_key("client_secret") {
                return Err(oauth_error(
                    401,
                    "unauthorized_client",
                    "Missing valid authorization header",
                ));
            }
            let basic = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .ok_or_else(|| {
                    oauth_error(
                        401,
                        "unauthorized_client",
                        "Missing valid authorization header",
                    )
                })?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            let pair = form(format!("p={decoded}").replacen(':', "&q=", 1).as_bytes());
            let id = pair.get("p").map(String::as_str).unwrap_or("");
            let given = pair.get("q").map(String::as_str).unwrap_or("");
            if id != s.settings.client_id || given != secret {
                return Err(oauth_error(
                    401,
                    "invalid_client",
                    "Client authentication failed",
                ));
            }
            Ok(())
        }
        None => {
            if f.get("client_id").map(String::as_str) != Some(s.settings.client_id.as_str()) {
                return Err(oauth_error(
                    400,
                    "invalid_request",
                    "Missing required parameter [client_id].",
                ));
            }
            Ok(())
        }
    }
}

async fn token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    with_faults(&s, "oauth2.token", async {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            return oauth_error(400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded");
        }
        let f = form(&body);
        if let Err(r) = client_auth(&s, &headers, &f) {
            return r;
        }
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
        let mut d = s.data();
        let (user, scopes) = match get("grant_type") {
            "authorization_code" => {
                let Some(grant) = d.codes.remove(get("code")) else {
                    return oauth_error(400, "invalid_request", "Value passed for the authorization code was invalid.");
                };
                if Utc::now() - grant.issued > CODE_TTL || grant.client_id != s.settings.client_id {
                    return oauth_error(400, "invalid_request", "Value passed for the authorization code was invalid.");
                }
                if grant.redirect_uri != get("redirect_uri") {
                    return oauth_error(400, "invalid_request", "Value passed for the redirect uri did not match the uri of the authorization code.");
                }
                if pkce_s256(get("code_verifier")) != grant.challenge {
                    return oauth_error(400, "invalid_request", "Value passed for the code verifier did not match the code challenge.");
                }
                (grant.user, grant.scopes)
            }
            "refresh_token" => {
                // Rotation: the refresh token works once.
                let Some(grant) = d.refresh.remove(get("refresh_token")) else {
                    return oauth_error(400, "invalid_request", "Value passed for the token was invalid.");
                };
                d.refreshes += 1;
                (grant.user, grant.scopes)
            }
            _ => return oauth_error(400, "unsupported_grant_type", "grant_type must be authorization_code or refresh_token"),
        };
        let (access, refresh) = issue(&mut d, &user, &scopes);
        let mut answer = json!({
            "token_type":"bearer",
            "expires_in":ACCESS_TTL_SECS,
            "access_token":access,
            "scope":scopes.join(" "),
        });
        if scopes.iter().any(|s| s == "offline.access") {
            answer["refresh_token"] = json!(refresh);
        } else {
            d.refresh.remove(&refresh);
        }
        ok(200, answer)
    })
    .await
}

async fn revoke(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    with_faults(&s, "oauth2.revoke", async {
        let f = form(&body);
        if let Err(r) = client_auth(&s, &headers, &f) {
            return r;
        }
        let token = f.get("token").cloned().unwrap_or_default();
        let mut d = s.data();
        // Revoking a refresh token ends the grant, access tokens included.
        if let Some(grant) = d.refresh.remove(&token) {
            let user = grant.user;
            d.access.retain(|_, a| a.user != user);
        }
        d.access.remove(&token);
        ok(200, json!({"revoked":true}))
    })
    .await
}

// ---------------------------------------------------------------- users and posts

async fn users_me(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let s2 = s.clone();
    api_call(
        &s,
        &headers,
        "users.me",
        &["tweet.read", "users.read"],
        |user| async move {
            let d = s2.data();
            let (username, name) = d.users.get(&user).cloned().unwrap_or_default();
            ok(
                200,
                json!({"data":{"id":user,"username":username,"name":name}}),
            )
        },
    )
    .await
}

/// The text X shows back: HTML entities escaped, links as t.co, a t.co link for media.
fn shown_text(p: &MockPost) -> String {
    let mut out = String::new();
    let mut last = 0;
    for r in text::extract_urls(&p.text) {
        out.push_str(&p.text[last..r.start]);
        out.push_str("https://t.co/");
        out.push_str(&p.id[p.id.len().saturating_sub(10)..]);
        last = r.end;
    }
    out.push_str(&p.text[last..]);
    let mut escaped = out
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    if !p.media_ids.is_empty() {
        if !escaped.is_empty() {
            escaped.push(' ');
        }
        escaped.push_str("https://t.co/m");
        escaped.push_str(&p.id[p.id.len().saturating_sub(9)..]);
    }
    escaped
}

fn post_json(p: &MockPost, fields: &str) -> Value {
    let mut v = json!({"id":p.id,"text":shown_text(p),"edit_history_tweet_ids":[p.id]});
    if fields.contains("created_at") {
        v["created_at"] = json!(p.created_at.to_rfc3339_opts(SecondsFormat::Millis, true));
    }
    if fields.contains("referenced_tweets") {
        let mut refs = Vec::new();
        if let Some(r) = &p.in_reply_to {
            refs.push(json!({"type":"replied_to","id":r}));
        }
        if let Some(q) = &p.quote_of {
            refs.push(json!({"type":"quoted","id":q}));
        }
        if !refs.is_empty() {
            v["referenced_tweets"] = json!(refs);
        }
    }
    v
}

async fn users_tweets(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s2 = s.clone();
    api_call(&s, &headers, "users.tweets", &["tweet.read", "users.read"], |_user| async move {
        let max: usize = match q.get("max_results").map(|m| m.parse()) {
            None => 10,
            Some(Ok(m)) if (5..=100).contains(&m) => m,
            _ => return invalid("max_results", "max_results must be between 5 and 100"),
        };
        let since = match q.get("start_time") {
            None => None,
            Some(t) => match DateTime::parse_from_rfc3339(t) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(_) => return invalid("start_time", "start_time must be an RFC 3339 time"),
            },
        };
        let fields = q.get("tweet.fields").cloned().unwrap_or_default();
        let d = s2.data();
        if !d.users.contains_key(&id) {
            return problem(
                404,
                json!({"title":"Not Found Error","type":"https://api.twitter.com/2/problems/resource-not-found","detail":format!("Could not find user with id: [{id}]."),"resource_type":"user","resource_id":id}),
            );
        }
        let mut mine: Vec<&MockPost> = d
            .posts
            .iter()
            .filter(|p| p.author_id == id && since.is_none_or(|t| p.created_at >= t))
            .collect();
        mine.reverse();
        let more = mine.len() > max;
        let page: Vec<Value> = mine.iter().take(max).map(|p| post_json(p, &fields)).collect();
        let mut meta = json!({"result_count":page.len()});
        if let (Some(first), Some(last)) = (mine.first(), mine[..max.min(mine.len())].last()) {
            meta["newest_id"] = json!(first.id);
            meta["oldest_id"] = json!(last.id);
        }
        if more {
            meta["next_token"] = json!("mock-next-page");
        }
        if page.is_empty() {
            return ok(200, json!({"meta":meta}));
        }
        ok(200, json!({"data":page,"meta":meta}))
    })
    .await
}

fn check_create(
    d: &Data,
    s: &Settings,
    user: &str,
    body: &api::CreateTweet,
) -> Result<(), Response> {
    let text = body.text.clone().unwrap_or_default();
    let media = body
        .media
        .as_ref()
        .map(|m| m.media_ids.clone())
        .unwrap_or_default();
    if text.is_empty() && media.is_empty() && body.poll.is_none() {
        return Err(invalid(
            "text",
            "Post text is required unless media is attached.",
        ));
    }
    if body.poll.is_some() && (!media.is_empty() || body.quote_tweet_id.is_some()) {
        return Err(invalid(
            "poll",
            "A poll cannot be combined with media or a quote.",
        ));
    }
    if body.quote_tweet_id.is_some() && !media.is_empty() {
        return Err(invalid(
            "quote_tweet_id",
            "A quote cannot be combined with media.",
        ));
    }
    if let Some(poll) = &body.poll {
        if !(2..=4).contains(&poll.options.len())
            || poll
                .options
                .iter()
                .any(|o| o.is_empty() || o.chars().count() > 25)
        {
            return Err(invalid(
                "poll.options",
                "A poll has 2 to 4 options of 1 to 25 characters.",
            ));
        }
        if !(5..=10_080).contains(&poll.duration_minutes) {
            return Err(invalid(
                "poll.duration_minutes",
                "duration_minutes must be between 5 and 10080.",
            ));
        }
    }
    if !media.is_empty() {
        if media.len() > 4 {
            return Err(invalid(
                "media.media_ids",
                "At most 4 media ids may be attached.",
            ));
        }
        let mut kinds = Vec::new();
        for id in &media {
            let ok = d
                .uploads
                .get(id)
                .is_some_and(|u| u.info.owner == user && u.info.state == "succeeded");
            if !ok {
                return Err(invalid("media.media_ids", "Your media IDs are invalid."));
            }
            if let Some(u) = d.uploads.get(id) {
                kinds.push(u.info.category.clone());
            }
        }
        let alone = kinds.iter().any(|k| k != "tweet_image");
        if alone && kinds.len() > 1 {
            return Err(invalid(
                "media.media_ids",
                "A GIF or video must be the only media attached.",
            ));
        }
    }
    if let Some(r) = &body.reply
        && !d.posts.iter().any(|p| p.id == r.in_reply_to_tweet_id)
    {
        return Err(invalid(
            "reply.in_reply_to_tweet_id",
            "The post you are replying to does not exist or is not visible to you.",
        ));
    }
    if let Some(q) = &body.quote_tweet_id
        && !d.posts.iter().any(|p| &p.id == q)
    {
        return Err(invalid(
            "quote_tweet_id",
            "The quoted post does not exist or is not visible to you.",
        ));
    }
    let max = d.max_text.get(user).copied().unwrap_or(s.max_text);
    let info = text::parse(&text, max);
    if info.weighted_length > max || info.has_invalid_characters {
        return Err(forbidden(
            "Your Tweet text is too long. For more information on how Twitter determines text length see https://github.com/twitter/twitter-text.",
        ));
    }
    if !text.is_empty()
        && d.posts
            .iter()
            .any(|p| p.author_id == user && p.text == text)
    {
        return Err(forbidden(
            "You are not allowed to create a Tweet with duplicate content.",
        ));
    }
    Ok(())
}

async fn create_tweet(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let s2 = s.clone();
    api_call(
        &s,
        &headers,
        "tweets.create",
        &["tweet.read", "tweet.write", "users.read"],
        |user| async move {
            let Ok(body) = serde_json::from_slice::<api::CreateTweet>(&body) else {
                return invalid(
                    "body",
                    "The request body is not valid JSON for this endpoint.",
                );
            };
            let mut d = s2.data();
            if let Err(r) = check_create(&d, &s2.settings, &user, &body) {
                return r;
            }
            let id = next_id(&mut d);
            let post = MockPost {
                id: id.clone(),
                author_id: user,
                text: body.text.clone().unwrap_or_default(),
                in_reply_to: body.reply.as_ref().map(|r| r.in_reply_to_tweet_id.clone()),
                quote_of: body.quote_tweet_id.clone(),
                media_ids: body
                    .media
                    .as_ref()
                    .map(|m| m.media_ids.clone())
                    .unwrap_or_default(),
                poll_options: body
                    .poll
                    .as_ref()
                    .map(|p| p.options.clone())
                    .unwrap_or_default(),
                poll_minutes: body.poll.as_ref().map(|p| p.duration_minutes),
                reply_settings: body.reply_settings.clone(),
                created_at: Utc::now(),
            };
            let answer =
                json!({"data":{"id":id,"text":shown_text(&post),"edit_history_tweet_ids":[id]}});
            d.posts.push(post);
            ok(201, answer)
        },
    )
    .await
}

async fn get_tweet(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s2 = s.clone();
    api_call(
        &s,
        &headers,
        "tweets.get",
        &["tweet.read", "users.read"],
        |_user| async move {
            let d = s2.data();
            match d.posts.iter().find(|p| p.id == id) {
                Some(p) => ok(200, json!({"data":post_json(p, "")})),
                None => not_found_post(&id),
            }
        },
    )
    .await
}

async fn delete_tweet(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s2 = s.clone();
    api_call(
        &s,
        &headers,
        "tweets.delete",
        &["tweet.read", "tweet.write", "users.read"],
        |user| async move {
            let mut d = s2.data();
            match d.posts.iter().position(|p| p.id == id) {
                None => not_found_post(&id),
                Some(i) if d.posts[i].author_id != user => {
                    forbidden("You are not authorized to delete this Tweet.")
                }
                Some(i) => {
                    d.posts.remove(i);
                    ok(200, json!({"data":{"deleted":true}}))
                }
            }
        },
    )
    .await
}

// ---------------------------------------------------------------- media

const MEDIA_TYPES: [&str; 13] = [
    "video/mp4",
    "video/webm",
    "video/mp2t",
    "video/quicktime",
    "text/srt",
    "text/vtt",
    "image/jpeg",
    "image/gif",
    "image/bmp",
    "image/png",
    "image/webp",
    "image/pjpeg",
    "image/tiff",
];

fn category_cap(category: &str) -> Option<u64> {
    match category {
        "tweet_image" | "dm_image" => Some(5 * 1024 * 1024),
        "tweet_gif" | "dm_gif" => Some(15 * 1024 * 1024),
        "tweet_video" | "dm_video" | "amplify_video" => Some(512 * 1024 * 1024),
        "subtitles" => Some(1024 * 1024),
        _ => None,
    }
}

fn media_json(u: &Upload, s: &Settings) -> Value {
    let mut v = json!({
        "id":u.info.id,
        "media_key":media_key(&u.info),
        "size":u.info.total_bytes,
        "expires_after_secs":86_400,
    });
    match u.info.state.as_str() {
        "pending" | "in_progress" => {
            let mut p = json!({"state":u.info.state,"check_after_secs":s.check_after_secs});
            if u.info.state == "in_progress" {
                p["progress_percent"] = json!(50);
            }
            v["processing_info"] = p;
        }
        "succeeded" if u.info.category != "tweet_image" => {
            v["processing_info"] = json!({"state":"succeeded","progress_percent":100});
        }
        "failed" => {
            v["processing_info"] = json!({"state":"failed","progress_percent":100,
                "error":{"code":1,"name":"InvalidMedia","message":"Unsupported video format"}});
        }
        _ => {}
    }
    v
}

fn media_key(u: &MockUpload) -> String {
    let prefix = match u.category.as_str() {
        "tweet_video" | "amplify_video" | "dm_video" => "7",
        "tweet_gif" | "dm_gif" => "16",
        _ => "3",
    };
    format!("{prefix}_{}", u.id)
}

async fn media_initialize(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s2 = s.clone();
    api_call(&s, &headers, "media.initialize", &["media.write"], |user| async move {
        let Ok(init) = serde_json::from_slice::<api::MediaInit>(&body) else {
            return invalid("body", "media_type and total_bytes are required.");
        };
        if !MEDIA_TYPES.contains(&init.media_type.as_str()) {
            return invalid("media_type", "media_type is not supported.");
        }
        let inferred = if init.media_type.starts_with("video/") {
            "tweet_video"
        } else if init.media_type == "image/gif" {
            "tweet_gif"
        } else if init.media_type.starts_with("text/") {
            "subtitles"
        } else {
            "tweet_image"
        };
        let category = init.media_category.clone().unwrap_or_else(|| inferred.to_owned());
        let Some(cap) = category_cap(&category) else {
            return invalid("media_category", "media_category is not supported.");
        };
        let fits = match category.as_str() {
            "tweet_video" | "amplify_video" | "dm_video" => init.media_type.starts_with("video/"),
            "tweet_gif" | "dm_gif" => init.media_type == "image/gif",
            "tweet_image" | "dm_image" => init.media_type.starts_with("image/"),
            _ => init.media_type.starts_with("text/"),
        };
        if !fits {
            return invalid("media_category", "media_category does not match media_type.");
        }
        if init.total_bytes == 0 || init.total_bytes > cap {
            return invalid("total_bytes", &format!("total_bytes must be 1 to {cap} for {category}."));
        }
        let mut d = s2.data();
        let id = next_id(&mut d);
        let upload = Upload {
            info: MockUpload {
                id: id.clone(),
                owner: user,
                media_type: init.media_type,
                category,
                total_bytes: init.total_bytes,
                received_bytes: 0,
                append_calls: Vec::new(),
                state: "uploading".to_owned(),
                sha256: None,
                alt_text: None,
            },
            hasher: Sha256::new(),
            hasher_before_last: Sha256::new(),
            last_len: 0,
            polls: 0,
            will_fail: false,
        };
        let answer = json!({"data":{"id":id,"media_key":media_key(&upload.info),"expires_after_secs":86_400}});
        d.uploads.insert(id, upload);
        ok(200, answer)
    })
    .await
}

/// The fields of a `multipart/form-data` body: name → (byte range of the content).
fn multipart_fields(
    content_type: &str,
    body: &[u8],
) -> Option<HashMap<String, std::ops::Range<usize>>> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    // A literal search through the regex crate uses its fast substring search.
    let finder = regex::bytes::Regex::new(&regex::escape(&delimiter)).ok()?;
    let mut fields = HashMap::new();
    let mut at = finder.find(body)?.end();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Some(fields); // the closing delimiter
        }
        let headers_start = at + 2; // CRLF after the delimiter
        let headers_end = headers_start
            + body
                .get(headers_start..)?
                .windows(4)
                .take(8192)
                .position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(body.get(headers_start..headers_end)?).ok()?;
        let name = head
            .split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?
            .split(';')
            .map(str::trim)
            .find_map(|p| p.strip_prefix("name="))?
            .trim_matches('"')
            .to_owned();
        let content_start = headers_end + 4;
        let next = finder.find_at(body, content_start)?;
        // The content ends at the CRLF before the next delimiter.
        let content_end = next.start().checked_sub(2)?;
        fields.insert(name, content_start..content_end.max(content_start));
        at = next.end();
    }
}

async fn media_append(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let s2 = s.clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = Mutex::new(Some(body));
    let body_ref = &body;
    api_call_reading(
        &s,
        &headers,
        "media.append",
        &["media.write"],
        Some(body_ref),
        |user| async move {
            let Some(body) = body_ref.lock().ok().and_then(|mut b| b.take()) else {
                return invalid("media", "The request body was already read.");
            };
            if !content_type.starts_with("multipart/form-data") {
                return invalid(
                    "media",
                    "APPEND takes multipart/form-data with segment_index and media.",
                );
            }
            // One segment at most (plus the form's own bytes); nothing else is ever buffered.
            let Ok(body) = axum::body::to_bytes(body, MAX_SEGMENT_BYTES + 16 * 1024).await else {
                return invalid(
                    "media",
                    &format!("A segment may hold at most {MAX_SEGMENT_BYTES} bytes."),
                );
            };
            let Some(fields) = multipart_fields(&content_type, &body) else {
                return invalid("media", "The multipart body could not be read.");
            };
            let (Some(index_range), Some(media_range)) =
                (fields.get("segment_index"), fields.get("media"))
            else {
                return invalid("segment_index", "segment_index and media are required.");
            };
            let Some(index) = std::str::from_utf8(&body[index_range.clone()])
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
            else {
                return invalid("segment_index", "segment_index must be an integer.");
            };
            let segment = &body[media_range.clone()];
            if index > 999 {
                return invalid("segment_index", "segment_index must be between 0 and 999.");
            }
            if segment.is_empty() || segment.len() > MAX_SEGMENT_BYTES {
                return invalid(
                    "media",
                    &format!("A segment holds 1 to {MAX_SEGMENT_BYTES} bytes."),
                );
            }
            let mut d = s2.data();
            let Some(u) = d.uploads.get_mut(&id) else {
                return invalid("id", "The media id is not a pending upload.");
            };
            if u.info.owner != user {
                return forbidden("The media id belongs to another account.");
            }
            if u.info.state != "uploading" {
                return invalid("id", "The upload was already finalized.");
            }
            let next = u.info.append_calls.len();
            let len = segment.len() as u64;
            if index + 1 == next {
                // The last segment again (a retry): it replaces the one received.
                if u.info.received_bytes - u.last_len + len > u.info.total_bytes {
                    return invalid("media", "The segments hold more bytes than total_bytes.");
                }
                u.info.received_bytes = u.info.received_bytes - u.last_len + len;
                u.hasher = u.hasher_before_last.clone();
            } else if index == next {
                if u.info.received_bytes + len > u.info.total_bytes {
                    return invalid("media", "The segments hold more bytes than total_bytes.");
                }
                u.info.received_bytes += len;
                u.info.append_calls.push(0);
                u.hasher_before_last = u.hasher.clone();
            } else {
                return invalid(
                    "segment_index",
                    &format!("Segments must be sent in order: expected segment_index {next}."),
                );
            }
            u.hasher.update(segment);
            u.last_len = len;
            if let Some(c) = u.info.append_calls.get_mut(index) {
                *c += 1;
            }
            let expires = (Utc::now() + chrono::Duration::days(1)).timestamp();
            ok(200, json!({"data":{"expires_at":expires}}))
        },
    )
    .await
}

async fn media_finalize(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s2 = s.clone();
    api_call(
        &s,
        &headers,
        "media.finalize",
        &["media.write"],
        |user| async move {
            let mut d = s2.data();
            let fail = d.fail_next_processing;
            let Some(u) = d.uploads.get_mut(&id) else {
                return invalid("id", "The media id is not an upload.");
            };
            if u.info.owner != user {
                return forbidden("The media id belongs to another account.");
            }
            if u.info.state == "uploading" {
                if u.info.received_bytes != u.info.total_bytes {
                    return invalid(
                        "id",
                        &format!(
                            "FINALIZE before all bytes arrived: {} of {} received.",
                            u.info.received_bytes, u.info.total_bytes
                        ),
                    );
                }
                u.info.sha256 = Some(
                    u.hasher
                        .clone()
                        .finalize()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                );
                if u.info.category == "tweet_image" {
                    u.info.state = "succeeded".to_owned();
                } else {
                    u.info.state = "pending".to_owned();
                    u.will_fail = fail;
                }
            }
            let answer = json!({"data":media_json(u, &s2.settings)});
            if fail && u.will_fail {
                d.fail_next_processing = false;
            }
            ok(200, answer)
        },
    )
    .await
}

async fn media_status(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s2 = s.clone();
    api_call(
        &s,
        &headers,
        "media.status",
        &["media.write"],
        |user| async move {
            if q.get("command").map(String::as_str) != Some("STATUS") {
                return invalid("command", "command must be STATUS.");
            }
            let id = q.get("media_id").cloned().unwrap_or_default();
            let mut d = s2.data();
            let Some(u) = d.uploads.get_mut(&id) else {
                return invalid("media_id", "The media id is not an upload.");
            };
            if u.info.owner != user {
                return forbidden("The media id belongs to another account.");
            }
            match u.info.state.as_str() {
                "uploading" => return invalid("media_id", "The upload was not finalized."),
                "pending" | "in_progress" => {
                    u.polls += 1;
                    u.info.state = if u.polls >= s2.settings.processing_polls {
                        if u.will_fail { "failed" } else { "succeeded" }
                    } else {
                        "in_progress"
                    }
                    .to_owned();
                }
                _ => {}
            }
            ok(200, json!({"data":media_json(u, &s2.settings)}))
        },
    )
    .await
}

async fn media_metadata(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let s2 = s.clone();
    api_call(
        &s,
        &headers,
        "media.metadata",
        &["media.write"],
        |user| async move {
            let Ok(meta) = serde_json::from_slice::<api::MediaMetadata>(&body) else {
                return invalid("metadata", "id and metadata.alt_text.text are required.");
            };
            let mut d = s2.data();
            let Some(u) = d.uploads.get_mut(&meta.id) else {
                return invalid("id", "The media id is not an upload.");
            };
            if u.info.owner != user {
                return forbidden("The media id belongs to another account.");
            }
            if !matches!(u.info.category.as_str(), "tweet_image" | "tweet_gif") {
                return invalid("id", "Alt text is supported on images and GIFs.");
            }
            if meta.metadata.alt_text.text.chars().count() > 1000 {
                return invalid(
                    "metadata.alt_text.text",
                    "Alt text holds at most 1000 characters.",
                );
            }
            u.info.alt_text = Some(meta.metadata.alt_text.text);
            ok(
                200,
                json!({"data":{"id":meta.id,"associated_metadata":true}}),
            )
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multipart() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"segment_index\"\r\n\r\n3\r\n--XyZ\r\nContent-Disposition: form-data; name=\"media\"; filename=\"blob\"\r\nContent-Type: application/octet-stream\r\n\r\nab\r\n--cd\r\n--XyZ--\r\n";
        let f = multipart_fields("multipart/form-data; boundary=XyZ", body).expect("fields");
        assert_eq!(&body[f["segment_index"].clone()], b"3");
        assert_eq!(&body[f["media"].clone()], b"ab\r\n--cd");
        assert!(multipart_fields("multipart/form-data", body).is_none());
    }

    #[test]
    fn every_endpoint_has_a_limit() {
        for e in ENDPOINTS {
            assert!(window_limit(e) > 0);
        }
    }
}
