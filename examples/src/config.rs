//! The app's configuration: a TOML file, overridden by `SOCIALPUB_*` environment variables.
//!
//! ```toml
//! tenant = "acme"
//! store = "sqlite://socialpub.db"      # or postgres://…, or memory:
//! callback_port = 8765                 # http://127.0.0.1:8765/callback
//!
//! [x]
//! client_id = "…"
//! client_secret = "…"                  # confidential clients only
//!
//! [youtube]
//! client_id = "…"
//! client_secret = "…"
//! # mock_url = "http://127.0.0.1:…/"  # a mock started by `socialpub mock`, not the platform
//!
//! [old_encryption_keys]                # keys being rotated out: id = base64
//! "2026-05" = "…"
//! ```
//!
//! The encryption key belongs in the environment (`SOCIALPUB_ENCRYPTION_KEY`), not in the file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;
use socialpub_core::auth::{EncryptionKey, KeyRing};
use socialpub_core::{Error, Platform, Result};

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "socialpub.toml";

/// The store used when none is configured.
pub const DEFAULT_STORE: &str = "sqlite://socialpub.db";

/// The loopback port of the OAuth callback when none is configured.
pub const DEFAULT_CALLBACK_PORT: u16 = 8765;

/// Where schedules and tokens are kept, from a store URL. `Debug` and `Display` mask a
/// password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite://path`: one file.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`: shared by many workers.
    Postgres(String),
    /// `memory:`: nothing survives the process.
    Memory,
}

impl StoreUrl {
    /// Parses `sqlite://…`, `sqlite:…`, `postgres://…`, `postgresql://…` or `memory:`.
    pub fn parse(url: &str) -> Result<StoreUrl> {
        let url = url.trim();
        if url == "memory:" || url == "memory://" {
            return Ok(StoreUrl::Memory);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(url.to_owned()));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(Error::configuration(
                    "the SQLite store URL has no path: use sqlite://path/to/socialpub.db",
                ));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        Err(Error::configuration(format!(
            "unknown store URL `{}`: use sqlite://path, postgres://user@host/db or memory:",
            redact_password(url)
        )))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            StoreUrl::Postgres(u) => f.write_str(&redact_password(u)),
            StoreUrl::Memory => f.write_str("memory:"),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

/// A database URL as it may be shown: the password masked.
pub fn redact_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match u.password() {
            Some(pw) => url.replacen(&format!(":{pw}@"), ":[REDACTED]@", 1),
            None => url.to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

/// One platform app's OAuth credentials.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret, for confidential clients.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// The base URL of a socialpub mock of the platform (as `socialpub mock` prints it), to
    /// talk to instead of the platform itself.
    #[serde(default)]
    pub mock_url: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("mock_url", &self.mock_url)
            .finish()
    }
}

/// The file's shape; every field optional, so the environment can supply it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    tenant: Option<String>,
    store: Option<String>,
    callback_port: Option<u16>,
    encryption_key: Option<SecretString>,
    encryption_key_id: Option<String>,
    #[serde(default)]
    old_encryption_keys: BTreeMap<String, SecretString>,
    x: Option<Credentials>,
    youtube: Option<Credentials>,
}

/// The app's configuration, resolved from the file and the environment.
#[derive(Debug)]
pub struct Config {
    /// The tenant every command acts for (`default` unless set).
    pub tenant: String,
    /// Where schedules and tokens are kept.
    pub store: StoreUrl,
    /// The loopback port of the OAuth callback.
    pub callback_port: u16,
    encryption_key: Option<SecretString>,
    encryption_key_id: String,
    old_encryption_keys: BTreeMap<String, SecretString>,
    credentials: BTreeMap<Platform, Credentials>,
}

impl Config {
    /// Reads `path` (or [`DEFAULT_CONFIG_FILE`] if it exists), then applies the environment:
    /// `SOCIALPUB_TENANT`, `SOCIALPUB_STORE_URL`, `SOCIALPUB_CALLBACK_PORT`,
    /// `SOCIALPUB_ENCRYPTION_KEY`, `SOCIALPUB_ENCRYPTION_KEY_ID`, and per platform
    /// `SOCIALPUB_X_CLIENT_ID`, `SOCIALPUB_X_CLIENT_SECRET`, `SOCIALPUB_X_MOCK_URL` (and the
    /// same for `YOUTUBE`).
    pub fn load(path: Option<&Path>) -> Result<Config> {
        Self::load_with(path, |name| std::env::var(name).ok())
    }

