//! The model-based random test: random operations replayed on a store and on the model.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::{LEASE, fence, new_post, receipt, t0};
use crate::error::ErrorKind;
use crate::schedule::{
    CancelOutcome, Delivery, DeliveryError, DeliveryState, Event, EventKind, Fenced,
    MemoryScheduleStore, RescheduleOutcome, ScheduleStore, Transition,
};

/// One step of [`check_against_model`]. Indices pick among the deliveries or claims known so
/// far (modulo their number).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Schedules a post to `targets` (1–3) accounts of tenant `tenant` (0–1), due in `due`
    /// seconds from the current time.
    Schedule {
        /// The tenant.
        tenant: u8,
        /// How many targets.
        targets: u8,
        /// Seconds from now (negative: overdue).
        due: i64,
    },
    /// Worker `worker` claims up to `limit`.
    Claim {
        /// The worker.
        worker: u8,
        /// The limit.
        limit: u8,
    },
    /// Moves time forward.
    Advance {
        /// Seconds.
        secs: u32,
    },
    /// The holder of a claim moves it to preparing.
    Prepare {
        /// Which claim.
        pick: usize,
    },
    /// The holder of a claim records its commit point.
    Commit {
        /// Which claim.
        pick: usize,
    },
    /// The holder publishes (or, for a processing claim, finishes).
    Publish {
        /// Which claim.
        pick: usize,
    },
    /// The holder fails: retryable (back in the queue in 5 s) or not.
    Fail {
        /// Which claim.
        pick: usize,
        /// Retryable or final.
        retryable: bool,
    },
    /// The holder loses the answer to its create: unconfirmed, due for lookup in 5 s.
    Unconfirm {
        /// Which claim.
        pick: usize,
    },
    /// The holder renews its lease.
    Renew {
        /// Which claim.
        pick: usize,
    },
    /// A worker crashes: it forgets its claims (their leases lapse).
    Crash {
        /// The worker.
        worker: u8,
    },
    /// Expired leases are rescued.
    Rescue,
    /// A delivery is cancelled.
    Cancel {
        /// Which delivery.
        pick: usize,
    },
    /// A delivery is rescheduled `due` seconds from now.
    Reschedule {
        /// Which delivery.
        pick: usize,
        /// Seconds from now.
        due: i64,
    },
}

/// `n` random operations from `seed` (the same seed gives the same operations).
pub fn random_ops(seed: u64, n: usize) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let pick = rng.random_range(0..64usize);
            match rng.random_range(0..20u8) {
                0..=2 => Op::Schedule {
                    tenant: rng.random_range(0..2),
                    targets: rng.random_range(1..4),
                    due: rng.random_range(-5..60),
                },
                3..=5 => Op::Claim {
                    worker: rng.random_range(0..3),
                    limit: rng.random_range(1..5),
                },
                6..=7 => Op::Advance {
                    secs: rng.random_range(1..40),
                },
                8 => Op::Prepare { pick },
                9 => Op::Commit { pick },
                10 => Op::Publish { pick },
                11 => Op::Fail {
                    pick,
                    retryable: rng.random_bool(0.6),
                },
                12 => Op::Unconfirm { pick },
                13 => Op::Renew { pick },
                14 => Op::Crash {
                    worker: rng.random_range(0..3),
                },
                15..=16 => Op::Rescue,
                17 => Op::Cancel { pick },
                18 => Op::Reschedule {
                    pick,
                    due: rng.random_range(0..30),
                },
                _ => Op::Claim {
                    worker: rng.random_range(0..3),
                    limit: 10,
                },
            }
        })
        .collect()
}

/// A claim a worker holds, as it knows it.
#[derive(Debug, Clone)]
struct Held {
    worker: u8,
    delivery: Delivery,
}

