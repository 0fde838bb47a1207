//! Uploads a 1 GiB synthetic MP4 through the YouTube mock with the resumable protocol (8 MiB
//! chunks) and reports the peak heap growth and the throughput, then sends the same file to the
//! same server in one plain streamed `PUT` for comparison.
//!
//! ```text
//! cargo bench -p socialpub-youtube --features mock --bench upload_1gib
//! UPLOAD_BENCH_MIB=4096 cargo bench -p socialpub-youtube --features mock --bench upload_1gib
//! ```
//!
//! The file is an MP4 header followed by zeros, written sparse, so the figures measure the
//! client and the loopback connection rather than the disk.

// A counting global allocator is the one unsafe thing here: it measures the heap.
#![allow(unsafe_code)]
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use sha2::{Digest, Sha256};
use socialpub_core::auth::StaticToken;
use socialpub_core::media::mp4::synthetic_header;
use socialpub_core::{AccountKey, Media, Platform, Post, PublishContext, Publisher};
use socialpub_youtube::YouTubePublisher;
use socialpub_youtube::mock::YouTubeMock;
use tokio::io::AsyncReadExt;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are plain
// atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MIB: f64 = 1024.0 * 1024.0;

/// Starts a new peak measurement; returns the heap in use now.
fn reset_peak() -> usize {
    let now = CURRENT.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

fn vm_hwm() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mib: u64 = std::env::var("UPLOAD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let total = mib * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.mp4");
    {
        let header = synthetic_header(Duration::from_secs(600), 1920, 1080, 0);
        let header = synthetic_header(
            Duration::from_secs(600),
            1920,
            1080,
            total - header.len() as u64,
        );
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&header).unwrap();
        f.set_len(total).unwrap();
    }
    let expected = {
        let mut f = tokio::fs::File::open(&path).await.unwrap();
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 8 << 20];
        loop {
            let n = f.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };

    let mock = YouTubeMock::start().await.unwrap();
    let config = mock.config_builder().build().unwrap();
    let chunk = config.chunk_size();
    let publisher = YouTubePublisher::new(config);
    let (access, _) = mock.issue_token(YouTubeMock::DEFAULT_USER);
    let tokens = Arc::new(StaticToken(SecretString::from(access.clone())));
    let account = AccountKey::new("bench", Platform::YouTube, YouTubeMock::DEFAULT_CHANNEL);
    let media = Media::from_path(&path).await.unwrap();
    let post = Post::new("benchmark")
        .with_title("1 GiB upload")
        .with_media(media);

    // The resumable upload. The mock runs in this process: its heap counts too.
    let base = reset_peak();
    let started = Instant::now();
    let mut ctx = PublishContext::new(account, tokens);
    let receipt = publisher.publish(&mut ctx, &post).await.unwrap();
    let resumable = started.elapsed();
    let resumable_peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let video = mock.video(&receipt.remote_id).unwrap();
    assert_eq!(video.size, total);
    assert_eq!(video.sha256, expected, "the mock received the file intact");
    let stats = mock.stats();

    // One plain PUT of the whole file, streamed, to a fresh session on the same server.
    let http = reqwest::Client::new();
    let base_url = mock.base_url();
    let session = http
        .post(format!(
            "{base_url}upload/youtube/v3/videos?uploadType=resumable&part=snippet,status"
        ))
        .bearer_auth(&access)
        .header("X-Upload-Content-Length", total.to_string())
        .header("X-Upload-Content-Type", "video/mp4")
        .json(&serde_json::json!({"snippet": {"title": "plain put", "categoryId": "22"}, "status": {"privacyStatus": "private"}}))
        .send()
        .await
        .unwrap();
    let location = session
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let base = reset_peak();
    let started = Instant::now();
    let file = tokio::fs::File::open(&path).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let resp = http
        .put(location)
        .bearer_auth(&access)
        .header("Content-Type", "video/mp4")
        .header("Content-Length", total.to_string())
        .header("Content-Range", format!("bytes 0-{}/{total}", total - 1))
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let plain = started.elapsed();
    let plain_peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);

    let rate = |d: Duration| total as f64 / MIB / d.as_secs_f64();
    println!(
        "file: {mib} MiB ({total} bytes), chunk size {} MiB",
        chunk / (1 << 20)
    );
    println!(
        "resumable upload: {:.2} s, {:.0} MiB/s, {} chunk requests, {} bytes sent, peak heap growth {:.1} MiB",
        resumable.as_secs_f64(),
        rate(resumable),
        stats.chunk_requests,
        stats.upload_bytes_received,
        resumable_peak as f64 / MIB,
    );
    println!(
        "single plain PUT: {:.2} s, {:.0} MiB/s, peak heap growth {:.1} MiB",
        plain.as_secs_f64(),
        rate(plain),
        plain_peak as f64 / MIB,
    );
    println!(
        "resumable / plain throughput: {:.2}",
        rate(resumable) / rate(plain)
    );
    if let Some(hwm) = vm_hwm() {
        println!("process peak resident set (VmHWM): {hwm}");
    }
}
