//! The publisher conformance suite accepts a publisher that keeps the contract and rejects ones
//! that break it.

#![cfg(feature = "testkit")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::FutureExt;
use secrecy::SecretString;
use socialpub_core::auth::StaticToken;
use socialpub_core::platform::{TextCounting, TextRule};
use socialpub_core::testkit::conformance::PublisherSuite;
use socialpub_core::validate::check_post;
use socialpub_core::{
    AccountKey, Capabilities, Platform, Post, PublishContext, Publisher, Receipt, Result,
    ValidationReport,
};

/// A publisher whose "platform" is two counters: requests and creates.
#[derive(Debug, Default)]
struct CountingPublisher {
    requests: Arc<AtomicUsize>,
    creates: Arc<AtomicUsize>,
    /// Breaks the contract: creates before the commit point.
    create_first: bool,
    /// Breaks the contract: sends a request before validating.
    request_before_validating: bool,
}

#[async_trait]
impl Publisher for CountingPublisher {
    fn platform(&self) -> Platform {
        Platform::X
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Platform::X, TextRule::new(10, TextCounting::Graphemes))
    }

    fn validate(&self, post: &Post) -> ValidationReport {
        check_post(&self.capabilities(), post, None)
    }

    async fn publish(&self, ctx: &mut PublishContext, post: &Post) -> Result<Receipt> {
        if self.request_before_validating {
            self.requests.fetch_add(1, Ordering::SeqCst);
        }
        self.validate(post).into_result()?;
        let _token = ctx.access_token().await?;
        if self.create_first {
            self.requests.fetch_add(1, Ordering::SeqCst);
            self.creates.fetch_add(1, Ordering::SeqCst);
            ctx.commit_point().await?;
        } else {
            ctx.commit_point().await?;
            self.requests.fetch_add(1, Ordering::SeqCst);
            self.creates.fetch_add(1, Ordering::SeqCst);
        }
        let n = self.creates.load(Ordering::SeqCst);
        Ok(Receipt::new(Platform::X, n.to_string(), None))
    }
}

fn suite(p: CountingPublisher) -> PublisherSuite {
    let requests = p.requests.clone();
    let creates = p.creates.clone();
    PublisherSuite {
        publisher: Arc::new(p),
        account: AccountKey::new("t", Platform::X, "1"),
        tokens: Arc::new(StaticToken(SecretString::from("token-SECRET"))),
        valid_post: Post::new("short"),
        invalid_post: Post::new("far too long for ten"),
        requests: Arc::new(move || requests.load(Ordering::SeqCst)),
        creates: Arc::new(move || creates.load(Ordering::SeqCst)),
        secrets: vec!["token-SECRET".into()],
    }
}

#[tokio::test]
async fn a_conforming_publisher_passes() {
    suite(CountingPublisher::default()).run().await;
}

#[tokio::test]
async fn creating_before_the_commit_point_fails_the_suite() {
    let p = CountingPublisher {
        create_first: true,
        ..Default::default()
    };
    let outcome = std::panic::AssertUnwindSafe(suite(p).run())
        .catch_unwind()
        .await;
    assert!(
        outcome.is_err(),
        "the suite must catch a create before the commit point"
    );
}

#[tokio::test]
async fn a_request_before_validation_fails_the_suite() {
    let p = CountingPublisher {
        request_before_validating: true,
        ..Default::default()
    };
    let outcome = std::panic::AssertUnwindSafe(suite(p).run())
        .catch_unwind()
        .await;
    assert!(
        outcome.is_err(),
        "the suite must catch a request sent for an invalid post"
    );
}
