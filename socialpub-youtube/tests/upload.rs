//! The resumable upload against the mock: chunking, short 308s, dropped connections, expired
//! tokens and sessions, a timed-out final chunk, resuming after a crash, and the protocol the
//! mock enforces the way Google does.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{CHUNK, K256, Raw, crash_when, env, env_with};
use socialpub_core::publish::Progress;
use socialpub_core::testkit::Fault;
use socialpub_core::testkit::conformance::RecordingJournal;
use socialpub_core::{AccountKey, ErrorKind, Publisher, RemoteState};

#[tokio::test]
async fn uploads_in_one_chunk() {
    let e = env().await;
    let (post, hash) = e.post(100_000).await;
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect("publish");
    let v = e.mock.video(&receipt.remote_id).expect("video exists");
    assert_eq!(v.sha256, hash);
    assert_eq!(v.size, 100_000);
    let s = e.mock.stats();
    assert_eq!(
        (s.sessions_started, s.chunk_requests, s.videos_created),
        (1, 1, 1)
    );
    assert_eq!(receipt.state, RemoteState::Processing);
    assert_eq!(
        receipt.url.as_deref(),
        Some(format!("https://www.youtube.com/watch?v={}", receipt.remote_id).as_str())
    );
    assert_eq!(receipt.quota_cost, Some(1));
}

#[tokio::test]
async fn uploads_in_many_chunks_with_progress_and_checkpoints() {
    let e = env().await;
    let len = 5 * CHUNK + 1234;
    let (post, hash) = e.post(len).await;
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let s2 = seen.clone();
    let journal = Arc::new(RecordingJournal::new());
    let mut ctx = e
        .ctx()
        .with_journal(journal.clone())
        .with_progress(Arc::new(move |_: &AccountKey, p: Progress| {
            s2.lock().expect("lock").push(p.bytes_sent);
        }));
    let receipt = e.publisher.publish(&mut ctx, &post).await.expect("publish");
    assert_eq!(
        e.mock.video(&receipt.remote_id).expect("video").sha256,
        hash
    );
    let s = e.mock.stats();
    assert_eq!(s.chunk_requests, 6);
    assert_eq!(s.upload_bytes_received, len as u64);
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.last(), Some(&(len as u64)));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(journal.commit_points(), 1);
    // A checkpoint per acknowledged chunk, each with the session URI.
    let cps = journal.checkpoints();
    assert!(cps.len() >= 6, "{}", cps.len());
    assert!(
        cps[1]["upload"]["session_uri"]
            .as_str()
            .is_some_and(|u| u.contains("upload_id="))
    );
    assert_eq!(cps[2]["upload"]["offset"], serde_json::json!(2 * CHUNK));
}

#[tokio::test]
async fn a_short_308_resends_what_the_server_did_not_keep() {
    let e = env().await;
    let len = 4 * CHUNK;
    let (post, hash) = e.post(len).await;
    // The first two chunks keep 1000 and 100,000 bytes less than they carried.
    e.mock.keep_short(1, 1000);
    e.mock.keep_short(1, 100_000);
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect("publish");
    assert_eq!(
        e.mock.video(&receipt.remote_id).expect("video").sha256,
        hash
    );
    let s = e.mock.stats();
    assert_eq!(s.upload_bytes_received, len as u64 + 101_000);
    assert_eq!(s.sessions_started, 1);
    assert_eq!(s.status_queries, 0, "a 308 needs no status query");
}

#[tokio::test]
async fn a_dropped_connection_mid_chunk_is_resumed_after_a_status_query() {
    let e = env().await;
    let len = 6 * CHUNK + 777;
    let (post, hash) = e.post(len).await;
    // Chunks 1 and 2 pass; chunk 3 is cut off halfway through.
    e.mock
        .faults()
        .push("upload.chunk", Fault::Delay(Duration::ZERO));
    e.mock
        .faults()
        .push("upload.chunk", Fault::Delay(Duration::ZERO));
    e.mock.faults().drop_next("upload.chunk", 1);
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect("publish");
    assert_eq!(
        e.mock.video(&receipt.remote_id).expect("video").sha256,
        hash
    );
    let s = e.mock.stats();
    assert!(
        s.status_queries >= 1,
        "the session was asked where it stood"
    );
    assert_eq!(s.sessions_started, 1, "no second session");
    assert_eq!(s.videos_created, 1);
    assert!(
        s.upload_bytes_received <= len as u64 + CHUNK as u64,
        "uploaded {} bytes for a {len}-byte file",
        s.upload_bytes_received
    );
    assert!(
        s.upload_bytes_received > len as u64,
        "the dropped part was sent"
    );
}

