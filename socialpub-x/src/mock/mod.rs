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
//! - **OAuth** (core's mock kit, set up as X's server): `GET /i/oauth2/authorize` checks the
//!   client, the registered redirect URI, the space-separated scopes, the state and an S256 PKCE
//!   challenge, then redirects back with a code (as if the user approved) that lives 30 seconds
//!   and works once. `POST /2/oauth2/token` requires HTTP Basic from a confidential client (and
//!   refuses a secret in the form) or `client_id` from a public one, checks the verifier, and
//!   rotates refresh tokens: a used refresh token stops working. `POST /2/oauth2/revoke` ends
//!   the grant.
//! - **Tokens and scopes** on every API call, with X's `401` problem and `403` for a missing
//!   scope.
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
//! Faults come from core's [`FaultPlan`] ([`XMock::faults`]) by endpoint name ([`ENDPOINTS`]):
//! `oauth.authorize`, `oauth.token`, `oauth.revoke`, `users.me`, `users.tweets`,
//! `tweets.create`, `tweets.get`, `tweets.delete`, `media.initialize`, `media.append`,
//! `media.finalize`, `media.status`, `media.metadata`. Each fault means what core's
//! [`socialpub_core::testkit::mock`] kit says, on every platform: [`Fault::Drop`](socialpub_core::testkit::Fault::Drop) breaks the
//! connection mid-request (a segment cut in half is not appended), [`Fault::DelayAfter`](socialpub_core::testkit::Fault::DelayAfter)
//! handles the call (the post is created) and then holds the answer back,
//! [`Fault::RateLimit`](socialpub_core::testkit::Fault::RateLimit) answers X's 429 with `x-rate-limit-*` headers.

mod handlers;
mod state;
mod uploads;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use socialpub_core::Token;
use socialpub_core::testkit::FaultPlan;
use socialpub_core::testkit::mock::{
    ClientAuthRule, Counter, MockKit, MockOAuth, MockServer, OAuthPaths, OAuthServerConfig,
    OfflineRule, PkceRule, RefreshRule, Routes,
};
use url::Url;

pub use handlers::XMockDialect;
pub use state::{MockPost, MockUpload};

use crate::config::{DEFAULT_SCOPES, XConfig, XConfigBuilder};
use crate::text;
use state::{Data, Settings};

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
const CODE_TTL: Duration = Duration::from_secs(30);
/// Access tokens last 2 hours, as X's do.
const ACCESS_TTL: Duration = Duration::from_secs(7200);
/// The rate-limit window.
const WINDOW_SECS: i64 = 15 * 60;

/// The endpoint names faults are queued under.
pub const ENDPOINTS: [&str; 13] = [
    "oauth.authorize",
    "oauth.token",
    "oauth.revoke",
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

pub(crate) fn random_id() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

pub(crate) struct Shared {
    kit: MockKit,
    settings: Settings,
    data: Mutex<Data>,
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
        let mut server = OAuthServerConfig::new(
            self.client_id.clone(),
            self.client_secret.clone(),
            REDIRECT_URI,
        );
        server.redirect_uris = self.redirect_uris.clone();
        server.client_auth = ClientAuthRule::Basic;
        server.pkce = PkceRule::Required;
        server.offline = OfflineRule::Scope("offline.access".to_owned());
        server.refresh = RefreshRule::Rotating;
        server.access_ttl = ACCESS_TTL;
        server.code_ttl = CODE_TTL;
        // X answers a bad code or a spent refresh token with `invalid_request`.
        server.bad_grant_error = "invalid_request".to_owned();
        let kit = MockKit::new(
            XMockDialect,
            MockOAuth::new(server, USER_ID),
            self.faults.clone(),
        );
        let mut data = Data {
            next_id: 1_860_000_000_000_000_000,
            ..Data::default()
        };
        data.users.insert(
            USER_ID.to_owned(),
            ("socialpub_test".to_owned(), "socialpub test".to_owned()),
        );
        let shared = Arc::new(Shared {
            kit: kit.clone(),
            settings: Settings {
                check_after_secs: self.check_after_secs,
                processing_polls: self.processing_polls,
                max_text: self.max_text,
            },
            data: Mutex::new(data),
        });
        let routes = handlers::routes(Routes::new().oauth(
            &kit,
            OAuthPaths::new(
                "/i/oauth2/authorize",
                "/2/oauth2/token",
                Some("/2/oauth2/revoke"),
            ),
        ));
        let server = kit.serve(routes, shared.clone()).await?;
        Ok(XMock {
            server,
            shared,
            client_id: self.client_id,
            client_secret: self.client_secret,
            redirect_uri: self.redirect_uris.first().cloned().unwrap_or_default(),
        })
    }
}

