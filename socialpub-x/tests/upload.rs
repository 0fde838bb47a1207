//! Media uploads against the mock and against wire-exact fakes: segments resent alone, sessions
//! resumed, the protocol X enforces, and a 300 MiB video in bounded memory.

// A counting global allocator is the one unsafe thing here: it measures the heap.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use socialpub_core::auth::{AccountKey, StaticToken};
use socialpub_core::media::mp4;
use socialpub_core::publish::Progress;
use socialpub_core::testkit::Fault;
use socialpub_core::testkit::conformance::RecordingJournal;
use socialpub_core::{ErrorKind, Media, Platform, Post, PublishContext, Publisher};
use socialpub_x::XPublisher;
use socialpub_x::mock::XMock;
use wiremock::matchers::{body_json, header, header_regex, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::*;

const MIB: usize = 1024 * 1024;

/// Counts the heap of the threads that set [`MEASURED`] (the memory test's own runtime), so
/// the other tests of this file, running at the same time, do not count.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MEASURED: Cell<bool> = const { Cell::new(false) };
}

fn measured() -> bool {
    MEASURED.try_with(Cell::get).unwrap_or(false)
}

fn grew(by: usize) {
    if measured() {
        let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

fn shrank(by: usize) {
    if measured() {
        // Memory allocated before the measurement started may be freed during it.
        let _ = CURRENT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            Some(c.saturating_sub(by))
        });
    }
}

// SAFETY: every call forwards to the system allocator unchanged; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

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

