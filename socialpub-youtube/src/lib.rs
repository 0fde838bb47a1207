#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod api;
pub mod config;
pub mod error;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod mock;
pub mod oauth;
pub mod options;
pub mod publish;
pub mod upload;
pub mod validate;

pub use config::{
    CHUNK_GRANULARITY, DEFAULT_CHUNK_SIZE, QuotaCosts, SCOPE_MANAGE, SCOPE_READONLY, SCOPE_UPLOAD,
    YouTubeConfig, YouTubeConfigBuilder,
};
pub use error::{YouTubeDialect, next_pacific_midnight};
pub use oauth::{Channel, YouTubeConnector};
pub use options::{License, Privacy, YouTubeOptions};
pub use publish::YouTubePublisher;
pub use validate::{capabilities, is_short, tags_length};
