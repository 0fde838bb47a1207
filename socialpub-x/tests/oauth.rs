//! Connecting accounts against the mock and a wire-exact fake: PKCE, Basic and public clients,
//! rotation, concurrent refreshes, revocation, and the OAuth rules the mock enforces.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use socialpub_core::auth::{
    AccountKey, ConnectedAccount, Connector, MemoryTokenStore, Token, TokenManager, TokenRefresher,
    TokenStore,
};
use socialpub_core::testkit::conformance::{assert_debug_hides, assert_error_hides};
use socialpub_core::{ErrorKind, Platform};
use socialpub_x::XConnector;
use socialpub_x::mock::{CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, XMock};
use wiremock::matchers::{body_string_contains, header_regex, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::*;

/// Follows the authorization URL like a browser whose user approves, and returns the callback's
/// query.
async fn approve(url: &url::Url) -> HashMap<String, String> {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = browser
        .get(url.clone())
        .send()
        .await
        .expect("authorize page");
    assert_eq!(resp.status().as_u16(), 302, "{:?}", resp.text().await);
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("redirect");
    url::Url::parse(location)
        .expect("callback URL")
        .query_pairs()
        .into_owned()
        .collect()
}

async fn connect(mock: &XMock, connector: &XConnector) -> ConnectedAccount {
    let request = connector.authorize("tenant").await.expect("authorize");
    let q: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
    assert_eq!(
        q["scope"],
        "tweet.read tweet.write users.read offline.access media.write"
    );
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(
        request
            .url
            .as_str()
            .starts_with(&format!("{}i/oauth2/authorize", mock.base_url()))
    );
    let back = approve(&request.url).await;
    assert_eq!(back["state"], request.state);
    let mut accounts = connector
        .complete(&back["code"], &back["state"])
        .await
        .expect("connected");
    assert_eq!(accounts.len(), 1);
    accounts.remove(0)
}

#[tokio::test]
async fn confidential_client_connects_with_pkce_and_basic() {
    let mock = XMock::start().await;
    let config = config(&mock).build().expect("config");
    let connector = Arc::new(XConnector::new(&config).expect("connector"));
    let connected = connect(&mock, &connector).await;
    assert_eq!(connected.key.platform, Platform::X);
    assert_eq!(connected.key.account_id, mock.user_id());
    assert_eq!(connected.key.tenant, "tenant");
    assert_eq!(connected.username.as_deref(), Some("socialpub_test"));
    assert_eq!(connected.name, "@socialpub_test");
    assert!(connected.token.refresh_token.is_some());
    assert!(connected.token.expires_at.is_some_and(|t| t > Utc::now()));
    assert_eq!(connected.token.scopes.len(), 5);
    assert_eq!(mock.calls("users.me"), 1);
    let access = connected.token.access_token.expose_secret().to_owned();
    assert_debug_hides(&connected, &[&access, CLIENT_SECRET]);
    assert_debug_hides(&connector, &[CLIENT_SECRET]);

    // The code worked once.
    let request = connector.authorize("tenant").await.expect("authorize");
    let back = approve(&request.url).await;
    connector
        .complete(&back["code"], &back["state"])
        .await
        .expect("first");
    let request2 = connector.authorize("tenant").await.expect("authorize");
    let e = connector
        .complete(&back["code"], &request2.state)
        .await
        .expect_err("a code works once");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_error_hides(&e, &[&back["code"], CLIENT_SECRET]);
}

#[tokio::test]
async fn public_client_sends_its_id_in_the_form() {
    let mock = XMock::builder().public_client("public-app").start().await;
    let config = mock.config_builder().build().expect("config");
    let connector = Arc::new(XConnector::new(&config).expect("connector"));
    let connected = connect(&mock, &connector).await;
    assert_eq!(connected.key.account_id, mock.user_id());
}

#[tokio::test]
async fn a_wrong_secret_is_a_configuration_error() {
    let mock = XMock::start().await;
    let config = config(&mock)
        .client_secret("not-the-secret")
        .build()
        .expect("config");
    let connector = Arc::new(XConnector::new(&config).expect("connector"));
    let request = connector.authorize("tenant").await.expect("authorize");
    let back = approve(&request.url).await;
    let e = connector
        .complete(&back["code"], &back["state"])
        .await
        .expect_err("bad secret");
    assert_eq!(e.kind(), ErrorKind::Configuration, "{e}");
    assert_error_hides(&e, &["not-the-secret"]);
    // Without a redirect URI there is nothing to connect with.
    let no_redirect = socialpub_x::XConfig::builder()
        .client_id("id")
        .build()
        .expect("config");
    assert_eq!(
        XConnector::new(&no_redirect)
            .expect_err("no redirect")
            .kind(),
        ErrorKind::Configuration
    );
}

#[tokio::test]
async fn refresh_rotates_and_the_old_refresh_token_stops_working() {
    let mock = XMock::start().await;
    let connector =
        Arc::new(XConnector::new(&config(&mock).build().expect("config")).expect("connector"));
    let connected = connect(&mock, &connector).await;
    let refresher = connector.clone();
    let fresh = refresher
        .refresh(&connected.key, &connected.token)
        .await
        .expect("refreshed");
    let old = connected
        .token
        .refresh_token
        .as_ref()
        .expect("old")
        .expose_secret();
    let new = fresh
        .refresh_token
        .as_ref()
        .expect("rotated")
        .expose_secret();
    assert_ne!(old, new);
    let e = refresher
        .refresh(&connected.key, &connected.token)
        .await
        .expect_err("spent");
    assert_eq!(e.kind(), ErrorKind::ReauthRequired, "{e}");
    assert_error_hides(&e, &[old, new]);
}

#[tokio::test]
async fn concurrent_refreshes_make_one_request() {
    let mock = XMock::start().await;
    let connector =
        Arc::new(XConnector::new(&config(&mock).build().expect("config")).expect("connector"));
    let connected = connect(&mock, &connector).await;
    let store = MemoryTokenStore::new();
    let mut token = connected.token.clone();
    token.expires_at = Some(Utc::now() - chrono::Duration::minutes(1));
    store.put(&connected.key, &token).await.expect("put");
    let manager = Arc::new(
        TokenManager::builder(store.clone())
            .refresher(connector.clone())
            .build(),
    );
    let (a, b) = tokio::join!(
        manager.access_token_for(&connected.key),
        manager.access_token_for(&connected.key)
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a.expose_secret(), b.expose_secret());
    assert_eq!(mock.refreshes(), 1, "one refresh for two callers");
    let stored = store
        .get(&connected.key)
        .await
        .expect("get")
        .expect("token");
    assert_eq!(stored.access_token.expose_secret(), a.expose_secret());
    assert_ne!(
        stored.refresh_token.as_ref().expect("rt").expose_secret(),
        token.refresh_token.as_ref().expect("rt").expose_secret(),
        "the rotated refresh token was stored"
    );
}

#[tokio::test]
async fn two_processes_racing_keep_the_account() {
    // Two managers (two processes) over one store: both see an expired token and refresh with
    // the same refresh token. X accepts one; the loser re-reads the store instead of failing.
    let mock = XMock::start().await;
    let connector =
        Arc::new(XConnector::new(&config(&mock).build().expect("config")).expect("connector"));
    let connected = connect(&mock, &connector).await;
    let store = Arc::new(MemoryTokenStore::new());
    let mut token = connected.token.clone();
    token.expires_at = Some(Utc::now() - chrono::Duration::minutes(1));
    store.put(&connected.key, &token).await.expect("put");
    let m1 = TokenManager::builder_arc(store.clone())
        .refresher(connector.clone())
        .build();
    let m2 = TokenManager::builder_arc(store.clone())
        .refresher(connector.clone())
        .build();
    let (a, b) = tokio::join!(
        m1.access_token_for(&connected.key),
        m2.access_token_for(&connected.key)
    );
    let (a, b) = (a.expect("first process"), b.expect("second process"));
    let stored = store
        .get(&connected.key)
        .await
        .expect("get")
        .expect("token");
    // Whatever the interleaving, the account still works with what is stored.
    assert!([a.expose_secret(), b.expose_secret()].contains(&stored.access_token.expose_secret()));
    let refresher = connector.clone();
    refresher
        .refresh(&connected.key, &stored)
        .await
        .expect("the stored refresh token is live");
}

#[tokio::test]
async fn disconnect_revokes_the_grant() {
    let mock = XMock::start().await;
    let config = config(&mock).build().expect("config");
    let connector = Arc::new(XConnector::new(&config).expect("connector"));
    let connected = connect(&mock, &connector).await;
    let store = MemoryTokenStore::new();
    let manager = TokenManager::builder(store.clone())
        .refresher(connector.clone())
        .build();
    manager
        .connect(&connected.key, &connected.token)
        .await
        .expect("stored");
    assert!(
        manager
            .disconnect(&connected.key)
            .await
            .expect("disconnected")
    );
    assert_eq!(mock.calls("oauth.revoke"), 1);
    // The grant is gone at X: both tokens fail.
    let e = connector
        .refresh(&connected.key, &connected.token)
        .await
        .expect_err("revoked");
    assert_eq!(e.kind(), ErrorKind::ReauthRequired);
    let (publisher, _) = publisher_for(&mock, common::config(&mock));
    let ctx = socialpub_core::PublishContext::new(
        connected.key.clone(),
        Arc::new(socialpub_core::auth::StaticToken(
            connected.token.access_token.clone(),
        )),
    );
    let e = socialpub_core::Publisher::status(
        &publisher,
        &ctx,
        &socialpub_core::Receipt::new(Platform::X, "1", None),
    )
    .await
    .expect_err("revoked access token");
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    // Revoking directly works too.
    let other = mock.issue_token(mock.user_id());
    connector
        .revoke(&connected.key, &other)
        .await
        .expect("revoked");
}

#[tokio::test]
async fn oauth_is_strict() {
    let raw = Raw::new().await;
    let authorize = |method: &str, scope: &str, redirect: &str| {
        let mut url = raw.mock.base_url().join("i/oauth2/authorize").expect("url");
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", CLIENT_ID)
            .append_pair("redirect_uri", redirect)
            .append_pair("scope", scope)
            .append_pair("state", "s")
            .append_pair("code_challenge", &"a".repeat(43))
            .append_pair("code_challenge_method", method);
        raw.http.get(url).send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(
            authorize("plain", "tweet.read", REDIRECT_URI)
                .await
                .expect("send")
        ),
        400
    );
    assert_eq!(
        status(
            authorize("S256", "tweet.read,users.read", REDIRECT_URI)
                .await
                .expect("send")
        ),
        400,
        "scopes are space-separated"
    );
    assert_eq!(
        status(
            authorize("S256", "tweet.read", "http://elsewhere/cb")
                .await
                .expect("send")
        ),
        400,
        "the redirect must be registered"
    );
    let r = authorize("S256", "tweet.read", REDIRECT_URI)
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 302);
    let location =
        url::Url::parse(r.headers()["location"].to_str().expect("location")).expect("url");
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code");

    let token_url = raw.url("/2/oauth2/token");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", "the-wrong-verifier"),
    ];
    // No Basic header; a secret in the body; then the wrong verifier.
    let r = raw
        .http
        .post(&token_url)
        .form(&form)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let mut with_secret = form.to_vec();
    with_secret.push(("client_secret", CLIENT_SECRET));
    let r = raw
        .http
        .post(&token_url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&with_secret)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401, "X refuses a secret in the body");
    let r = raw
        .http
        .post(&token_url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&form)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"], "invalid_request");
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
    let connector = Arc::new(XConnector::new(&wire_config(&server)).expect("connector"));
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
