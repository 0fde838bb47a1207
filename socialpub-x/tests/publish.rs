//! Publishing against the mock: text, links, threads, polls, quotes, media, reconcile, delete,
//! X's own refusals (usage caps, forbidden clients, duplicates) and the post rules the mock
//! enforces.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use socialpub_core::post::{Poll, PostPart};
use socialpub_core::publish::Progress;
use socialpub_core::testkit::Fault;
use socialpub_core::testkit::conformance::RecordingJournal;
use socialpub_core::{AccountKey, ErrorKind, LookupOutcome, Post, Publisher, RemoteState};
use socialpub_x::mock::XMock;
use socialpub_x::{ReplySettings, XOptions};

use common::*;

#[tokio::test]
async fn text_post() {
    let (mock, publisher, mut ctx) = setup().await;
    let receipt = publisher
        .publish(&mut ctx, &Post::new("Hello from socialpub"))
        .await
        .expect("published");
    let posts = mock.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].text, "Hello from socialpub");
    assert_eq!(receipt.remote_id, posts[0].id);
    assert!(receipt.remote_id.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(
        receipt.url.as_deref(),
        Some(format!("{}i/status/{}", mock.base_url(), posts[0].id).as_str())
    );
    assert_eq!(receipt.state, RemoteState::Published);
    assert_eq!(receipt.parts.len(), 1);
    // The posting limits X reported come back with the receipt.
    let limits = receipt.rate_limit.as_ref().expect("rate limits");
    let window = limits.window.expect("15-minute window");
    assert_eq!(window.limit, Some(100));
    assert_eq!(window.remaining, Some(99));
    assert!(window.reset_at.is_some());
    assert_eq!(limits.user_day.and_then(|w| w.limit), Some(17000));
    // The id stays a string through JSON.
    let json = serde_json::to_value(&receipt).expect("json");
    assert!(json["remote_id"].is_string());
}

#[tokio::test]
async fn link_is_appended_and_counted() {
    let (mock, publisher, mut ctx) = setup().await;
    let post = Post::new("Read this")
        .with_link(url::Url::parse("https://example.com/a/long/path/to/an/article").expect("url"));
    publisher.publish(&mut ctx, &post).await.expect("published");
    assert_eq!(
        mock.posts()[0].text,
        "Read this https://example.com/a/long/path/to/an/article"
    );
}

#[tokio::test]
async fn thread_of_three_chains_replies() {
    let (mock, publisher, mut ctx) = setup().await;
    let post = Post::new("1/ a thread")
        .with_thread_part(PostPart {
            text: "2/ the middle".into(),
            media: vec![png(3000, 1)],
        })
        .with_thread_part(PostPart {
            text: "3/ the end".into(),
            media: vec![],
        });
    let receipt = publisher.publish(&mut ctx, &post).await.expect("published");
    let posts = mock.posts();
    assert_eq!(posts.len(), 3);
    assert_eq!(posts[0].in_reply_to, None);
    assert_eq!(posts[1].in_reply_to.as_deref(), Some(posts[0].id.as_str()));
    assert_eq!(posts[2].in_reply_to.as_deref(), Some(posts[1].id.as_str()));
    assert_eq!(posts[1].media_ids.len(), 1);
    let ids: Vec<&str> = receipt.parts.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, posts.iter().map(|p| p.id.as_str()).collect::<Vec<_>>());
    assert_eq!(receipt.remote_id, posts[0].id);
}

#[tokio::test]
async fn poll_quote_and_reply_settings() {
    let (mock, publisher, mut ctx) = setup().await;
    let poll = Post::new("Tabs or spaces?")
        .with_poll(Poll {
            options: vec!["Tabs".into(), "Spaces".into(), "Both".into()],
            duration: Duration::from_secs(24 * 3600),
        })
        .with_options(&XOptions::new().reply_settings(ReplySettings::Following))
        .expect("options");
    let first = publisher.publish(&mut ctx, &poll).await.expect("poll");
    let quote = Post::new("Vote here")
        .with_options(&XOptions::new().quote(first.remote_id.clone()))
        .expect("options");
    publisher.publish(&mut ctx, &quote).await.expect("quote");
    let posts = mock.posts();
    assert_eq!(posts[0].poll_options, vec!["Tabs", "Spaces", "Both"]);
    assert_eq!(posts[0].poll_minutes, Some(1440));
    assert_eq!(posts[0].reply_settings.as_deref(), Some("following"));
    assert_eq!(posts[1].quote_of.as_deref(), Some(first.remote_id.as_str()));
}

