//! Exact wire shapes against wiremock, written from X's docs rather than from the mock.

mod common;

use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use socialpub_core::auth::{
    AccountKey, MemoryTokenStore, StaticToken, Token, TokenManager, TokenStore,
};
use socialpub_core::{ErrorKind, Platform, Post, PublishContext, Publisher};
use socialpub_x::{XConfig, XConnector, XPublisher};
use wiremock::matchers::{
    body_json, body_string_contains, header, header_regex, method, path, query_param,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::*;

/// Matches a request whose (binary) body holds `0`.
struct BodyHas(String);

impl wiremock::Match for BodyHas {
    fn matches(&self, request: &wiremock::Request) -> bool {
        let needle = self.0.as_bytes();
        request.body.windows(needle.len()).any(|w| w == needle)
    }
}

const MEDIA_ID: &str = "1880028106020515840";

fn config(server: &MockServer) -> XConfig {
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

#[tokio::test]
async fn video_upload_and_post_wire_format() {
    let server = MockServer::start().await;
    let clip = video(150_000, 8);
    let total = clip.size.expect("size");
    Mock::given(method("POST"))
        .and(path("/2/media/upload/initialize"))
        .and(header("authorization", "Bearer user-token"))
        .and(body_json(json!({
            "media_type": "video/mp4",
            "total_bytes": total,
            "media_category": "tweet_video"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data":{
            "id": MEDIA_ID, "media_key": format!("7_{MEDIA_ID}"), "expires_after_secs": 1_295_999
        }})))
        .expect(1)
        .mount(&server)
        .await;
    for segment in 0..3 {
        Mock::given(method("POST"))
            .and(path(format!("/2/media/upload/{MEDIA_ID}/append")))
            .and(header_regex(
                "content-type",
                "^multipart/form-data; boundary=",
            ))
            .and(BodyHas(format!(
                "name=\"segment_index\"\r\n\r\n{segment}\r\n"
            )))
            .and(BodyHas("name=\"media\"".to_owned()))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"data":{"expires_at":1_737_000_000}})),
            )
            .expect(1)
            .mount(&server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path(format!("/2/media/upload/{MEDIA_ID}/finalize")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data":{
            "id": MEDIA_ID, "media_key": format!("7_{MEDIA_ID}"), "size": total,
            "expires_after_secs": 86_400,
            "processing_info": {"state": "pending", "check_after_secs": 1}
        }})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/2/media/upload"))
        .and(query_param("command", "STATUS"))
        .and(query_param("media_id", MEDIA_ID))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data":{
            "id": MEDIA_ID, "media_key": format!("7_{MEDIA_ID}"),
            "processing_info": {"state": "succeeded", "progress_percent": 100}
        }})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/2/tweets"))
        .and(body_json(
            json!({"text":"clip","media":{"media_ids":[MEDIA_ID]}}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"data":{
            "id":"1445880548472328192","text":"clip https://t.co/x",
            "edit_history_tweet_ids":["1445880548472328192"]
        }})))
        .expect(1)
        .mount(&server)
        .await;

    let publisher = XPublisher::new(config(&server));
    let tokens = Arc::new(StaticToken(secrecy::SecretString::from("user-token")));
    let mut ctx = PublishContext::new(AccountKey::new("t", Platform::X, "2244994945"), tokens);
    let receipt = publisher
        .publish(&mut ctx, &Post::new("clip").with_media(clip))
        .await
        .expect("published");
    assert_eq!(receipt.remote_id, "1445880548472328192");
    assert_eq!(
        receipt.url.as_deref(),
        Some("https://x.com/i/status/1445880548472328192")
    );
}

#[tokio::test]
async fn invalid_grant_is_reauth_required() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2/oauth2/token"))
        .and(header_regex("authorization", "^Basic "))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant",
            "error_description": "The refresh token was revoked."
        })))
        .expect(1)
        .mount(&server)
        .await;
    let connector = Arc::new(XConnector::new(&config(&server)).expect("connector"));
    let store = MemoryTokenStore::new();
    let key = AccountKey::new("t", Platform::X, "42");
    store
        .put(
            &key,
            &Token::new("old-access")
                .with_refresh_token("old-refresh")
                .with_expires_at(Utc::now() - chrono::Duration::minutes(5)),
        )
        .await
        .expect("put");
    let manager = TokenManager::builder(store)
        .refresher(connector.clone())
        .build();
    let e = manager.access_token_for(&key).await.expect_err("reauth");
    assert_eq!(e.kind(), ErrorKind::ReauthRequired, "{e}");
    assert!(!format!("{e:?}").contains("old-refresh"));
}

#[tokio::test]
async fn legacy_rate_limit_shape_on_status_waits_then_reads() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/2/tweets/7"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(json!({"errors":[{"code":88,"message":"Rate limit exceeded"}]})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/2/tweets/7"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data":{"id":"7","text":"hi"}})),
        )
        .mount(&server)
        .await;
    let publisher = XPublisher::new(config(&server));
    let ctx = PublishContext::new(
        AccountKey::new("t", Platform::X, "1"),
        Arc::new(StaticToken(secrecy::SecretString::from("tok"))),
    );
    let started = std::time::Instant::now();
    let receipt = socialpub_core::Receipt::new(Platform::X, "7", None);
    let status = publisher.status(&ctx, &receipt).await.expect("status");
    assert_eq!(status.state, socialpub_core::RemoteState::Published);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
}
