//! Token handling end to end: single-flight refresh against a real HTTP token endpoint,
//! refresh-token rotation races, encrypted storage conformance, and secrets kept out of output.

#![cfg(feature = "testkit")]

use std::sync::Arc;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use socialpub_core::auth::oauth::{ClientAuth, OAuthClient, OAuthConfig};
use socialpub_core::auth::{
    AccessTokens, AccountKey, EncryptedTokenStore, EncryptionKey, KeyRing, MemorySealedStore,
    MemoryTokenStore, StaticToken, Token, TokenManager, TokenStore,
};
use socialpub_core::http::{ApiClient, GenericDialect};
use socialpub_core::testkit::conformance::{
    assert_debug_hides, assert_error_hides, token_store_suite,
};
use socialpub_core::{Error, ErrorKind, Platform, PublishContext};
use url::Url;
use wiremock::matchers::{body_string_contains, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CLIENT_SECRET: &str = "client-SECRET-value";

fn oauth(server: &MockServer) -> OAuthClient {
    let config = OAuthConfig::new(
        Platform::X,
        "client-id",
        Url::parse(&format!("{}/authorize", server.uri())).expect("url"),
        Url::parse(&format!("{}/token", server.uri())).expect("url"),
        Url::parse("http://127.0.0.1:9/callback").expect("url"),
    )
    .with_client_secret(SecretString::from(CLIENT_SECRET))
    .with_client_auth(ClientAuth::BasicHeader)
    .with_revoke_url(Url::parse(&format!("{}/revoke", server.uri())).expect("url"));
    OAuthClient::new(
        config,
        ApiClient::new(GenericDialect(Platform::X), reqwest::Client::new()),
    )
}

fn key() -> AccountKey {
    AccountKey::new("acme", Platform::X, "42")
}

fn expired(refresh: &str) -> Token {
    Token::new("expired-ACCESS")
        .with_refresh_token(refresh)
        .with_expires_at(Utc::now() - chrono::Duration::minutes(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_callers_cause_exactly_one_refresh() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header_exists("authorization"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(std::time::Duration::from_millis(50))
                .set_body_json(serde_json::json!({
                    "token_type": "bearer",
                    "access_token": "fresh-ACCESS",
                    "refresh_token": "rotated-REFRESH",
                    "expires_in": 7200,
                    "scope": "tweet.read tweet.write"
                })),
        )
        .expect(1)
        .mount(&server)
        .await;

    let store = MemoryTokenStore::new();
    store
        .put(&key(), &expired("old-REFRESH"))
        .await
        .expect("put");
    let manager = Arc::new(
        TokenManager::builder(store.clone())
            .refresher(Arc::new(oauth(&server)))
            .build(),
    );
    let mut tasks = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let m = manager.clone();
        tasks.push(tokio::spawn(
            async move { m.access_token_for(&key()).await },
        ));
    }
    for t in tasks {
        let token = t.await.expect("join").expect("token");
        assert_eq!(token.expose_secret(), "fresh-ACCESS");
    }
    let received = server.received_requests().await.expect("recording");
    assert_eq!(received.len(), 1, "exactly one refresh request");
    let stored = store.get(&key()).await.expect("get").expect("token");
    assert_eq!(
        stored.refresh_token.expect("rotated").expose_secret(),
        "rotated-REFRESH",
        "the rotated refresh token is stored"
    );
    server.verify().await;
}

#[tokio::test]
async fn a_refresh_that_lost_a_rotation_race_uses_the_stored_token() {
    let server = MockServer::start().await;
    // The spent refresh token gets invalid_grant, slowly, so that another process's rotation
    // lands in the store while this request is in flight.
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("refresh_token=spent"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_delay(std::time::Duration::from_millis(300))
                .set_body_json(serde_json::json!({
                    "error": "invalid_grant",
                    "error_description": "Value passed for the token was invalid."
                })),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("refresh_token=rotated-by-B"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "after-race",
            "refresh_token": "rotated-again",
            "expires_in": 7200
        })))
        .expect(1)
        .mount(&server)
        .await;

    let store = MemoryTokenStore::new();
    store.put(&key(), &expired("spent")).await.expect("put");
    let manager = TokenManager::builder(store.clone())
        .refresher(Arc::new(oauth(&server)))
        .build();
    let other_process = {
        let store = store.clone();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            // B rotated "spent" into "rotated-by-B"; its access token has expired since.
            store.put(&key(), &expired("rotated-by-B")).await
        }
    };
    let account = key();
    let (token, written) = tokio::join!(manager.access_token_for(&account), other_process);
    written.expect("B stores");
    assert_eq!(
        token
            .expect("the account survives the race")
            .expose_secret(),
        "after-race"
    );
    let stored = store.get(&key()).await.expect("get").expect("token");
    assert_eq!(
        stored.refresh_token.expect("kept").expose_secret(),
        "rotated-again"
    );
    server.verify().await;
}

