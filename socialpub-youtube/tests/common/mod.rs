//! Shared set-up for the tests against the mock.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sha2::{Digest, Sha256};
use socialpub_core::auth::{MemoryTokenStore, Token, TokenManager};
use socialpub_core::http::RetryPolicy;
use socialpub_core::media::mp4::synthetic_header;
use socialpub_core::{AccountKey, Media, Platform, Post, PublishContext};
use socialpub_youtube::mock::YouTubeMock;
use socialpub_youtube::{
    CHUNK_GRANULARITY, YouTubeConfigBuilder, YouTubeConnector, YouTubeOptions, YouTubePublisher,
};

/// The chunk size of the tests: the smallest Google allows.
pub const CHUNK: usize = CHUNK_GRANULARITY;

pub struct Env {
    pub mock: Arc<YouTubeMock>,
    pub publisher: YouTubePublisher,
    pub connector: Arc<YouTubeConnector>,
    pub tokens: Arc<TokenManager>,
    pub store: MemoryTokenStore,
    pub account: AccountKey,
    pub access: String,
    pub refresh: String,
    pub dir: tempfile::TempDir,
}

pub fn fast_retries() -> RetryPolicy {
    RetryPolicy::default().with_delays(Duration::from_millis(1), Duration::from_millis(20))
}

pub async fn env() -> Env {
    env_with(|b| b).await
}

pub async fn env_with(adjust: impl FnOnce(YouTubeConfigBuilder) -> YouTubeConfigBuilder) -> Env {
    let mock = Arc::new(YouTubeMock::start().await.expect("mock"));
    let config = adjust(
        mock.config_builder()
            .chunk_size(CHUNK)
            .retry_policy(fast_retries())
            .lookup_settle(Duration::ZERO),
    )
    .build()
    .expect("config");
    let connector = Arc::new(YouTubeConnector::new(&config).expect("connector"));
    let store = MemoryTokenStore::new();
    let tokens = Arc::new(
        TokenManager::builder(store.clone())
            .refresher(connector.clone())
            .build(),
    );
    let account = AccountKey::new("tenant", Platform::YouTube, YouTubeMock::DEFAULT_CHANNEL);
    let (access, refresh) = mock.issue_token(YouTubeMock::DEFAULT_USER);
    tokens
        .connect(
            &account,
            &Token::new(access.clone())
                .with_refresh_token(refresh.clone())
                .with_expires_at(Utc::now() + chrono::Duration::hours(1)),
        )
        .await
        .expect("store token");
    Env {
        mock,
        publisher: YouTubePublisher::new(config),
        connector,
        tokens,
        store,
        account,
        access,
        refresh,
        dir: tempfile::tempdir().expect("tmp"),
    }
}

impl Env {
    pub fn ctx(&self) -> PublishContext {
        PublishContext::new(self.account.clone(), self.tokens.clone())
    }

    /// Writes an MP4 of `len` bytes with a non-repeating payload; returns it probed, and the
    /// SHA-256 of the file.
    pub async fn video(&self, name: &str, len: usize) -> (Media, String) {
        let path = self.path(name);
        let header = synthetic_header(Duration::from_secs(20), 1280, 720, 0);
        let payload = len.saturating_sub(header.len()) as u64;
        let mut data = synthetic_header(Duration::from_secs(20), 1280, 720, payload);
        let mut i: u32 = 0;
        while data.len() < len {
            i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            data.push((i >> 16) as u8);
        }
        data.truncate(len);
        std::fs::write(&path, &data).expect("write video");
        let hash = hex(&Sha256::digest(&data));
        (Media::from_path(&path).await.expect("probe"), hash)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn post(&self, len: usize) -> (Post, String) {
        let (media, hash) = self.video("v.mp4", len).await;
        (
            Post::new("A description")
                .with_title("A video")
                .with_media(media),
            hash,
        )
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn with_options(post: Post, o: &YouTubeOptions) -> Post {
    post.with_options(o).expect("options")
}

/// Runs `fut` until `crashed()` says the mock reached the point of the "crash", then drops it
/// (as a process dying would). Panics if `fut` finishes first.
pub async fn crash_when<F, T>(fut: F, crashed: impl Fn() -> bool)
where
    F: std::future::Future<Output = T>,
    T: std::fmt::Debug,
{
    tokio::pin!(fut);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::select! {
            out = &mut fut => panic!("the publish ended before the crash: {out:?}"),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {
                if crashed() {
                    // Let the request reach the point the mock holds it at.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "the crash point was never reached");
            }
        }
    }
}

/// 256 KiB, the resumable protocol's chunk granule.
pub const K256: usize = 256 * 1024;

/// Raw requests to the mock, to check it refuses what Google refuses.
pub struct Raw {
    pub mock: YouTubeMock,
    pub http: reqwest::Client,
    pub token: String,
}

impl Raw {
    pub async fn new() -> Raw {
        let mock = YouTubeMock::start().await.expect("mock");
        let (token, _) = mock.issue_token(YouTubeMock::DEFAULT_USER);
        Raw {
            mock,
            http: reqwest::Client::new(),
            token,
        }
    }

    pub async fn session(&self, total: usize) -> String {
        let resp = self
            .http
            .post(format!(
                "{}upload/youtube/v3/videos?uploadType=resumable&part=snippet,status",
                self.mock.base_url()
            ))
            .bearer_auth(&self.token)
            .header("X-Upload-Content-Length", total.to_string())
            .header("X-Upload-Content-Type", "video/mp4")
            .json(&serde_json::json!({"snippet": {"title": "t"}, "status": {"privacyStatus": "private"}}))
            .send()
            .await
            .expect("start");
        assert_eq!(resp.status().as_u16(), 200);
        resp.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned()
    }

    pub async fn put(
        &self,
        uri: &str,
        range: &str,
        body: Vec<u8>,
    ) -> (u16, Option<String>, String) {
        // reqwest sends no Content-Length for an empty body; the protocol wants `0`.
        let resp = self
            .http
            .put(uri)
            .bearer_auth(&self.token)
            .header("Content-Range", range)
            .header("Content-Length", body.len().to_string())
            .body(body)
            .send()
            .await
            .expect("put");
        let status = resp.status().as_u16();
        let range = resp
            .headers()
            .get("range")
            .map(|r| r.to_str().expect("ascii").to_owned());
        (status, range, resp.text().await.expect("body"))
    }
}