    /// [`Config::load`] with the environment read through `env` (for tests).
    pub fn load_with(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let file = match path {
            Some(p) => Some(read_file(p)?),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                Some(read_file(Path::new(DEFAULT_CONFIG_FILE))?)
            }
            None => None,
        }
        .unwrap_or_default();
        Self::resolve(file, env)
    }

    /// Parses a configuration file's text, then applies `env`.
    pub fn from_toml(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let file: FileConfig = toml::from_str(text)
            .map_err(|e| Error::configuration(format!("invalid configuration: {e}")))?;
        Self::resolve(file, env)
    }

    fn resolve(file: FileConfig, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let store = env("SOCIALPUB_STORE_URL")
            .or(file.store)
            .unwrap_or_else(|| DEFAULT_STORE.to_owned());
        let callback_port = match env("SOCIALPUB_CALLBACK_PORT") {
            Some(p) => p.trim().parse().map_err(|_| {
                Error::configuration(format!(
                    "SOCIALPUB_CALLBACK_PORT `{p}` is not a port number"
                ))
            })?,
            None => file.callback_port.unwrap_or(DEFAULT_CALLBACK_PORT),
        };
        let mut credentials = BTreeMap::new();
        for (platform, from_file) in [(Platform::X, file.x), (Platform::YouTube, file.youtube)] {
            let upper = platform.as_str().to_ascii_uppercase();
            let id = env(&format!("SOCIALPUB_{upper}_CLIENT_ID"));
            let secret = env(&format!("SOCIALPUB_{upper}_CLIENT_SECRET")).map(SecretString::from);
            let mock_url = env(&format!("SOCIALPUB_{upper}_MOCK_URL"));
            let merged = match (from_file, id) {
                (Some(mut c), id) => {
                    if let Some(id) = id {
                        c.client_id = id;
                    }
                    if secret.is_some() {
                        c.client_secret = secret;
                    }
                    if mock_url.is_some() {
                        c.mock_url = mock_url;
                    }
                    Some(c)
                }
                (None, Some(client_id)) => Some(Credentials {
                    client_id,
                    client_secret: secret,
                    mock_url,
                }),
                (None, None) => None,
            };
            if let Some(c) = merged.filter(|c| !c.client_id.trim().is_empty()) {
                credentials.insert(platform, c);
            }
        }
        Ok(Config {
            tenant: env("SOCIALPUB_TENANT")
                .or(file.tenant)
                .unwrap_or_else(|| "default".to_owned()),
            store: StoreUrl::parse(&store)?,
            callback_port,
            encryption_key: env("SOCIALPUB_ENCRYPTION_KEY")
                .map(SecretString::from)
                .or(file.encryption_key),
            encryption_key_id: env("SOCIALPUB_ENCRYPTION_KEY_ID")
                .or(file.encryption_key_id)
                .unwrap_or_else(|| "primary".to_owned()),
            old_encryption_keys: file.old_encryption_keys,
            credentials,
        })
    }

    /// The key ring tokens are sealed with: the current key, and older keys that still open
    /// what they sealed. Fails with a message saying how to make a key when none is set.
    pub fn key_ring(&self) -> Result<KeyRing> {
        use secrecy::ExposeSecret;
        let key = self.encryption_key.as_ref().ok_or_else(|| {
            Error::configuration(
                "no encryption key: set SOCIALPUB_ENCRYPTION_KEY to 32 random bytes in base64 \
                 (make one with `openssl rand -base64 32`)",
            )
        })?;
        let current = EncryptionKey::from_base64(key.expose_secret()).map_err(|e| {
            Error::configuration(format!("SOCIALPUB_ENCRYPTION_KEY: {}", e.message()))
        })?;
        let current_b64 = current.to_base64();
        let mut ring = KeyRing::new(self.encryption_key_id.clone(), current);
        for (id, old) in &self.old_encryption_keys {
            let old = EncryptionKey::from_base64(old.expose_secret()).map_err(|e| {
                Error::configuration(format!("old encryption key `{id}`: {}", e.message()))
            })?;
            if *id == self.encryption_key_id {
                // Each sealed token records the id of the key that sealed it, so one id can
                // name one key only: with two, the old tokens would be opened with the new key
                // and fail, and `reencrypt` would see nothing to re-seal.
                if old.to_base64().as_str() != current_b64.as_str() {
                    return Err(Error::configuration(format!(
                        "two different keys under the key id `{id}`: the current key and \
                         [old_encryption_keys] `{id}`. Give the new key an id of its own \
                         (SOCIALPUB_ENCRYPTION_KEY_ID, for example `{id}-2`) and keep the old \
                         one under `{id}`"
                    )));
                }
                continue;
            }
            ring = ring.with_old_key(id.clone(), old);
        }
        Ok(ring)
    }

    /// The credentials of `platform`'s app. Fails with a message naming the variables to set.
    pub fn credentials(&self, platform: Platform) -> Result<&Credentials> {
        self.credentials.get(&platform).ok_or_else(|| {
            let upper = platform.as_str().to_ascii_uppercase();
            Error::configuration(format!(
                "no credentials for {platform}: set SOCIALPUB_{upper}_CLIENT_ID (and \
                 SOCIALPUB_{upper}_CLIENT_SECRET for a confidential client), or add a \
                 [{}] section with client_id to {DEFAULT_CONFIG_FILE}",
                platform.as_str()
            ))
            .with_platform(platform)
        })
    }

    /// The redirect URI registered with the platforms for this app.
    pub fn redirect_uri(&self) -> Result<url::Url> {
        url::Url::parse(&format!("http://127.0.0.1:{}/callback", self.callback_port))
            .map_err(|e| Error::configuration(format!("bad callback port: {e}")))
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::configuration(format!("cannot read {}: {e}", path.display())).with_source(e)
    })?;
    toml::from_str(&text)
        .map_err(|e| Error::configuration(format!("invalid {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use socialpub_core::ErrorKind;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_without_file_or_env() {
        let c = Config::from_toml("", no_env).expect("config");
        assert_eq!(c.tenant, "default");
        assert_eq!(c.store, StoreUrl::Sqlite("socialpub.db".into()));
        assert_eq!(
            c.redirect_uri().expect("uri").as_str(),
            "http://127.0.0.1:8765/callback"
        );
    }

    #[test]
    fn environment_overrides_file() {
        let file = r#"
            tenant = "from-file"
            store = "memory:"
            [x]
            client_id = "file-id"
        "#;
        let c = Config::from_toml(file, |n| match n {
            "SOCIALPUB_TENANT" => Some("acme".into()),
            "SOCIALPUB_STORE_URL" => Some("postgres://u:pw@db/sp".into()),
            "SOCIALPUB_X_CLIENT_SECRET" => Some("s3cret".into()),
            "SOCIALPUB_YOUTUBE_CLIENT_ID" => Some("yt-id".into()),
            _ => None,
        })
        .expect("config");
        assert_eq!(c.tenant, "acme");
        assert_eq!(c.store.to_string(), "postgres://u:[REDACTED]@db/sp");
        let x = c.credentials(Platform::X).expect("x");
        assert_eq!(x.client_id, "file-id");
        assert!(x.client_secret.is_some());
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!format!("{c:?}").contains("pw@"));
        assert_eq!(
            c.credentials(Platform::YouTube).expect("yt").client_id,
            "yt-id"
        );
    }

    #[test]
    fn clear_errors() {
        let c = Config::from_toml("", no_env).expect("config");
        let e = c.key_ring().expect_err("no key");
        assert_eq!(e.kind(), ErrorKind::Configuration);
        assert!(e.message().contains("SOCIALPUB_ENCRYPTION_KEY"), "{e}");
        let e = c.credentials(Platform::X).expect_err("no creds");
        assert!(e.message().contains("SOCIALPUB_X_CLIENT_ID"), "{e}");
        let e = Config::from_toml("", |n| {
            (n == "SOCIALPUB_ENCRYPTION_KEY").then(|| "c2hvcnQ=".to_owned())
        })
        .expect("config")
        .key_ring()
        .expect_err("short key");
        assert!(e.message().contains("32 bytes"), "{e}");
        assert!(StoreUrl::parse("mysql://x").is_err());
        assert!(Config::from_toml("nonsense = 1", no_env).is_err());
    }

    #[test]
    fn two_keys_under_one_id_are_refused() {
        let current = EncryptionKey::generate();
        let old = EncryptionKey::generate();
        let key = current.to_base64().as_str().to_owned();
        let env = move |n: &str| (n == "SOCIALPUB_ENCRYPTION_KEY").then(|| key.clone());
        // The rotation as a user first tries it: the new key under the default id, the old
        // key under that same id.
        let file = format!(
            "[old_encryption_keys]\nprimary = \"{}\"\n",
            old.to_base64().as_str()
        );
        let e = Config::from_toml(&file, env.clone())
            .expect("config")
            .key_ring()
            .expect_err("two keys under `primary`");
        assert_eq!(e.kind(), ErrorKind::Configuration);
        assert!(
            e.message()
                .contains("two different keys under the key id `primary`"),
            "{e}"
        );
        assert!(e.message().contains("SOCIALPUB_ENCRYPTION_KEY_ID"), "{e}");
        // The same key listed under its own id is harmless.
        let same = format!(
            "[old_encryption_keys]\nprimary = \"{}\"\n",
            current.to_base64().as_str()
        );
        assert!(
            Config::from_toml(&same, env)
                .expect("config")
                .key_ring()
                .is_ok()
        );
    }

    #[test]
    fn key_ring_with_old_keys() {
        let current = EncryptionKey::generate();
        let old = EncryptionKey::generate();
        let file = format!(
            "encryption_key_id = \"2026-11\"\n[old_encryption_keys]\n\"2026-05\" = \"{}\"\n",
            old.to_base64().as_str()
        );
        let key = current.to_base64().as_str().to_owned();
        let c = Config::from_toml(&file, move |n| {
            (n == "SOCIALPUB_ENCRYPTION_KEY").then(|| key.clone())
        })
        .expect("config");
        let ring = c.key_ring().expect("ring");
        assert_eq!(ring.current_id(), "2026-11");
        assert!(format!("{ring:?}").contains("2026-05"));
    }
}
