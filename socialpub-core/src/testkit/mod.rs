//! Test support (feature `testkit`): fault injection shared by every adapter's mock, and
//! conformance suites any `Publisher` or `TokenStore` implementation runs in its own tests.

pub mod conformance;
pub mod faults;

pub use faults::{Fault, FaultPlan};