#[tokio::test]
async fn four_images_with_alt_text_and_progress() {
    let (mock, publisher, ctx) = setup().await;
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let sink = seen.clone();
    let mut ctx = ctx.with_progress(Arc::new(move |_: &AccountKey, p: Progress| {
        sink.lock().expect("lock").push(p);
    }));
    let images: Vec<_> = (0..4u8)
        .map(|i| png(150_000, i).with_alt_text(format!("picture {i}")))
        .collect();
    let mut post = Post::new("four pictures");
    for m in &images {
        post = post.with_media(m.clone());
    }
    publisher.publish(&mut ctx, &post).await.expect("published");
    let p = &mock.posts()[0];
    assert_eq!(p.media_ids.len(), 4);
    for (i, id) in p.media_ids.iter().enumerate() {
        let u = mock.upload(id).expect("upload");
        assert_eq!(u.category, "tweet_image");
        assert_eq!(u.media_type, "image/png");
        assert_eq!(u.alt_text.as_deref(), Some(format!("picture {i}").as_str()));
        assert_eq!(u.append_calls, vec![1, 1, 1], "150 kB in 64 KiB segments");
        assert_eq!(u.sha256.as_deref(), Some(sha256(&images[i]).as_str()));
    }
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 12, "one progress event per segment");
    let last = seen.iter().rfind(|p| p.media_index == 3).expect("last");
    assert_eq!(last.bytes_sent, last.total_bytes);
}

#[tokio::test]
async fn gif_uses_the_gif_category_and_processing() {
    let (mock, publisher, mut ctx) = setup().await;
    let post = Post::new("").with_media(gif(200_000).with_alt_text("a dancing cat"));
    publisher.publish(&mut ctx, &post).await.expect("published");
    let id = &mock.posts()[0].media_ids[0];
    let u = mock.upload(id).expect("upload");
    assert_eq!(
        (u.category.as_str(), u.state.as_str()),
        ("tweet_gif", "succeeded")
    );
    assert_eq!(u.alt_text.as_deref(), Some("a dancing cat"));
    assert_eq!(mock.calls("media.status"), 2);
}

#[tokio::test]
async fn video_waits_for_processing_honoring_check_after() {
    let mock = XMock::builder()
        .check_after_secs(1)
        .processing_polls(2)
        .start()
        .await;
    let (publisher, mut ctx) = publisher_for(&mock, config(&mock));
    let clip = video(300_000, 12);
    let started = std::time::Instant::now();
    publisher
        .publish(&mut ctx, &Post::new("a clip").with_media(clip.clone()))
        .await
        .expect("published");
    // pending (finalize) → in_progress → succeeded: two polls, a second apart each.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(mock.calls("media.status"), 2);
    let u = mock.upload(&mock.posts()[0].media_ids[0]).expect("upload");
    assert_eq!(u.category, "tweet_video");
    assert_eq!(u.state, "succeeded");
    assert_eq!(u.sha256.as_deref(), Some(sha256(&clip).as_str()));
}

