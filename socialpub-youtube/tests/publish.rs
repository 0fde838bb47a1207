//! Publishing against the mock: metadata, scheduling, thumbnails, quota, processing status,
//! validation, lookup, deletion, and the token, scope and quota rules the mock enforces.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use common::{CHUNK, Raw, env, with_options};
use secrecy::SecretString;
use socialpub_core::auth::StaticToken;
use socialpub_core::{
    ErrorKind, LookupOutcome, Media, MediaKind, MediaSource, Post, Publisher, RemoteState,
};
use socialpub_youtube::mock::{ProcessingOutcome, ProcessingScript, YouTubeMock};
use socialpub_youtube::{
    Privacy, SCOPE_MANAGE, SCOPE_READONLY, SCOPE_UPLOAD, YouTubeOptions, next_pacific_midnight,
};

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 0,
    1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1F, 0x15, 0xC4, 0x89, 0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE,
    0x42, 0x60, 0x82,
];

fn png() -> Media {
    Media::from_bytes(Bytes::from_static(PNG), Some("thumb.png"))
}

#[tokio::test]
async fn metadata_reaches_youtube() {
    let e = env().await;
    let (post, _) = e.post(1000).await;
    let post = with_options(
        post.with_link(url::Url::parse("https://example.com/launch").expect("url")),
        &YouTubeOptions::new()
            .privacy(Privacy::Unlisted)
            .tags(["rust", "video editing"])
            .category_id("28")
            .made_for_kids(false)
            .notify_subscribers(false)
            .default_language("en")
            .contains_synthetic_media(true),
    );
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect("publish");
    let v = e.mock.video(&receipt.remote_id).expect("video");
    assert_eq!(v.title, "A video");
    assert_eq!(v.privacy_status, "unlisted");
    assert!(!v.notify_subscribers);
    let m = &v.metadata;
    assert_eq!(
        m["snippet"]["description"],
        "A description\n\nhttps://example.com/launch"
    );
    assert_eq!(
        m["snippet"]["tags"],
        serde_json::json!(["rust", "video editing"])
    );
    assert_eq!(m["snippet"]["categoryId"], "28");
    assert_eq!(m["snippet"]["defaultLanguage"], "en");
    assert_eq!(m["status"]["selfDeclaredMadeForKids"], false);
    assert_eq!(m["status"]["containsSyntheticMedia"], true);
}

#[tokio::test]
async fn publish_at_schedules_a_private_video() {
    let e = env().await;
    let at = Utc::now() + chrono::Duration::days(2);
    let (post, _) = e.post(1000).await;
    let post = with_options(
        post,
        &YouTubeOptions::new()
            .privacy(Privacy::Private)
            .publish_at(at),
    );
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect("publish");
    let v = e.mock.video(&receipt.remote_id).expect("video");
    assert_eq!(v.privacy_status, "private");
    assert_eq!(
        v.publish_at.as_deref(),
        Some(
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .as_str()
        )
    );
    assert_eq!(receipt.extra["publish_at"], serde_json::json!(v.publish_at));

    // publishAt on a public video, or in the past, never reaches YouTube.
    let before = e.mock.stats().requests;
    let (post, _) = e.post(1000).await;
    let bad = with_options(
        post.clone(),
        &YouTubeOptions::new()
            .privacy(Privacy::Public)
            .publish_at(at),
    );
    let err = e
        .publisher
        .publish(&mut e.ctx(), &bad)
        .await
        .expect_err("public + publishAt");
    assert!(
        err.validation_report()
            .is_some_and(|r| r.has("publish_at_needs_private"))
    );
    let past = with_options(
        post,
        &YouTubeOptions::new()
            .privacy(Privacy::Private)
            .publish_at(Utc::now() - chrono::Duration::hours(1)),
    );
    let err = e
        .publisher
        .publish(&mut e.ctx(), &past)
        .await
        .expect_err("past");
    assert!(
        err.validation_report()
            .is_some_and(|r| r.has("publish_at_in_past"))
    );
    assert_eq!(e.mock.stats().requests, before);
}

