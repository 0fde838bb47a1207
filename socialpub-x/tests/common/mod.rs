//! Shared helpers for the X adapter's tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use socialpub_core::auth::{AccessTokens, AccountKey, StaticToken};
use socialpub_core::http::RetryPolicy;
use socialpub_core::media::mp4;
use socialpub_core::{Media, Platform, PublishContext};
use socialpub_x::mock::XMock;
use socialpub_x::{XConfig, XConfigBuilder, XPublisher};
use wiremock::MockServer;

/// Fast retries so fault tests take milliseconds.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_retries(4)
        .with_delays(Duration::from_millis(5), Duration::from_millis(40))
        .with_max_wait(Duration::from_secs(5))
}

/// A config builder for `mock` with fast retries and 64 KiB chunks.
pub fn config(mock: &XMock) -> XConfigBuilder {
    mock.config_builder()
        .retry_policy(fast_retry())
        .chunk_size(64 * 1024)
}

pub fn key(mock: &XMock) -> AccountKey {
    AccountKey::new("tenant", Platform::X, mock.user_id())
}

/// A publisher and a context with a fresh static token for the mock's user.
pub async fn setup() -> (XMock, XPublisher, PublishContext) {
    let mock = XMock::start().await;
    let (publisher, ctx) = publisher_for(&mock, config(&mock));
    (mock, publisher, ctx)
}

pub fn publisher_for(mock: &XMock, config: XConfigBuilder) -> (XPublisher, PublishContext) {
    let publisher = XPublisher::new(config.build().expect("config"));
    let token = mock.issue_token(mock.user_id());
    let tokens: Arc<dyn AccessTokens> = Arc::new(StaticToken(token.access_token));
    (publisher, PublishContext::new(key(mock), tokens))
}

const PNG_HEAD: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 2,
    0, 0, 0, 1, 0x40, 8, 6, 0, 0, 0, 0x1F, 0x15, 0xC4, 0x89,
];

/// Bytes that are `len` long and differ by `seed`.
pub fn filler(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// A 512×320 PNG of about `len` bytes.
pub fn png(len: usize, seed: u8) -> Media {
    let mut data = PNG_HEAD.to_vec();
    data.extend(filler(len.saturating_sub(data.len()), seed));
    Media::from_bytes(Bytes::from(data), Some("image.png"))
}

/// An animated GIF of about `len` bytes.
pub fn gif(len: usize) -> Media {
    let mut data = b"GIF89a\x40\x01\xf0\x00\x00\x00\x00".to_vec();
    data.extend(filler(len.saturating_sub(data.len()), 7));
    Media::from_bytes(Bytes::from(data), Some("anim.gif"))
}

/// An MP4 of `len` bytes lasting `secs` seconds at 1280×720.
pub fn video(len: usize, secs: u64) -> Media {
    let header = mp4::synthetic_header(Duration::from_secs(secs), 1280, 720, 0);
    let mut data = mp4::synthetic_header(
        Duration::from_secs(secs),
        1280,
        720,
        (len - header.len()) as u64,
    );
    let rest = len - data.len();
    data.extend(filler(rest, 3));
    Media::from_bytes(Bytes::from(data), Some("clip.mp4"))
}

/// The SHA-256 of `media`'s bytes, hex.
pub fn sha256(media: &Media) -> String {
    use sha2::Digest;
    let socialpub_core::MediaSource::Bytes { data } = &media.source else {
        panic!("bytes media only");
    };
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Raw requests to the mock, to check it refuses what X refuses.
pub struct Raw {
    pub mock: XMock,
    pub http: reqwest::Client,
    pub token: String,
}

impl Raw {
    pub async fn new() -> Raw {
        let mock = XMock::start().await;
        let token = mock
            .issue_token(mock.user_id())
            .access_token
            .expose_secret()
            .to_owned();
        Raw {
            mock,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            token,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.mock.base_url(), path.trim_start_matches('/'))
    }

    pub async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("send");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn append(&self, id: &str, index: usize, data: Vec<u8>) -> (u16, Value) {
        let form = Form::new()
            .text("segment_index", index.to_string())
            .part("media", Part::bytes(data).file_name("blob"));
        let r = self
            .http
            .post(self.url(&format!("/2/media/upload/{id}/append")))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await
            .expect("send");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn init(&self, media_type: &str, total: u64, category: &str) -> (u16, Value) {
        self.post_json(
            "/2/media/upload/initialize",
            json!({"media_type":media_type,"total_bytes":total,"media_category":category}),
        )
        .await
    }
}

/// Whether `body` is X's invalid-request problem.
pub fn is_invalid_request(body: &Value) -> bool {
    body["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("/problems/invalid-request"))
}

/// Matches a request whose (binary) body holds `0`.
pub struct BodyHas(pub String);

impl wiremock::Match for BodyHas {
    fn matches(&self, request: &wiremock::Request) -> bool {
        let needle = self.0.as_bytes();
        request.body.windows(needle.len()).any(|w| w == needle)
    }
}

/// The media id the wiremock tests' X answers with.
pub const MEDIA_ID: &str = "1880028106020515840";

/// A configuration pointed at a wiremock server standing in for X.
pub fn wire_config(server: &MockServer) -> XConfig {
    XConfig::builder()
        .client_id("client-id")
        .client_secret("client-secret")
        .redirect_uri("http://127.0.0.1/cb")
        .api_base(server.uri())
        .retry_policy(fast_retry())
        .chunk_size(64 * 1024)
        .build()
        .expect("config")
}
