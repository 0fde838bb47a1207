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
//! - **OAuth**: `GET /o/oauth2/v2/auth` consents as the current user and redirects with a code;
//!   `POST /token` checks the client, the redirect URI and the PKCE verifier, issues access
//!   tokens (one hour) and, with `access_type=offline`, a refresh token (again on every
//!   `prompt=consent`); refreshing never rotates the refresh token; a revoked or expired
//!   refresh token is `invalid_grant`; `POST /revoke` ends the whole grant.
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
//! [`YouTubeMock::faults`] is core's [`FaultPlan`]; faults are queued per endpoint name:
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
//! [`Fault::Drop`] on `upload.chunk` reads half the chunk, keeps the whole 256 KiB blocks of it, then drops the
//! connection; [`Fault::DelayAfter`] handles the call (a final chunk creates the video) and
//! then holds the answer back, so the client times out. Further knobs:
//! [`YouTubeMock::keep_short`] (a short `308`), [`YouTubeMock::expire_sessions`],
//! [`YouTubeMock::expire_access_tokens_after_chunks`] (a token expiring mid-upload),
//! [`YouTubeMock::set_quota`], [`YouTubeMock::set_processing`].

// Handlers short-circuit with the response to send; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{IncomingStream, Listener};
use base64_like::id;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use socialpub_core::testkit::{Fault, FaultPlan};
use socialpub_core::{Error, Result};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

use crate::config::{
    CHUNK_GRANULARITY, SCOPE_MANAGE, SCOPE_READONLY, SCOPE_UPLOAD, YouTubeConfigBuilder,
};
use crate::validate::{
    MAX_DESCRIPTION_BYTES, MAX_TAGS_CHARS, MAX_THUMBNAIL_BYTES, MAX_TITLE_CHARS, tags_length,
};

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

const FORCE_SSL: &str = "https://www.googleapis.com/auth/youtube.force-ssl";

mod base64_like {
    use rand::Rng;

    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    /// A random id of `len` URL-safe characters.
    pub(super) fn id(len: usize) -> String {
        let mut r = rand::rng();
        (0..len)
            .map(|_| ALPHABET[r.random_range(0..ALPHABET.len())] as char)
            .collect()
    }
}

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

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    sessions_started: AtomicU64,
    chunk_requests: AtomicU64,
    status_queries: AtomicU64,
    upload_bytes: AtomicU64,
    videos_created: AtomicU64,
    code_exchanges: AtomicU64,
    refreshes: AtomicU64,
    revocations: AtomicU64,
    thumbnails: AtomicU64,
}

#[derive(Debug, Clone)]
struct User {
    channel: Option<ChannelRec>,
    granted: bool,
}

#[derive(Debug, Clone)]
struct ChannelRec {
    id: String,
    title: String,
    custom_thumbnails: bool,
}

impl ChannelRec {
    fn uploads_playlist(&self) -> String {
        format!("UU{}", self.id.get(2..).unwrap_or(&self.id))
    }
}

#[derive(Debug, Clone)]
struct CodeGrant {
    user: String,
    redirect_uri: String,
    challenge: Option<String>,
    scopes: Vec<String>,
    refresh: bool,
}

#[derive(Debug, Clone)]
struct AccessGrant {
    user: String,
    scopes: Vec<String>,
    expires: Instant,
    grant: u64,
}

#[derive(Debug, Clone)]
struct RefreshGrant {
    user: String,
    scopes: Vec<String>,
    grant: u64,
}

struct Session {
    user: String,
    channel_id: String,
    total: u64,
    received: u64,
    hasher: Sha256,
    metadata: Value,
    notify: bool,
    gone: Option<StatusCode>,
    video_id: Option<String>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Clone)]
struct VideoRec {
    video: MockVideo,
    created: DateTime<Utc>,
    created_instant: Instant,
    reads: u32,
    script: ProcessingScript,
}

struct MockState {
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    users: BTreeMap<String, User>,
    consenting_user: String,
    codes: HashMap<String, CodeGrant>,
    access: HashMap<String, AccessGrant>,
    refresh: HashMap<String, RefreshGrant>,
    revoked_grants: HashSet<u64>,
    next_grant: u64,
    token_ttl: Duration,
    sessions: HashMap<String, Session>,
    videos: Vec<VideoRec>,
    short_keep: VecDeque<u64>,
    expire_tokens_after_chunks: Option<u32>,
    processing: ProcessingScript,
    units_used: u64,
    units_limit: u64,
    inserts_used: u64,
    inserts_limit: u64,
    upload_limit: Option<u32>,
    lock_private: bool,
}

struct Shared {
    state: Mutex<MockState>,
    faults: FaultPlan,
    counters: Counters,
    base: Url,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, MockState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hit(&self) {
        self.counters.requests.fetch_add(1, Ordering::SeqCst);
    }
}

