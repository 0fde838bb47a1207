//! The everyday commands against the mocks: schedule with media and a target, cancel, publish
//! now, status, export, disconnect (revoked at the platform, or said why not), retry, and the
//! checks made when a post is scheduled.

use std::time::Duration;

use socialpub_core::auth::{AccountKey, EncryptionKey, Token};
use socialpub_core::schedule::{DeliveryState, Scheduler};
use socialpub_core::{MediaSource, Platform, Post, Target, TokenStore};
use socialpub_examples::app::App;
use socialpub_examples::commands::{self, PostArgs};
use socialpub_examples::config::Config;
use socialpub_examples::demo::connect_through_mock;
use socialpub_examples::platforms::{Endpoints, Platforms, credentials};
use socialpub_examples::progress::Lines;
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
    assert!(
        commands::post_now(&app, &now, &Lines::new())
            .await
            .expect("post now")
    );
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

    commands::status(&app, None, &[], false)
        .await
        .expect("status");
    commands::status(&app, None, &[], true)
        .await
        .expect("status as JSON");
    let prefix = ids[0].to_string()[..20].to_owned();
    commands::status(&app, Some(&prefix), &[], false)
        .await
        .expect("one, by a prefix of its id");
    commands::export(&app, "acme").await.expect("export");
    commands::purge(&app, Duration::from_secs(3600))
        .await
        .expect("purge");

    // Disconnect revokes at X and deletes the token here.
    assert_eq!(
        commands::disconnect(&app, Platform::X, &account.account_id, false)
            .await
            .expect("disconnect"),
        commands::Disconnected::Revoked
    );
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

/// An app on a new SQLite store in `dir` with the X mock as its only platform, and the mock's
/// account connected.
async fn x_only(dir: &tempfile::TempDir, x: &XMock) -> (App, AccountKey) {
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
            Endpoints::x_mock(x),
        );
    let app = App::open(&config, platforms).await.expect("app");
    let account = connect_through_mock(&app, None, Platform::X, mock::REDIRECT_URI)
        .await
        .expect("connect");
    (app, account)
}

fn text_post(text: &str, to: &str) -> PostArgs {
    PostArgs {
        text: text.to_owned(),
        title: None,
        media: vec![],
        alt: vec![],
        thread: vec![],
        to: vec![to.to_owned()],
    }
}