#[tokio::test]
async fn failed_processing_is_a_platform_error_and_posts_nothing() {
    let (mock, publisher, mut ctx) = setup().await;
    mock.fail_next_processing();
    let journal = Arc::new(socialpub_core::testkit::conformance::RecordingJournal::new());
    let mut ctx2 = ctx.clone().with_journal(journal.clone());
    let e = publisher
        .publish(
            &mut ctx2,
            &Post::new("broken").with_media(video(100_000, 5)),
        )
        .await
        .expect_err("processing failed");
    assert_eq!(e.kind(), ErrorKind::Platform, "{e}");
    assert!(e.message().contains("Unsupported video format"), "{e}");
    assert_eq!(journal.commit_points(), 0, "no commit for a failed upload");
    assert!(mock.posts().is_empty());
    // The next video processes fine.
    publisher
        .publish(&mut ctx, &Post::new("fine").with_media(video(100_000, 5)))
        .await
        .expect("published");
}

#[tokio::test]
async fn duplicate_content_is_a_permanent_refusal() {
    let (mock, publisher, mut ctx) = setup().await;
    publisher
        .publish(&mut ctx, &Post::new("same"))
        .await
        .expect("first");
    let mut ctx = ctx.with_checkpoint(None);
    let e = publisher
        .publish(&mut ctx, &Post::new("same"))
        .await
        .expect_err("duplicate");
    assert_eq!(e.kind(), ErrorKind::Platform);
    assert_eq!(e.code(), Some("duplicate-content"));
    assert!(!e.is_retryable());
    assert_eq!(mock.posts().len(), 1);
}

#[tokio::test]
async fn per_account_text_limit() {
    let mock = XMock::start().await;
    mock.set_max_text(mock.user_id(), 25_000);
    let long = Post::new("a".repeat(1000));
    let (short, mut ctx) = publisher_for(&mock, config(&mock));
    let e = short.publish(&mut ctx, &long).await.expect_err("280");
    assert_eq!(e.kind(), ErrorKind::Validation);
    let (premium, mut ctx) = publisher_for(
        &mock,
        config(&mock).account_max_text(mock.user_id(), 25_000),
    );
    premium.publish(&mut ctx, &long).await.expect("premium");
}

#[tokio::test]
async fn validation_rejects_before_any_request() {
    let (mock, publisher, mut ctx) = setup().await;
    let before = mock.requests();
    let bad = Post::new("字".repeat(141))
        .with_media(png(1000, 1))
        .with_media(gif(1000))
        .with_poll(Poll {
            options: vec!["only one".into()],
            duration: Duration::from_secs(60),
        });
    let report = publisher.validate(&bad);
    for code in [
        "text_too_long",
        "mixed_media",
        "poll_with_media",
        "poll_option_count",
    ] {
        assert!(report.has(code), "{code} missing: {report}");
    }
    let e = publisher
        .publish(&mut ctx, &bad)
        .await
        .expect_err("invalid");
    assert_eq!(e.kind(), ErrorKind::Validation);
    assert!(e.validation_report().is_some_and(|r| r.issues().len() >= 4));
    assert_eq!(mock.requests(), before, "no request for an invalid post");
}