#[tokio::test]
async fn a_thumbnail_is_set_after_the_upload() {
    let e = env().await;
    let (post, _) = e.post(1000).await;
    let post = with_options(post, &YouTubeOptions::new().thumbnail(png()));
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect("publish");
    let v = e.mock.video(&receipt.remote_id).expect("video");
    assert_eq!(
        v.thumbnail,
        Some(("image/png".to_owned(), PNG.len() as u64))
    );
    assert!(receipt.warnings.is_empty(), "{:?}", receipt.warnings);
    assert_eq!(receipt.quota_cost, Some(1 + 50));
}

#[tokio::test]
async fn a_failed_thumbnail_is_a_partial_success() {
    let e = env().await;
    e.mock
        .set_custom_thumbnails(YouTubeMock::DEFAULT_USER, false);
    let (post, _) = e.post(1000).await;
    let post = with_options(post, &YouTubeOptions::new().thumbnail(png()));
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect("the video is published");
    assert!(
        e.mock
            .video(&receipt.remote_id)
            .is_some_and(|v| v.thumbnail.is_none())
    );
    assert_eq!(receipt.warnings.len(), 1);
    assert!(
        receipt.warnings[0].contains("thumbnail"),
        "{:?}",
        receipt.warnings
    );
}

#[tokio::test]
async fn exhausted_quota_waits_until_pacific_midnight() {
    let e = env().await;
    e.mock.set_quota(10_000, 0);
    let (post, _) = e.post(1000).await;
    let err = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect_err("quota");
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
    assert_eq!(err.code(), Some("quotaExceeded"));
    let at = err.retry_at().expect("reset time");
    let expected = next_pacific_midnight(Utc::now());
    assert!(
        (at - expected).num_seconds().abs() <= 1,
        "{at} vs {expected}"
    );
    assert!(at > Utc::now() && at <= Utc::now() + chrono::Duration::hours(24));
    // Not retried in place: the wait is hours long.
    assert_eq!(e.mock.quota_used().1, 0);
    assert_eq!(e.mock.stats().sessions_started, 0);
}

#[tokio::test]
async fn the_upload_limit_waits_a_day() {
    let e = env().await;
    e.mock.set_upload_limit(Some(0));
    let (post, _) = e.post(1000).await;
    let err = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect_err("limit");
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.code(), Some("uploadLimitExceeded"));
    assert_eq!(err.retry_after().map(|d| d.as_secs()), Some(24 * 3600));
}

#[tokio::test]
async fn processing_succeeds() {
    let e = env().await;
    e.mock.set_processing(ProcessingScript::after_reads(
        1,
        ProcessingOutcome::Succeeded,
    ));
    let (post, _) = e.post(1000).await;
    let ctx = &mut e.ctx();
    let receipt = e.publisher.publish(ctx, &post).await.expect("publish");
    assert_eq!(receipt.state, RemoteState::Processing);
    let r1 = e.publisher.status(ctx, &receipt).await.expect("status");
    assert_eq!(r1.state, RemoteState::Processing);
    assert_eq!(r1.extra["processing_status"], "processing");
    let r2 = e.publisher.status(ctx, &r1).await.expect("status");
    assert_eq!(r2.state, RemoteState::Published);
    assert_eq!(r2.extra["upload_status"], "processed");
}

#[tokio::test]
async fn processing_fails_or_is_rejected() {
    let e = env().await;
    e.mock.set_processing(ProcessingScript::after_reads(
        0,
        ProcessingOutcome::Failed("transcodeFailed".into()),
    ));
    let (post, _) = e.post(1000).await;
    let ctx = &mut e.ctx();
    let receipt = e.publisher.publish(ctx, &post).await.expect("publish");
    let r = e.publisher.status(ctx, &receipt).await.expect("status");
    let RemoteState::Failed { reason } = &r.state else {
        panic!("failed: {:?}", r.state);
    };
    assert!(
        reason.contains("conversion") || reason.contains("transcodeFailed"),
        "{reason}"
    );

    e.mock.set_processing(ProcessingScript::after_reads(
        0,
        ProcessingOutcome::Rejected("duplicate".into()),
    ));
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect("publish");
    let r = e.publisher.status(ctx, &receipt).await.expect("status");
    assert_eq!(
        r.state,
        RemoteState::Failed {
            reason: "rejected by YouTube: duplicate".into()
        }
    );

    e.mock.set_processing(ProcessingScript::after_reads(
        0,
        ProcessingOutcome::Terminated,
    ));
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect("publish");
    let r = e.publisher.status(ctx, &receipt).await.expect("status");
    assert!(matches!(r.state, RemoteState::Failed { .. }));
}

