//! `socialpub`, a small scheduler application assembled from the socialpub crates, and its
//! `demo`. Read it as an example of embedding socialpub in a service: the binary (`main.rs`)
//! parses the command line; the modules here do the work.
//!
//! The [`docs`] module holds the project's guides, so that every code block in them is
//! compiled and run by `cargo test`.

pub mod config;
pub mod docs;
