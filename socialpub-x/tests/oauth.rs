//! Connecting accounts against the mock: PKCE, Basic and public clients, rotation, concurrent
//! refreshes, revocation.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use secrecy::ExposeSecret;
use socialpub_core::auth::{
    ConnectedAccount, Connector, MemoryTokenStore, TokenManager, TokenRefresher, TokenStore,
};
use socialpub_core::testkit::conformance::{assert_debug_hides, assert_error_hides};
use socialpub_core::{ErrorKind, Platform};
use socialpub_x::XConnector;
use socialpub_x::mock::{CLIENT_SECRET, XMock};

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
