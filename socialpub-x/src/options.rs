//! [`XOptions`]: what an X post can set beyond text, link, media, thread and poll.

use serde::{Deserialize, Serialize};
use socialpub_core::Platform;
use socialpub_core::post::PlatformOptions;

/// Who may reply to a post (`reply_settings` of `POST /2/tweets`). Unset means everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReplySettings {
    /// Accounts the author follows.
    #[serde(rename = "following")]
    Following,
    /// Accounts mentioned in the post.
    #[serde(rename = "mentionedUsers")]
    MentionedUsers,
    /// The author's subscribers.
    #[serde(rename = "subscribers")]
    Subscribers,
    /// Verified accounts.
    #[serde(rename = "verified")]
    Verified,
}

impl ReplySettings {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplySettings::Following => "following",
            ReplySettings::MentionedUsers => "mentionedUsers",
            ReplySettings::Subscribers => "subscribers",
            ReplySettings::Verified => "verified",
        }
    }
}

/// X options of a post, set with [`socialpub_core::Post::set_options`].
///
/// ```
/// use socialpub_core::Post;
/// use socialpub_x::{ReplySettings, XOptions};
///
/// let post = Post::new("Quoting a good one")
///     .with_options(
///         &XOptions::new()
///             .quote("1460323737035677698")
///             .reply_settings(ReplySettings::Following),
///     )
///     .unwrap();
/// # let _ = post;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct XOptions {
    /// Who may reply (applies to the first post of a thread).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_settings: Option<ReplySettings>,
    /// Quote this post (not with media or a poll).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quote_tweet_id: Option<String>,
    /// Publish as a reply to this post (a thread then continues below the reply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_reply_to_tweet_id: Option<String>,
    /// Users tagged in the first part's media (at most 10).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tagged_user_ids: Vec<String>,
}

impl XOptions {
    /// No options: everyone may reply, no quote, not a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets who may reply.
    pub fn reply_settings(mut self, settings: ReplySettings) -> Self {
        self.reply_settings = Some(settings);
        self
    }

    /// Quotes the post `id`.
    pub fn quote(mut self, id: impl Into<String>) -> Self {
        self.quote_tweet_id = Some(id.into());
        self
    }

    /// Publishes as a reply to the post `id`.
    pub fn in_reply_to(mut self, id: impl Into<String>) -> Self {
        self.in_reply_to_tweet_id = Some(id.into());
        self
    }

    /// Tags users (by id) in the first part's media.
    pub fn tag_users(mut self, ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.tagged_user_ids = ids.into_iter().map(Into::into).collect();
        self
    }
}

impl PlatformOptions for XOptions {
    const PLATFORM: Platform = Platform::X;
}

/// Whether `id` looks like an X id: 1 to 19 ASCII digits.
pub(crate) fn is_x_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit())
}
