//! `socialpub`, a small scheduler application assembled from the socialpub crates, and its
//! `demo`. Read it as an example of embedding socialpub in a service: the binary (`main.rs`)
//! parses the command line; the modules here do the work.
//!
//! | module | holds |
//! | --- | --- |
//! | [`config`] | the configuration: a TOML file and `SOCIALPUB_*` environment variables |
//! | [`app`] | the store chosen by URL, encrypted tokens, publishers and the scheduling engine |
//! | [`platforms`] | each adapter's configuration, publisher, refresher and OAuth connector |
//! | [`connect`] | `connect`: OAuth through a callback server on 127.0.0.1 |
//! | [`commands`] | `check`'s store check, `accounts`, `post`, `schedule`, `run`, `status`, `retry`, `cancel`, `disconnect`, `reencrypt`, `purge`, `export` |
//! | [`demo`] | `demo`: the whole flow against the adapters' mocks |
//! | [`mock`] | `mock`: every platform's mock on loopback, and the configuration to use them |
//! | [`progress`] | event lines and upload progress bars for `post`, `run` and the demo |
//! | [`samples`] | sample media for the demo: PNG images and large MP4 files |
//!
//! The [`docs`] module holds the project's guides, so that `cargo test` compiles and runs
//! every code block in them.

// A command-line app talks to its user on standard output.
#![allow(clippy::print_stdout)]

pub mod app;
pub mod commands;
pub mod config;
pub mod connect;
pub mod demo;
pub mod docs;
pub mod mock;
pub mod platforms;
pub mod progress;
pub mod samples;
