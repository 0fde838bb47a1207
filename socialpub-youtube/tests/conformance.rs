//! Core's publisher conformance suite, every fault class, run against the YouTube publisher and
//! its mock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use socialpub_core::auth::Token;
use socialpub_core::media::mp4::synthetic_header;
use socialpub_core::testkit::conformance::{PublisherSuite, UploadCase};
use socialpub_core::{AccountKey, Media, Platform, Post};
use socialpub_youtube::mock::YouTubeMock;
use socialpub_youtube::{YouTubeConnector, YouTubePublisher};

use common::*;

/// A 20-second 1280×720 MP4 of `len` bytes.
fn video(len: usize) -> Media {
    let header = synthetic_header(Duration::from_secs(20), 1280, 720, 0);
    let payload = len.saturating_sub(header.len()) as u64;
    let mut data = synthetic_header(Duration::from_secs(20), 1280, 720, payload);
    data.resize(len, 7);
    Media::from_bytes(Bytes::from(data), Some("clip.mp4"))
}

fn post(title: &str, len: usize) -> Post {
    Post::new("A description")
        .with_title(title)
        .with_media(video(len))
}

#[tokio::test]
async fn youtube_publisher_passes_core_conformance() {
    let mock = YouTubeMock::start().await.expect("mock");
    let timeout = Duration::from_secs(1);
    let config = mock
        .config_builder()
        .chunk_size(CHUNK)
        .retry_policy(fast_retries())
        .lookup_settle(Duration::ZERO)
        .request_timeout(timeout)
        .chunk_timeout(timeout)
        .build()
        .expect("config");
    let (access, refresh) = mock.issue_token(YouTubeMock::DEFAULT_USER);
    let file = 4 * CHUNK + 100;
    PublisherSuite {
        publisher: Arc::new(YouTubePublisher::new(config.clone())),
        refresher: Arc::new(YouTubeConnector::new(&config).expect("connector")),
        kit: mock.kit().clone(),
        account: AccountKey::new("tenant", Platform::YouTube, YouTubeMock::DEFAULT_CHANNEL),
        token: Token::new(access)
            .with_refresh_token(refresh)
            .with_expires_at(Utc::now() + chrono::Duration::hours(1)),
        // One chunk: the request carrying the last byte, the commit, is the only chunk.
        post: Arc::new(|label| post(label, 1000)),
        invalid_post: Post::new("no title").with_media(video(1000)),
        posts: mock.video_counter(),
        commit_endpoint: "upload.chunk",
        before_commit_endpoint: Some("videos.insert"),
        upload: Some(UploadCase {
            post: post("a longer video", file),
            chunk_endpoint: "upload.chunk",
            file_bytes: file as u64,
            chunk_bytes: CHUNK as u64,
        }),
        request_timeout: timeout,
        secrets: vec![YouTubeMock::CLIENT_SECRET.to_owned()],
    }
    .run()
    .await;
}
