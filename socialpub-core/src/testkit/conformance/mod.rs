//! Conformance suites: the behaviour every [`Publisher`](crate::Publisher) and [`TokenStore`] promises, checked
//! the same way for every implementation. Each panics with a clear message on the first broken
//! promise, so call them from `#[tokio::test]`s. [`PublisherSuite`] runs a publisher against
//! its mock through every fault class.

mod publisher;

pub use publisher::{PostFactory, PublisherSuite, UploadCase};

use std::fmt::{Debug, Display};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;

use crate::auth::{AccountKey, Token, TokenStore};
use crate::error::{Error, ErrorKind, Result};
use crate::platform::Platform;
use crate::publish::PublishJournal;

/// Panics if the `Debug` output of `value` contains any of `secrets`.
pub fn assert_debug_hides(value: &dyn Debug, secrets: &[&str]) {
    let shown = format!("{value:?} {value:#?}");
    for s in secrets {
        assert!(
            !shown.contains(s),
            "a secret appears in Debug output: {}",
            shown.replace(s, "<<SECRET>>")
        );
    }
}

/// Panics if the `Display` output of `value` contains any of `secrets`.
pub fn assert_display_hides(value: &dyn Display, secrets: &[&str]) {
    let shown = value.to_string();
    for s in secrets {
        assert!(
            !shown.contains(s),
            "a secret appears in Display output: {}",
            shown.replace(s, "<<SECRET>>")
        );
    }
}

/// Panics unless an error's `Display`, `Debug` and every error in its source chain hide
/// `secrets`.
pub fn assert_error_hides(error: &Error, secrets: &[&str]) {
    assert_debug_hides(error, secrets);
    assert_display_hides(error, secrets);
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        assert_display_hides(&s, secrets);
        source = s.source();
    }
}

/// Runs the [`TokenStore`] suite against an empty `store`: round trips, overwrite, delete, and
/// isolation between tenants, platforms and accounts.
pub async fn token_store_suite(store: &dyn TokenStore) {
    let a = AccountKey::new("tenant-a", Platform::X, "1");
    let a2 = AccountKey::new("tenant-a", Platform::YouTube, "1");
    let b = AccountKey::new("tenant-b", Platform::X, "1");
    assert!(
        store.get(&a).await.expect("get").is_none(),
        "a new store is empty"
    );

    let expires = Utc::now() + chrono::Duration::hours(1);
    let t1 = Token::new("access-one")
        .with_refresh_token("refresh-one")
        .with_expires_at(expires)
        .with_scopes(["s1", "s2"]);
    store.put(&a, &t1).await.expect("put");
    let got = store.get(&a).await.expect("get").expect("stored token");
    use secrecy::ExposeSecret;
    assert_eq!(got.access_token.expose_secret(), "access-one");
    assert_eq!(
        got.refresh_token
            .as_ref()
            .map(|r| r.expose_secret().to_owned()),
        Some("refresh-one".to_owned())
    );
    assert_eq!(
        got.expires_at.map(|t| t.timestamp_millis()),
        Some(expires.timestamp_millis())
    );
    assert_eq!(got.scopes, vec!["s1", "s2"]);

    assert!(
        store.get(&a2).await.expect("get").is_none(),
        "platforms are isolated"
    );
    assert!(
        store.get(&b).await.expect("get").is_none(),
        "tenants are isolated"
    );

    store
        .put(&a, &Token::new("access-two"))
        .await
        .expect("overwrite");
    let got = store.get(&a).await.expect("get").expect("token");
    assert_eq!(got.access_token.expose_secret(), "access-two");
    assert!(got.refresh_token.is_none(), "put replaces the whole token");

    store.put(&a2, &Token::new("x")).await.expect("put");
    store.put(&b, &Token::new("y")).await.expect("put");
    let mut listed = store.list("tenant-a").await.expect("list");
    listed.sort();
    let mut want = vec![a.clone(), a2.clone()];
    want.sort();
    assert_eq!(listed, want, "list is scoped by tenant");

    assert!(store.delete(&a).await.expect("delete"));
    assert!(!store.delete(&a).await.expect("delete twice"));
    assert!(store.get(&a).await.expect("get").is_none());
    assert_eq!(store.list("tenant-b").await.expect("list"), vec![b]);
}

/// A journal that records what the publisher did, and can be told to fail the commit point.
#[derive(Default)]
pub struct RecordingJournal {
    fail_commit: bool,
    commit_points: AtomicUsize,
    checkpoints: Mutex<Vec<serde_json::Value>>,
    creates_at_first_commit: Mutex<Option<usize>>,
    creates: Option<CreateCounter>,
}

/// Counts create requests seen by a mock server.
pub type CreateCounter = Arc<dyn Fn() -> usize + Send + Sync>;

impl Debug for RecordingJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingJournal")
            .field("fail_commit", &self.fail_commit)
            .field("commit_points", &self.commit_points())
            .finish_non_exhaustive()
    }
}

impl RecordingJournal {
    /// A journal whose commit point succeeds.
    pub fn new() -> Self {
        Self::default()
    }

    /// A journal whose commit point fails (as when the database is down).
    pub fn failing() -> Self {
        RecordingJournal {
            fail_commit: true,
            ..Self::default()
        }
    }

    /// Records, at the first commit point, how many creates `counter` had seen.
    pub fn watching(mut self, counter: CreateCounter) -> Self {
        self.creates = Some(counter);
        self
    }

    /// How many times the commit point was called.
    pub fn commit_points(&self) -> usize {
        self.commit_points.load(Ordering::SeqCst)
    }

    /// Every checkpoint saved, in order.
    pub fn checkpoints(&self) -> Vec<serde_json::Value> {
        self.checkpoints
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// The create count seen at the first commit point.
    pub fn creates_at_first_commit(&self) -> Option<usize> {
        self.creates_at_first_commit.lock().ok().and_then(|c| *c)
    }
}

#[async_trait]
impl PublishJournal for RecordingJournal {
    async fn commit_point(&self) -> Result<()> {
        if self.fail_commit {
            return Err(Error::new(
                ErrorKind::Storage,
                "the journal is unavailable (injected by the conformance suite)",
            ));
        }
        if self.commit_points.fetch_add(1, Ordering::SeqCst) == 0
            && let (Some(c), Ok(mut slot)) = (&self.creates, self.creates_at_first_commit.lock())
        {
            *slot = Some(c());
        }
        Ok(())
    }

    async fn save_checkpoint(&self, checkpoint: &serde_json::Value) -> Result<()> {
        if let Ok(mut c) = self.checkpoints.lock() {
            c.push(checkpoint.clone());
        }
        Ok(())
    }
}