/// A running X mock. Stops when dropped.
pub struct XMock {
    server: MockServer,
    shared: Arc<Shared>,
    client_id: String,
    client_secret: Option<String>,
    redirect_uri: String,
}

impl fmt::Debug for XMock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XMock")
            .field("base", &self.server.base())
            .finish_non_exhaustive()
    }
}

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
        self.server.base_url().clone()
    }

    /// An [`XConfig`] builder pointed at the mock, with its client and redirect URI.
    pub fn config_builder(&self) -> XConfigBuilder {
        let base = self.server.base();
        let mut b = XConfig::builder()
            .client_id(self.client_id.clone())
            .api_base(base)
            .authorize_url(format!("{base}/i/oauth2/authorize"))
            .web_base(base)
            .redirect_uri(self.redirect_uri.clone());
        if let Some(secret) = &self.client_secret {
            b = b.client_secret(secret.clone());
        }
        b
    }

    /// The kit the mock runs on: faults, the request log, the OAuth server.
    pub fn kit(&self) -> &MockKit {
        &self.shared.kit
    }

    /// Faults to inject, by endpoint name (see the module docs).
    pub fn faults(&self) -> &FaultPlan {
        self.shared.kit.faults()
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
        self.shared.kit.oauth().login_as(user);
    }

    /// Gives `user` a longer (or shorter) text limit, as X Premium does.
    pub fn set_max_text(&self, user: &str, max: usize) {
        self.shared.data().max_text.insert(user.to_owned(), max);
    }

    /// Issues a token for `user` with the default scopes, as if it had connected.
    pub fn issue_token(&self, user: &str) -> Token {
        self.shared.kit.oauth().issue_token(user, &DEFAULT_SCOPES)
    }

    /// Makes `access_token` expired: X answers 401 to it from now on.
    pub fn expire_access_token(&self, access_token: &str) {
        self.shared.kit.oauth().expire_access_token(access_token);
    }

    /// Makes every access token issued so far expired.
    pub fn expire_all_access_tokens(&self) {
        self.shared.kit.oauth().expire_access_tokens();
    }

    /// The next video or GIF to finish processing fails (`failed`, "InvalidMedia").
    pub fn fail_next_processing(&self) {
        self.shared.data().fail_next_processing = true;
    }

    /// Adds a post by `user` with `text`, as if posted elsewhere (another app, the website);
    /// returns its id.
    pub fn add_post(&self, user: &str, text: &str) -> String {
        let mut d = self.shared.data();
        let id = state::next_id(&mut d);
        d.posts.push(MockPost {
            id: id.clone(),
            author_id: user.to_owned(),
            text: text.to_owned(),
            in_reply_to: None,
            quote_of: None,
            media_ids: Vec::new(),
            poll_options: Vec::new(),
            poll_minutes: None,
            reply_settings: None,
            created_at: chrono::Utc::now(),
        });
        id
    }

    /// The next `reads` list reads (`GET /2/users/{id}/tweets`) leave out the newest post, as
    /// X's timelines do for a moment after a post is created.
    pub fn lag_lists(&self, reads: u32) {
        self.shared.data().lagging_lists = reads;
    }

    /// Requests received so far, all endpoints.
    pub fn requests(&self) -> usize {
        self.shared.kit.log().requests()
    }

    /// Calls of one endpoint so far.
    pub fn calls(&self, endpoint: &str) -> usize {
        self.shared.kit.log().calls(endpoint)
    }

    /// Successful refresh-token grants so far.
    pub fn refreshes(&self) -> usize {
        self.shared.kit.oauth().refreshes()
    }

    /// A counter of all requests, for core's conformance suite.
    pub fn request_counter(&self) -> Counter {
        self.shared.kit.log().request_counter()
    }

    /// A counter of the posts that exist, for core's conformance suite.
    pub fn post_counter(&self) -> Counter {
        let s = self.shared.clone();
        Arc::new(move || s.data().posts.len())
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
