//! Test support (feature `testkit`): fault injection shared by every adapter's mock, and
//! conformance suites any `Publisher`, `TokenStore` or `ScheduleStore` implementation runs in its
//! own tests, and a scripted [`FakePublisher`] for scheduler tests.

pub mod conformance;
pub mod fake;
pub mod faults;
pub mod schedule;

pub use fake::{FakeGate, FakeLookup, FakeOutcome, FakePost, FakePublisher};
pub use faults::{Fault, FaultPlan};
