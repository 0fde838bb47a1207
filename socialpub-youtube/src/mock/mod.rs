//! A stateful mock of the YouTube Data API v3 and Google's OAuth endpoints (feature `mock`),
//! for your own integration tests and demos: no account, no network.
//!
//! ```no_run
//! # async fn f() -> socialpub_core::Result<()> {
//! use socialpub_youtube::mock::YouTubeMock;
//! use socialpub_youtube::YouTubePublisher;
//!
//! let mock = YouTubeMock::start().await?;
//! let publisher = YouTubePublisher::new(mock.config_builder().build()?);
//! let (access, _refresh) = mock.issue_token(YouTubeMock::DEFAULT_USER);
//! // … publish with a StaticToken(access) or a TokenManager, then inspect:
//! println!("{} videos", mock.videos().len());
//! # Ok(()) }
//! ```
//!
//! It keeps state and enforces the protocol the way Google does:
//!
//! - **OAuth** (core's mock kit, set up as Google's server): `GET /o/oauth2/v2/auth` consents
//!   as the current user and redirects with a code; `POST /token` checks the client, the
//!   redirect URI and the PKCE verifier, issues access tokens (one hour) and, with
//!   `access_type=offline`, a refresh token (again on every `prompt=consent`); refreshing never
//!   rotates the refresh token; a revoked or expired refresh token is `invalid_grant`;
//!   `POST /revoke` takes the token alone and ends the whole grant.
//! - **Scopes**: uploads and thumbnails need `youtube.upload` (or `youtube`); `channels.list`,
//!   `videos.list` and `playlistItems.list` need `youtube.readonly` (or `youtube`); deleting
//!   needs `youtube`.
//! - **Resumable uploads**: sessions need `X-Upload-Content-Length` and a video
//!   `X-Upload-Content-Type`; every chunk needs an exact `Content-Range` starting where the
//!   session stands, a length equal to `Content-Length`, and a multiple of 256 KiB unless it is
//!   the last; `bytes */TOTAL` queries answer `308` (with `Range` when bytes are held) or the
//!   video; expired sessions answer `404` (or `410`). Uploads are never buffered: the mock
//!   counts bytes and keeps a running SHA-256 of what it kept ([`MockVideo::sha256`]).
//! - **Metadata** is checked like the API does (`invalidTitle`, `invalidDescription`,
//!   `invalidTags`, `invalidCategoryId`, `invalidPublishAt`), and videos go through processing
//!   states as they are polled ([`ProcessingScript`]).
//! - **Quota**: a daily unit pool and a separate `videos.insert` bucket, both answering
//!   `403 quotaExceeded` when spent; an optional per-channel upload limit answers
//!   `400 uploadLimitExceeded`.
//!
//! # Fault injection
//!
//! [`YouTubeMock::faults`] is core's [`FaultPlan`]; faults are queued per endpoint name, and
//! each means what core's [`socialpub_core::testkit::mock`] kit says, on every platform:
//!
//! | endpoint | request |
//! | --- | --- |
//! | `oauth.authorize` | `GET /o/oauth2/v2/auth` |
//! | `oauth.token` | `POST /token` |
//! | `oauth.revoke` | `POST /revoke` |
//! | `channels.list` | `GET /youtube/v3/channels` |
//! | `videos.list` | `GET /youtube/v3/videos` |
//! | `videos.delete` | `DELETE /youtube/v3/videos` |
//! | `playlistItems.list` | `GET /youtube/v3/playlistItems` |
//! | `videos.insert` | `POST /upload/youtube/v3/videos` (starting a session) |
//! | `upload.chunk` | `PUT` of a chunk to a session |
//! | `upload.status` | `PUT` of a `bytes */TOTAL` status query |
//! | `thumbnails.set` | `POST /upload/youtube/v3/thumbnails/set` |
//!
//! [`Fault::Drop`](socialpub_core::testkit::Fault::Drop) on `upload.chunk` breaks the
//! connection halfway through the chunk: the mock keeps the whole 256 KiB blocks of what
//! arrived, as Google does; [`Fault::DelayAfter`](socialpub_core::testkit::Fault::DelayAfter)
//! handles the call (a final chunk creates the video) and then holds the answer back, so the
//! client times out. Further knobs:
//! [`YouTubeMock::keep_short`] (a short `308`), [`YouTubeMock::expire_sessions`],
//! [`YouTubeMock::expire_access_tokens_after_chunks`] (a token expiring mid-upload),
//! [`YouTubeMock::set_quota`], [`YouTubeMock::set_processing`].