#[tokio::test]
async fn uploads_follow_the_protocol() {
    let raw = Raw::new().await;
    let (s, b) = raw.init("video/mp4", 10, "tweet_image").await;
    assert_eq!(s, 400, "category must match the type");
    assert!(is_invalid_request(&b));
    let (s, _) = raw.init("image/png", 6 * 1024 * 1024, "tweet_image").await;
    assert_eq!(s, 400, "images are capped at 5 MB");
    let (s, _) = raw.init("application/zip", 10, "tweet_image").await;
    assert_eq!(s, 400);

    let (s, b) = raw.init("video/mp4", 10, "tweet_video").await;
    assert_eq!(s, 200, "{b}");
    let id = b["data"]["id"].as_str().expect("id").to_owned();
    assert!(
        b["data"]["media_key"]
            .as_str()
            .expect("key")
            .starts_with("7_")
    );

    assert_eq!(raw.append(&id, 1, vec![1; 4]).await.0, 400, "out of order");
    assert_eq!(raw.append(&id, 0, vec![1; 4]).await.0, 200);
    assert_eq!(
        raw.append(&id, 0, vec![2; 4]).await.0,
        200,
        "resending the last segment"
    );
    assert_eq!(raw.mock.upload(&id).expect("upload").received_bytes, 4);
    assert_eq!(
        raw.append(&id, 2, vec![1; 4]).await.0,
        400,
        "skipping a segment"
    );
    assert_eq!(
        raw.append(&id, 1, vec![1; 7]).await.0,
        400,
        "more than total_bytes"
    );
    let (s, b) = raw
        .post_json(&format!("/2/media/upload/{id}/finalize"), json!({}))
        .await;
    assert_eq!(s, 400, "finalize before all bytes: {b}");
    assert_eq!(raw.append(&id, 1, vec![3; 6]).await.0, 200);

    // Not yet processed: the post is refused.
    let (s, b) = raw
        .post_json(&format!("/2/media/upload/{id}/finalize"), json!({}))
        .await;
    assert_eq!(
        (s, b["data"]["processing_info"]["state"].as_str()),
        (200, Some("pending"))
    );
    let (s, b) = raw
        .post_json(
            "/2/tweets",
            json!({"text":"too early","media":{"media_ids":[id]}}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(b.to_string().contains("Your media IDs are invalid."));
    // A segment after finalize is refused.
    assert_eq!(raw.append(&id, 2, vec![1]).await.0, 400);
    let status = |raw: &Raw, id: String| {
        let req = raw
            .http
            .get(raw.url("/2/media/upload"))
            .query(&[("command", "STATUS"), ("media_id", id.as_str())])
            .bearer_auth(&raw.token);
        async move {
            req.send()
                .await
                .expect("send")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let b = status(&raw, id.clone()).await;
    assert_eq!(b["data"]["processing_info"]["state"], "in_progress");
    let b = status(&raw, id.clone()).await;
    assert_eq!(b["data"]["processing_info"]["state"], "succeeded");
    let (s, _) = raw
        .post_json(
            "/2/tweets",
            json!({"text":"now","media":{"media_ids":[id]}}),
        )
        .await;
    assert_eq!(s, 201);
    let u = raw.mock.upload(&id).expect("upload");
    // The resent segment replaced the first: 2222 then 333333.
    use sha2::Digest;
    let want: String = sha2::Sha256::digest([2, 2, 2, 2, 3, 3, 3, 3, 3, 3])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(u.sha256.as_deref(), Some(want.as_str()));
}

#[tokio::test]
async fn segment_limits() {
    let raw = Raw::new().await;
    let (_, b) = raw.init("video/mp4", 8 * 1024 * 1024, "tweet_video").await;
    let id = b["data"]["id"].as_str().expect("id").to_owned();
    let (s, _) = raw.append(&id, 0, vec![0; 5 * 1024 * 1024 + 1]).await;
    assert_eq!(s, 400, "a segment holds at most 5 MiB");
    let (s, _) = raw.append(&id, 1000, vec![0; 1]).await;
    assert_eq!(s, 400, "segment_index stops at 999");
    let r = raw
        .http
        .post(raw.url(&format!("/2/media/upload/{id}/append")))
        .bearer_auth(&raw.token)
        .body("segment_index=0")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400, "append is multipart");
}

#[tokio::test]
async fn video_upload_and_post_wire_format() {
    let server = MockServer::start().await;
    let clip = video(150_000, 8);
    let total = clip.size.expect("size");
    Mock::given(method("POST"))
        .and(path("/2/media/upload/initialize"))
        .and(header("authorization", "Bearer user-token"))
        .and(body_json(json!({
            "media_type": "video/mp4",
            "total_bytes": total,
            "media_category": "tweet_video"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data":{
            "id": MEDIA_ID, "media_key": format!("7_{MEDIA_ID}"), "expires_after_secs": 1_295_999
        }})))
        .expect(1)
        .mount(&server)
        .await;
    for segment in 0..3 {
        Mock::given(method("POST"))
            .and(path(format!("/2/media/upload/{MEDIA_ID}/append")))
            .and(header_regex(
                "content-type",
                "^multipart/form-data; boundary=",
            ))
            .and(BodyHas(format!(
                "name=\"segment_index\"\r\n\r\n{segment}\r\n"
            )))
            .and(BodyHas("name=\"media\"".to_owned()))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"data":{"expires_at":1_737_000_000}})),
            )
            .expect(1)
            .mount(&server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path(format!("/2/media/upload/{MEDIA_ID}/finalize")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data":{
            "id": MEDIA_ID, "media_key": format!("7_{MEDIA_ID}"), "size": total,
            "expires_after_secs": 86_400,
            "processing_info": {"state": "pending", "check_after_secs": 1}
        }})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/2/media/upload"))
        .and(query_param("command", "STATUS"))
        .and(query_param("media_id", MEDIA_ID))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data":{
            "id": MEDIA_ID, "media_key": format!("7_{MEDIA_ID}"),
            "processing_info": {"state": "succeeded", "progress_percent": 100}
        }})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/2/tweets"))
        .and(body_json(
            json!({"text":"clip","media":{"media_ids":[MEDIA_ID]}}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"data":{
            "id":"1445880548472328192","text":"clip https://t.co/x",
            "edit_history_tweet_ids":["1445880548472328192"]
        }})))
        .expect(1)
        .mount(&server)
        .await;

    let publisher = XPublisher::new(wire_config(&server));
    let tokens = Arc::new(StaticToken(secrecy::SecretString::from("user-token")));
    let mut ctx = PublishContext::new(AccountKey::new("t", Platform::X, "2244994945"), tokens);
    let receipt = publisher
        .publish(&mut ctx, &Post::new("clip").with_media(clip))
        .await
        .expect("published");
    assert_eq!(receipt.remote_id, "1445880548472328192");
    assert_eq!(
        receipt.url.as_deref(),
        Some("https://x.com/i/status/1445880548472328192")
    );
}