/// The running mock server. Dropping it stops the server.
pub struct YouTubeMock {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for YouTubeMock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YouTubeMock")
            .field("base_url", &self.shared.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Drop for YouTubeMock {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
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
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::internal(format!("cannot bind the YouTube mock: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("no local address: {e}")))?;
        let base = Url::parse(&format!("http://{addr}/"))
            .map_err(|e| Error::internal(format!("bad mock URL: {e}")))?;
        let mut users = BTreeMap::new();
        users.insert(
            Self::DEFAULT_USER.to_owned(),
            User {
                channel: Some(ChannelRec {
                    id: Self::DEFAULT_CHANNEL.to_owned(),
                    title: "Mock Channel".to_owned(),
                    custom_thumbnails: true,
                }),
                granted: false,
            },
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(MockState {
                client_id: Self::CLIENT_ID.to_owned(),
                client_secret: Self::CLIENT_SECRET.to_owned(),
                redirect_uri: Self::REDIRECT_URI.to_owned(),
                users,
                consenting_user: Self::DEFAULT_USER.to_owned(),
                codes: HashMap::new(),
                access: HashMap::new(),
                refresh: HashMap::new(),
                revoked_grants: HashSet::new(),
                next_grant: 1,
                token_ttl: Duration::from_secs(3599),
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
            faults: FaultPlan::new(),
            counters: Counters::default(),
            base,
        });
        let app = Router::new()
            .route("/o/oauth2/v2/auth", get(authorize))
            .route("/token", post(token))
            .route("/revoke", post(revoke))
            .route("/youtube/v3/channels", get(channels_list))
            .route("/youtube/v3/videos", get(videos_list).delete(videos_delete))
            .route("/youtube/v3/playlistItems", get(playlist_items))
            .route("/upload/youtube/v3/videos", post(insert).put(upload_put))
            .route("/upload/youtube/v3/thumbnails/set", post(thumbnails_set))
            .fallback(fallback)
            .with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(
            KillableListener { inner: listener },
            app.into_make_service_with_connect_info::<ConnInfo>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        let task = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::warn!(error = %e, "the YouTube mock stopped");
            }
        });
        Ok(YouTubeMock {
            shared,
            shutdown: Some(tx),
            task,
        })
    }

    /// The mock's base URL (`http://127.0.0.1:PORT/`): API, uploads and OAuth all live here.
    pub fn base_url(&self) -> Url {
        self.shared.base.clone()
    }

    /// A configuration builder pointed at the mock, with its client id, secret and redirect
    /// URI. Adjust it (chunk size, timeouts) and build.
    pub fn config_builder(&self) -> YouTubeConfigBuilder {
        let b = self.shared.base.as_str().trim_end_matches('/');
        crate::YouTubeConfig::builder()
            .client_id(Self::CLIENT_ID)
            .client_secret(Self::CLIENT_SECRET)
            .redirect_uri(Self::REDIRECT_URI)
            .api_base(b)
            .authorize_url(format!("{b}/o/oauth2/v2/auth"))
            .token_url(format!("{b}/token"))
            .revoke_url(format!("{b}/revoke"))
    }

    /// The fault plan (see the module docs for endpoint names).
    pub fn faults(&self) -> &FaultPlan {
        &self.shared.faults
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
                granted: false,
            },
        );
        id
    }

    /// Adds a Google account that has no YouTube channel.
    pub fn add_user_without_channel(&self, user: &str) {
        self.shared.state().users.insert(
            user.to_owned(),
            User {
                channel: None,
                granted: false,
            },
        );
    }

    /// Makes `user` the one who consents at the authorization endpoint.
    pub fn set_consenting_user(&self, user: &str) {
        self.shared.state().consenting_user = user.to_owned();
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
        let mut s = self.shared.state();
        let scopes: Vec<String> = scopes.iter().map(|x| (*x).to_owned()).collect();
        let grant = s.new_grant();
        let refresh = s.new_refresh(user, &scopes, grant);
        let (access, _) = s.new_access(user, &scopes, grant);
        (access, refresh)
    }

    /// Sets the lifetime of access tokens issued from now on (default 3599 s).
    pub fn set_access_token_ttl(&self, ttl: Duration) {
        self.shared.state().token_ttl = ttl;
    }

    /// Expires every access token issued so far.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for a in self.shared.state().access.values_mut() {
            a.expires = now;
        }
    }

    /// Expires every access token after the next `n` accepted chunks: a token dying
    /// mid-upload.
    pub fn expire_access_tokens_after_chunks(&self, n: u32) {
        self.shared.state().expire_tokens_after_chunks = Some(n);
    }

    /// Invalidates every refresh token (as after 7 days for an app in testing mode, or a
    /// revocation by the user): refreshing answers `invalid_grant`.
    pub fn expire_refresh_tokens(&self) {
        let mut s = self.shared.state();
        let grants: Vec<u64> = s.refresh.values().map(|r| r.grant).collect();
        s.revoked_grants.extend(grants);
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
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_FOUND);
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

    /// Counters of what was received.
    pub fn stats(&self) -> MockStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        MockStats {
            requests: l(&c.requests),
            sessions_started: l(&c.sessions_started),
            chunk_requests: l(&c.chunk_requests),
            status_queries: l(&c.status_queries),
            upload_bytes_received: l(&c.upload_bytes),
            videos_created: l(&c.videos_created),
            code_exchanges: l(&c.code_exchanges),
            refreshes: l(&c.refreshes),
            revocations: l(&c.revocations),
            thumbnails_set: l(&c.thumbnails),
        }
    }

    /// Every request received so far (for core's conformance suite).
    pub fn requests(&self) -> usize {
        usize::try_from(self.stats().requests).unwrap_or(usize::MAX)
    }

    /// Videos created so far (the commit, for core's conformance suite).
    pub fn creates(&self) -> usize {
        usize::try_from(self.stats().videos_created).unwrap_or(usize::MAX)
    }
}

impl MockState {
    fn new_grant(&mut self) -> u64 {
        self.next_grant += 1;
        self.next_grant
    }

    fn new_refresh(&mut self, user: &str, scopes: &[String], grant: u64) -> String {
        let t = format!("1//mock-refresh-{}", id(40));
        self.refresh.insert(
            t.clone(),
            RefreshGrant {
                user: user.to_owned(),
                scopes: scopes.to_vec(),
                grant,
            },
        );
        t
    }

    fn new_access(&mut self, user: &str, scopes: &[String], grant: u64) -> (String, u64) {
        let t = format!("ya29.mock-{}", id(60));
        self.access.insert(
            t.clone(),
            AccessGrant {
                user: user.to_owned(),
                scopes: scopes.to_vec(),
                expires: Instant::now() + self.token_ttl,
                grant,
            },
        );
        (t, self.token_ttl.as_secs())
    }

