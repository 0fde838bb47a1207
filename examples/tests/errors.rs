//! The app's clear errors: a missing key, an unreachable database, a platform with no
//! credentials.

use socialpub_core::auth::EncryptionKey;
use socialpub_core::{ErrorKind, Platform};
use socialpub_examples::app::App;
use socialpub_examples::config::Config;
use socialpub_examples::platforms::Platforms;

fn config(vars: &[(&str, String)]) -> Config {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Config::from_toml("", move |name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .expect("config")
}

fn key() -> String {
    EncryptionKey::generate().to_base64().as_str().to_owned()
}

async fn open(config: &Config) -> socialpub_core::Result<App> {
    App::open(
        config,
        Platforms::from_config(config, reqwest::Client::new())?,
    )
    .await
}

#[tokio::test]
async fn a_missing_key_says_how_to_make_one() {
    let c = config(&[("SOCIALPUB_STORE_URL", "memory:".into())]);
    let err = open(&c).await.expect_err("no key");
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.message().contains("SOCIALPUB_ENCRYPTION_KEY"), "{err}");
    assert!(err.message().contains("openssl rand -base64 32"), "{err}");
}

#[tokio::test]
async fn an_unreachable_database_is_named_without_its_password() {
    let c = config(&[
        ("SOCIALPUB_ENCRYPTION_KEY", key()),
        (
            "SOCIALPUB_STORE_URL",
            "postgres://socialpub:hunter2@127.0.0.1:1/socialpub".into(),
        ),
    ]);
    let err = open(&c).await.expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Storage);
    let text = err.to_string();
    assert!(
        text.contains("cannot open the store postgres://socialpub:[REDACTED]@127.0.0.1:1"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");

    let c = config(&[
        ("SOCIALPUB_ENCRYPTION_KEY", key()),
        (
            "SOCIALPUB_STORE_URL",
            "sqlite:///no/such/dir/socialpub.db".into(),
        ),
    ]);
    let err = open(&c).await.expect_err("no such directory");
    assert!(err.message().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn a_platform_without_credentials_names_the_variables() {
    let c = config(&[
        ("SOCIALPUB_ENCRYPTION_KEY", key()),
        ("SOCIALPUB_STORE_URL", "memory:".into()),
    ]);
    let app = open(&c).await.expect("app without platforms");
    let redirect = c.redirect_uri().expect("uri");
    for (platform, var) in [
        (Platform::X, "SOCIALPUB_X_CLIENT_ID"),
        (Platform::YouTube, "SOCIALPUB_YOUTUBE_CLIENT_ID"),
    ] {
        let err = app
            .platforms
            .connector(platform, &redirect)
            .expect_err("no credentials");
        assert_eq!(err.kind(), ErrorKind::Configuration);
        assert!(err.message().contains(var), "{err}");
    }
}
