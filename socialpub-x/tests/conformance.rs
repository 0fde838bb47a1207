//! Core's publisher conformance suite, run against the X publisher and its mock.

mod common;

use std::sync::Arc;

use secrecy::ExposeSecret;
use socialpub_core::Post;
use socialpub_core::auth::StaticToken;
use socialpub_core::testkit::conformance::PublisherSuite;
use socialpub_x::XPublisher;
use socialpub_x::mock::{CLIENT_SECRET, XMock};

use common::*;

#[tokio::test]
async fn x_publisher_passes_core_conformance() {
    let mock = XMock::start().await;
    let publisher = XPublisher::new(config(&mock).build().expect("config"));
    let token = mock.issue_token(mock.user_id());
    let access = token.access_token.expose_secret().to_owned();
    let refresh = token
        .refresh_token
        .as_ref()
        .map(|r| r.expose_secret().to_owned())
        .unwrap_or_default();
    PublisherSuite {
        publisher: Arc::new(publisher),
        account: key(&mock),
        tokens: Arc::new(StaticToken(token.access_token.clone())),
        valid_post: Post::new("conformance: a valid post").with_media(png(2000, 1)),
        invalid_post: Post::new("字".repeat(200)),
        requests: mock.request_counter(),
        creates: mock.kit().log().call_counter("tweets.create"),
        secrets: vec![access, refresh, CLIENT_SECRET.to_owned()],
    }
    .run()
    .await;
    assert_eq!(mock.posts().len(), 1);
}
