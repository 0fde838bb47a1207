//! Tokens: refresh on an unauthorized answer, reauthorization, expiry warnings, tenant data.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Rig, TENANT, next_event, post, secs};
use async_trait::async_trait;
use secrecy::SecretString;
use socialpub_core::auth::{AccessTokens, AccountKey, MemoryTokenStore, Token};
use socialpub_core::schedule::{DeliveryState, EventKind, RescheduleOutcome, Scheduler};
use socialpub_core::testkit::FakeOutcome;
use socialpub_core::{ErrorKind, Platform, TokenManager};

#[derive(Debug, Default)]
struct CountingTokens {
    refreshes: AtomicUsize,
    fail_refresh: bool,
}

#[async_trait]
impl AccessTokens for CountingTokens {
    async fn access_token(&self, _key: &AccountKey) -> socialpub_core::Result<SecretString> {
        Ok(SecretString::from(format!(
            "token-{}",
            self.refreshes.load(Ordering::SeqCst)
        )))
    }

    async fn refresh_after_rejection(
        &self,
        key: &AccountKey,
        _rejected: &SecretString,
    ) -> socialpub_core::Result<SecretString> {
        if self.fail_refresh {
            return Err(socialpub_core::Error::new(
                ErrorKind::ReauthRequired,
                format!("{key}: the refresh token was revoked"),
            ));
        }
        let n = self.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(SecretString::from(format!("token-{n}")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_refreshes_once_and_retries_once() {
    let rig = Rig::new();
    let tokens = Arc::new(CountingTokens::default());
    rig.fake.script("1", [FakeOutcome::Unauthorized]);
    rig.fake
        .script("2", [FakeOutcome::Unauthorized, FakeOutcome::Unauthorized]);
    let engine = rig.builder_with(tokens.clone()).build();
    let mut events = engine.subscribe();
    let handle = engine.start();
    let ok = engine
        .schedule(TENANT, &post("a", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    let d = rig.wait_state(ok, DeliveryState::Published).await;
    assert_eq!(d.attempt, 1, "the retry is part of the same attempt");
    assert_eq!(tokens.refreshes.load(Ordering::SeqCst), 1);

    let bad = engine
        .schedule(TENANT, &post("b", &["2"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    rig.wait_state(bad, DeliveryState::NeedsReauth).await;
    assert_eq!(
        tokens.refreshes.load(Ordering::SeqCst),
        2,
        "one refresh per publish, never more"
    );
    let e = next_event(&mut events, EventKind::NeedsReauth).await;
    assert_eq!(e.delivery_id, Some(bad));
    assert_eq!(rig.fake.creates(), 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_refresh_token_marks_the_account_for_reauth() {
    let rig = Rig::new();
    let tokens = Arc::new(CountingTokens {
        fail_refresh: true,
        ..CountingTokens::default()
    });
    rig.fake.script("1", [FakeOutcome::Unauthorized]);
    rig.fake
        .script("2", [FakeOutcome::Fail(ErrorKind::ReauthRequired)]);
    let engine = rig.builder_with(tokens).build();
    let mut events = engine.subscribe();
    let handle = engine.start();
    let s = engine
        .schedule(TENANT, &post("a", &["1", "2"]), rig.now())
        .await
        .expect("schedule");
    for id in &s.deliveries {
        let d = rig.wait_state(*id, DeliveryState::NeedsReauth).await;
        assert_eq!(
            d.last_error.as_ref().map(|e| e.kind),
            Some(ErrorKind::ReauthRequired)
        );
    }
    next_event(&mut events, EventKind::NeedsReauth).await;
    // Reconnected: a reschedule sends it again.
    match engine
        .reschedule(TENANT, s.deliveries[1], rig.now())
        .await
        .expect("reschedule")
    {
        RescheduleOutcome::Rescheduled(_) => {}
        other => panic!("needs-reauth reschedules: {other:?}"),
    }
    rig.wait_state(s.deliveries[1], DeliveryState::Published)
        .await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_warnings_and_tenant_data_rights() {
    let rig = Rig::new();
    let tokens = MemoryTokenStore::new();
    let manager = Arc::new(TokenManager::builder(tokens.clone()).build());
    let key = AccountKey::new(TENANT, Platform::X, "1");
    let mut token = Token::new("access").with_refresh_token("refresh");
    token.refresh_expires_at = Some(rig.now() + secs(3 * 86_400));
    manager.connect(&key, &token).await.expect("connect");
    let engine = rig
        .builder_with(manager.clone())
        .token_manager(manager.clone())
        .build();
    let mut events = engine.subscribe();
    let handle = engine.start();
    let id = engine
        .schedule(TENANT, &post("hi", &["1"]), rig.now())
        .await
        .expect("schedule")
        .deliveries[0];
    rig.wait_state(id, DeliveryState::Published).await;
    let e = next_event(&mut events, EventKind::TokenExpiresSoon).await;
    assert_eq!(e.target.account_id, "1");
    assert_eq!(e.next_at, token.refresh_expires_at);

    let export = engine.export_tenant(TENANT).await.expect("export");
    assert_eq!(export["deliveries"].as_array().map(Vec::len), Some(1));
    assert!(
        !export.to_string().contains("refresh"),
        "no token in the export"
    );
    assert_eq!(engine.delete_tenant(TENANT).await.expect("delete"), 1);
    assert!(engine.get(TENANT, id).await.expect("get").is_none());
    use socialpub_core::TokenStore;
    assert!(
        tokens.list(TENANT).await.expect("list").is_empty(),
        "tokens are deleted too"
    );
    handle.shutdown().await;
}
