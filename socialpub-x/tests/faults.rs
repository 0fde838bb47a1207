//! Every fault class against the mock: what is retried, what waits, what becomes unconfirmed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use socialpub_core::auth::{
    AccessTokens, MemoryTokenStore, TokenManager, TokenRefresher, TokenStore,
};
use socialpub_core::post::PostPart;
use socialpub_core::testkit::Fault;
use socialpub_core::testkit::conformance::RecordingJournal;
use socialpub_core::{ErrorKind, LookupOutcome, Post, PublishContext, Publisher};
use socialpub_x::XConnector;

use common::*;

#[tokio::test]
async fn server_errors_before_the_commit_are_retried() {
    let (mock, publisher, mut ctx) = setup().await;
    mock.faults().fail_next("media.initialize", 2, 503);
    mock.faults().fail_next("media.finalize", 1, 500);
    mock.faults().fail_next("media.metadata", 1, 502);
    publisher
        .publish(
            &mut ctx,
            &Post::new("retried").with_media(png(10_000, 1).with_alt_text("alt")),
        )
        .await
        .expect("published after retries");
    assert_eq!(mock.calls("media.initialize"), 3);
    assert_eq!(mock.calls("media.finalize"), 2);
    assert_eq!(mock.calls("media.metadata"), 2);
    assert_eq!(mock.posts().len(), 1);
}

#[tokio::test]
async fn a_failed_segment_is_resent_alone() {
    let (mock, publisher, mut ctx) = setup().await;
    let image = png(300_000, 4); // 5 segments of 64 KiB
    // Let two segments through, then fail the third once, then drop the fourth's connection.
    mock.faults()
        .push("media.append", Fault::Delay(Duration::ZERO));
    mock.faults()
        .push("media.append", Fault::Delay(Duration::ZERO));
    mock.faults().fail_next("media.append", 1, 503);
    mock.faults()
        .push("media.append", Fault::Delay(Duration::ZERO));
    mock.faults().drop_next("media.append", 1);
    publisher
        .publish(&mut ctx, &Post::new("segments").with_media(image.clone()))
        .await
        .expect("published");
    let u = mock.upload(&mock.posts()[0].media_ids[0]).expect("upload");
    // The failed and the dropped segment were sent twice, but reached the mock once each:
    // only they were resent, and every segment landed exactly once, in order.
    assert_eq!(u.append_calls, vec![1, 1, 1, 1, 1]);
    assert_eq!(mock.calls("media.append"), 7);
    assert_eq!(u.sha256.as_deref(), Some(sha256(&image).as_str()));
}

#[tokio::test]
async fn timeout_after_the_commit_is_unconfirmed_and_reconciles() {
    let mock = socialpub_x::mock::XMock::start().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .expect("client");
    let (publisher, mut ctx) = publisher_for(&mock, config(&mock).http_client(http));
    let since = Utc::now();
    mock.faults()
        .delay_answer_next("tweets.create", Duration::from_secs(2));
    let post = Post::new("did it post?");
    let e = publisher
        .publish(&mut ctx, &post)
        .await
        .expect_err("timeout");
    assert_eq!(e.kind(), ErrorKind::Unconfirmed, "{e}");
    assert!(!e.is_retryable());
    assert_eq!(
        mock.posts().len(),
        1,
        "X created it before the answer was lost"
    );
    match publisher
        .lookup_recent(&ctx, &post, since)
        .await
        .expect("lookup")
    {
        LookupOutcome::Found(r) => assert_eq!(r.remote_id, mock.posts()[0].id),
        other => panic!("expected Found, got {other:?}"),
    }
    // Publishing again with the checkpoint looks first and does not post twice.
    let receipt = publisher.publish(&mut ctx, &post).await.expect("resumed");
    assert_eq!(receipt.remote_id, mock.posts()[0].id);
    assert_eq!(mock.posts().len(), 1);
}

#[tokio::test]
async fn server_error_on_the_commit_is_unconfirmed_never_retried() {
    let (mock, publisher, mut ctx) = setup().await;
    let since = Utc::now();
    mock.faults().fail_next("tweets.create", 1, 503);
    let post = Post::new("maybe");
    let e = publisher.publish(&mut ctx, &post).await.expect_err("503");
    assert_eq!(e.kind(), ErrorKind::Unconfirmed, "{e}");
    assert_eq!(mock.calls("tweets.create"), 1, "the commit is sent once");
    assert_eq!(
        publisher
            .lookup_recent(&ctx, &post, since)
            .await
            .expect("lookup"),
        LookupOutcome::Absent
    );
    // A dropped connection on the commit is unconfirmed too.
    mock.faults().drop_next("tweets.create", 1);
    let mut fresh = ctx.clone().with_checkpoint(None);
    let e = publisher
        .publish(&mut fresh, &post)
        .await
        .expect_err("dropped");
    assert_eq!(e.kind(), ErrorKind::Unconfirmed, "{e}");
}

