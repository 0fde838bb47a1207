//! Core's publisher conformance suite, every fault class, run against the X publisher and its
//! mock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use socialpub_core::Post;
use socialpub_core::testkit::conformance::{PublisherSuite, UploadCase};
use socialpub_x::mock::{CLIENT_SECRET, XMock};
use socialpub_x::{XConnector, XPublisher};

use common::*;

#[tokio::test]
async fn x_publisher_passes_core_conformance() {
    let mock = XMock::start().await;
    let timeout = Duration::from_secs(1);
    let config = config(&mock)
        .request_timeout(timeout)
        .build()
        .expect("config");
    let chunk = config.chunk_size() as u64;
    let file = 300_000;
    PublisherSuite {
        publisher: Arc::new(XPublisher::new(config.clone())),
        refresher: Arc::new(XConnector::new(&config).expect("connector")),
        kit: mock.kit().clone(),
        account: key(&mock),
        token: mock.issue_token(mock.user_id()),
        post: Arc::new(|label| Post::new(format!("conformance: {label}")).with_media(png(2000, 1))),
        invalid_post: Post::new("字".repeat(200)),
        posts: mock.post_counter(),
        commit_endpoint: "tweets.create",
        before_commit_endpoint: Some("media.initialize"),
        upload: Some(UploadCase {
            post: Post::new("conformance: a large image").with_media(png(file, 2)),
            chunk_endpoint: "media.append",
            file_bytes: file as u64,
            chunk_bytes: chunk,
        }),
        request_timeout: timeout,
        secrets: vec![CLIENT_SECRET.to_owned()],
    }
    .run()
    .await;
}