    /// The user of a valid access token holding one of `scopes`.
    fn authorize(
        &self,
        headers: &HeaderMap,
        scopes: &[&str],
    ) -> std::result::Result<String, Response> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(grant) = token.and_then(|t| self.access.get(t)) else {
            return Err(auth_error());
        };
        if grant.expires <= Instant::now() || self.revoked_grants.contains(&grant.grant) {
            return Err(auth_error());
        }
        if !grant.scopes.iter().any(|s| scopes.contains(&s.as_str())) {
            return Err(google_error(
                StatusCode::FORBIDDEN,
                "insufficientPermissions",
                "global",
                "Request had insufficient authentication scopes.",
            ));
        }
        Ok(grant.user.clone())
    }

    fn charge_units(&mut self, units: u64) -> std::result::Result<(), Response> {
        if self.units_used + units > self.units_limit {
            self.units_used = self.units_limit;
            return Err(quota_exceeded());
        }
        self.units_used += units;
        Ok(())
    }

    fn channel_of(&self, user: &str) -> Option<ChannelRec> {
        self.users.get(user).and_then(|u| u.channel.clone())
    }

    fn video_json(&mut self, idx: usize, parts: &[&str], owner: bool) -> Value {
        let v = &mut self.videos[idx];
        let mut out = json!({
            "kind": "youtube#video",
            "etag": format!("etag-{}", v.video.id),
            "id": v.video.id,
        });
        let meta = &v.video.metadata;
        if parts.contains(&"snippet") {
            let mut snippet = meta.get("snippet").cloned().unwrap_or_else(|| json!({}));
            snippet["publishedAt"] =
                json!(v.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            snippet["channelId"] = json!(v.video.channel_id);
            out["snippet"] = snippet;
        }
        let done = v.reads > v.script.reads_while_processing
            || v.script
                .processing_time
                .is_some_and(|t| v.created_instant.elapsed() >= t);
        let mut status = meta.get("status").cloned().unwrap_or_else(|| json!({}));
        status["privacyStatus"] = json!(v.video.privacy_status);
        status["license"] = status.get("license").cloned().unwrap_or(json!("youtube"));
        status["embeddable"] = status.get("embeddable").cloned().unwrap_or(json!(true));
        if let Some(k) = status.get("selfDeclaredMadeForKids").cloned() {
            status["madeForKids"] = k;
        }
        let mut processing = json!({"processingStatus": "processing",
            "processingProgress": {"partsTotal": "1000", "partsProcessed": "10", "timeLeftMs": "60000"}});
        status["uploadStatus"] = json!("uploaded");
        if done {
            match &v.script.outcome {
                ProcessingOutcome::Succeeded => {
                    status["uploadStatus"] = json!("processed");
                    processing = json!({"processingStatus": "succeeded"});
                }
                ProcessingOutcome::Failed(reason) => {
                    status["uploadStatus"] = json!("failed");
                    status["failureReason"] = json!("conversion");
                    processing =
                        json!({"processingStatus": "failed", "processingFailureReason": reason});
                }
                ProcessingOutcome::Rejected(reason) => {
                    status["uploadStatus"] = json!("rejected");
                    status["rejectionReason"] = json!(reason);
                    processing = json!({"processingStatus": "succeeded"});
                }
                ProcessingOutcome::Terminated => {
                    processing = json!({"processingStatus": "terminated"});
                }
            }
        }
        if parts.contains(&"status") {
            out["status"] = status;
        }
        // processingDetails is returned to the owner only.
        if parts.contains(&"processingDetails") && owner {
            out["processingDetails"] = processing;
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Error shapes

fn google_error(status: StatusCode, reason: &str, domain: &str, message: &str) -> Response {
    let body = json!({
        "error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
        }
    });
    (status, axum::Json(body)).into_response()
}

fn auth_error() -> Response {
    let body = json!({
        "error": {
            "code": 401,
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            "errors": [{"message": "Invalid Credentials", "domain": "global", "reason": "authError",
                        "location": "Authorization", "locationType": "header"}],
            "status": "UNAUTHENTICATED",
        }
    });
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

fn quota_exceeded() -> Response {
    google_error(
        StatusCode::FORBIDDEN,
        "quotaExceeded",
        "youtube.quota",
        "The request cannot be completed because you have exceeded your quota.",
    )
}

fn bad_request(reason: &str, message: &str) -> Response {
    google_error(StatusCode::BAD_REQUEST, reason, "youtube.video", message)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn fault_body(endpoint: &str, status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if endpoint.starts_with("oauth.") {
        return match status {
            400 => oauth_error(code, "invalid_grant", "Token has been expired or revoked."),
            401 => oauth_error(code, "invalid_client", "The OAuth client was not found."),
            _ => oauth_error(code, "server_error", "injected failure"),
        };
    }
    match status {
        401 => auth_error(),
        403 => google_error(code, "forbidden", "youtube", "Forbidden"),
        404 => google_error(code, "notFound", "global", "Not Found"),
        429 => google_error(
            code,
            "rateLimitExceeded",
            "usageLimits",
            "Rate Limit Exceeded",
        ),
        500..=599 => google_error(code, "backendError", "global", "Backend Error"),
        _ => google_error(code, "badRequest", "global", "Bad Request"),
    }
}

// ---------------------------------------------------------------------------------------------
// Faults

enum Action {
    Go,
    Respond(Response),
    DelayAfter(Duration),
    Drop,
}

async fn take_fault(shared: &Shared, endpoint: &str) -> Action {
    match shared.faults.take(endpoint) {
        None => Action::Go,
        Some(Fault::Status {
            status,
            body,
            headers,
        }) => {
            let mut resp = match body {
                Some(b) => (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
                    b,
                )
                    .into_response(),
                None => fault_body(endpoint, status),
            };
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    axum::http::HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    resp.headers_mut().insert(k, v);
                }
            }
            Action::Respond(resp)
        }
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            Action::Go
        }
        Some(Fault::DelayAfter(d)) => Action::DelayAfter(d),
        Some(Fault::Drop) => Action::Drop,
        Some(_) => Action::Go,
    }
}

/// Runs `handle` under the fault plan of `endpoint` (for handlers that read no streamed body).
async fn guarded<F>(shared: &Arc<Shared>, conn: &ConnInfo, endpoint: &str, handle: F) -> Response
where
    F: FnOnce() -> Response,
{
    shared.hit();
    match take_fault(shared, endpoint).await {
        Action::Respond(r) => r,
        Action::Drop => {
            conn.kill.kill();
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Action::DelayAfter(d) => {
            let r = handle();
            tokio::time::sleep(d).await;
            r
        }
        Action::Go => handle(),
    }
}

// ---------------------------------------------------------------------------------------------
// OAuth

type Params = Query<HashMap<String, String>>;

async fn authorize(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    Query(q): Params,
) -> Response {
    let s2 = shared.clone();
    guarded(&shared, &conn, "oauth.authorize", move || {
        let mut s = s2.state();
        let get = |k: &str| q.get(k).cloned().unwrap_or_default();
        if get("client_id") != s.client_id {
            return (StatusCode::BAD_REQUEST, "Error 401: invalid_client").into_response();
        }
        if get("redirect_uri") != s.redirect_uri {
            return (StatusCode::BAD_REQUEST, "Error 400: redirect_uri_mismatch").into_response();
        }
        if get("response_type") != "code" || get("scope").is_empty() {
            return (StatusCode::BAD_REQUEST, "Error 400: invalid_request").into_response();
        }
        let challenge = q.get("code_challenge").cloned();
        if challenge.is_some() && get("code_challenge_method") != "S256" {
            return (
                StatusCode::BAD_REQUEST,
                "Error 400: invalid_request (code_challenge_method)",
            )
                .into_response();
        }
        let user = s.consenting_user.clone();
        let offline = get("access_type") == "offline";
        let consent = get("prompt").split(' ').any(|p| p == "consent");
        let first = !s.users.get(&user).is_some_and(|u| u.granted);
        if let Some(u) = s.users.get_mut(&user) {
            u.granted = true;
        }
        let code = format!("4/mock-code-{}", id(30));
        s.codes.insert(
            code.clone(),
            CodeGrant {
                user,
                redirect_uri: get("redirect_uri"),
                challenge,
                scopes: get("scope").split(' ').map(str::to_owned).collect(),
                // Google sends a refresh token on first consent, or on every forced consent.
                refresh: offline && (first || consent),
            },
        );
        let mut to = match Url::parse(&get("redirect_uri")) {
            Ok(u) => u,
            Err(_) => return (StatusCode::BAD_REQUEST, "bad redirect_uri").into_response(),
        };
        to.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &get("state"))
            .append_pair("scope", &get("scope"));
        (StatusCode::FOUND, [(header::LOCATION, to.to_string())]).into_response()
    })
    .await
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn token(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    body: axum::body::Bytes,
) -> Response {
    let s2 = shared.clone();
    guarded(&shared, &conn, "oauth.token", move || {
        let f = form(&body);
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        let mut s = s2.state();
        if get("client_id") != s.client_id || get("client_secret") != s.client_secret {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "The OAuth client was not found.",
            );
        }
        match get("grant_type").as_str() {
            "authorization_code" => {
                let Some(code) = s.codes.remove(&get("code")) else {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "Malformed auth code.",
                    );
                };
                if code.redirect_uri != get("redirect_uri") {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "redirect_uri_mismatch",
                        "Bad Request",
                    );
                }
                if let Some(ch) = &code.challenge {
                    let verifier = get("code_verifier");
                    let digest = Sha256::digest(verifier.as_bytes());
                    if verifier.is_empty() || &b64url(&digest) != ch {
                        return oauth_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_grant",
                            "Invalid code verifier.",
                        );
                    }
                }
                s2.counters.code_exchanges.fetch_add(1, Ordering::SeqCst);
                let grant = s.new_grant();
                let (access, ttl) = s.new_access(&code.user, &code.scopes, grant);
                let mut out = json!({
                    "access_token": access,
                    "expires_in": ttl,
                    "scope": code.scopes.join(" "),
                    "token_type": "Bearer",
                });
                if code.refresh {
                    out["refresh_token"] = json!(s.new_refresh(&code.user, &code.scopes, grant));
                }
                axum::Json(out).into_response()
            }
            "refresh_token" => {
                let Some(r) = s.refresh.get(&get("refresh_token")).cloned() else {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Bad Request");
                };
                if s.revoked_grants.contains(&r.grant) {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "Token has been expired or revoked.",
                    );
                }
                s2.counters.refreshes.fetch_add(1, Ordering::SeqCst);
                let (access, ttl) = s.new_access(&r.user, &r.scopes, r.grant);
                // Google does not rotate refresh tokens: none in the answer.
                axum::Json(json!({
                    "access_token": access,
                    "expires_in": ttl,
                    "scope": r.scopes.join(" "),
                    "token_type": "Bearer",
                }))
                .into_response()
            }
            _ => oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Invalid grant_type.",
            ),
        }
    })
    .await
}