#[tokio::test]
async fn invalid_posts_send_no_request() {
    let e = env().await;
    let before = e.mock.stats().requests;
    let (good, _) = e.post(1000).await;
    let mut cases: Vec<(Post, &str)> = vec![
        (
            Post::new("no title").with_media(good.media[0].clone()),
            "title_required",
        ),
        (good.clone().with_title("x".repeat(101)), "title_too_long"),
        (good.clone().with_title("a <b>"), "title_angle_brackets"),
        (
            {
                let mut p = good.clone();
                p.text = "é".repeat(2501);
                p
            },
            "text_too_long",
        ),
        (Post::new("no video").with_title("t"), "media_required"),
        (
            with_options(
                good.clone(),
                &YouTubeOptions::new().tags(vec!["abcdefghij".to_owned(); 50]),
            ),
            "tags_too_long",
        ),
        (
            with_options(good.clone(), &YouTubeOptions::new().category_id("music")),
            "invalid_category",
        ),
        (
            with_options(
                good.clone(),
                &YouTubeOptions::new().thumbnail(
                    Media::from_bytes(Bytes::from(vec![0u8; 3 * 1024 * 1024]), Some("t.jpg"))
                        .with_mime("image/jpeg"),
                ),
            ),
            "thumbnail_too_large",
        ),
        (
            good.clone().with_title("t").with_media(Media::new(
                MediaKind::Video,
                MediaSource::Url {
                    url: url::Url::parse("https://example.com/v.mp4").expect("url"),
                },
            )),
            "too_many_media",
        ),
    ];
    cases.push((
        Post::new("d").with_title("t").with_media(Media::new(
            MediaKind::Video,
            MediaSource::Url {
                url: url::Url::parse("https://example.com/v.mp4").expect("url"),
            },
        )),
        "url_source_unsupported",
    ));
    for (post, code) in cases {
        let err = e
            .publisher
            .publish(&mut e.ctx(), &post)
            .await
            .expect_err(code);
        assert_eq!(err.kind(), ErrorKind::Validation, "{code}: {err}");
        assert!(
            err.validation_report().is_some_and(|r| r.has(code)),
            "{code}: {err}"
        );
    }
    assert_eq!(e.mock.stats().requests, before, "validation sends nothing");
    // A missing file is bad input, found before any request.
    let missing = Media::new(
        MediaKind::Video,
        MediaSource::File {
            path: e.path("nope.mp4"),
        },
    );
    let post = Post::new("d").with_title("t").with_media(missing);
    let err = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect_err("missing file");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(e.mock.stats().requests, before);
}

#[tokio::test]
async fn lookup_finds_the_upload_in_the_channel_or_reports_it_absent() {
    let e = env().await;
    let since = Utc::now() - chrono::Duration::seconds(5);
    let (post, _) = e.post(1000).await;
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect("publish");
    // No checkpoint: the channel's uploads are searched.
    let found = e
        .publisher
        .lookup_recent(&e.ctx(), &post, since)
        .await
        .expect("lookup");
    let LookupOutcome::Found(r) = found else {
        panic!("found: {found:?}")
    };
    assert_eq!(r.remote_id, receipt.remote_id);
    let other = post.clone().with_title("Another title");
    let absent = e
        .publisher
        .lookup_recent(&e.ctx(), &other, since)
        .await
        .expect("lookup");
    assert_eq!(absent, LookupOutcome::Absent);
}