#[tokio::test]
async fn a_thread_resumes_after_a_failed_part() {
    let (mock, publisher, ctx) = setup().await;
    let journal = Arc::new(RecordingJournal::new());
    let mut ctx = ctx.with_journal(journal.clone());
    let post = Post::new("1/3 resume")
        .with_thread_part(PostPart {
            text: "2/3 resume".into(),
            media: vec![],
        })
        .with_thread_part(PostPart {
            text: "3/3 resume".into(),
            media: vec![],
        });
    // Part 2 fails before X takes it (429 beyond the wait allowed in place).
    let far = (Utc::now().timestamp() + 3600).to_string();
    mock.faults()
        .push("tweets.create", Fault::Delay(Duration::ZERO));
    mock.faults().fail_next_with(
        "tweets.create",
        429,
        &[
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", &far),
        ],
    );
    let e = publisher
        .publish(&mut ctx, &post)
        .await
        .expect_err("parked");
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert!(e.retry_after().expect("wait") > Duration::from_secs(3000));
    assert_eq!(mock.posts().len(), 1);
    // The scheduler retries later with the saved checkpoint: parts 2 and 3 only.
    let checkpoint = journal.checkpoints().last().cloned();
    let mut retry = ctx.clone().with_checkpoint(checkpoint);
    let lookups = mock.calls("users.tweets");
    let receipt = publisher.publish(&mut retry, &post).await.expect("resumed");
    assert_eq!(
        mock.calls("users.tweets"),
        lookups,
        "X refused part 2 outright: nothing to look up before resending it"
    );
    let posts = mock.posts();
    assert_eq!(posts.len(), 3, "no part posted twice");
    assert_eq!(receipt.parts.len(), 3);
    assert_eq!(receipt.remote_id, posts[0].id);
    assert_eq!(posts[1].in_reply_to.as_deref(), Some(posts[0].id.as_str()));
    assert_eq!(posts[2].in_reply_to.as_deref(), Some(posts[1].id.as_str()));
}

#[tokio::test]
async fn rate_limit_waits_for_the_reset() {
    let (mock, publisher, mut ctx) = setup().await;
    let reset = (Utc::now().timestamp() + 2).to_string();
    mock.faults().fail_next_with(
        "tweets.create",
        429,
        &[
            ("x-rate-limit-limit", "100"),
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", &reset),
        ],
    );
    mock.faults().fail_next_with(
        "media.initialize",
        429,
        &[
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", &reset),
        ],
    );
    let started = std::time::Instant::now();
    publisher
        .publish(&mut ctx, &Post::new("patience").with_media(png(2000, 2)))
        .await
        .expect("published after the reset");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(mock.calls("tweets.create"), 2);
    assert_eq!(mock.calls("media.initialize"), 2);
    assert_eq!(mock.posts().len(), 1);
}

#[tokio::test]
async fn usage_capped_and_forbidden_clients_are_not_retried() {
    let (mock, publisher, mut ctx) = setup().await;
    mock.faults().push(
        "tweets.create",
        Fault::Status {
            status: 429,
            body: Some(
                r#"{"title":"UsageCapExceeded","detail":"Usage cap exceeded: Daily user cap","type":"https://api.twitter.com/2/problems/usage-capped","period":"Daily","scope":"Account"}"#
                    .into(),
            ),
            headers: vec![],
        },
    );
    let e = publisher
        .publish(&mut ctx, &Post::new("capped"))
        .await
        .expect_err("capped");
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.code(), Some("usage-capped"));
    assert!(e.retry_at().expect("period end") > Utc::now() + chrono::Duration::minutes(1));
    assert_eq!(mock.calls("tweets.create"), 1);

    mock.faults().push(
        "media.initialize",
        Fault::Status {
            status: 403,
            body: Some(
                r#"{"title":"Client Forbidden","detail":"This request must be made using an approved developer account that is enrolled in the requested endpoint.","reason":"client-not-enrolled","registration_url":"https://developer.x.com/","type":"https://api.twitter.com/2/problems/client-forbidden"}"#
                    .into(),
            ),
            headers: vec![],
        },
    );
    let mut fresh = ctx.clone().with_checkpoint(None);
    let e = publisher
        .publish(&mut fresh, &Post::new("forbidden").with_media(png(1000, 3)))
        .await
        .expect_err("forbidden");
    assert_eq!(e.kind(), ErrorKind::Configuration);
    assert_eq!(e.code(), Some("client-not-enrolled"));
    assert_eq!(mock.calls("media.initialize"), 1);
}

