//! The everyday commands against the mocks: schedule with media and a target, cancel, publish
//! now, status, export, disconnect (revoked at the platform).

use std::time::Duration;

use socialpub_core::auth::EncryptionKey;
use socialpub_core::schedule::{DeliveryState, Scheduler};
use socialpub_core::{Platform, TokenStore};
use socialpub_examples::app::App;
use socialpub_examples::commands::{self, PostArgs};
use socialpub_examples::config::Config;
use socialpub_examples::demo::connect_through_mock;
use socialpub_examples::platforms::{Endpoints, Platforms, credentials};
use socialpub_examples::samples;
use socialpub_x::mock::{self, XMock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_cancel_post_status_export_disconnect() {
    let x = XMock::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let store = format!("sqlite://{}", dir.path().join("cli.db").display());
    let key = EncryptionKey::generate().to_base64().as_str().to_owned();
    let config = Config::from_toml("", |name| match name {
        "SOCIALPUB_TENANT" => Some("acme".to_owned()),
        "SOCIALPUB_STORE_URL" => Some(store.clone()),
        "SOCIALPUB_ENCRYPTION_KEY" => Some(key.clone()),
        _ => None,
    })
    .expect("config");
    let platforms = Platforms::from_config(&config, reqwest::Client::new())
        .expect("platforms")
        .with_platform(
            Platform::X,
            credentials(mock::CLIENT_ID, Some(mock::CLIENT_SECRET)),
            Endpoints::x_mock(&x),
        );
    let app = App::open(&config, platforms).await.expect("app");
    let account = connect_through_mock(&app, None, Platform::X, mock::REDIRECT_URI)
        .await
        .expect("connect");

    // An unknown target is refused with a hint.
    let image = dir.path().join("a.png");
    std::fs::write(&image, samples::png(32, 32, [0, 0, 0], [255, 255, 255])).expect("png");
    let args = |text: &str, to: &str| PostArgs {
        text: text.to_owned(),
        title: None,
        media: vec![image.clone()],
        alt: vec!["black to white".to_owned()],
        thread: vec![],
        to: vec![to.to_owned()],
    };
    let err = args("nowhere", "youtube")
        .to_post(&app)
        .await
        .expect_err("no youtube account");
    assert!(err.message().contains("socialpub connect youtube"), "{err}");

    // Schedule one for later and cancel it: it is never sent.
    let later = args(
        "Scheduled, then cancelled",
        &format!("x:{}", account.account_id),
    )
    .to_post(&app)
    .await
    .expect("post");
    assert_eq!(later.media[0].alt_text.as_deref(), Some("black to white"));
    let at = commands::parse_time("+1h", chrono::Utc::now()).expect("time");
    let ids = commands::schedule(&app, &later, at)
        .await
        .expect("schedule");
    assert!(commands::cancel(&app, ids[0]).await.expect("cancel"));

    // Publish one now: the workers run until it settles.
    let now = args("Published now", "x")
        .to_post(&app)
        .await
        .expect("post");
    assert!(commands::post_now(&app, &now).await.expect("post now"));
    let posts = x.posts();
    assert_eq!(posts.len(), 1, "only the published post reached X");
    assert_eq!(posts[0].text, "Published now");
    assert_eq!(posts[0].media_ids.len(), 1);
    let cancelled = app
        .engine
        .get("acme", ids[0])
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(cancelled.state, DeliveryState::Cancelled);

    commands::status(&app, None, &[]).await.expect("status");
    commands::status(&app, Some(ids[0]), &[])
        .await
        .expect("one");
    commands::export(&app, "acme").await.expect("export");
    commands::purge(&app, Duration::from_secs(3600))
        .await
        .expect("purge");

    // Disconnect revokes at X and deletes the token here.
    commands::disconnect(&app, Platform::X, &account.account_id)
        .await
        .expect("disconnect");
    assert!(
        app.tokens
            .store()
            .list("acme")
            .await
            .expect("list")
            .is_empty()
    );
    assert!(x.calls("oauth.revoke") >= 1);
    app.store.close().await;
}
