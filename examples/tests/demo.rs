//! The demo, end to end with a small video: every valid post published exactly once, checked
//! against the mocks' state. A kept store needs a key.

use socialpub_core::ErrorKind;
use socialpub_examples::demo::{self, DemoArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_publishes_every_valid_post_exactly_once() {
    let args = DemoArgs {
        store: None,
        video_mib: 8,
        lead: 1,
    };
    assert!(demo::run_with(&args, None, None).await.expect("demo runs"));
}

#[tokio::test]
async fn a_kept_store_without_a_key_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let args = DemoArgs {
        store: Some(format!("sqlite://{}", dir.path().join("kept.db").display())),
        video_mib: 1,
        lead: 1,
    };
    let err = demo::run_with(&args, None, None)
        .await
        .expect_err("no key for a kept store");
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.message().contains("SOCIALPUB_ENCRYPTION_KEY"), "{err}");
    assert!(
        !dir.path().join("kept.db").exists(),
        "nothing was written with a random key"
    );
}