#[tokio::test]
async fn lookup_from_an_unfinished_session_is_absent() {
    let e = env().await;
    let (post, _) = e.post(3 * CHUNK).await;
    // The second chunk is refused for good: the session stays unfinished.
    e.mock.faults().push(
        "upload.chunk",
        socialpub_core::testkit::Fault::Delay(std::time::Duration::ZERO),
    );
    e.mock.faults().fail_next("upload.chunk", 1, 403);
    let journal = Arc::new(socialpub_core::testkit::conformance::RecordingJournal::new());
    let mut ctx = e.ctx().with_journal(journal.clone());
    e.publisher
        .publish(&mut ctx, &post)
        .await
        .expect_err("refused");
    let saved = journal.checkpoints().last().cloned();
    let ctx = e.ctx().with_checkpoint(saved);
    let out = e
        .publisher
        .lookup_recent(&ctx, &post, Utc::now())
        .await
        .expect("lookup");
    assert_eq!(out, LookupOutcome::Absent);
}

#[tokio::test]
async fn delete_needs_the_manage_scope() {
    let e = env().await;
    let (post, _) = e.post(1000).await;
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect("publish");
    let err = e
        .publisher
        .delete(&e.ctx(), &receipt)
        .await
        .expect_err("scope");
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    let (access, _) = e.mock.issue_token_with_scopes(
        YouTubeMock::DEFAULT_USER,
        &[SCOPE_UPLOAD, SCOPE_READONLY, SCOPE_MANAGE],
    );
    let ctx = socialpub_core::PublishContext::new(
        e.account.clone(),
        Arc::new(StaticToken(SecretString::from(access))),
    );
    e.publisher.delete(&ctx, &receipt).await.expect("delete");
    assert!(e.mock.video(&receipt.remote_id).is_some_and(|v| v.deleted));
    e.publisher
        .delete(&ctx, &receipt)
        .await
        .expect("deleting twice is fine");
    let r = e.publisher.status(&ctx, &receipt).await.expect("status");
    assert!(matches!(
        r.state,
        RemoteState::Processing | RemoteState::Failed { .. }
    ));
}

#[tokio::test]
async fn a_channelless_account_cannot_upload() {
    let e = env().await;
    e.mock.add_user_without_channel("nobody");
    let (access, _) = e.mock.issue_token("nobody");
    let ctx = &mut socialpub_core::PublishContext::new(
        e.account.clone(),
        Arc::new(StaticToken(SecretString::from(access))),
    );
    let (post, _) = e.post(1000).await;
    let err = e
        .publisher
        .publish(ctx, &post)
        .await
        .expect_err("no channel");
    assert_eq!(err.kind(), ErrorKind::ReauthRequired);
    assert_eq!(err.code(), Some("youtubeSignupRequired"));
}

#[tokio::test]
async fn rate_limits_and_backend_errors_are_retried_in_place() {
    let e = env().await;
    e.mock.faults().fail_next("videos.insert", 2, 429);
    e.mock.faults().fail_next("thumbnails.set", 1, 503);
    let (post, hash) = e.post(1000).await;
    let post = with_options(post, &YouTubeOptions::new().thumbnail(png()));
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect("publish");
    let v = e.mock.video(&receipt.remote_id).expect("video");
    assert_eq!(v.sha256, hash);
    assert!(v.thumbnail.is_some());
    assert!(receipt.warnings.is_empty());
    assert_eq!(e.mock.stats().sessions_started, 1);
}

#[tokio::test]
async fn metadata_google_refuses_is_a_validation_error_with_the_field() {
    let e = env().await;
    let (post, _) = e.post(1000).await;
    e.mock.faults().push(
        "videos.insert",
        socialpub_core::testkit::Fault::Status {
            status: 400,
            body: Some(
                r#"{"error":{"code":400,"message":"The request metadata specifies invalid video keywords.","errors":[{"domain":"youtube.video","reason":"invalidTags","message":"The request metadata specifies invalid video keywords."}]}}"#
                    .to_owned(),
            ),
            headers: Vec::new(),
        },
    );
    let err = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Validation, "{err}");
    assert_eq!(err.code(), Some("invalidTags"));
    assert!(
        err.validation_report()
            .is_some_and(|r| r.issues()[0].path == "options.youtube.tags")
    );
}

