//! `connect` end to end against the X mock: the authorization URL, the consent page, the
//! callback request (made here, as a browser would), the code exchange, and the token stored
//! sealed: no token bytes anywhere in the database files.

use secrecy::ExposeSecret;
use socialpub_core::auth::{AccountKey, EncryptionKey};
use socialpub_core::{ErrorKind, Platform, TokenStore};
use socialpub_examples::app::App;
use socialpub_examples::config::Config;
use socialpub_examples::connect;
use socialpub_examples::platforms::{Endpoints, Platforms, credentials};
use socialpub_x::mock::{self, XMock};

fn app_config(db: &std::path::Path, key: &EncryptionKey) -> Config {
    let store = format!("sqlite://{}", db.display());
    let key = key.to_base64().as_str().to_owned();
    Config::from_toml("", move |name| match name {
        "SOCIALPUB_TENANT" => Some("acme".to_owned()),
        "SOCIALPUB_STORE_URL" => Some(store.clone()),
        "SOCIALPUB_ENCRYPTION_KEY" => Some(key.clone()),
        _ => None,
    })
    .expect("config")
}

fn x_platform(config: &Config, mock: &XMock) -> Platforms {
    Platforms::from_config(config, reqwest::Client::new())
        .expect("platforms")
        .with_platform(
            Platform::X,
            credentials(mock::CLIENT_ID, Some(mock::CLIENT_SECRET)),
            Endpoints::x_mock(mock),
        )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_completes_through_the_callback_and_stores_the_token_encrypted() {
    let listener = connect::bind(0).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let x = XMock::builder()
        .redirect_uri(redirect.clone())
        .start()
        .await;
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("socialpub.db");
    let key = EncryptionKey::generate();
    let config = app_config(&db, &key);
    let app = App::open(&config, x_platform(&config, &x))
        .await
        .expect("app");

    let (url_tx, url_rx) = tokio::sync::oneshot::channel::<url::Url>();
    let browser = tokio::spawn(async move {
        let url = url_rx.await.expect("authorization URL");
        let q = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(q("redirect_uri").as_deref(), Some(redirect.as_str()));
        assert_eq!(q("code_challenge_method").as_deref(), Some("S256"));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        // The consent page approves and sends the browser back with a code and the state.
        let consent = http.get(url.clone()).send().await.expect("consent");
        let location = consent
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("redirect back")
            .to_owned();
        let back = url::Url::parse(&location).expect("callback URL");
        assert!(back.as_str().starts_with(&redirect), "{back}");
        // A forged callback (another state) is refused, and the real one still works.
        let mut forged = back.clone();
        let pairs: Vec<(String, String)> = back
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "state" {
                    "forged".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        forged.query_pairs_mut().clear().extend_pairs(pairs);
        let refused = http.get(forged).send().await.expect("forged callback");
        assert_eq!(refused.status(), 400);
        let done = http.get(back).send().await.expect("callback");
        assert_eq!(done.status(), 200);
        let page = done.text().await.expect("page");
        assert!(page.contains("Connected"), "{page}");
    });

    let connected = connect::connect(&app, Platform::X, listener, move |url| {
        let _ = url_tx.send(url.clone());
    })
    .await
    .expect("connect");
    browser.await.expect("browser");

    let account = AccountKey::new("acme", Platform::X, mock::USER_ID);
    assert_eq!(connected.len(), 1);
    assert_eq!(connected[0].key, account);
    let token = app
        .tokens
        .store()
        .get(&account)
        .await
        .expect("read")
        .expect("stored");
    let access = token.access_token.expose_secret().to_owned();
    let refresh = token
        .refresh_token
        .as_ref()
        .map(|r| r.expose_secret().to_owned())
        .expect("a refresh token (offline.access)");
    // The token works at the mock: it is the one X issued.
    let me = reqwest::Client::new()
        .get(format!("{}2/users/me", x.base_url()))
        .bearer_auth(&access)
        .send()
        .await
        .expect("users.me");
    assert_eq!(me.status(), 200);
    app.store.close().await;

    // Nothing in the database files holds the token in the clear.
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().contains("socialpub.db") {
            raw.extend(std::fs::read(&path).expect("read db file"));
        }
    }
    assert!(raw.len() > 4096, "the database was written");
    assert!(
        contains(&raw, mock::USER_ID.as_bytes()),
        "the account row is there"
    );
    assert!(
        !contains(&raw, access.as_bytes()),
        "access token in the clear"
    );
    assert!(
        !contains(&raw, refresh.as_bytes()),
        "refresh token in the clear"
    );

    // And another key cannot open it.
    let other = app_config(&db, &EncryptionKey::generate());
    let app = App::open(&other, x_platform(&other, &x))
        .await
        .expect("reopen");
    let err = app
        .tokens
        .store()
        .get(&account)
        .await
        .expect_err("wrong key");
    assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
    app.store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_authorization_is_a_clear_error_and_stores_nothing() {
    let listener = connect::bind(0).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let x = XMock::builder()
        .redirect_uri(format!("http://127.0.0.1:{port}/callback"))
        .start()
        .await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = app_config(&dir.path().join("denied.db"), &EncryptionKey::generate());
    let app = App::open(&config, x_platform(&config, &x))
        .await
        .expect("app");
    let (url_tx, url_rx) = tokio::sync::oneshot::channel::<url::Url>();
    let browser = tokio::spawn(async move {
        let url = url_rx.await.expect("authorization URL");
        let state = url
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .expect("state");
        // The user clicked "Cancel": the platform sends the browser back with an error.
        let back = format!(
            "http://127.0.0.1:{port}/callback?error=access_denied&error_description=The+user+declined&state={state}"
        );
        let answer = reqwest::get(back).await.expect("callback");
        assert_eq!(answer.status(), 200);
        let page = answer.text().await.expect("page");
        assert!(page.contains("Not connected"), "{page}");
    });
    let err = connect::connect(&app, Platform::X, listener, move |url| {
        let _ = url_tx.send(url.clone());
    })
    .await
    .expect_err("denied");
    browser.await.expect("browser");
    assert_eq!(err.kind(), ErrorKind::Platform);
    assert!(err.message().contains("access_denied"), "{err}");
    assert!(
        app.tokens
            .store()
            .list("acme")
            .await
            .expect("list")
            .is_empty()
    );
    app.store.close().await;
}

/// Follows the mock's consent page back to the callback, as a browser would; returns the
/// callback page.
async fn browse(url: url::Url) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let consent = http.get(url).send().await.expect("consent");
    let location = consent
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("redirect back")
        .to_owned();
    http.get(location)
        .send()
        .await
        .expect("callback")
        .text()
        .await
        .expect("page")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_hears_connected_only_after_the_token_exchange_succeeded() {
    let listener = connect::bind(0).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let x = XMock::builder()
        .redirect_uri(format!("http://127.0.0.1:{port}/callback"))
        .start()
        .await;
    // The code exchange fails (the platform refuses it).
    x.faults().fail_next("oauth.token", 1, 400);
    let dir = tempfile::tempdir().expect("tmp");
    let config = app_config(&dir.path().join("exchange.db"), &EncryptionKey::generate());
    let app = App::open(&config, x_platform(&config, &x))
        .await
        .expect("app");
    let (url_tx, url_rx) = tokio::sync::oneshot::channel::<url::Url>();
    let browser = tokio::spawn(async move { browse(url_rx.await.expect("URL")).await });
    let err = connect::connect(&app, Platform::X, listener, move |url| {
        let _ = url_tx.send(url.clone());
    })
    .await
    .expect_err("the exchange failed");
    let page = browser.await.expect("browser");
    assert!(!page.contains("Connected"), "{page}");
    assert!(page.contains("Not connected"), "{page}");
    assert!(
        app.tokens
            .store()
            .list("acme")
            .await
            .expect("list")
            .is_empty(),
        "{err}"
    );
    app.store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socialpub_mock_takes_a_newcomer_from_connect_to_a_published_post() {
    use socialpub_examples::commands::{self, PostArgs};
    use socialpub_examples::mock::Mocks;
    use socialpub_examples::progress::Lines;

    let listener = connect::bind(0).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tmp");
    let store = format!("sqlite://{}", dir.path().join("mock.db").display());
    let key = EncryptionKey::generate().to_base64().as_str().to_owned();
    let base = Config::from_toml("", |name| {
        (name == "SOCIALPUB_CALLBACK_PORT").then(|| port.to_string())
    })
    .expect("config");
    let mocks = Mocks::start(&base).await.expect("mocks");
    let printed = mocks.instructions();
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("export SOCIALPUB_X_MOCK_URL=")),
        "{printed:?}"
    );

    // The configuration as the user's shell would have it after pasting the export lines.
    let mut vars: Vec<(String, String)> = mocks.env();
    vars.push(("SOCIALPUB_STORE_URL".into(), store));
    vars.push(("SOCIALPUB_ENCRYPTION_KEY".into(), key));
    vars.push(("SOCIALPUB_CALLBACK_PORT".into(), port.to_string()));
    let config = Config::from_toml("", move |name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .expect("config");
    let platforms = Platforms::from_config(&config, reqwest::Client::new()).expect("platforms");
    let app = App::open(&config, platforms).await.expect("app");

    let (url_tx, url_rx) = tokio::sync::oneshot::channel::<url::Url>();
    let browser = tokio::spawn(async move { browse(url_rx.await.expect("URL")).await });
    let connected = connect::connect(&app, Platform::X, listener, move |url| {
        let _ = url_tx.send(url.clone());
    })
    .await
    .expect("connect x against the mock");
    assert!(browser.await.expect("browser").contains("Connected"));
    assert_eq!(connected[0].key.account_id, mock::USER_ID);

    let post = PostArgs {
        text: "Hello from the mock".to_owned(),
        title: None,
        media: vec![],
        alt: vec![],
        thread: vec![],
        to: vec!["x".to_owned()],
    }
    .to_post(&app)
    .await
    .expect("post");
    assert!(
        commands::post_now(&app, &post, &Lines::new())
            .await
            .expect("published")
    );
    let posts = mocks.x.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].text, "Hello from the mock");

    // YouTube's mock registers the same callback, so the same flow connects a channel.
    let listener = connect::bind(port).await.expect("bind again");
    let (url_tx, url_rx) = tokio::sync::oneshot::channel::<url::Url>();
    let browser = tokio::spawn(async move { browse(url_rx.await.expect("URL")).await });
    let connected = connect::connect(&app, Platform::YouTube, listener, move |url| {
        let _ = url_tx.send(url.clone());
    })
    .await
    .expect("connect youtube against the mock");
    assert!(browser.await.expect("browser").contains("Connected"));
    assert_eq!(
        connected[0].key.account_id,
        socialpub_youtube::mock::YouTubeMock::DEFAULT_CHANNEL
    );
    app.store.close().await;
}