async fn revoke(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    Query(q): Params,
    body: axum::body::Bytes,
) -> Response {
    let s2 = shared.clone();
    guarded(&shared, &conn, "oauth.revoke", move || {
        let f = form(&body);
        let token = f
            .get("token")
            .or_else(|| q.get("token"))
            .cloned()
            .unwrap_or_default();
        let mut s = s2.state();
        let grant = s
            .refresh
            .get(&token)
            .map(|r| r.grant)
            .or_else(|| s.access.get(&token).map(|a| a.grant));
        match grant {
            Some(g) if !s.revoked_grants.contains(&g) => {
                s.revoked_grants.insert(g);
                s2.counters.revocations.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({})).into_response()
            }
            _ => oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_token",
                "Token expired or revoked",
            ),
        }
    })
    .await
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Data API

const READ_SCOPES: &[&str] = &[SCOPE_READONLY, SCOPE_MANAGE, FORCE_SSL];
const UPLOAD_SCOPES: &[&str] = &[SCOPE_UPLOAD, SCOPE_MANAGE, FORCE_SSL];
const MANAGE_SCOPES: &[&str] = &[SCOPE_MANAGE, FORCE_SSL];

fn parts(q: &HashMap<String, String>) -> Vec<String> {
    q.get("part")
        .map(|p| p.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default()
}

fn missing_part() -> Response {
    google_error(
        StatusCode::BAD_REQUEST,
        "required",
        "global",
        "Required parameter: part",
    )
}

async fn channels_list(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let s2 = shared.clone();
    guarded(&shared, &conn, "channels.list", move || {
        let mut s = s2.state();
        let user = match s.authorize(&headers, READ_SCOPES) {
            Ok(u) => u,
            Err(r) => return r,
        };
        if let Err(r) = s.charge_units(1) {
            return r;
        }
        let parts = parts(&q);
        if parts.is_empty() {
            return missing_part();
        }
        let items: Vec<Value> = s
            .channel_of(&user)
            .filter(|_| q.get("mine").map(String::as_str) == Some("true"))
            .map(|c| {
                let mut item = json!({"kind": "youtube#channel", "etag": "e", "id": c.id});
                if parts.iter().any(|p| p == "snippet") {
                    item["snippet"] = json!({
                        "title": c.title,
                        "customUrl": format!("@{}", c.title.to_lowercase().replace(' ', "")),
                        "thumbnails": {"default": {"url": format!("https://yt3.example/{}.jpg", c.id), "width": 88, "height": 88}},
                    });
                }
                if parts.iter().any(|p| p == "contentDetails") {
                    item["contentDetails"] = json!({"relatedPlaylists": {"uploads": c.uploads_playlist(), "likes": ""}});
                }
                item
            })
            .into_iter()
            .collect();
        axum::Json(json!({
            "kind": "youtube#channelListResponse",
            "etag": "e",
            "pageInfo": {"totalResults": items.len(), "resultsPerPage": 5},
            "items": items,
        }))
        .into_response()
    })
    .await
}

async fn videos_list(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let s2 = shared.clone();
    guarded(&shared, &conn, "videos.list", move || {
        let mut s = s2.state();
        let user = match s.authorize(&headers, READ_SCOPES) {
            Ok(u) => u,
            Err(r) => return r,
        };
        if let Err(r) = s.charge_units(1) {
            return r;
        }
        let parts = parts(&q);
        if parts.is_empty() {
            return missing_part();
        }
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let channel = s.channel_of(&user).map(|c| c.id);
        let ids: Vec<String> = q
            .get("id")
            .map(|i| i.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let mut items = Vec::new();
        for vid in ids {
            let Some(idx) = s
                .videos
                .iter()
                .position(|v| v.video.id == vid && !v.video.deleted)
            else {
                continue;
            };
            let owner = channel.as_deref() == Some(s.videos[idx].video.channel_id.as_str());
            // Private videos are visible to their owner only.
            if !owner && s.videos[idx].video.privacy_status == "private" {
                continue;
            }
            if owner {
                s.videos[idx].reads += 1;
            }
            items.push(s.video_json(idx, &parts, owner));
        }
        axum::Json(json!({
            "kind": "youtube#videoListResponse",
            "etag": "e",
            "pageInfo": {"totalResults": items.len(), "resultsPerPage": items.len()},
            "items": items,
        }))
        .into_response()
    })
    .await
}

async fn videos_delete(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let s2 = shared.clone();
    guarded(&shared, &conn, "videos.delete", move || {
        let mut s = s2.state();
        let user = match s.authorize(&headers, MANAGE_SCOPES) {
            Ok(u) => u,
            Err(r) => return r,
        };
        if let Err(r) = s.charge_units(50) {
            return r;
        }
        let channel = s.channel_of(&user).map(|c| c.id);
        let vid = q.get("id").cloned().unwrap_or_default();
        match s
            .videos
            .iter_mut()
            .find(|v| v.video.id == vid && !v.video.deleted)
        {
            Some(v) if Some(&v.video.channel_id) == channel.as_ref() => {
                v.video.deleted = true;
                StatusCode::NO_CONTENT.into_response()
            }
            Some(_) => google_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "youtube.video",
                "The video that you are trying to delete cannot be deleted.",
            ),
            None => google_error(
                StatusCode::NOT_FOUND,
                "videoNotFound",
                "youtube.video",
                "The video that you are trying to delete cannot be found.",
            ),
        }
    })
    .await
}

async fn playlist_items(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let s2 = shared.clone();
    guarded(&shared, &conn, "playlistItems.list", move || {
        let mut s = s2.state();
        let user = match s.authorize(&headers, READ_SCOPES) {
            Ok(u) => u,
            Err(r) => return r,
        };
        if let Err(r) = s.charge_units(1) {
            return r;
        }
        let playlist = q.get("playlistId").cloned().unwrap_or_default();
        let Some(channel) = s
            .users
            .values()
            .filter_map(|u| u.channel.clone())
            .find(|c| c.uploads_playlist() == playlist)
        else {
            return google_error(
                StatusCode::NOT_FOUND,
                "playlistNotFound",
                "youtube.playlistItem",
                "The playlist identified with the request's playlistId parameter cannot be found.",
            );
        };
        let own = s.channel_of(&user).is_some_and(|c| c.id == channel.id);
        let max: usize = q
            .get("maxResults")
            .and_then(|m| m.parse().ok())
            .unwrap_or(5)
            .clamp(0, 50);
        let start: usize = q.get("pageToken").and_then(|p| p.parse().ok()).unwrap_or(0);
        let all: Vec<&VideoRec> = s
            .videos
            .iter()
            .rev()
            .filter(|v| v.video.channel_id == channel.id && !v.video.deleted)
            .filter(|v| own || v.video.privacy_status != "private")
            .collect();
        let items: Vec<Value> = all
            .iter()
            .skip(start)
            .take(max)
            .map(|v| {
                let at = v.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                json!({
                    "kind": "youtube#playlistItem",
                    "id": format!("item-{}", v.video.id),
                    "snippet": {
                        "publishedAt": at,
                        "channelId": channel.id,
                        "title": v.video.title,
                        "playlistId": playlist,
                        "resourceId": {"kind": "youtube#video", "videoId": v.video.id},
                    },
                    "contentDetails": {"videoId": v.video.id, "videoPublishedAt": at},
                })
            })
            .collect();
        let mut out = json!({
            "kind": "youtube#playlistItemListResponse",
            "pageInfo": {"totalResults": all.len(), "resultsPerPage": max},
            "items": items,
        });
        if start + max < all.len() {
            out["nextPageToken"] = json!((start + max).to_string());
        }
        axum::Json(out).into_response()
    })
    .await
}

/// Checks a video resource the way `videos.insert` does.
fn check_metadata(meta: &Value, now: DateTime<Utc>) -> std::result::Result<(), Response> {
    let snippet = meta.get("snippet").cloned().unwrap_or_default();
    let status = meta.get("status").cloned().unwrap_or_default();
    let title = snippet.get("title").and_then(Value::as_str).unwrap_or("");
    if title.trim().is_empty()
        || title.chars().count() > MAX_TITLE_CHARS
        || title.contains(['<', '>'])
    {
        return Err(bad_request(
            "invalidTitle",
            "The request metadata specifies an invalid or empty video title.",
        ));
    }
    let desc = snippet
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("");
    if desc.len() > MAX_DESCRIPTION_BYTES || desc.contains(['<', '>']) {
        return Err(bad_request(
            "invalidDescription",
            "The request metadata specifies an invalid video description.",
        ));
    }
    let tags: Vec<String> = snippet
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if tags_length(&tags) > MAX_TAGS_CHARS {
        return Err(bad_request(
            "invalidTags",
            "The request metadata specifies invalid video keywords.",
        ));
    }
    if let Some(c) = snippet.get("categoryId")
        && !c
            .as_str()
            .is_some_and(|c| !c.is_empty() && c.chars().all(|x| x.is_ascii_digit()))
    {
        return Err(bad_request(
            "invalidCategoryId",
            "The snippet.categoryId property specifies an invalid category ID.",
        ));
    }
    let privacy = status
        .get("privacyStatus")
        .and_then(Value::as_str)
        .unwrap_or("public");
    if !matches!(privacy, "public" | "private" | "unlisted") {
        return Err(bad_request(
            "invalidVideoMetadata",
            "The request metadata is invalid.",
        ));
    }
    if let Some(at) = status.get("publishAt") {
        let when = at
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        if privacy != "private" || when.is_none_or(|t| t <= now) {
            return Err(bad_request(
                "invalidPublishAt",
                "The request metadata specifies an invalid scheduled publishing time.",
            ));
        }
    }
    Ok(())
}

async fn insert(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    headers: HeaderMap,
    Query(q): Params,
    body: axum::body::Bytes,
) -> Response {
    let s2 = shared.clone();
    guarded(&shared, &conn, "videos.insert", move || {
        let mut s = s2.state();
        let user = match s.authorize(&headers, UPLOAD_SCOPES) {
            Ok(u) => u,
            Err(r) => return r,
        };
        if q.get("uploadType").map(String::as_str) != Some("resumable") {
            return bad_request(
                "invalidUploadType",
                "This mock accepts uploadType=resumable only.",
            );
        }
        if parts(&q).is_empty() {
            return missing_part();
        }
        if s.inserts_used >= s.inserts_limit {
            return quota_exceeded();
        }
        s.inserts_used += 1;
        let Some(channel) = s.channel_of(&user) else {
            return google_error(
                StatusCode::UNAUTHORIZED,
                "youtubeSignupRequired",
                "youtube.header",
                "Unauthorized",
            );
        };
        let total = headers
            .get("x-upload-content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let Some(total) = total.filter(|t| *t > 0) else {
            return bad_request(
                "badRequest",
                "The X-Upload-Content-Length header is missing or invalid.",
            );
        };
        let ctype = headers
            .get("x-upload-content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !(ctype.starts_with("video/") || ctype == "application/octet-stream") {
            return bad_request(
                "invalidContentType",
                "X-Upload-Content-Type must be video/* or application/octet-stream.",
            );
        }
        let meta: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return bad_request("parseError", "The request body is not JSON."),
        };
        if let Err(r) = check_metadata(&meta, Utc::now()) {
            return r;
        }
        if let Some(limit) = s.upload_limit {
            let n = s
                .videos
                .iter()
                .filter(|v| v.video.channel_id == channel.id)
                .count();
            if n >= limit as usize {
                return bad_request(
                    "uploadLimitExceeded",
                    "The user has exceeded the number of videos they may upload.",
                );
            }
        }
        let upload_id = id(48);
        s.sessions.insert(
            upload_id.clone(),
            Session {
                user,
                channel_id: channel.id,
                total,
                received: 0,
                hasher: Sha256::new(),
                metadata: meta,
                notify: q.get("notifySubscribers").map(String::as_str) != Some("false"),
                gone: None,
                video_id: None,
                lock: Arc::new(tokio::sync::Mutex::new(())),
            },
        );
        s2.counters.sessions_started.fetch_add(1, Ordering::SeqCst);
        let mut loc = s2.base.clone();
        loc.set_path("/upload/youtube/v3/videos");
        loc.query_pairs_mut()
            .append_pair("uploadType", "resumable")
            .append_pair(
                "part",
                q.get("part")
                    .map(String::as_str)
                    .unwrap_or("snippet,status"),
            )
            .append_pair("upload_id", &upload_id);
        let mut resp = (StatusCode::OK, [(header::LOCATION, loc.to_string())]).into_response();
        if let Ok(v) = HeaderValue::from_str(&upload_id) {
            resp.headers_mut().insert("x-guploader-uploadid", v);
        }
        resp
    })
    .await
}

