//! The demo, end to end with a small video: every valid post published exactly once, checked
//! against the mocks' state.

use socialpub_examples::demo::{self, DemoArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_publishes_every_valid_post_exactly_once() {
    let args = DemoArgs {
        store: None,
        video_mib: 8,
        lead: 1,
    };
    assert!(demo::run(&args).await.expect("demo runs"));
}