#[tokio::test]
async fn invalid_grant_is_reauth_required_and_keeps_secrets_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(400).set_body_string(
            r#"{"error":"invalid_grant","error_description":"bad token old-REFRESH","access_token":"leaked-ACCESS"}"#,
        ))
        .mount(&server)
        .await;
    let store = MemoryTokenStore::new();
    store
        .put(&key(), &expired("old-REFRESH"))
        .await
        .expect("put");
    let manager = TokenManager::builder(store)
        .refresher(Arc::new(oauth(&server)))
        .build();
    let err = manager.access_token_for(&key()).await.expect_err("reauth");
    assert_eq!(err.kind(), ErrorKind::ReauthRequired);
    assert_eq!(err.code(), Some("invalid_grant"));
    assert_error_hides(&err, &["leaked-ACCESS", CLIENT_SECRET]);
}

#[tokio::test]
async fn exchange_sends_pkce_verifier_and_basic_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header_exists("authorization"))
        .and(body_string_contains("grant_type=authorization_code"))
        .and(body_string_contains("code_verifier="))
        .and(body_string_contains("code=the-code"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "new-ACCESS",
            "refresh_token": "new-REFRESH",
            "expires_in": 7200,
            "scope": "tweet.read users.read"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = oauth(&server);
    let req = client.authorize("acme").await.expect("authorize");
    let done = client
        .complete("the-code", &req.state)
        .await
        .expect("complete");
    assert_eq!(done.tenant, "acme");
    assert_eq!(done.token.scopes, vec!["tweet.read", "users.read"]);
    // A state works once.
    let again = client
        .complete("the-code", &req.state)
        .await
        .expect_err("spent");
    assert_eq!(again.kind(), ErrorKind::InvalidInput);
    server.verify().await;
}

#[tokio::test]
async fn token_stores_pass_the_suite() {
    token_store_suite(&MemoryTokenStore::new()).await;
    let ring = KeyRing::new("k1", EncryptionKey::generate());
    token_store_suite(&EncryptedTokenStore::new(MemorySealedStore::new(), ring)).await;
}

#[tokio::test]
async fn no_public_type_shows_a_secret() {
    let secrets = [
        "access-SECRET",
        "refresh-SECRET",
        CLIENT_SECRET,
        "verifier-SECRET",
    ];
    let token = Token::new("access-SECRET").with_refresh_token("refresh-SECRET");
    assert_debug_hides(&token, &secrets);

    let key_material = EncryptionKey::generate();
    let b64 = key_material.to_base64();
    let ring = KeyRing::new("k1", key_material.clone());
    assert_debug_hides(&key_material, &[b64.as_str()]);
    assert_debug_hides(&ring, &[b64.as_str()]);
    let sealed_store = MemorySealedStore::new();
    let enc = EncryptedTokenStore::new(sealed_store.clone(), ring);
    enc.put(&key(), &token).await.expect("put");
    assert_debug_hides(&enc, &[b64.as_str()]);
    let sealed = socialpub_core::auth::SealedTokenStore::get_sealed(&sealed_store, &key())
        .await
        .expect("get")
        .expect("sealed");
    assert_debug_hides(&sealed, &secrets);

    let server = MockServer::start().await;
    let client = oauth(&server);
    assert_debug_hides(&client, &secrets);
    assert_debug_hides(client.config(), &secrets);

    let manager = TokenManager::builder(MemoryTokenStore::new())
        .refresher(Arc::new(client))
        .build();
    assert_debug_hides(&manager, &secrets);

    let static_token = StaticToken(SecretString::from("access-SECRET"));
    assert_debug_hides(&static_token, &secrets);
    let tokens: Arc<dyn AccessTokens> = Arc::new(static_token);
    let ctx = PublishContext::new(key(), tokens);
    assert_debug_hides(&ctx, &secrets);

    let err = Error::new(ErrorKind::Platform, "refused")
        .with_body(r#"{"access_token":"access-SECRET","refresh_token":"refresh-SECRET","client_secret":"client-SECRET-value"}"#)
        .with_source(std::io::Error::other(
            "GET https://api/x?access_token=access-SECRET failed",
        ));
    assert_debug_hides(&err, &secrets);
    assert_display_hides_error(&err, &secrets);
}

fn assert_display_hides_error(err: &Error, secrets: &[&str]) {
    socialpub_core::testkit::conformance::assert_display_hides(err, secrets);
}
