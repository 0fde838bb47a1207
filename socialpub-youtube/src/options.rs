//! [`YouTubeOptions`]: what only YouTube has (privacy, scheduling, tags, category, languages,
//! made-for-kids, thumbnail, license), stored on a post.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use socialpub_core::post::PlatformOptions;
use socialpub_core::{Media, Platform};

/// Who can watch the video.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Privacy {
    /// Everyone (the API's default).
    #[default]
    Public,
    /// People with the link.
    Unlisted,
    /// Only the owner; required for [`YouTubeOptions::publish_at`].
    Private,
}

impl Privacy {
    /// The API's value: `public`, `unlisted` or `private`.
    pub fn as_str(self) -> &'static str {
        match self {
            Privacy::Public => "public",
            Privacy::Unlisted => "unlisted",
            Privacy::Private => "private",
        }
    }
}

/// The license of the video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum License {
    /// The standard YouTube license.
    Youtube,
    /// Creative Commons Attribution.
    CreativeCommon,
}

/// Typed YouTube options, stored on a [`Post`](socialpub_core::Post) with [`Post::set_options`](socialpub_core::Post::set_options).
///
/// The post's `title` is the video title, its `text` the description (its `link`, if any, is
/// appended to the description), its one video the upload.
///
/// ```
/// use socialpub_core::Post;
/// use socialpub_youtube::{Privacy, YouTubeOptions};
///
/// let options = YouTubeOptions::new()
///     .privacy(Privacy::Private)
///     .publish_at(chrono::Utc::now() + chrono::Duration::days(1))
///     .tags(["rust", "video"])
///     .made_for_kids(false);
/// let post = Post::new("Description").with_title("Title").with_options(&options)?;
/// # Ok::<(), socialpub_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct YouTubeOptions {
    /// Who can watch (`status.privacyStatus`).
    #[serde(default)]
    pub privacy: Privacy,
    /// When a private video becomes public (`status.publishAt`); needs [`Privacy::Private`]
    /// and a time in the future.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_at: Option<DateTime<Utc>>,
    /// The category id (`snippet.categoryId`, digits; default [`DEFAULT_CATEGORY_ID`](crate::validate::DEFAULT_CATEGORY_ID)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_id: Option<String>,
    /// Tags (`snippet.tags`), at most [`MAX_TAGS_CHARS`](crate::validate::MAX_TAGS_CHARS) counted by [`tags_length`](crate::tags_length).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Whether the video is made for kids (`status.selfDeclaredMadeForKids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_for_kids: Option<bool>,
    /// Whether subscribers are notified (the `notifySubscribers` parameter; YouTube's default
    /// is to notify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_subscribers: Option<bool>,
    /// The language of the title and description (`snippet.defaultLanguage`, BCP-47).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_language: Option<String>,
    /// The language spoken in the video (`snippet.defaultAudioLanguage`, BCP-47).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_audio_language: Option<String>,
    /// The altered or synthetic content disclosure (`status.containsSyntheticMedia`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains_synthetic_media: Option<bool>,
    /// Whether the video can be embedded elsewhere (`status.embeddable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddable: Option<bool>,
    /// The license (`status.license`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<License>,
    /// Whether the view count is public (`status.publicStatsViewable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_stats_viewable: Option<bool>,
    /// A custom thumbnail (JPEG or PNG, at most [`MAX_THUMBNAIL_BYTES`](crate::validate::MAX_THUMBNAIL_BYTES)), set after the
    /// upload. Its failure is a warning on the receipt, not a failed post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<Media>,
}

impl PlatformOptions for YouTubeOptions {
    const PLATFORM: Platform = Platform::YouTube;
}

impl YouTubeOptions {
    /// Options with YouTube's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the privacy.
    pub fn privacy(mut self, privacy: Privacy) -> Self {
        self.privacy = privacy;
        self
    }

    /// Schedules publication (with [`Privacy::Private`]).
    pub fn publish_at(mut self, at: DateTime<Utc>) -> Self {
        self.publish_at = Some(at);
        self
    }

    /// Sets the category id.
    pub fn category_id(mut self, id: impl Into<String>) -> Self {
        self.category_id = Some(id.into());
        self
    }

    /// Sets the tags.
    pub fn tags(mut self, tags: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Declares whether the video is made for kids.
    pub fn made_for_kids(mut self, yes: bool) -> Self {
        self.made_for_kids = Some(yes);
        self
    }

    /// Sets whether subscribers are notified.
    pub fn notify_subscribers(mut self, yes: bool) -> Self {
        self.notify_subscribers = Some(yes);
        self
    }

    /// Sets the title and description language.
    pub fn default_language(mut self, lang: impl Into<String>) -> Self {
        self.default_language = Some(lang.into());
        self
    }

    /// Sets the audio language.
    pub fn default_audio_language(mut self, lang: impl Into<String>) -> Self {
        self.default_audio_language = Some(lang.into());
        self
    }

    /// Discloses altered or synthetic content.
    pub fn contains_synthetic_media(mut self, yes: bool) -> Self {
        self.contains_synthetic_media = Some(yes);
        self
    }

    /// Sets a custom thumbnail.
    pub fn thumbnail(mut self, image: Media) -> Self {
        self.thumbnail = Some(image);
        self
    }
}
