//! Fault injection for the adapters' mock servers: fail, throttle, delay or drop the next N
//! calls of an endpoint, or expire the token they carry. Every adapter mock takes a
//! [`FaultPlan`], applied by the mock kit's one fault layer, so users inject faults the same way
//! on every platform and each fault means the same everywhere.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this status (and body, and headers) instead of handling the call: the
    /// platform did nothing.
    Status {
        /// The HTTP status.
        status: u16,
        /// The body; the mock's own error shape for that status when `None`.
        body: Option<String>,
        /// Extra headers (e.g. `retry-after`).
        headers: Vec<(String, String)>,
    },
    /// Wait this long before handling the call (to trip client timeouts).
    Delay(Duration),
    /// Handle the call, then wait this long before answering: the platform acted, the client
    /// timed out (the commit-timeout case).
    DelayAfter(Duration),
    /// The connection breaks mid-request: about half the request body arrives, the platform
    /// acts on what arrived (a JSON body cut in half creates nothing; an upload keeps the
    /// bytes it received), and no answer is sent. A request without a body is not handled.
    Drop,
    /// Throttle the call: the platform's rate-limit answer, with headers saying to wait this
    /// long. The platform did nothing.
    RateLimit(Duration),
    /// The access token the call carries expires just before it is handled, so it is refused
    /// as unauthorized (a token that lapsed in flight).
    ExpireToken,
    /// No fault: the call is handled normally. Queue some before a fault to aim it at a later
    /// call ([`FaultPlan::pass_next`]).
    Pass,
}

/// Faults queued per endpoint name (each mock documents its endpoint names).
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    queues: Arc<Mutex<HashMap<String, VecDeque<Fault>>>>,
}

impl FaultPlan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `fault` for the next call of `endpoint` (after those already queued).
    pub fn push(&self, endpoint: &str, fault: Fault) {
        if let Ok(mut q) = self.queues.lock() {
            q.entry(endpoint.to_owned()).or_default().push_back(fault);
        }
    }

    /// The next `n` calls of `endpoint` answer `status`.
    pub fn fail_next(&self, endpoint: &str, n: usize, status: u16) {
        for _ in 0..n {
            self.push(
                endpoint,
                Fault::Status {
                    status,
                    body: None,
                    headers: Vec::new(),
                },
            );
        }
    }

    /// The next call of `endpoint` answers `status` with `headers` (e.g. a 429 with reset).
    pub fn fail_next_with(&self, endpoint: &str, status: u16, headers: &[(&str, &str)]) {
        self.push(
            endpoint,
            Fault::Status {
                status,
                body: None,
                headers: headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            },
        );
    }

    /// The next `n` calls of `endpoint` wait `delay` first.
    pub fn delay_next(&self, endpoint: &str, n: usize, delay: Duration) {
        for _ in 0..n {
            self.push(endpoint, Fault::Delay(delay));
        }
    }

    /// The next call of `endpoint` is handled, then its answer held back for `delay`.
    pub fn delay_answer_next(&self, endpoint: &str, delay: Duration) {
        self.push(endpoint, Fault::DelayAfter(delay));
    }

    /// The next `n` calls of `endpoint` have their connection dropped.
    pub fn drop_next(&self, endpoint: &str, n: usize) {
        for _ in 0..n {
            self.push(endpoint, Fault::Drop);
        }
    }

    /// The next `n` calls of `endpoint` are handled normally: faults queued after aim at later
    /// calls (the third segment, say).
    pub fn pass_next(&self, endpoint: &str, n: usize) {
        for _ in 0..n {
            self.push(endpoint, Fault::Pass);
        }
    }

    /// The next call of `endpoint` is throttled for `wait`.
    pub fn rate_limit_next(&self, endpoint: &str, wait: Duration) {
        self.push(endpoint, Fault::RateLimit(wait));
    }

    /// The token of the next call of `endpoint` expires just before it is handled.
    pub fn expire_token_next(&self, endpoint: &str) {
        self.push(endpoint, Fault::ExpireToken);
    }

    /// Takes the next fault queued for `endpoint`, if any. Mocks call this per request.
    pub fn take(&self, endpoint: &str) -> Option<Fault> {
        self.queues
            .lock()
            .ok()
            .and_then(|mut q| q.get_mut(endpoint).and_then(VecDeque::pop_front))
    }

    /// Drops every queued fault.
    pub fn clear(&self) {
        if let Ok(mut q) = self.queues.lock() {
            q.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_per_endpoint_and_in_order() {
        let plan = FaultPlan::new();
        plan.fail_next("a", 2, 503);
        plan.drop_next("b", 1);
        assert!(matches!(
            plan.take("a"),
            Some(Fault::Status { status: 503, .. })
        ));
        assert_eq!(plan.take("b"), Some(Fault::Drop));
        assert!(plan.take("a").is_some());
        assert!(plan.take("a").is_none());
        assert!(plan.take("b").is_none());
    }
}