mod handlers;
mod state;
mod uploads;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::Value;
use socialpub_core::Result;
use socialpub_core::testkit::FaultPlan;
use socialpub_core::testkit::mock::{
    ClientAuthRule, Counter, MockKit, MockOAuth, MockServer, OAuthPaths, OAuthServerConfig,
    OfflineRule, PkceRule, RefreshRule, Routes, Scopes,
};
use url::Url;

pub use handlers::YouTubeMockDialect;

use crate::config::{SCOPE_READONLY, SCOPE_UPLOAD, YouTubeConfigBuilder};
use state::base64_like::id;
use state::{ChannelRec, Counters, MockState, User};

/// The endpoint names faults are queued under (see the module docs).
pub const ENDPOINTS: [&str; 11] = [
    "oauth.authorize",
    "oauth.token",
    "oauth.revoke",
    "channels.list",
    "videos.list",
    "videos.delete",
    "playlistItems.list",
    "videos.insert",
    "upload.chunk",
    "upload.status",
    "thumbnails.set",
];

/// What processing does to the next videos: they stay `processing` for some reads (or some
/// time), then end as [`ProcessingOutcome`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessingScript {
    /// `videos.list` reads that still show `processing`.
    pub reads_while_processing: u32,
    /// Or: time after the upload during which the video is `processing` (whichever ends
    /// first, when set).
    pub processing_time: Option<Duration>,
    /// How processing ends.
    pub outcome: ProcessingOutcome,
}

impl Default for ProcessingScript {
    fn default() -> Self {
        ProcessingScript {
            reads_while_processing: 1,
            processing_time: None,
            outcome: ProcessingOutcome::Succeeded,
        }
    }
}

impl ProcessingScript {
    /// Processing for `reads` reads, then `outcome`.
    pub fn after_reads(reads: u32, outcome: ProcessingOutcome) -> Self {
        ProcessingScript {
            reads_while_processing: reads,
            processing_time: None,
            outcome,
        }
    }

    /// Processing for `time` after the upload, then `outcome`.
    pub fn after_time(time: Duration, outcome: ProcessingOutcome) -> Self {
        ProcessingScript {
            reads_while_processing: u32::MAX,
            processing_time: Some(time),
            outcome,
        }
    }
}

/// How a video's processing ends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessingOutcome {
    /// `processingStatus: succeeded`, `uploadStatus: processed`.
    Succeeded,
    /// `processingStatus: failed` with this `processingFailureReason` (e.g. `transcodeFailed`),
    /// `uploadStatus: failed` with `failureReason: conversion`.
    Failed(String),
    /// `uploadStatus: rejected` with this `rejectionReason` (e.g. `duplicate`, `copyright`).
    Rejected(String),
    /// `processingStatus: terminated`.
    Terminated,
}

/// A video the mock holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MockVideo {
    /// The video id.
    pub id: String,
    /// The owning channel.
    pub channel_id: String,
    /// `snippet.title`.
    pub title: String,
    /// `status.privacyStatus` as stored.
    pub privacy_status: String,
    /// `status.publishAt`, if scheduled.
    pub publish_at: Option<String>,
    /// Bytes uploaded.
    pub size: u64,
    /// SHA-256 (hex) of the bytes uploaded.
    pub sha256: String,
    /// The `snippet` and `status` sent when the session started.
    pub metadata: Value,
    /// Whether `notifySubscribers` was `true` (the default).
    pub notify_subscribers: bool,
    /// The MIME type and size of the custom thumbnail, once set.
    pub thumbnail: Option<(String, u64)>,
    /// Whether it was deleted.
    pub deleted: bool,
}

/// Counters of what the mock received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MockStats {
    /// Every request.
    pub requests: u64,
    /// Upload sessions started.
    pub sessions_started: u64,
    /// Chunk `PUT`s (status queries excluded).
    pub chunk_requests: u64,
    /// `bytes */TOTAL` status queries.
    pub status_queries: u64,
    /// Body bytes received on chunk `PUT`s, including bytes later discarded.
    pub upload_bytes_received: u64,
    /// Videos created (final chunks accepted).
    pub videos_created: u64,
    /// Authorization codes exchanged.
    pub code_exchanges: u64,
    /// Refresh-token grants answered with a new access token.
    pub refreshes: u64,
    /// Grants revoked.
    pub revocations: u64,
    /// Thumbnails set.
    pub thumbnails_set: u64,
}