#[tokio::test]
async fn server_errors_are_retried_through_the_session() {
    let e = env().await;
    let (post, hash) = e.post(3 * CHUNK).await;
    e.mock
        .faults()
        .push("upload.chunk", Fault::Delay(Duration::ZERO));
    e.mock.faults().fail_next("upload.chunk", 2, 503);
    e.mock.faults().fail_next("upload.status", 1, 500);
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect("publish");
    assert_eq!(
        e.mock.video(&receipt.remote_id).expect("video").sha256,
        hash
    );
    assert_eq!(e.mock.stats().sessions_started, 1);
}

#[tokio::test]
async fn a_token_expiring_mid_upload_is_refreshed_and_the_session_continues() {
    let e = env().await;
    let (post, hash) = e.post(4 * CHUNK).await;
    e.mock.expire_access_tokens_after_chunks(2);
    let receipt = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect("publish");
    assert_eq!(
        e.mock.video(&receipt.remote_id).expect("video").sha256,
        hash
    );
    let s = e.mock.stats();
    assert_eq!(s.refreshes, 1, "one refresh");
    assert_eq!(s.sessions_started, 1, "the same session");
    assert_eq!(
        s.upload_bytes_received,
        4 * CHUNK as u64 + CHUNK as u64,
        "the refused chunk was sent again"
    );
}

async fn expired_session_starts_a_new_one(status: u16) {
    let e = env().await;
    let len = 4 * CHUNK;
    let (post, hash) = e.post(len).await;
    let mock = e.mock.clone();
    let fired = Arc::new(Mutex::new(false));
    let ctx = e
        .ctx()
        .with_progress(Arc::new(move |_: &AccountKey, p: Progress| {
            let mut f = fired.lock().expect("lock");
            if !*f && p.bytes_sent >= 2 * CHUNK as u64 && p.bytes_sent < p.total_bytes {
                *f = true;
                mock.expire_sessions(status);
            }
        }));
    let mut ctx = ctx;
    let receipt = e.publisher.publish(&mut ctx, &post).await.expect("publish");
    assert_eq!(
        e.mock.video(&receipt.remote_id).expect("video").sha256,
        hash
    );
    let s = e.mock.stats();
    assert_eq!(s.sessions_started, 2);
    assert_eq!(s.videos_created, 1);
    assert_eq!(receipt.quota_cost, Some(2), "two videos.insert calls");
}

#[tokio::test]
async fn a_404_session_starts_a_new_one() {
    expired_session_starts_a_new_one(404).await;
}

#[tokio::test]
async fn a_410_session_starts_a_new_one() {
    expired_session_starts_a_new_one(410).await;
}

#[tokio::test]
async fn a_timeout_on_the_final_chunk_is_settled_by_the_status_query() {
    let e = env_with(|b| b.chunk_timeout(Duration::from_millis(1500))).await;
    let (post, hash) = e.post(3 * CHUNK).await;
    e.mock
        .faults()
        .push("upload.chunk", Fault::Delay(Duration::ZERO));
    e.mock
        .faults()
        .push("upload.chunk", Fault::Delay(Duration::ZERO));
    // The final chunk creates the video, then its answer is held back past the timeout.
    e.mock
        .faults()
        .delay_answer_next("upload.chunk", Duration::from_secs(5));
    let journal = Arc::new(RecordingJournal::new());
    let mut ctx = e.ctx().with_journal(journal.clone());
    let receipt = e.publisher.publish(&mut ctx, &post).await.expect("publish");
    assert_eq!(
        e.mock.video(&receipt.remote_id).expect("video").sha256,
        hash
    );
    let s = e.mock.stats();
    assert_eq!(s.videos_created, 1, "no second video");
    assert_eq!(s.sessions_started, 1, "no second session");
    assert!(s.status_queries >= 1);
    assert_eq!(s.chunk_requests, 3, "the final chunk was not sent again");
    assert_eq!(journal.commit_points(), 1);
}

