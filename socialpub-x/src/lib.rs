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
pub mod text;
pub mod upload;
pub mod validate;

pub use config::{XConfig, XConfigBuilder};
pub use error::XDialect;
pub use oauth::XConnector;
pub use options::{ReplySettings, XOptions};
pub use publish::XPublisher;
pub use text::weighted_length;