#[tokio::test]
async fn processing_ends_after_some_time() {
    let e = env().await;
    e.mock.set_processing(ProcessingScript::after_time(
        std::time::Duration::from_millis(300),
        ProcessingOutcome::Succeeded,
    ));
    let (post, _) = e.post(1000).await;
    let ctx = &mut e.ctx();
    let receipt = e.publisher.publish(ctx, &post).await.expect("publish");
    let r = e.publisher.status(ctx, &receipt).await.expect("status");
    assert_eq!(r.state, RemoteState::Processing);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let r = e.publisher.status(ctx, &receipt).await.expect("status");
    assert_eq!(r.state, RemoteState::Published);
}

#[tokio::test]
async fn tokens_and_scopes_are_checked() {
    let r = Raw::new().await;
    let channels = format!("{}youtube/v3/channels?part=id&mine=true", r.mock.base_url());
    let ok = r
        .http
        .get(&channels)
        .bearer_auth(&r.token)
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status().as_u16(), 200);
    let (upload_only, _) = r
        .mock
        .issue_token_with_scopes(YouTubeMock::DEFAULT_USER, &[SCOPE_UPLOAD]);
    let resp = r
        .http
        .get(&channels)
        .bearer_auth(&upload_only)
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.status().as_u16(),
        403,
        "youtube.upload cannot read channels"
    );
    assert!(
        resp.text()
            .await
            .expect("body")
            .contains("insufficientPermissions")
    );
    let (read_only, _) = r
        .mock
        .issue_token_with_scopes(YouTubeMock::DEFAULT_USER, &[SCOPE_READONLY]);
    let resp = r
        .http
        .post(format!(
            "{}upload/youtube/v3/videos?uploadType=resumable&part=snippet",
            r.mock.base_url()
        ))
        .bearer_auth(&read_only)
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.status().as_u16(),
        403,
        "youtube.readonly cannot upload"
    );
    r.mock.expire_access_tokens();
    let resp = r
        .http
        .get(&channels)
        .bearer_auth(&r.token)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.text().await.expect("body").contains("authError"));
}

#[tokio::test]
async fn quota_runs_out() {
    let r = Raw::new().await;
    r.mock.set_quota(2, 100);
    let channels = format!("{}youtube/v3/channels?part=id&mine=true", r.mock.base_url());
    for _ in 0..2 {
        let resp = r
            .http
            .get(&channels)
            .bearer_auth(&r.token)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 200);
    }
    let resp = r
        .http
        .get(&channels)
        .bearer_auth(&r.token)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 403);
    let body = resp.text().await.expect("body");
    assert!(
        body.contains("quotaExceeded") && body.contains("youtube.quota"),
        "{body}"
    );
    assert_eq!(r.mock.quota_used(), (2, 0));
}

#[tokio::test]
async fn a_lookup_pages_through_the_uploads_since() {
    let e = env().await;
    let since = Utc::now() - chrono::Duration::seconds(5);
    let (post, _) = e.post(1000).await;
    let lost = post.clone().with_title("The lost one");
    // 60 uploads since the commit: more than one page of 50.
    for i in 0..60 {
        e.mock
            .add_video(
                YouTubeMock::DEFAULT_USER,
                &format!("Uploaded elsewhere {i}"),
            )
            .expect("a channel");
    }
    let outcome = e
        .publisher
        .lookup_recent(&e.ctx(), &lost, since)
        .await
        .expect("lookup");
    assert_eq!(outcome, LookupOutcome::Absent, "both pages were read");
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &lost)
        .await
        .expect("published");
    // The first upload of the 60 is on the second page: found there.
    let first = post.clone().with_title("Uploaded elsewhere 0");
    let found = e
        .publisher
        .lookup_recent(&e.ctx(), &first, since)
        .await
        .expect("lookup");
    assert!(matches!(found, LookupOutcome::Found(_)), "{found:?}");
    let copies = e
        .mock
        .videos()
        .iter()
        .filter(|v| v.title == "The lost one")
        .count();
    assert_eq!(copies, 1);
    assert!(!receipt.remote_id.is_empty());
}