#[tokio::test]
async fn legacy_rate_limit_shape_on_status_waits_then_reads() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/2/tweets/7"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(json!({"errors":[{"code":88,"message":"Rate limit exceeded"}]})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/2/tweets/7"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data":{"id":"7","text":"hi"}})),
        )
        .mount(&server)
        .await;
    let publisher = XPublisher::new(wire_config(&server));
    let ctx = PublishContext::new(
        AccountKey::new("t", Platform::X, "1"),
        Arc::new(StaticToken(secrecy::SecretString::from("tok"))),
    );
    let started = std::time::Instant::now();
    let receipt = socialpub_core::Receipt::new(Platform::X, "7", None);
    let status = publisher.status(&ctx, &receipt).await.expect("status");
    assert_eq!(status.state, socialpub_core::RemoteState::Published);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
}

#[test]
fn a_300_mib_video_streams_in_bounded_memory() {
    // Its own runtime, whose threads alone are measured.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(|| MEASURED.with(|m| m.set(true)))
        .build()
        .expect("runtime");
    runtime.block_on(three_hundred_mib());
}

async fn three_hundred_mib() {
    let total: u64 = 300 * MIB as u64;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("big.mp4");
    let header = mp4::synthetic_header(Duration::from_secs(60), 1280, 720, 0);
    let header = mp4::synthetic_header(
        Duration::from_secs(60),
        1280,
        720,
        total - header.len() as u64,
    );
    {
        let file = std::fs::File::create(&path).expect("create");
        std::io::Write::write_all(&mut &file, &header).expect("header");
        file.set_len(total).expect("sparse payload"); // zeros, without writing them
    }
    let media = Media::from_path(&path).await.expect("probe");
    assert_eq!(media.size, Some(total));
    assert_eq!(media.duration, Some(Duration::from_secs(60)));

    let mock = XMock::start().await;
    // Default 4 MiB chunks.
    let (publisher, ctx) = publisher_for(&mock, mock.config_builder().retry_policy(fast_retry()));
    let events: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let sink = events.clone();
    let mut ctx = ctx.with_progress(Arc::new(move |_: &AccountKey, p: Progress| {
        sink.lock().expect("lock").push(p);
    }));

    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let receipt = publisher
        .publish(&mut ctx, &Post::new("three hundred MiB").with_media(media))
        .await
        .expect("published");
    let peak = PEAK.load(Ordering::Relaxed) - baseline;

    let upload = mock.upload(&mock.posts()[0].media_ids[0]).expect("upload");
    assert_eq!(upload.received_bytes, total);
    assert_eq!(upload.append_calls.len(), 75, "300 MiB in 4 MiB segments");
    assert_eq!(upload.state, "succeeded");
    assert!(!receipt.remote_id.is_empty());
    let events = events.lock().expect("lock");
    assert_eq!(events.len(), 75);
    assert_eq!(events.last().map(|p| p.bytes_sent), Some(total));

    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "peak heap during a 300 MiB upload (client and mock together): {:.1} MiB",
            peak as f64 / MIB as f64
        );
    }
    // The client holds one 4 MiB chunk, the mock at most one segment: a few chunks in all,
    // nowhere near the file's 300 MiB.
    assert!(peak < 8 * 4 * MIB, "peak heap {peak} bytes");
}