/// A YouTube account connected earlier (its token is in the store), while this configuration
/// has no YouTube credentials.
async fn youtube_token_without_credentials(app: &App) -> AccountKey {
    let key = AccountKey::new("acme", Platform::YouTube, "UCchannel");
    app.tokens
        .connect(&key, &Token::new("access").with_refresh_token("refresh"))
        .await
        .expect("store a token");
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_without_credentials_is_refused_up_front_and_never_failed_at_run_time() {
    let x = XMock::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let (app, _) = x_only(&dir, &x).await;
    let youtube = youtube_token_without_credentials(&app).await;

    // Scheduling for it says what to set.
    let mut args = text_post("a video", "youtube");
    args.title = Some("A title".to_owned());
    let err = args.to_post(&app).await.expect_err("no YouTube publisher");
    assert!(
        err.message().contains("SOCIALPUB_YOUTUBE_CLIENT_ID"),
        "{err}"
    );

    // A delivery for it scheduled elsewhere (by a process that had YouTube) stays waiting
    // while this process publishes what it can.
    let waiting = app
        .engine
        .schedule(
            "acme",
            &Post::new("from elsewhere")
                .with_title("A title")
                .with_target(Target::new(Platform::YouTube, youtube.account_id.clone())),
            chrono::Utc::now(),
        )
        .await
        .expect("schedule")
        .deliveries[0];
    let now = text_post("published meanwhile", "x")
        .to_post(&app)
        .await
        .expect("post");
    assert!(
        commands::post_now(&app, &now, &Lines::new())
            .await
            .expect("post now")
    );
    let d = app
        .engine
        .get("acme", waiting)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(d.state, DeliveryState::Scheduled, "{:?}", d.last_error);
    assert_eq!(d.attempt, 0);
    app.store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_paths_are_stored_absolute_and_checked_by_content() {
    let x = XMock::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let (app, _) = x_only(&dir, &x).await;
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    std::fs::write(
        dir.path().join("a.png"),
        samples::png(8, 8, [0, 0, 0], [9, 9, 9]),
    )
    .expect("png");
    let canonical = std::fs::canonicalize(dir.path().join("a.png")).expect("canonical");

    // A relative path is resolved against the working directory, and kept whole.
    assert_eq!(
        commands::resolve_media(std::path::Path::new("a.png"), dir.path()).expect("resolve"),
        canonical
    );
    let err = commands::resolve_media(std::path::Path::new("missing.png"), dir.path())
        .expect_err("no such file");
    assert!(
        err.message().contains("cannot read --media missing.png"),
        "{err}"
    );

    // What the post keeps is the absolute path, without `..`.
    let mut args = text_post("with an image", "x");
    args.media = vec![dir.path().join("sub/../a.png")];
    let post = args.to_post(&app).await.expect("post");
    match &post.media[0].source {
        MediaSource::File { path } => assert_eq!(path, &canonical),
        other => panic!("a file source: {other:?}"),
    }

    // A text file named .png is refused by its content.
    std::fs::write(dir.path().join("notes.png"), "just some notes\n").expect("write");
    let mut args = text_post("with a fake image", "x");
    args.media = vec![dir.path().join("notes.png")];
    let err = args.to_post(&app).await.expect_err("not an image");
    assert!(err.message().contains("by its content"), "{err}");

    // More alt texts than media files is a mistake worth saying.
    let mut args = text_post("two alts", "x");
    args.media = vec![canonical.clone()];
    args.alt = vec!["one".to_owned(), "two".to_owned()];
    let err = args.to_post(&app).await.expect_err("an --alt too many");
    assert!(
        err.message().contains("2 --alt values for 1 --media"),
        "{err}"
    );
    app.store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_publishes_a_failed_delivery_again() {
    let x = XMock::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let (app, _) = x_only(&dir, &x).await;
    x.faults().fail_next("tweets.create", 1, 400);
    let post = text_post("refused once", "x")
        .to_post(&app)
        .await
        .expect("post");
    assert!(
        !commands::post_now(&app, &post, &Lines::new())
            .await
            .expect("post now"),
        "the 400 fails it"
    );
    let failed = app
        .engine
        .list(&socialpub_core::schedule::DeliveryFilter::tenant("acme"))
        .await
        .expect("list");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].state, DeliveryState::Failed);
    let id = failed[0].id;

    let prefix = &id.to_string()[..20];
    assert_eq!(commands::resolve(&app, prefix).await.expect("resolve"), id);
    assert!(commands::retry(&app, id).await.expect("retry"));
    let workers = app.engine.start();
    let done = commands::wait_settled(&app, &[id], Duration::from_secs(30))
        .await
        .expect("settled");
    workers.shutdown().await;
    assert_eq!(done[0].state, DeliveryState::Published);
    assert_eq!(x.posts().len(), 1, "published once");
    let history = app.engine.history("acme", id).await.expect("history");
    assert!(
        history.iter().any(|h| h.to == DeliveryState::Failed),
        "the failure is kept"
    );
    // A published delivery is not retried.
    assert!(!commands::retry(&app, id).await.expect("retry"));
    app.store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_says_when_nothing_was_revoked() {
    let x = XMock::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let (app, _) = x_only(&dir, &x).await;
    let youtube = youtube_token_without_credentials(&app).await;
    let err = commands::disconnect(&app, Platform::YouTube, &youtube.account_id, false)
        .await
        .expect_err("no YouTube credentials: nothing can revoke it");
    assert!(err.message().contains("not revoked"), "{err}");
    assert!(err.message().contains("--local"), "{err}");
    let store = app.tokens.store();
    assert!(
        store.list("acme").await.expect("list").contains(&youtube),
        "kept"
    );

    assert_eq!(
        commands::disconnect(&app, Platform::YouTube, &youtube.account_id, true)
            .await
            .expect("forget"),
        commands::Disconnected::ForgottenLocally
    );
    assert!(!store.list("acme").await.expect("list").contains(&youtube));
    app.store.close().await;
}