/// Replays `ops` against `store` and against a [`MemoryScheduleStore`] as the model, and
/// panics when they disagree or when an invariant breaks:
///
/// - both stores give the same answer to every call (claims, fenced writes, cancels, …) and
///   hold the same deliveries at the end;
/// - at most one worker holds a delivery at a time, and fences only grow;
/// - a final state never changes again (except a reschedule of a failed delivery);
/// - a delivery whose commit point was recorded is never claimed for a new attempt before it
///   is reconciled (it is never `claimed` with a commit time);
/// - a cancelled delivery is never committed afterwards;
/// - writes of a worker whose claim was superseded are refused.
pub async fn check_against_model(store: Arc<dyn ScheduleStore>, ops: &[Op]) {
    let model = MemoryScheduleStore::new();
    let mut now = t0();
    let mut known: Vec<(String, Uuid)> = Vec::new();
    let mut held: Vec<Held> = Vec::new();
    let mut superseded: Vec<Held> = Vec::new();
    let mut last_fence: HashMap<Uuid, i64> = HashMap::new();
    let mut cancelled: HashSet<Uuid> = HashSet::new();
    let secs = |n: i64| chrono::Duration::seconds(n);

    for (step, op) in ops.iter().enumerate() {
        let ctx = format!("step {step}: {op:?}");
        match op {
            Op::Schedule {
                tenant,
                targets,
                due,
            } => {
                let tenant = format!("tenant-{tenant}");
                let accounts: Vec<String> = (0..*targets).map(|i| format!("acct-{i}")).collect();
                let refs: Vec<&str> = accounts.iter().map(String::as_str).collect();
                let (mut ds, _) = new_post(&tenant, &refs, 0);
                for d in &mut ds {
                    d.due_at = now + secs(*due);
                    d.run_at = Some(d.due_at);
                    d.created_at = now;
                    d.updated_at = now;
                }
                let events: Vec<Event> = ds
                    .iter()
                    .map(|d| Event::for_delivery(d, EventKind::Scheduled, now))
                    .collect();
                store.insert(&ds, &events).await.expect("insert");
                model.insert(&ds, &events).await.expect("insert");
                known.extend(ds.iter().map(|d| (tenant.clone(), d.id)));
            }
            Op::Claim { worker, limit } => {
                let name = format!("w{worker}");
                let got = store
                    .claim_due(&name, now, *limit as usize, LEASE)
                    .await
                    .expect("claim");
                let want = model
                    .claim_due(&name, now, *limit as usize, LEASE)
                    .await
                    .expect("claim");
                assert_eq!(got, want, "{ctx}: claims differ from the model");
                for d in got {
                    assert!(
                        !(d.state == DeliveryState::Claimed && d.committed_at.is_some()),
                        "{ctx}: a committed delivery was claimed for a new attempt"
                    );
                    let f = fence(&d);
                    if let Some(prev) = last_fence.insert(d.id, f) {
                        assert!(f > prev, "{ctx}: fences only grow");
                    }
                    // Anyone who held it before has been superseded.
                    let (old, keep): (Vec<Held>, Vec<Held>) =
                        held.drain(..).partition(|h| h.delivery.id == d.id);
                    held = keep;
                    superseded.extend(old);
                    held.push(Held {
                        worker: *worker,
                        delivery: d,
                    });
                }
            }
            Op::Advance { secs: s } => now += secs(i64::from(*s)),
            Op::Crash { worker } => held.retain(|h| h.worker != *worker),
            Op::Rescue => {
                let got = store.rescue_expired(now).await.expect("rescue");
                let want = model.rescue_expired(now).await.expect("rescue");
                let strip = |v: Vec<crate::schedule::Rescued>| {
                    let mut v: Vec<(Delivery, Option<EventKind>)> = v
                        .into_iter()
                        .map(|r| (r.delivery, r.event.map(|e| e.kind)))
                        .collect();
                    v.sort_by_key(|(d, _)| d.id);
                    v
                };
                let got = strip(got);
                assert_eq!(got, strip(want), "{ctx}: rescues differ from the model");
                for (d, _) in &got {
                    superseded.extend(held.iter().filter(|h| h.delivery.id == d.id).cloned());
                    held.retain(|h| h.delivery.id != d.id);
                }
            }
            Op::Cancel { pick } | Op::Reschedule { pick, .. } => {
                if known.is_empty() {
                    continue;
                }
                let (tenant, id) = known[pick % known.len()].clone();
                let before = model.get(&tenant, id).await.expect("get");
                if let Op::Reschedule { due, .. } = op {
                    let a = store
                        .reschedule(&tenant, id, now + secs(*due), now)
                        .await
                        .expect("r");
                    let b = model
                        .reschedule(&tenant, id, now + secs(*due), now)
                        .await
                        .expect("r");
                    assert_eq!(a, b, "{ctx}: reschedules differ");
                    if matches!(a, RescheduleOutcome::Rescheduled(_)) {
                        if let Some(prev) = &before {
                            assert!(
                                !matches!(
                                    prev.state,
                                    DeliveryState::Published | DeliveryState::Cancelled
                                ),
                                "{ctx}: a published or cancelled delivery was rescheduled"
                            );
                        }
                        superseded.extend(held.iter().filter(|h| h.delivery.id == id).cloned());
                        held.retain(|h| h.delivery.id != id);
                    }
                } else {
                    let a = store.cancel(&tenant, id, now).await.expect("c");
                    let b = model.cancel(&tenant, id, now).await.expect("c");
                    assert_eq!(a, b, "{ctx}: cancels differ");
                    if matches!(a, CancelOutcome::Cancelled(_)) {
                        cancelled.insert(id);
                        superseded.extend(held.iter().filter(|h| h.delivery.id == id).cloned());
                        held.retain(|h| h.delivery.id != id);
                    }
                }
            }
            Op::Prepare { pick }
            | Op::Commit { pick }
            | Op::Publish { pick }
            | Op::Fail { pick, .. }
            | Op::Unconfirm { pick }
            | Op::Renew { pick } => {
                // Half the time, a superseded worker tries: it must be refused.
                let from_superseded = pick % 2 == 1 && !superseded.is_empty();
                let h = if from_superseded {
                    superseded[pick % superseded.len()].clone()
                } else if !held.is_empty() {
                    held[pick % held.len()].clone()
                } else {
                    continue;
                };
                let d = &h.delivery;
                let f = fence(d);
                let result: Option<Fenced<Delivery>> = match op {
                    Op::Renew { .. } => {
                        let until = now + secs(60);
                        let a = store.renew_lease(d.id, f, until).await.expect("renew");
                        let b = model.renew_lease(d.id, f, until).await.expect("renew");
                        assert_eq!(a, b, "{ctx}: renewals differ");
                        if from_superseded {
                            assert!(!a, "{ctx}: a superseded worker renewed a lease");
                        }
                        None
                    }
                    Op::Commit { .. } => {
                        if !matches!(
                            d.state,
                            DeliveryState::Claimed
                                | DeliveryState::Preparing
                                | DeliveryState::Committing
                        ) {
                            continue;
                        }
                        let a = store.commit_point(d.id, f, now).await.expect("cp");
                        let b = model.commit_point(d.id, f, now).await.expect("cp");
                        assert_eq!(a, b, "{ctx}: commit points differ");
                        if !a.is_stale() {
                            assert!(
                                !cancelled.contains(&d.id),
                                "{ctx}: a cancelled delivery was committed"
                            );
                        }
                        Some(a)
                    }
                    _ => {
                        let to = match (op, d.state) {
                            (Op::Prepare { .. }, DeliveryState::Claimed) => {
                                DeliveryState::Preparing
                            }
                            (Op::Publish { .. }, DeliveryState::Claimed) => continue,
                            (Op::Publish { .. }, _) => DeliveryState::Published,
                            (
                                Op::Fail {
                                    retryable: true, ..
                                },
                                DeliveryState::Claimed
                                | DeliveryState::Preparing
                                | DeliveryState::Committing,
                            ) => DeliveryState::RetryWaiting,
                            (Op::Fail { .. }, _) => DeliveryState::Failed,
                            (Op::Unconfirm { .. }, DeliveryState::Claimed) => continue,
                            (Op::Unconfirm { .. }, _) => DeliveryState::Unconfirmed,
                            _ => continue,
                        };
                        if !d.state.may_become(to) {
                            continue;
                        }
                        let mut t = Transition::new(d, to, now);
                        match to {
                            DeliveryState::RetryWaiting | DeliveryState::Unconfirmed => {
                                t = t
                                    .run_at(now + secs(5))
                                    .error(DeliveryError::new(ErrorKind::Transient, "x"));
                            }
                            DeliveryState::Published => t = t.receipt(receipt("r", 0)),
                            DeliveryState::Failed => {
                                t = t.error(DeliveryError::new(ErrorKind::Platform, "no"))
                            }
                            _ => {}
                        }
                        let a = store.transition(&t).await.expect("transition");
                        let b = model.transition(&t).await.expect("transition");
                        assert_eq!(a, b, "{ctx}: transitions differ");
                        Some(a)
                    }
                };
                if let Some(r) = result {
                    if from_superseded {
                        assert!(
                            r.is_stale(),
                            "{ctx}: a superseded worker's write was accepted"
                        );
                    }
                    match r {
                        Fenced::Applied(nd) => {
                            // The holder keeps working only while it keeps the lease.
                            held.retain(|x| x.delivery.id != nd.id);
                            if nd.lease.is_some() {
                                held.push(Held {
                                    worker: h.worker,
                                    delivery: nd,
                                });
                            }
                        }
                        Fenced::Stale => {
                            held.retain(|x| !(x.delivery.id == d.id && fence(&x.delivery) == f));
                        }
                    }
                }
            }
        }
        // At most one holder per delivery, and it holds the stored lease.
        let mut holders: BTreeMap<Uuid, i64> = BTreeMap::new();
        for h in &held {
            assert!(
                holders.insert(h.delivery.id, fence(&h.delivery)).is_none(),
                "{ctx}: two workers hold one delivery"
            );
        }
    }

    // In the end both stores hold the same deliveries, history and next due time.
    for (tenant, id) in &known {
        let a = store.get(tenant, *id).await.expect("get");
        let b = model.get(tenant, *id).await.expect("get");
        assert_eq!(a, b, "final state of {id} differs from the model");
        let ha = store.history(tenant, *id).await.expect("history");
        let hb = model.history(tenant, *id).await.expect("history");
        assert_eq!(ha, hb, "history of {id} differs from the model");
        if let Some(d) = a {
            let path: Vec<DeliveryState> = ha.iter().map(|e| e.to).collect();
            if let Some(pos) = path.iter().position(|s| *s == DeliveryState::Cancelled) {
                assert!(
                    !path[pos..].contains(&DeliveryState::Committing),
                    "{id}: committed after it was cancelled"
                );
            }
            assert!(
                !(d.state == DeliveryState::Claimed && d.committed_at.is_some()),
                "{id}: claimed with a commit outstanding"
            );
        }
    }
    assert_eq!(
        store.next_due_at().await.expect("next"),
        model.next_due_at().await.expect("next"),
        "next due times differ"
    );
}