#[tokio::test]
async fn status_lookup_and_delete() {
    let (mock, publisher, mut ctx) = setup().await;
    let since = chrono::Utc::now();
    let post =
        Post::new("to be found &amp; <deleted> https://example.com/x").with_thread_part(PostPart {
            text: "second".into(),
            media: vec![png(500, 9)],
        });
    let receipt = publisher.publish(&mut ctx, &post).await.expect("published");
    let status = publisher.status(&ctx, &receipt).await.expect("status");
    assert_eq!(status.state, RemoteState::Published);

    // Reconcile without a checkpoint: found by text (X escapes HTML and rewrites links).
    let fresh = ctx.clone().with_checkpoint(None);
    match publisher
        .lookup_recent(&fresh, &post, since)
        .await
        .expect("lookup")
    {
        LookupOutcome::Found(r) => {
            assert_eq!(r.parts.len(), 2);
            assert_eq!(r.remote_id, receipt.remote_id);
        }
        other => panic!("expected Found, got {other:?}"),
    }
    let other = Post::new("never posted");
    assert_eq!(
        publisher
            .lookup_recent(&fresh, &other, since)
            .await
            .expect("lookup"),
        LookupOutcome::Absent
    );

    publisher.delete(&ctx, &receipt).await.expect("deleted");
    assert!(mock.posts().is_empty());
    // X answers 200 with errors[] for a post that is gone.
    let gone = publisher.status(&ctx, &receipt).await.expect("status");
    assert!(matches!(gone.state, RemoteState::Failed { .. }), "{gone:?}");
    // Deleting again is fine.
    publisher.delete(&ctx, &receipt).await.expect("idempotent");
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

#[tokio::test]
async fn posts_are_checked_like_x_checks_them() {
    let raw = Raw::new().await;
    let (s, b) = raw
        .post_json("/2/tweets", json!({"text":"a".repeat(281)}))
        .await;
    assert_eq!(s, 403);
    assert!(b["detail"].as_str().expect("detail").contains("too long"));
    let (s, _) = raw
        .post_json("/2/tweets", json!({"text":"字".repeat(140)}))
        .await;
    assert_eq!(s, 201);
    let (s, b) = raw
        .post_json("/2/tweets", json!({"text":"字".repeat(140)}))
        .await;
    assert_eq!(s, 403);
    assert!(
        b["detail"]
            .as_str()
            .expect("detail")
            .contains("duplicate content")
    );
    let (s, _) = raw
        .post_json(
            "/2/tweets",
            json!({"text":"p","poll":{"options":["a"],"duration_minutes":60}}),
        )
        .await;
    assert_eq!(s, 400, "a poll needs two options");
    let (s, _) = raw
        .post_json(
            "/2/tweets",
            json!({"text":"r","reply":{"in_reply_to_tweet_id":"1"}}),
        )
        .await;
    assert_eq!(s, 400, "replying to a post that does not exist");

    // Every answer carries the rate-limit headers; creates also the 24-hour caps.
    let r = raw
        .http
        .post(raw.url("/2/tweets"))
        .bearer_auth(&raw.token)
        .json(&json!({"text":"headers"}))
        .send()
        .await
        .expect("send");
    for h in [
        "x-rate-limit-limit",
        "x-rate-limit-remaining",
        "x-rate-limit-reset",
        "x-user-limit-24hour-remaining",
        "x-app-limit-24hour-reset",
    ] {
        assert!(r.headers().contains_key(h), "{h}");
    }

    // No token, a wrong token: X's 401 problem.
    let r = raw
        .http
        .get(raw.url("/2/users/me"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let r = raw
        .http
        .get(raw.url("/2/users/me"))
        .bearer_auth("nope")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn a_spent_window_answers_429() {
    let raw = Raw::new().await;
    let mut last = None;
    for _ in 0..76 {
        let r = raw
            .http
            .get(raw.url("/2/users/me"))
            .bearer_auth(&raw.token)
            .send()
            .await
            .expect("send");
        last = Some((
            r.status().as_u16(),
            r.headers()
                .get("x-rate-limit-remaining")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ));
    }
    assert_eq!(
        last,
        Some((429, Some("0".to_owned()))),
        "75 calls per 15 minutes"
    );
}

#[tokio::test]
async fn a_lookup_pages_through_everything_posted_since() {
    let (mock, publisher, mut ctx) = setup().await;
    let since = Utc::now();
    // The create of "the lost one" never left; the account posted 150 times since.
    for i in 0..150 {
        mock.add_post(mock.user_id(), &format!("posted elsewhere, {i}"));
    }
    let post = Post::new("the lost one");
    let outcome = publisher
        .lookup_recent(&ctx, &post, since)
        .await
        .expect("lookup");
    assert_eq!(
        outcome,
        LookupOutcome::Absent,
        "all 150 were read: it is absent"
    );
    assert_eq!(mock.calls("users.tweets"), 2, "two pages of 100");
    publisher.publish(&mut ctx, &post).await.expect("published");
    let copies = mock.posts().iter().filter(|p| p.text == post.text).count();
    assert_eq!(copies, 1, "published once");

    // Reading one page only, the lookup cannot tell.
    let (short, ctx) = publisher_for(&mock, config(&mock).lookup_pages(1));
    let outcome = short
        .lookup_recent(&ctx, &Post::new("another lost one"), since)
        .await
        .expect("lookup");
    assert!(
        matches!(outcome, LookupOutcome::Unknown { .. }),
        "{outcome:?}"
    );
}

fn three_parts(tag: &str) -> Post {
    Post::new(format!("1/3 {tag}"))
        .with_thread_part(PostPart {
            text: format!("2/3 {tag}"),
            media: vec![],
        })
        .with_thread_part(PostPart {
            text: format!("3/3 {tag}"),
            media: vec![],
        })
}

#[tokio::test]
async fn a_partly_posted_thread_is_partial_not_absent() {
    let (mock, publisher, ctx) = setup().await;
    let journal = Arc::new(RecordingJournal::new());
    let mut ctx = ctx.with_journal(journal.clone());
    let post = three_parts("partial");
    let since = Utc::now();
    // Part 1 lands; part 2's connection breaks before X takes it.
    mock.faults().pass_next("tweets.create", 1);
    mock.faults().drop_next("tweets.create", 1);
    let e = publisher
        .publish(&mut ctx, &post)
        .await
        .expect_err("part 2 unconfirmed");
    assert_eq!(e.kind(), ErrorKind::Unconfirmed, "{e}");
    assert_eq!(mock.posts().len(), 1);

    // Without the checkpoint: part 1 is found by its text, the rest is not there.
    let (fresh, fresh_ctx) = publisher_for(&mock, config(&mock));
    match fresh
        .lookup_recent(&fresh_ctx, &post, since)
        .await
        .expect("lookup")
    {
        LookupOutcome::Partial(found) => {
            assert_eq!(found.parts.len(), 1);
            assert_eq!(found.remote_id, mock.posts()[0].id);
        }
        other => panic!("a thread with its first part posted is partial: {other:?}"),
    }

    // With it, the scheduler publishes again and the thread ends once.
    let checkpoint = journal.checkpoints().last().cloned();
    let mut retry = ctx.clone().with_checkpoint(checkpoint);
    let outcome = publisher
        .lookup_recent(&retry, &post, since)
        .await
        .expect("lookup");
    assert!(matches!(outcome, LookupOutcome::Partial(_)), "{outcome:?}");
    let receipt = publisher.publish(&mut retry, &post).await.expect("resumed");
    let posts = mock.posts();
    assert_eq!(posts.len(), 3, "no part posted twice");
    assert_eq!(receipt.parts.len(), 3);
    assert_eq!(posts[2].in_reply_to.as_deref(), Some(posts[1].id.as_str()));
}

#[tokio::test]
async fn a_duplicate_refusal_of_a_part_sent_before_looks_again() {
    let mock = XMock::start().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .expect("client");
    let (publisher, ctx) = publisher_for(&mock, config(&mock).http_client(http));
    let journal = Arc::new(RecordingJournal::new());
    let mut ctx = ctx.with_journal(journal.clone());
    let post = Post::new("did it land?");
    // The create lands, its answer does not.
    mock.faults()
        .delay_answer_next("tweets.create", Duration::from_secs(2));
    let e = publisher
        .publish(&mut ctx, &post)
        .await
        .expect_err("unconfirmed");
    assert_eq!(e.kind(), ErrorKind::Unconfirmed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mock.posts().len(), 1);

    // The next attempt's look before sending again misses it (the list lags), so it sends
    // again; X refuses the text as a duplicate, and the look after that finds it.
    mock.lag_lists(1);
    let checkpoint = journal.checkpoints().last().cloned();
    let mut retry = ctx.clone().with_checkpoint(checkpoint);
    let receipt = publisher
        .publish(&mut retry, &post)
        .await
        .expect("the post exists: the publish succeeds");
    assert_eq!(receipt.remote_id, mock.posts()[0].id);
    assert_eq!(mock.posts().len(), 1, "posted once");
    assert_eq!(
        mock.calls("tweets.create"),
        2,
        "sent again once, refused as a duplicate"
    );
}