/// A publisher whose tokens come from a token manager refreshing through the mock.
async fn managed(
    mock: &socialpub_x::mock::XMock,
) -> (
    socialpub_x::XPublisher,
    PublishContext,
    MemoryTokenStore,
    String,
) {
    let config = config(mock).build().expect("config");
    let connector = Arc::new(XConnector::new(&config).expect("connector"));
    let store = MemoryTokenStore::new();
    let token = mock.issue_token(mock.user_id());
    let access = secrecy::ExposeSecret::expose_secret(&token.access_token).to_owned();
    store.put(&key(mock), &token).await.expect("put");
    let manager: Arc<dyn AccessTokens> = Arc::new(
        TokenManager::builder(store.clone())
            .refresher(connector.clone())
            .build(),
    );
    let publisher = socialpub_x::XPublisher::new(config);
    (
        publisher,
        PublishContext::new(key(mock), manager),
        store,
        access,
    )
}

#[tokio::test]
async fn unauthorized_refreshes_once() {
    let mock = socialpub_x::mock::XMock::start().await;
    let (publisher, mut ctx, store, access) = managed(&mock).await;
    // X stops accepting the access token before its stated expiry.
    mock.expire_access_token(&access);
    publisher
        .publish(&mut ctx, &Post::new("after a refresh"))
        .await
        .expect("published");
    assert_eq!(mock.refreshes(), 1);
    assert_eq!(mock.posts().len(), 1);
    let stored = store.get(&key(&mock)).await.expect("get").expect("token");
    assert_ne!(
        secrecy::ExposeSecret::expose_secret(&stored.access_token),
        access
    );

    // A token rejected again after the refresh is an Unauthorized error, not a loop.
    mock.faults().fail_next("tweets.create", 2, 401);
    let e = publisher
        .publish(
            &mut ctx.clone().with_checkpoint(None),
            &Post::new("rejected twice"),
        )
        .await
        .expect_err("401 twice");
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert_eq!(mock.refreshes(), 2, "one refresh per request");
    assert_eq!(mock.posts().len(), 1);
}

#[tokio::test]
async fn a_spent_refresh_token_needs_reauth() {
    let mock = socialpub_x::mock::XMock::start().await;
    let (publisher, mut ctx, store, access) = managed(&mock).await;
    // Someone else rotated the refresh token (and the store never learned).
    let mut token = store.get(&key(&mock)).await.expect("get").expect("token");
    let connector =
        Arc::new(XConnector::new(&config(&mock).build().expect("config")).expect("connector"));
    let refresher = connector.clone();
    refresher
        .refresh(&key(&mock), &token)
        .await
        .expect("rotated elsewhere");
    token.expires_at = Some(Utc::now() - chrono::Duration::minutes(1));
    store.put(&key(&mock), &token).await.expect("put");
    mock.expire_access_token(&access);
    let e = publisher
        .publish(&mut ctx, &Post::new("nobody home"))
        .await
        .expect_err("reauth");
    assert_eq!(e.kind(), ErrorKind::ReauthRequired, "{e}");
    assert!(mock.posts().is_empty());
}

#[tokio::test]
async fn a_failed_commit_point_sends_nothing() {
    let (mock, publisher, ctx) = setup().await;
    let mut ctx = ctx.with_journal(Arc::new(RecordingJournal::failing()));
    let e = publisher
        .publish(
            &mut ctx,
            &Post::new("journal down").with_media(png(1000, 5)),
        )
        .await
        .expect_err("journal down");
    assert_eq!(e.kind(), ErrorKind::Storage);
    assert_eq!(mock.calls("tweets.create"), 0);
}

#[tokio::test]
async fn an_interrupted_upload_resumes_where_x_stopped() {
    let mock = socialpub_x::mock::XMock::start().await;
    let (publisher, ctx) = publisher_for(
        &mock,
        config(&mock).retry_policy(socialpub_core::http::RetryPolicy::none()),
    );
    let journal = Arc::new(RecordingJournal::new());
    let mut ctx = ctx.with_journal(journal.clone());
    let image = png(300_000, 8); // 5 segments of 64 KiB
    for _ in 0..3 {
        mock.faults()
            .push("media.append", Fault::Delay(Duration::ZERO));
    }
    mock.faults().drop_next("media.append", 1);
    let post = Post::new("resume me").with_media(image.clone());
    let e = publisher
        .publish(&mut ctx, &post)
        .await
        .expect_err("dropped");
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(mock.posts().is_empty());

    // The next attempt, with the saved checkpoint, sends segments 3 and 4 only.
    let checkpoint = journal.checkpoints().last().cloned();
    let mut retry = ctx.clone().with_checkpoint(checkpoint);
    publisher.publish(&mut retry, &post).await.expect("resumed");
    assert_eq!(mock.calls("media.initialize"), 1, "the session was resumed");
    assert_eq!(
        mock.calls("media.append"),
        6,
        "5 segments + the dropped one"
    );
    let u = mock.upload(&mock.posts()[0].media_ids[0]).expect("upload");
    assert_eq!(u.append_calls, vec![1, 1, 1, 1, 1]);
    assert_eq!(u.sha256.as_deref(), Some(sha256(&image).as_str()));
}