pub(crate) struct Shared {
    pub(crate) kit: MockKit,
    pub(crate) state: Mutex<MockState>,
    pub(crate) counters: Counters,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, MockState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user of a valid access token holding one of `scopes`, or Google's 401 or 403.
    #[allow(clippy::result_large_err)]
    pub(crate) fn user(
        &self,
        headers: &axum::http::HeaderMap,
        scopes: &[&str],
    ) -> std::result::Result<String, axum::response::Response> {
        self.kit
            .bearer(headers, Scopes::Any(scopes))
            .map(|g| g.user)
    }
}

/// Builds a [`YouTubeMock`]: [`YouTubeMock::builder`].
#[derive(Debug)]
pub struct YouTubeMockBuilder {
    faults: FaultPlan,
    redirect_uris: Vec<String>,
}

impl YouTubeMockBuilder {
    /// Takes faults from `faults` (share one plan between the mocks of several platforms).
    pub fn faults(mut self, faults: FaultPlan) -> Self {
        self.faults = faults;
        self
    }

    /// Registers another redirect URI with the mock's OAuth client, so an app's own
    /// callback completes the authorization flow against the mock.
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uris.push(uri.into());
        self
    }

    /// Starts the mock on a free local port.
    pub async fn start(self) -> Result<YouTubeMock> {
        YouTubeMock::start_from(self).await
    }
}

/// The running mock server. Dropping it stops the server.
pub struct YouTubeMock {
    shared: Arc<Shared>,
    server: MockServer,
}

impl fmt::Debug for YouTubeMock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YouTubeMock")
            .field("base_url", &self.server.base())
            .finish_non_exhaustive()
    }
}

impl YouTubeMock {
    /// The user that exists from the start, with a channel, and consents to authorizations.
    pub const DEFAULT_USER: &'static str = "user-1";
    /// The channel id of [`YouTubeMock::DEFAULT_USER`].
    pub const DEFAULT_CHANNEL: &'static str = "UCmockchannel000000000001";
    /// The OAuth client id the mock accepts.
    pub const CLIENT_ID: &'static str = "mock-client-id.apps.googleusercontent.com";
    /// The OAuth client secret the mock accepts.
    pub const CLIENT_SECRET: &'static str = "mock-client-secret";
    /// The redirect URI the mock's OAuth client is registered with.
    pub const REDIRECT_URI: &'static str = "http://127.0.0.1:1/oauth/callback";

    /// Starts the mock on a free local port.
    pub async fn start() -> Result<YouTubeMock> {
        Self::builder().start().await
    }

    /// Starts the mock taking faults from `faults` (share one plan between the mocks of
    /// several platforms).
    pub async fn start_with_faults(faults: FaultPlan) -> Result<YouTubeMock> {
        Self::builder().faults(faults).start().await
    }

    /// A builder, for a mock whose OAuth client accepts more redirect URIs than
    /// [`YouTubeMock::REDIRECT_URI`] (an app's own callback) or that shares a fault plan.
    pub fn builder() -> YouTubeMockBuilder {
        YouTubeMockBuilder {
            faults: FaultPlan::new(),
            redirect_uris: vec![Self::REDIRECT_URI.to_owned()],
        }
    }

    async fn start_from(b: YouTubeMockBuilder) -> Result<YouTubeMock> {
        let YouTubeMockBuilder {
            faults,
            redirect_uris,
        } = b;
        let mut server = OAuthServerConfig::new(
            Self::CLIENT_ID,
            Some(Self::CLIENT_SECRET.to_owned()),
            Self::REDIRECT_URI,
        );
        server.redirect_uris = redirect_uris;
        server.client_auth = ClientAuthRule::Body;
        server.pkce = PkceRule::Optional;
        server.offline = OfflineRule::AccessTypeOffline;
        server.refresh = RefreshRule::Fixed;
        server.access_ttl = Duration::from_secs(3599);
        // Google's revocation takes the token alone, and refuses one it does not know.
        server.revoke_needs_client = false;
        server.revoke_unknown_is_error = true;
        let kit = MockKit::new(
            YouTubeMockDialect,
            MockOAuth::new(server, Self::DEFAULT_USER),
            faults,
        );
        let mut users = BTreeMap::new();
        users.insert(
            Self::DEFAULT_USER.to_owned(),
            User {
                channel: Some(ChannelRec {
                    id: Self::DEFAULT_CHANNEL.to_owned(),
                    title: "Mock Channel".to_owned(),
                    custom_thumbnails: true,
                }),
            },
        );
        let shared = Arc::new(Shared {
            kit: kit.clone(),
            state: Mutex::new(MockState {
                users,
                sessions: HashMap::new(),
                videos: Vec::new(),
                short_keep: VecDeque::new(),
                expire_tokens_after_chunks: None,
                processing: ProcessingScript::default(),
                units_used: 0,
                units_limit: 10_000,
                inserts_used: 0,
                inserts_limit: 100,
                upload_limit: None,
                lock_private: false,
            }),
            counters: Counters::default(),
        });
        let routes = handlers::routes(Routes::new().oauth(
            &kit,
            OAuthPaths::new("/o/oauth2/v2/auth", "/token", Some("/revoke")),
        ));
        let server = kit.serve(routes, shared.clone()).await?;
        Ok(YouTubeMock { shared, server })
    }