/// A parsed `Content-Range`.
enum RangeHeader {
    /// `bytes */TOTAL`
    Query(u64),
    /// `bytes FIRST-LAST/TOTAL`
    Bytes(u64, u64, u64),
}

fn parse_content_range(v: &str) -> Option<RangeHeader> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total: u64 = total.trim().parse().ok()?;
    if range == "*" {
        return Some(RangeHeader::Query(total));
    }
    let (a, b) = range.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b && b < total).then_some(RangeHeader::Bytes(a, b, total))
}

async fn drain(body: Body, shared: &Shared) -> u64 {
    let mut stream = body.into_data_stream();
    let mut n = 0u64;
    while let Some(Ok(frame)) = stream.next().await {
        n += frame.len() as u64;
    }
    shared.counters.upload_bytes.fetch_add(n, Ordering::SeqCst);
    n
}

fn range_308(received: u64) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if received > 0
        && let Ok(v) = HeaderValue::from_str(&format!("bytes=0-{}", received - 1))
    {
        r.headers_mut().insert(header::RANGE, v);
    }
    r
}

fn session_gone(code: StatusCode) -> Response {
    google_error(
        code,
        "notFound",
        "global",
        "The upload session was not found or has expired.",
    )
}

async fn upload_put(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
) -> Response {
    shared.hit();
    let range = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range);
    let endpoint = match range {
        Some(RangeHeader::Query(_)) => "upload.status",
        _ => "upload.chunk",
    };
    if endpoint == "upload.status" {
        shared
            .counters
            .status_queries
            .fetch_add(1, Ordering::SeqCst);
    } else {
        shared
            .counters
            .chunk_requests
            .fetch_add(1, Ordering::SeqCst);
    }
    let mut delay_after = None;
    let mut drop_mid = false;
    match take_fault(&shared, endpoint).await {
        Action::Respond(r) => {
            drain(body, &shared).await;
            return r;
        }
        Action::Drop if endpoint == "upload.status" => {
            conn.kill.kill();
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Action::Drop => drop_mid = true,
        Action::DelayAfter(d) => delay_after = Some(d),
        Action::Go => {}
    }
    let resp = upload_inner(&shared, &conn, &headers, &q, range, body, drop_mid).await;
    if let Some(d) = delay_after {
        tokio::time::sleep(d).await;
    }
    resp
}

