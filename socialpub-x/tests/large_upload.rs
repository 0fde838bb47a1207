//! A 300 MiB video through the mock, with the heap measured by a counting allocator: memory
//! stays bounded by a few chunks, not by the file.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socialpub_core::media::mp4;
use socialpub_core::publish::Progress;
use socialpub_core::{AccountKey, Media, Post, Publisher};
use socialpub_x::mock::XMock;

use common::*;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call forwards to the system allocator unchanged; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_mib_video_streams_in_bounded_memory() {
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