    /// The mock's base URL (`http://127.0.0.1:PORT/`): API, uploads and OAuth all live here.
    pub fn base_url(&self) -> Url {
        self.server.base_url().clone()
    }

    /// A configuration builder pointed at the mock, with its client id, secret and redirect
    /// URI. Adjust it (chunk size, timeouts) and build.
    pub fn config_builder(&self) -> YouTubeConfigBuilder {
        let b = self.server.base();
        crate::YouTubeConfig::builder()
            .client_id(Self::CLIENT_ID)
            .client_secret(Self::CLIENT_SECRET)
            .redirect_uri(Self::REDIRECT_URI)
            .api_base(b)
            .authorize_url(format!("{b}/o/oauth2/v2/auth"))
            .token_url(format!("{b}/token"))
            .revoke_url(format!("{b}/revoke"))
    }

    /// The kit the mock runs on: faults, the request log, the OAuth server.
    pub fn kit(&self) -> &MockKit {
        &self.shared.kit
    }

    /// The fault plan (see the module docs for endpoint names).
    pub fn faults(&self) -> &FaultPlan {
        self.shared.kit.faults()
    }

    /// Adds a user with a channel; returns the channel id.
    pub fn add_user(&self, user: &str, channel_title: &str) -> String {
        let id = format!("UC{}", id(22));
        self.shared.state().users.insert(
            user.to_owned(),
            User {
                channel: Some(ChannelRec {
                    id: id.clone(),
                    title: channel_title.to_owned(),
                    custom_thumbnails: true,
                }),
            },
        );
        id
    }

    /// Adds a Google account that has no YouTube channel.
    pub fn add_user_without_channel(&self, user: &str) {
        self.shared
            .state()
            .users
            .insert(user.to_owned(), User { channel: None });
    }

    /// Makes `user` the one who consents at the authorization endpoint.
    pub fn set_consenting_user(&self, user: &str) {
        self.shared.kit.oauth().login_as(user);
    }

    /// Forbids (or allows) custom thumbnails on `user`'s channel (`403 forbidden`, as for a
    /// channel that is not phone-verified).
    pub fn set_custom_thumbnails(&self, user: &str, allowed: bool) {
        if let Some(c) = self
            .shared
            .state()
            .users
            .get_mut(user)
            .and_then(|u| u.channel.as_mut())
        {
            c.custom_thumbnails = allowed;
        }
    }

    /// Issues tokens for `user` without the OAuth dance, with the default scopes
    /// (`youtube.upload`, `youtube.readonly`): `(access_token, refresh_token)`.
    pub fn issue_token(&self, user: &str) -> (String, String) {
        self.issue_token_with_scopes(user, &[SCOPE_UPLOAD, SCOPE_READONLY])
    }

    /// Issues tokens for `user` with `scopes`.
    pub fn issue_token_with_scopes(&self, user: &str, scopes: &[&str]) -> (String, String) {
        let t = self.shared.kit.oauth().issue_token(user, scopes);
        (
            t.access_token.expose_secret().to_owned(),
            t.refresh_token
                .as_ref()
                .map(|r| r.expose_secret().to_owned())
                .unwrap_or_default(),
        )
    }

    /// Sets the lifetime of access tokens issued from now on (default 3599 s).
    pub fn set_access_token_ttl(&self, ttl: Duration) {
        self.shared.kit.oauth().set_access_ttl(ttl);
    }

    /// Expires every access token issued so far.
    pub fn expire_access_tokens(&self) {
        self.shared.kit.oauth().expire_access_tokens();
    }

    /// Expires every access token after the next `n` accepted chunks: a token dying
    /// mid-upload.
    pub fn expire_access_tokens_after_chunks(&self, n: u32) {
        self.shared.state().expire_tokens_after_chunks = Some(n);
    }

    /// Invalidates every refresh token (as after 7 days for an app in testing mode, or a
    /// revocation by the user): refreshing answers `invalid_grant`.
    pub fn expire_refresh_tokens(&self) {
        self.shared.kit.oauth().expire_refresh_tokens();
    }