async fn upload_inner(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    range: Option<RangeHeader>,
    body: Body,
    drop_mid: bool,
) -> Response {
    let upload_id = q.get("upload_id").cloned().unwrap_or_default();
    // Checks that need no body.
    let lock: std::result::Result<_, Response> = (|| {
        let s = shared.state();
        let user = s.authorize(headers, UPLOAD_SCOPES)?;
        match s.sessions.get(&upload_id) {
            None => Err(session_gone(StatusCode::NOT_FOUND)),
            // A session belongs to the account that started it.
            Some(sess) if sess.user != user => Err(auth_error()),
            Some(sess) => match sess.gone {
                Some(code) => Err(session_gone(code)),
                None => Ok(sess.lock.clone()),
            },
        }
    })();
    let lock = match lock {
        Ok(l) => l,
        Err(r) => {
            drain(body, shared).await;
            return r;
        }
    };
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());

    let (first, last, total) = match range {
        None => {
            drain(body, shared).await;
            return bad_request("badContent", "Content-Range is missing or malformed.");
        }
        Some(RangeHeader::Query(total)) => {
            drain(body, shared).await;
            let mut s = shared.state();
            let Some(sess) = s.sessions.get(&upload_id) else {
                return session_gone(StatusCode::NOT_FOUND);
            };
            if total != sess.total || content_length != Some(0) {
                return bad_request(
                    "badContent",
                    "A status query is an empty PUT with Content-Range: bytes */TOTAL.",
                );
            }
            if let Some(vid) = sess.video_id.clone() {
                let idx = s.videos.iter().position(|v| v.video.id == vid);
                return match idx {
                    Some(i) => (
                        StatusCode::OK,
                        axum::Json(s.video_json(i, &["snippet", "status"], true)),
                    )
                        .into_response(),
                    None => session_gone(StatusCode::NOT_FOUND),
                };
            }
            return range_308(sess.received);
        }
        Some(RangeHeader::Bytes(a, b, t)) => (a, b, t),
    };

    // One chunk at a time per session.
    let _guard = lock.lock().await;
    let len = last - first + 1;
    let checked: std::result::Result<(Sha256, u64), Response> = (|| {
        let mut s = shared.state();
        let short = s.short_keep.front().copied();
        let Some(sess) = s.sessions.get(&upload_id) else {
            return Err(session_gone(StatusCode::NOT_FOUND));
        };
        let problem = if total != sess.total {
            Some("Content-Range total differs from X-Upload-Content-Length.".to_owned())
        } else if sess.video_id.is_some() {
            Some("The upload is already complete.".to_owned())
        } else if first != sess.received {
            Some(format!(
                "Content-Range starts at {first}; the session holds {} bytes.",
                sess.received
            ))
        } else if content_length != Some(len) {
            Some(format!(
                "Content-Length {content_length:?} does not match the Content-Range length {len}."
            ))
        } else if last + 1 < total && len % CHUNK_GRANULARITY as u64 != 0 {
            Some(format!(
                "A chunk other than the last must be a multiple of 262144 bytes; this one is {len}."
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(bad_request("badContent", &p));
        }
        let hasher = sess.hasher.clone();
        let keep = match short {
            Some(n) => {
                s.short_keep.pop_front();
                len.saturating_sub(n)
            }
            None => len,
        };
        Ok((hasher, keep))
    })();
    let (mut hasher, keep) = match checked {
        Ok(c) => c,
        Err(r) => {
            drain(body, shared).await;
            return r;
        }
    };
    // Drop the connection after half the chunk when told to; of a broken chunk the mock keeps
    // whole 256 KiB blocks only, so the client must resend from where the session says.
    let stop_at = if drop_mid { len / 2 } else { u64::MAX };
    let keep = if drop_mid {
        keep.min(stop_at - stop_at % CHUNK_GRANULARITY as u64)
    } else {
        keep
    };
    let mut stream = body.into_data_stream();
    let mut got = 0u64;
    let mut broken = false;
    while got < stop_at {
        match stream.next().await {
            Some(Ok(frame)) => {
                let n = frame.len() as u64;
                shared.counters.upload_bytes.fetch_add(n, Ordering::SeqCst);
                if got < keep {
                    let take = usize::try_from((keep - got).min(n)).unwrap_or(frame.len());
                    hasher.update(&frame[..take]);
                }
                got += n;
            }
            Some(Err(_)) => {
                broken = true;
                break;
            }
            None => break,
        }
    }
    let interrupted = drop_mid || broken;
    if !interrupted && got != len {
        return bad_request(
            "badContent",
            "The body length does not match Content-Range.",
        );
    }
    let kept = got.min(keep);
    let mut s = shared.state();
    let expire_now = if kept > 0 && !interrupted {
        match s.expire_tokens_after_chunks {
            Some(n) if n <= 1 => {
                s.expire_tokens_after_chunks = None;
                true
            }
            Some(n) => {
                s.expire_tokens_after_chunks = Some(n - 1);
                false
            }
            None => false,
        }
    } else {
        false
    };
    let script = s.processing.clone();
    let lock_private = s.lock_private;
    let Some(sess) = s.sessions.get_mut(&upload_id) else {
        return session_gone(StatusCode::NOT_FOUND);
    };
    sess.received += kept;
    sess.hasher = hasher;
    let received = sess.received;
    let complete = received == sess.total;
    let mut created = None;
    if complete {
        let vid = id(11);
        sess.video_id = Some(vid.clone());
        let meta = sess.metadata.clone();
        let snippet = meta.get("snippet").cloned().unwrap_or_default();
        let status = meta.get("status").cloned().unwrap_or_default();
        let privacy = if lock_private {
            "private".to_owned()
        } else {
            status
                .get("privacyStatus")
                .and_then(Value::as_str)
                .unwrap_or("public")
                .to_owned()
        };
        let video = MockVideo {
            id: vid.clone(),
            channel_id: sess.channel_id.clone(),
            title: snippet
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            privacy_status: privacy,
            publish_at: status
                .get("publishAt")
                .and_then(Value::as_str)
                .map(str::to_owned),
            size: sess.total,
            sha256: sess
                .hasher
                .clone()
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            metadata: meta,
            notify_subscribers: sess.notify,
            thumbnail: None,
            deleted: false,
        };
        s.videos.push(VideoRec {
            video,
            created: Utc::now(),
            created_instant: Instant::now(),
            reads: 0,
            script,
        });
        shared
            .counters
            .videos_created
            .fetch_add(1, Ordering::SeqCst);
        created = Some(s.videos.len() - 1);
    }
    if expire_now {
        let now = Instant::now();
        for a in s.access.values_mut() {
            a.expires = now;
        }
    }
    if interrupted {
        drop(s);
        conn.kill.kill();
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    match created {
        Some(idx) => (
            StatusCode::CREATED,
            axum::Json(s.video_json(idx, &["snippet", "status"], true)),
        )
            .into_response(),
        None => range_308(received),
    }
}

async fn thumbnails_set(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
) -> Response {
    shared.hit();
    let mut delay_after = None;
    match take_fault(&shared, "thumbnails.set").await {
        Action::Respond(r) => {
            drain(body, &shared).await;
            return r;
        }
        Action::Drop => {
            conn.kill.kill();
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Action::DelayAfter(d) => delay_after = Some(d),
        Action::Go => {}
    }
    // Read at most one byte past the limit: the image is small, an oversized one is refused.
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    while let Some(Ok(frame)) = stream.next().await {
        size += frame.len() as u64;
    }
    let resp = {
        let mut s = shared.state();
        thumbnail_answer(&mut s, &shared, &headers, &q, size)
    };
    if let Some(d) = delay_after {
        tokio::time::sleep(d).await;
    }
    resp
}

fn thumbnail_answer(
    s: &mut MockState,
    shared: &Shared,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    size: u64,
) -> Response {
    let user = match s.authorize(headers, UPLOAD_SCOPES) {
        Ok(u) => u,
        Err(r) => return r,
    };
    if let Err(r) = s.charge_units(50) {
        return r;
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !matches!(
        ctype.as_str(),
        "image/jpeg" | "image/png" | "application/octet-stream"
    ) {
        return bad_request(
            "mediaBodyRequired",
            "The request does not include the image content.",
        );
    }
    if size == 0 {
        return bad_request(
            "mediaBodyRequired",
            "The request does not include the image content.",
        );
    }
    if size > MAX_THUMBNAIL_BYTES {
        return google_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "uploadTooLarge",
            "global",
            "Media larger than 2097152 bytes is not allowed.",
        );
    }
    let Some(channel) = s.channel_of(&user) else {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "youtubeSignupRequired",
            "youtube.header",
            "Unauthorized",
        );
    };
    let vid = q.get("videoId").cloned().unwrap_or_default();
    let Some(v) = s
        .videos
        .iter_mut()
        .find(|v| v.video.id == vid && !v.video.deleted)
    else {
        return google_error(
            StatusCode::NOT_FOUND,
            "videoNotFound",
            "youtube.thumbnail",
            "The video that you are trying to insert a thumbnail image for cannot be found.",
        );
    };
    if v.video.channel_id != channel.id || !channel.custom_thumbnails {
        return google_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "youtube.thumbnail",
            "The authenticated user doesn't have permissions to upload and set custom video thumbnails.",
        );
    }
    v.video.thumbnail = Some((ctype, size));
    shared.counters.thumbnails.fetch_add(1, Ordering::SeqCst);
    let url = |q: &str| format!("https://i.ytimg.example/vi/{vid}/{q}.jpg");
    axum::Json(json!({
        "kind": "youtube#thumbnailSetResponse",
        "etag": "e",
        "items": [{
            "default": {"url": url("default"), "width": 120, "height": 90},
            "medium": {"url": url("mqdefault"), "width": 320, "height": 180},
            "high": {"url": url("hqdefault"), "width": 480, "height": 360},
        }],
    }))
    .into_response()
}

async fn fallback(State(shared): State<Arc<Shared>>) -> Response {
    shared.hit();
    google_error(
        StatusCode::NOT_FOUND,
        "notFound",
        "global",
        "Not Found (the YouTube mock has no such endpoint)",
    )
}

// ---------------------------------------------------------------------------------------------
// Connections the mock can drop

/// Kills one connection: its reads and writes fail from then on, so the server closes it
/// without an answer.
#[derive(Debug, Clone, Default)]
struct KillSwitch {
    killed: Arc<AtomicBool>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl KillSwitch {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().ok().and_then(|mut w| w.take()) {
            w.wake();
        }
    }

    fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

/// The peer address and the connection's kill switch, handed to handlers as connect info.
#[derive(Debug, Clone)]
struct ConnInfo {
    #[allow(dead_code)]
    peer: SocketAddr,
    kill: KillSwitch,
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

struct KillableListener {
    inner: TcpListener,
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = ConnInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let kill = KillSwitch::default();
                    return (
                        KillableStream {
                            inner: stream,
                            kill: kill.clone(),
                        },
                        ConnInfo { peer, kill },
                    );
                }
                // Out of file descriptors and the like: wait and try again, as axum does.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnInfo {
            peer: self.inner.local_addr()?,
            kill: KillSwitch::default(),
        })
    }
}

struct KillableStream {
    inner: TcpStream,
    kill: KillSwitch,
}

fn killed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection dropped by the mock",
    )
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.kill.is_killed() {
            return Poll::Ready(Err(killed()));
        }
        if let Ok(mut w) = self.kill.waker.lock() {
            *w = Some(cx.waker().clone());
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.kill.is_killed() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.is_killed() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64url_matches_pkce_example() {
        // RFC 7636 appendix B.
        let digest = Sha256::digest(b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            b64url(&digest),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn content_range_parses() {
        assert!(matches!(
            parse_content_range("bytes */10"),
            Some(RangeHeader::Query(10))
        ));
        assert!(matches!(
            parse_content_range("bytes 0-4/10"),
            Some(RangeHeader::Bytes(0, 4, 10))
        ));
        assert!(parse_content_range("bytes 5-4/10").is_none());
        assert!(parse_content_range("bytes 0-10/10").is_none());
    }
}
