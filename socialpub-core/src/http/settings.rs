//! [`ClientSettings`]: the HTTP settings every adapter's configuration takes the same way (the
//! caller's own `reqwest::Client`, the retry policy, the request timeout, the clock), turned into
//! the adapter's [`ApiClient`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::client::ApiClient;
use super::dialect::Dialect;
use super::retry::RetryPolicy;
use crate::clock::Clock;
use crate::error::Result;

/// HTTP settings of an adapter's configuration. Adapter builders embed one and expose its
/// setters through [`client_settings_setters!`](crate::client_settings_setters).
#[derive(Clone, Default)]
pub struct ClientSettings {
    http: Option<reqwest::Client>,
    retry: Option<RetryPolicy>,
    timeout: Option<Duration>,
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("own_client", &self.http.is_some())
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClientSettings {
    /// Nothing set: socialpub's client, the default retry policy, the adapter's timeout and
    /// the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses the caller's own HTTP client (proxy, TLS roots, user agent).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Retries idempotent requests with `policy`.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Gives up on a request after `timeout`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Reads the time from `clock` (tests move it by hand).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The request timeout set, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The API client of an adapter speaking `dialect`. Requests time out after the timeout
    /// set; without one, after the caller's own client's timeout, or after `default_timeout`
    /// with socialpub's client.
    pub fn build(self, dialect: impl Dialect, default_timeout: Duration) -> Result<ApiClient> {
        let http = match self.http {
            Some(c) => c,
            None => super::default_client(default_timeout)?,
        };
        let mut api = ApiClient::new(dialect, http).with_retry(self.retry.unwrap_or_default());
        if let Some(timeout) = self.timeout {
            api = api.with_timeout(timeout);
        }
        if let Some(clock) = self.clock {
            api = api.with_clock(clock);
        }
        Ok(api)
    }
}

/// Adds the [`ClientSettings`] setters to an adapter's configuration builder, so every adapter
/// takes them the same way: `http_client`, `retry_policy`, `request_timeout` and `clock`. Pass
/// the builder's [`ClientSettings`] field.
#[macro_export]
macro_rules! client_settings_setters {
    ($field:ident) => {
        /// Your own HTTP client (proxy, TLS roots, user agent, timeout). Default: socialpub's
        /// client. Its timeout applies unless a request timeout is set here.
        pub fn http_client(mut self, client: reqwest::Client) -> Self {
            self.$field = self.$field.http_client(client);
            self
        }

        /// How idempotent requests (uploads, status reads, lookups) are retried.
        pub fn retry_policy(mut self, policy: $crate::http::RetryPolicy) -> Self {
            self.$field = self.$field.retry_policy(policy);
            self
        }

        /// How long one request may take before it counts as failed.
        pub fn request_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.$field = self.$field.request_timeout(timeout);
            self
        }

        /// The clock the adapter reads (tests move one by hand).
        pub fn clock(mut self, clock: std::sync::Arc<dyn $crate::clock::Clock>) -> Self {
            self.$field = self.$field.clock(clock);
            self
        }
    };
}
