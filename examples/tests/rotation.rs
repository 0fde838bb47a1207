//! Key rotation in the app: a new current key with the old one kept opens old tokens; after
//! `reencrypt`, the old key can go.

use secrecy::ExposeSecret;
use socialpub_core::auth::{AccountKey, EncryptionKey, Token};
use socialpub_core::{Platform, TokenStore};
use socialpub_examples::app::App;
use socialpub_examples::commands;
use socialpub_examples::config::Config;
use socialpub_examples::platforms::Platforms;

async fn open(db: &std::path::Path, toml: &str, key: &EncryptionKey) -> App {
    let store = format!("sqlite://{}", db.display());
    let key = key.to_base64().as_str().to_owned();
    let config = Config::from_toml(toml, |name| match name {
        "SOCIALPUB_STORE_URL" => Some(store.clone()),
        "SOCIALPUB_ENCRYPTION_KEY" => Some(key.clone()),
        _ => None,
    })
    .expect("config");
    let platforms = Platforms::from_config(&config, reqwest::Client::new()).expect("platforms");
    App::open(&config, platforms).await.expect("app")
}

#[tokio::test]
async fn rotate_then_reencrypt_then_drop_the_old_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("rotation.db");
    let account = AccountKey::new("default", Platform::X, "2244994945");
    let (old, new) = (EncryptionKey::generate(), EncryptionKey::generate());

    let app = open(&db, "encryption_key_id = \"2026-05\"", &old).await;
    app.tokens
        .connect(
            &account,
            &Token::new("access-1").with_refresh_token("refresh-1"),
        )
        .await
        .expect("store");
    app.store.close().await;

    let rotated = format!(
        "encryption_key_id = \"2026-11\"\n[old_encryption_keys]\n\"2026-05\" = \"{}\"\n",
        old.to_base64().as_str()
    );
    let app = open(&db, &rotated, &new).await;
    let token = app
        .tokens
        .store()
        .get(&account)
        .await
        .expect("get")
        .expect("some");
    assert_eq!(token.access_token.expose_secret(), "access-1");
    assert_eq!(commands::reencrypt(&app).await.expect("reencrypt"), 1);
    assert_eq!(commands::reencrypt(&app).await.expect("again"), 0);
    app.store.close().await;

    let app = open(&db, "encryption_key_id = \"2026-11\"", &new).await;
    let token = app
        .tokens
        .store()
        .get(&account)
        .await
        .expect("get")
        .expect("some");
    assert_eq!(token.access_token.expose_secret(), "access-1");
    app.store.close().await;

    let app = open(&db, "encryption_key_id = \"2026-05\"", &old).await;
    assert!(
        app.tokens.store().get(&account).await.is_err(),
        "the old key alone no longer opens it"
    );
    app.store.close().await;
}