#[tokio::test]
async fn a_crash_mid_upload_resumes_the_saved_session() {
    let e = env().await;
    let len = 5 * CHUNK;
    let (post, hash) = e.post(len).await;
    // The third chunk hangs; the process "crashes" (the publish future is dropped).
    e.mock
        .faults()
        .push("upload.chunk", Fault::Delay(Duration::ZERO));
    e.mock
        .faults()
        .push("upload.chunk", Fault::Delay(Duration::ZERO));
    e.mock
        .faults()
        .delay_next("upload.chunk", 1, Duration::from_secs(30));
    let journal = Arc::new(RecordingJournal::new());
    let mut ctx = e.ctx().with_journal(journal.clone());
    let mock = e.mock.clone();
    crash_when(e.publisher.publish(&mut ctx, &post), move || {
        mock.stats().chunk_requests >= 3
    })
    .await;
    assert_eq!(e.mock.stats().videos_created, 0);
    let saved = journal.checkpoints().last().cloned().expect("a checkpoint");
    assert_eq!(saved["upload"]["offset"], serde_json::json!(2 * CHUNK));

    // A new attempt (a new process) with the saved checkpoint.
    let mut ctx = e.ctx().with_checkpoint(Some(saved)).with_attempt(2);
    let receipt = e
        .publisher
        .publish(&mut ctx, &post)
        .await
        .expect("resumed publish");
    assert_eq!(
        e.mock.video(&receipt.remote_id).expect("video").sha256,
        hash
    );
    let s = e.mock.stats();
    assert_eq!(s.sessions_started, 1, "the saved session was resumed");
    assert!(s.status_queries >= 1, "the resume asked the session first");
    assert!(s.upload_bytes_received <= len as u64 + CHUNK as u64);
}

#[tokio::test]
async fn a_crash_after_the_final_chunk_does_not_upload_again() {
    let e = env().await;
    let (post, _) = e.post(2 * CHUNK).await;
    e.mock
        .faults()
        .push("upload.chunk", Fault::Delay(Duration::ZERO));
    e.mock
        .faults()
        .delay_answer_next("upload.chunk", Duration::from_secs(30));
    let journal = Arc::new(RecordingJournal::new());
    let mut ctx = e.ctx().with_journal(journal.clone());
    let mock = e.mock.clone();
    crash_when(e.publisher.publish(&mut ctx, &post), move || {
        mock.stats().videos_created >= 1
    })
    .await;
    assert_eq!(
        e.mock.stats().videos_created,
        1,
        "the final chunk made the video"
    );
    assert_eq!(journal.commit_points(), 1);
    let saved = journal.checkpoints().last().cloned().expect("a checkpoint");

    // The scheduler settles the unconfirmed publish from the saved session.
    let ctx = e.ctx().with_checkpoint(Some(saved.clone()));
    let found = e
        .publisher
        .lookup_recent(&ctx, &post, chrono::Utc::now())
        .await
        .expect("lookup");
    let socialpub_core::LookupOutcome::Found(r) = found else {
        panic!("the video exists: {found:?}");
    };
    // And a republish with that checkpoint finds the video instead of uploading again.
    let mut ctx = e.ctx().with_checkpoint(Some(saved));
    let receipt = e.publisher.publish(&mut ctx, &post).await.expect("publish");
    assert_eq!(receipt.remote_id, r.remote_id);
    let s = e.mock.stats();
    assert_eq!(
        (s.videos_created, s.sessions_started, s.chunk_requests),
        (1, 1, 2)
    );
}

#[tokio::test]
async fn a_refused_chunk_fails_without_a_second_session() {
    let e = env().await;
    let (post, _) = e.post(2 * CHUNK).await;
    e.mock.faults().fail_next("upload.chunk", 1, 400);
    let err = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Platform, "{err}");
    assert_eq!(e.mock.stats().sessions_started, 1);
}

#[tokio::test]
async fn endless_server_errors_on_the_final_chunk_are_unconfirmed() {
    let e = env_with(|b| b.max_upload_failures(2)).await;
    let (post, _) = e.post(CHUNK / 2).await;
    e.mock.faults().fail_next("upload.chunk", 1, 503);
    e.mock.faults().fail_next("upload.status", 5, 503);
    let err = e
        .publisher
        .publish(&mut e.ctx(), &post)
        .await
        .expect_err("gives up");
    assert_eq!(err.kind(), ErrorKind::Unconfirmed, "{err}");
}

