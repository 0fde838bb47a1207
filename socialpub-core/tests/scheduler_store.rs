//! The schedule store conformance suite and the model-based property test, on the in-memory
//! store.
#![cfg(feature = "testkit")]

use std::sync::Arc;

use proptest::prelude::*;
use socialpub_core::schedule::{MemoryScheduleStore, ScheduleStore};
use socialpub_core::testkit::schedule::{Op, check_against_model, random_ops, store_suite};

fn memory() -> Arc<dyn ScheduleStore> {
    Arc::new(MemoryScheduleStore::new())
}

#[tokio::test]
async fn memory_store_passes_the_conformance_suite() {
    store_suite(|| async { memory() }).await;
}

#[tokio::test]
async fn memory_store_agrees_with_the_model_on_seeded_runs() {
    for seed in 0..50 {
        check_against_model(memory(), &random_ops(seed, 300)).await;
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..2, 1u8..4, -5i64..60).prop_map(|(tenant, targets, due)| Op::Schedule { tenant, targets, due }),
        3 => (0u8..3, 1u8..6).prop_map(|(worker, limit)| Op::Claim { worker, limit }),
        2 => (1u32..90).prop_map(|secs| Op::Advance { secs }),
        1 => any::<usize>().prop_map(|pick| Op::Prepare { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Commit { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Publish { pick }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, retryable)| Op::Fail { pick, retryable }),
        1 => any::<usize>().prop_map(|pick| Op::Unconfirm { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Renew { pick }),
        1 => (0u8..3).prop_map(|worker| Op::Crash { worker }),
        2 => Just(Op::Rescue),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => (any::<usize>(), 0i64..30).prop_map(|(pick, due)| Op::Reschedule { pick, due }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_schedule_cancel_claim_fail_crash_sequences_keep_the_invariants(
        ops in proptest::collection::vec(op(), 1..200)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(check_against_model(memory(), &ops));
    }
}
