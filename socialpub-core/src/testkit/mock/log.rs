//! [`RequestLog`]: every request a mock received, by endpoint, with its answer's status and the
//! request body bytes that arrived.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

/// One request a mock received.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoggedRequest {
    /// The endpoint name (`tweets.create`), `unknown` for a path the mock does not serve.
    pub endpoint: &'static str,
    /// The HTTP method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The status answered (`0` when the connection was dropped instead).
    pub status: u16,
    /// Request body bytes that reached the mock.
    pub bytes_in: u64,
    /// When it arrived.
    pub at: DateTime<Utc>,
}

/// A counter over a mock's log, for suites that read one number (requests, creates).
pub type Counter = Arc<dyn Fn() -> usize + Send + Sync>;

/// The requests a mock received, in arrival order. Cheap to clone; clones share the log.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Debug, Default)]
struct LogInner {
    entries: Vec<LoggedRequest>,
    calls: HashMap<&'static str, usize>,
    bytes: HashMap<&'static str, u64>,
}

impl RequestLog {
    fn lock(&self) -> MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a request as it arrives (its status and bytes follow in [`RequestLog::finish`]).
    pub(crate) fn start(&self, endpoint: &'static str, method: &str, path: &str) -> usize {
        let mut l = self.lock();
        *l.calls.entry(endpoint).or_default() += 1;
        l.entries.push(LoggedRequest {
            endpoint,
            method: method.to_owned(),
            path: path.to_owned(),
            status: 0,
            bytes_in: 0,
            at: Utc::now(),
        });
        l.entries.len() - 1
    }

    /// Records the answer of request `index` and the body bytes that arrived.
    pub(crate) fn finish(&self, index: usize, status: u16, bytes_in: u64) {
        let mut l = self.lock();
        let Some(e) = l.entries.get_mut(index) else {
            return;
        };
        e.status = status;
        e.bytes_in = bytes_in;
        let endpoint = e.endpoint;
        *l.bytes.entry(endpoint).or_default() += bytes_in;
    }

    /// Requests received so far, every endpoint.
    pub fn requests(&self) -> usize {
        self.lock().entries.len()
    }

    /// Calls of `endpoint` so far.
    pub fn calls(&self, endpoint: &str) -> usize {
        self.lock().calls.get(endpoint).copied().unwrap_or(0)
    }

    /// Request body bytes that reached `endpoint` so far.
    pub fn bytes_in(&self, endpoint: &str) -> u64 {
        self.lock().bytes.get(endpoint).copied().unwrap_or(0)
    }

    /// Every request so far, oldest first.
    pub fn entries(&self) -> Vec<LoggedRequest> {
        self.lock().entries.clone()
    }

    /// A live count of every request.
    pub fn request_counter(&self) -> Counter {
        let log = self.clone();
        Arc::new(move || log.requests())
    }

    /// A live count of the calls of `endpoint`.
    pub fn call_counter(&self, endpoint: &'static str) -> Counter {
        let log = self.clone();
        Arc::new(move || log.calls(endpoint))
    }
}
