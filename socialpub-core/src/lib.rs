#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
pub mod clock;
pub mod error;
pub mod http;
pub mod media;
pub mod platform;
pub mod post;
pub mod publish;
pub mod redact;
pub mod schedule;
pub mod serde_util;
pub mod store;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;
pub mod validate;

pub use auth::{AccountKey, Token, TokenManager, TokenStore};
pub use error::{Error, ErrorKind, Result};
pub use media::{Media, MediaKind, MediaSource};
pub use platform::{Capabilities, Platform};
pub use post::{Post, Target};
pub use publish::{
    LookupOutcome, Progress, PublishContext, Publisher, PublisherExt, Receipt, RemoteState,
};
pub use validate::{Issue, ValidationReport};
