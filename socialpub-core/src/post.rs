//! What gets published: [`Post`], its [`Target`]s, threads, polls and typed per-platform options.
//!
//! Everything here serializes, so a scheduler can persist a post and publish it later exactly as
//! it was written.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};
pub use crate::media::{Media, MediaKind, MediaSource};
use crate::platform::Platform;

/// Where a post goes: one account on one platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    /// The platform.
    pub platform: Platform,
    /// The platform's id of the account (user id, page id, channel id, person or org URN).
    pub account_id: String,
}

impl Target {
    /// A target on `platform` for `account_id`.
    pub fn new(platform: Platform, account_id: impl Into<String>) -> Self {
        Target {
            platform,
            account_id: account_id.into(),
        }
    }
}

/// A poll attached to a post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poll {
    /// The answers people choose from.
    pub options: Vec<String>,
    /// How long the poll stays open.
    #[serde(with = "crate::serde_util::duration_secs")]
    pub duration: Duration,
}

/// One further part of a thread: text and media, posted as a reply to the part before it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PostPart {
    /// The part's text.
    pub text: String,
    /// The part's media.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<Media>,
}

/// Typed options for one platform, stored on a [`Post`] under that platform.
///
/// Adapters define one (e.g. `socialpub_x::XOptions`); applications set it with
/// [`Post::set_options`] and adapters read it with [`Post::options`].
pub trait PlatformOptions: Serialize + DeserializeOwned {
    /// The platform these options belong to.
    const PLATFORM: Platform;
}

/// A post: text, an optional link, media, an optional thread or poll, and where it goes.
///
/// ```
/// use socialpub_core::post::{Post, Target};
/// use socialpub_core::platform::Platform;
///
/// let post = Post::new("Hello from socialpub")
///     .with_target(Target::new(Platform::X, "12345"));
/// assert_eq!(post.targets.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Post {
    /// The text (caption, tweet, description).
    pub text: String,
    /// A title, for platforms that have one (YouTube, Pinterest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A link to share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Url>,
    /// Media of the first part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<Media>,
    /// Further parts, for a thread; empty for a single post.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thread: Vec<PostPart>,
    /// A poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<Poll>,
    /// Where the post goes.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Per-platform options, as JSON under the platform; see [`Post::options`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<Platform, serde_json::Value>,
}

impl Post {
    /// A post with `text` and nothing else.
    pub fn new(text: impl Into<String>) -> Self {
        Post {
            text: text.into(),
            ..Post::default()
        }
    }

    /// Sets the title.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets the link.
    pub fn with_link(mut self, link: Url) -> Self {
        self.link = Some(link);
        self
    }

    /// Adds a media item to the first part.
    pub fn with_media(mut self, media: Media) -> Self {
        self.media.push(media);
        self
    }

    /// Adds a further thread part.
    pub fn with_thread_part(mut self, part: PostPart) -> Self {
        self.thread.push(part);
        self
    }

    /// Sets the poll.
    pub fn with_poll(mut self, poll: Poll) -> Self {
        self.poll = Some(poll);
        self
    }

    /// Adds a target.
    pub fn with_target(mut self, target: Target) -> Self {
        self.targets.push(target);
        self
    }

    /// Sets typed options for their platform, replacing any set before.
    pub fn set_options<T: PlatformOptions>(&mut self, options: &T) -> Result<()> {
        let value = serde_json::to_value(options).map_err(|e| {
            Error::invalid_input(format!("{} options do not serialize: {e}", T::PLATFORM))
        })?;
        self.options.insert(T::PLATFORM, value);
        Ok(())
    }

    /// Builder form of [`Post::set_options`].
    pub fn with_options<T: PlatformOptions>(mut self, options: &T) -> Result<Self> {
        self.set_options(options)?;
        Ok(self)
    }

    /// The typed options for `T`'s platform, or `None` if none were set.
    ///
    /// Fails with [`crate::ErrorKind::InvalidInput`] when the stored JSON does not fit `T`.
    pub fn options<T: PlatformOptions>(&self) -> Result<Option<T>> {
        match self.options.get(&T::PLATFORM) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| Error::invalid_input(format!("invalid {} options: {e}", T::PLATFORM))),
        }
    }

    /// The first part followed by the thread parts, as (text, media) pairs.
    pub fn parts(&self) -> impl Iterator<Item = (&str, &[Media])> {
        std::iter::once((self.text.as_str(), self.media.as_slice())).chain(
            self.thread
                .iter()
                .map(|p| (p.text.as_str(), p.media.as_slice())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Opts {
        reply_settings: String,
    }
    impl PlatformOptions for Opts {
        const PLATFORM: Platform = Platform::X;
    }

    #[test]
    fn post_round_trips_with_options() {
        let post = Post::new("hi")
            .with_link(Url::parse("https://example.com").expect("url"))
            .with_media(Media::from_bytes(
                bytes::Bytes::from_static(b"GIF89a\x01\x00\x01\x00"),
                Some("a.gif"),
            ))
            .with_thread_part(PostPart {
                text: "two".into(),
                media: vec![],
            })
            .with_poll(Poll {
                options: vec!["a".into(), "b".into()],
                duration: Duration::from_secs(3600),
            })
            .with_target(Target::new(Platform::X, "1"))
            .with_options(&Opts {
                reply_settings: "following".into(),
            })
            .expect("options");
        let json = serde_json::to_string(&post).expect("ser");
        let back: Post = serde_json::from_str(&json).expect("de");
        assert_eq!(back, post);
        assert_eq!(
            back.options::<Opts>().expect("typed"),
            Some(Opts {
                reply_settings: "following".into()
            })
        );
        assert_eq!(back.parts().count(), 2);
    }
}
