//! Connecting a channel, refreshing (the stored refresh token is kept), re-auth and revocation
//! against the mock.

mod common;

use std::collections::HashMap;

use chrono::Utc;
use secrecy::ExposeSecret;
use socialpub_core::auth::{Connector, Token, TokenStore};
use socialpub_core::{ErrorKind, Platform};
use socialpub_youtube::mock::YouTubeMock;
use socialpub_youtube::{SCOPE_READONLY, SCOPE_UPLOAD, YouTubeConnector};

/// Plays the user's browser: follows the authorization URL to the redirect and returns the
/// query of the callback.
async fn consent(url: &url::Url) -> HashMap<String, String> {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = browser.get(url.clone()).send().await.expect("authorize");
    assert_eq!(resp.status().as_u16(), 302, "consent redirects");
    let to = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("location");
    let to = url::Url::parse(to).expect("callback URL");
    assert!(to.as_str().starts_with(YouTubeMock::REDIRECT_URI));
    to.query_pairs().into_owned().collect()
}

#[tokio::test]
async fn connects_a_channel_with_offline_access_and_pkce() {
    let e = common::env().await;
    let req = e.connector.authorize("acme").await.expect("authorize");
    let q: HashMap<String, String> = req.url.query_pairs().into_owned().collect();
    assert_eq!(q["access_type"], "offline");
    assert_eq!(q["prompt"], "consent");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["scope"], format!("{SCOPE_UPLOAD} {SCOPE_READONLY}"));
    assert_eq!(q["state"], req.state);

    let cb = consent(&req.url).await;
    assert_eq!(cb["state"], req.state);
    let mut connected = e
        .connector
        .complete(&cb["code"], &cb["state"])
        .await
        .expect("complete");
    assert_eq!(connected.len(), 1);
    let connected = connected.remove(0);
    assert_eq!(connected.key.tenant, "acme");
    assert_eq!(connected.key.platform, Platform::YouTube);
    assert_eq!(connected.key.account_id, YouTubeMock::DEFAULT_CHANNEL);
    assert_eq!(connected.name, "Mock Channel");
    assert!(
        connected.token.refresh_token.is_some(),
        "offline access gives a refresh token"
    );
    assert!(connected.token.expires_at.is_some());
    assert_eq!(connected.token.scopes, vec![SCOPE_UPLOAD, SCOPE_READONLY]);
    assert_eq!(e.mock.stats().code_exchanges, 1);

    // The state is single use.
    let again = e
        .connector
        .complete(&cb["code"], &cb["state"])
        .await
        .expect_err("reused");
    assert_eq!(again.kind(), ErrorKind::InvalidInput);

    // Re-linking returns a refresh token again (prompt=consent).
    let req = e.connector.authorize("acme").await.expect("authorize");
    let cb = consent(&req.url).await;
    let relinked = e
        .connector
        .complete(&cb["code"], &cb["state"])
        .await
        .expect("relink");
    assert!(relinked[0].token.refresh_token.is_some());
}

#[tokio::test]
async fn an_account_without_a_channel_is_a_clear_error() {
    let e = common::env().await;
    e.mock.add_user_without_channel("no-channel");
    e.mock.set_consenting_user("no-channel");
    let req = e.connector.authorize("acme").await.expect("authorize");
    let cb = consent(&req.url).await;
    let err = e
        .connector
        .complete(&cb["code"], &cb["state"])
        .await
        .expect_err("no channel");
    assert_eq!(err.kind(), ErrorKind::Platform);
    assert_eq!(err.code(), Some("noChannel"));
    assert!(err.message().contains("no YouTube channel"), "{err}");
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_configuration_error() {
    let mock = YouTubeMock::start().await.expect("mock");
    let config = mock
        .config_builder()
        .client_secret("wrong")
        .build()
        .expect("config");
    let connector = YouTubeConnector::new(&config).expect("connector");
    let req = connector.authorize("acme").await.expect("authorize");
    let cb = consent(&req.url).await;
    let err = connector
        .complete(&cb["code"], &cb["state"])
        .await
        .expect_err("bad client");
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    assert!(!format!("{err:?} {err}").contains(YouTubeMock::CLIENT_SECRET));
}

#[tokio::test]
async fn refresh_keeps_the_stored_refresh_token() {
    let e = common::env().await;
    // The access token expired: the manager refreshes through the connector.
    let stale = Token::new(e.access.clone())
        .with_refresh_token(e.refresh.clone())
        .with_expires_at(Utc::now() - chrono::Duration::minutes(1));
    e.store.put(&e.account, &stale).await.expect("put");
    let fresh = e
        .tokens
        .access_token_for(&e.account)
        .await
        .expect("refresh");
    assert_ne!(fresh.expose_secret(), e.access);
    assert_eq!(e.mock.stats().refreshes, 1);
    let stored = e.store.get(&e.account).await.expect("get").expect("token");
    assert_eq!(stored.access_token.expose_secret(), fresh.expose_secret());
    assert_eq!(
        stored
            .refresh_token
            .as_ref()
            .map(|r| r.expose_secret().to_owned()),
        Some(e.refresh.clone()),
        "Google sent no new refresh token: the stored one is kept"
    );
    assert!(stored.expires_at.is_some_and(|t| t > Utc::now()));

    // The new token works: the channel is readable with it.
    let channel = e.connector.discover_channel(&fresh).await.expect("channel");
    assert_eq!(channel.id, YouTubeMock::DEFAULT_CHANNEL);
}

#[tokio::test]
async fn a_dead_refresh_token_needs_reauth() {
    let e = common::env().await;
    e.mock.expire_refresh_tokens();
    let stale = Token::new(e.access.clone())
        .with_refresh_token(e.refresh.clone())
        .with_expires_at(Utc::now() - chrono::Duration::minutes(1));
    e.store.put(&e.account, &stale).await.expect("put");
    let err = e
        .tokens
        .access_token_for(&e.account)
        .await
        .expect_err("invalid_grant");
    assert_eq!(err.kind(), ErrorKind::ReauthRequired, "{err}");
    assert_eq!(err.code(), Some("invalid_grant"));
    assert!(!format!("{err:?} {err}").contains(&e.refresh));
}

#[tokio::test]
async fn disconnect_revokes_the_grant() {
    let e = common::env().await;
    assert!(e.tokens.disconnect(&e.account).await.expect("disconnect"));
    assert_eq!(e.mock.stats().revocations, 1);
    // The grant is gone: its access token no longer works either.
    let token = secrecy::SecretString::from(e.access.clone());
    let err = e
        .connector
        .discover_channel(&token)
        .await
        .expect_err("revoked");
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    // Revoking again is not an error.
    e.connector
        .oauth()
        .revoke_token(&secrecy::SecretString::from(e.refresh.clone()), None)
        .await
        .expect("already revoked is fine");
}