#[tokio::test]
async fn a_vanished_session_after_a_possible_commit_is_unconfirmed_not_reuploaded() {
    let e = env().await;
    let (post, _) = e.post(2 * CHUNK).await;
    e.mock
        .faults()
        .push("upload.chunk", Fault::Delay(Duration::ZERO));
    // The final chunk hangs before the mock handles it; the process crashes meanwhile.
    e.mock
        .faults()
        .delay_next("upload.chunk", 1, Duration::from_secs(30));
    let journal = Arc::new(RecordingJournal::new());
    let mut ctx = e.ctx().with_journal(journal.clone());
    let mock = e.mock.clone();
    crash_when(e.publisher.publish(&mut ctx, &post), move || {
        mock.stats().chunk_requests >= 2
    })
    .await;
    let saved = journal.checkpoints().last().cloned().expect("a checkpoint");
    assert_eq!(saved["upload"]["final_sent"], serde_json::json!(true));
    e.mock.expire_sessions(404);

    let mut ctx = e.ctx().with_checkpoint(Some(saved.clone()));
    let err = e
        .publisher
        .publish(&mut ctx, &post)
        .await
        .expect_err("unknown outcome");
    assert_eq!(err.kind(), ErrorKind::Unconfirmed, "{err}");
    assert_eq!(
        e.mock.stats().sessions_started,
        1,
        "no blind second session"
    );

    // The lookup reads the channel: the video is not there.
    let ctx = e.ctx().with_checkpoint(Some(saved));
    let out = e
        .publisher
        .lookup_recent(
            &ctx,
            &post,
            chrono::Utc::now() - chrono::Duration::seconds(5),
        )
        .await
        .expect("lookup");
    assert_eq!(out, socialpub_core::LookupOutcome::Absent);
}

#[tokio::test]
async fn sessions_need_the_upload_headers() {
    let r = Raw::new().await;
    let resp = r
        .http
        .post(format!(
            "{}upload/youtube/v3/videos?uploadType=resumable&part=snippet",
            r.mock.base_url()
        ))
        .bearer_auth(&r.token)
        .header("X-Upload-Content-Type", "video/mp4")
        .json(&serde_json::json!({"snippet": {"title": "t"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400, "no X-Upload-Content-Length");
    let resp = r
        .http
        .post(format!(
            "{}upload/youtube/v3/videos?uploadType=resumable&part=snippet",
            r.mock.base_url()
        ))
        .bearer_auth(&r.token)
        .header("X-Upload-Content-Length", "10")
        .header("X-Upload-Content-Type", "image/png")
        .json(&serde_json::json!({"snippet": {"title": "t"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400, "not a video type");
    let resp = r
        .http
        .post(format!(
            "{}upload/youtube/v3/videos?uploadType=resumable&part=snippet",
            r.mock.base_url()
        ))
        .bearer_auth(&r.token)
        .header("X-Upload-Content-Length", "10")
        .header("X-Upload-Content-Type", "video/mp4")
        .json(&serde_json::json!({"snippet": {"title": "<b>"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.expect("body").contains("invalidTitle"));
}

#[tokio::test]
async fn chunks_must_follow_the_protocol() {
    let r = Raw::new().await;
    let total = 2 * K256 + 10;
    let uri = r.session(total).await;
    // Not a multiple of 256 KiB and not the last chunk.
    let (s, _, body) = r.put(&uri, "bytes 0-999/524298", vec![0; 1000]).await;
    assert_eq!(s, 400, "{body}");
    // The wrong total.
    let (s, _, _) = r
        .put(&uri, &format!("bytes 0-{}/999999", K256 - 1), vec![0; K256])
        .await;
    assert_eq!(s, 400);
    // Out of order: the session holds nothing yet.
    let (s, _, _) = r
        .put(
            &uri,
            &format!("bytes {K256}-{}/{total}", 2 * K256 - 1),
            vec![0; K256],
        )
        .await;
    assert_eq!(s, 400);
    // Length differs from the range.
    let (s, _, _) = r
        .put(
            &uri,
            &format!("bytes 0-{}/{total}", K256 - 1),
            vec![0; K256 - 1],
        )
        .await;
    assert_eq!(s, 400);
    // A status query before anything: 308 without Range.
    let (s, range, _) = r.put(&uri, &format!("bytes */{total}"), Vec::new()).await;
    assert_eq!((s, range), (308, None));
    // A proper chunk: 308 with Range.
    let (s, range, _) = r
        .put(
            &uri,
            &format!("bytes 0-{}/{total}", K256 - 1),
            vec![1; K256],
        )
        .await;
    assert_eq!((s, range.as_deref()), (308, Some("bytes=0-262143")));
    let (s, range, _) = r.put(&uri, &format!("bytes */{total}"), Vec::new()).await;
    assert_eq!((s, range.as_deref()), (308, Some("bytes=0-262143")));
    // The rest in one final chunk: the video.
    let (s, _, body) = r
        .put(
            &uri,
            &format!("bytes {K256}-{}/{total}", total - 1),
            vec![2; K256 + 10],
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let video: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(video["status"]["uploadStatus"], "uploaded");
    // Asking again returns the same video; sending more is refused.
    let (s, _, again) = r.put(&uri, &format!("bytes */{total}"), Vec::new()).await;
    assert_eq!(s, 200);
    let again: serde_json::Value = serde_json::from_str(&again).expect("json");
    assert_eq!(again["id"], video["id"]);
    assert_eq!(r.mock.stats().videos_created, 1);
}