    /// The next `chunks` chunks keep `bytes` fewer bytes than they carried: the `308`'s
    /// `Range` ends before the chunk does.
    pub fn keep_short(&self, chunks: usize, bytes: u64) {
        let mut s = self.shared.state();
        for _ in 0..chunks {
            s.short_keep.push_back(bytes);
        }
    }

    /// Expires every open upload session: they answer `status` (404 or 410) from now on.
    pub fn expire_sessions(&self, status: u16) {
        let code =
            axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::NOT_FOUND);
        for sess in self.shared.state().sessions.values_mut() {
            if sess.video_id.is_none() {
                sess.gone = Some(code);
            }
        }
    }

    /// How processing goes for videos uploaded from now on.
    pub fn set_processing(&self, script: ProcessingScript) {
        self.shared.state().processing = script;
    }

    /// Sets the daily unit pool and the daily `videos.insert` calls (defaults 10,000 and 100),
    /// and resets what was used.
    pub fn set_quota(&self, units: u64, inserts: u64) {
        let mut s = self.shared.state();
        s.units_limit = units;
        s.inserts_limit = inserts;
        s.units_used = 0;
        s.inserts_used = 0;
    }

    /// Quota used today: `(units, videos.insert calls)`.
    pub fn quota_used(&self) -> (u64, u64) {
        let s = self.shared.state();
        (s.units_used, s.inserts_used)
    }

    /// Limits each channel to `n` uploads (`400 uploadLimitExceeded` after that).
    pub fn set_upload_limit(&self, n: Option<u32>) {
        self.shared.state().upload_limit = n;
    }

    /// Locks every new upload to private, as Google does for unaudited API projects.
    pub fn lock_private(&self, yes: bool) {
        self.shared.state().lock_private = yes;
    }

    /// Every video, oldest first.
    pub fn videos(&self) -> Vec<MockVideo> {
        self.shared
            .state()
            .videos
            .iter()
            .map(|v| v.video.clone())
            .collect()
    }

    /// One video.
    pub fn video(&self, id: &str) -> Option<MockVideo> {
        self.shared
            .state()
            .videos
            .iter()
            .find(|v| v.video.id == id)
            .map(|v| v.video.clone())
    }

    /// Adds a public video titled `title` to `user`'s channel, as if uploaded elsewhere (the
    /// website, another app); returns its id, or `None` for a user without a channel.
    pub fn add_video(&self, user: &str, title: &str) -> Option<String> {
        let mut s = self.shared.state();
        let channel = s.channel_of(user)?;
        let vid = id(11);
        let video = MockVideo {
            id: vid.clone(),
            channel_id: channel.id,
            title: title.to_owned(),
            privacy_status: "public".to_owned(),
            publish_at: None,
            size: 0,
            sha256: String::new(),
            metadata: serde_json::json!({"snippet": {"title": title}, "status": {"privacyStatus": "public"}}),
            notify_subscribers: false,
            thumbnail: None,
            deleted: false,
        };
        let script = s.processing.clone();
        s.videos.push(state::VideoRec {
            video,
            created: chrono::Utc::now(),
            created_instant: std::time::Instant::now(),
            reads: 0,
            script,
        });
        Some(vid)
    }

    /// Counters of what was received.
    pub fn stats(&self) -> MockStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        let oauth = self.shared.kit.oauth();
        let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
        let log = self.shared.kit.log();
        MockStats {
            requests: n(log.requests()),
            sessions_started: l(&c.sessions_started),
            chunk_requests: n(log.calls("upload.chunk")),
            status_queries: n(log.calls("upload.status")),
            upload_bytes_received: log.bytes_in("upload.chunk"),
            videos_created: l(&c.videos_created),
            code_exchanges: n(oauth.exchanges()),
            refreshes: n(oauth.refreshes()),
            revocations: n(oauth.revocations()),
            thumbnails_set: l(&c.thumbnails),
        }
    }

    /// Every request received so far (for core's conformance suite).
    pub fn requests(&self) -> usize {
        self.shared.kit.log().requests()
    }

    /// Videos created so far (the commit, for core's conformance suite).
    pub fn creates(&self) -> usize {
        usize::try_from(self.stats().videos_created).unwrap_or(usize::MAX)
    }

    /// A counter of the videos that exist, for core's conformance suite.
    pub fn video_counter(&self) -> Counter {
        let s = self.shared.clone();
        Arc::new(move || s.state().videos.iter().filter(|v| !v.video.deleted).count())
    }
}
