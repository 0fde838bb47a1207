//! Database-backed stores: [`SqliteStore`] (feature `sqlite`) and [`PostgresStore`] (feature
//! `postgres`).
//!
//! Each is one type that keeps both the scheduler's deliveries (as a
//! [`ScheduleStore`](crate::schedule::ScheduleStore)) and sealed tokens (as a
//! [`SealedTokenStore`](crate::auth::SealedTokenStore); wrap it in
//! [`EncryptedTokenStore`](crate::auth::EncryptedTokenStore) so only ciphertext reaches the
//! database). Their schemas are embedded in the crate and applied when the store opens; tables
//! are prefixed `socialpub_`, so they can share a database with the application's own.
//!
//! The in-memory store lives with the scheduler (`crate::schedule`): it needs no feature.
//!
//! Building socialpub-core without the `sqlite` and `postgres` features compiles no database
//! driver, and this module is empty.

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod common;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SqliteStoreBuilder, Synchronous};
