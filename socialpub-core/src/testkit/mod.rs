//! Test support (feature `testkit`): the [`mock`] kit every adapter's mock is built on (server,
//! fault layer, OAuth server, request log), conformance suites any `Publisher`, `TokenStore` or
//! `ScheduleStore` implementation runs in its own tests, and a scripted [`FakePublisher`] for
//! scheduler tests.

pub mod conformance;
pub mod fake;
pub mod faults;
pub mod mock;
pub mod schedule;

pub use fake::{FakeGate, FakeLookup, FakeOutcome, FakePost, FakePublisher};
pub use faults::{Fault, FaultPlan};
