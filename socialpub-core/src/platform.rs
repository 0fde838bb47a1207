//! Platform identifiers and [`Capabilities`]: what a publisher accepts, queryable at run time.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::post::MediaKind;

/// A social platform socialpub can publish to.
///
/// The platforms with an adapter in this workspace have a variant each. Any other platform is
/// named by an id of its own, without editing this crate: [`Platform::custom`] in a constant
/// (`const MASTODON: Platform = Platform::custom("mastodon");`), or [`Platform::other`] at run
/// time. Ids are lowercase ASCII letters, digits, `-` and `_`, 1 to 32 long; every platform
/// is stored and configured by its id ([`Platform::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Platform {
    /// Pinterest (pins on boards).
    Pinterest,
    /// Facebook Pages.
    Facebook,
    /// Instagram professional accounts.
    Instagram,
    /// YouTube channels.
    YouTube,
    /// X (formerly Twitter).
    X,
    /// LinkedIn members and organizations.
    LinkedIn,
    /// TikTok.
    TikTok,
    /// A platform without an adapter here, by its id.
    Other(CustomPlatform),
}

/// The id of a platform without a variant of its own in [`Platform`]: build one with
/// [`Platform::custom`] or [`Platform::other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomPlatform(&'static str);

impl CustomPlatform {
    /// The id.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// Most distinct custom ids a process interns from run-time strings: each is kept for the
/// life of the process, so ids read from untrusted data cannot grow memory without bound.
const MAX_INTERNED: usize = 256;

const fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    if b.is_empty() || b.len() > 32 {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl Platform {
    /// Every platform with an adapter in this workspace, in a stable order.
    pub const ALL: [Platform; 7] = [
        Platform::Pinterest,
        Platform::Facebook,
        Platform::Instagram,
        Platform::YouTube,
        Platform::X,
        Platform::LinkedIn,
        Platform::TikTok,
    ];

    /// The platform `id`, for a platform without a variant here, usable in constants.
    ///
    /// # Panics
    ///
    /// If `id` is not a valid id (see [`Platform`]) or is the id of a platform with a variant
    /// (use the variant). In a constant, that is a compile error.
    ///
    /// ```
    /// use socialpub_core::Platform;
    ///
    /// const MASTODON: Platform = Platform::custom("mastodon");
    /// assert_eq!(MASTODON.as_str(), "mastodon");
    /// assert_eq!("mastodon".parse::<Platform>().ok(), Some(MASTODON));
    /// ```
    pub const fn custom(id: &'static str) -> Platform {
        assert!(
            valid_id(id),
            "a platform id is 1 to 32 lowercase ASCII letters, digits, `-` or `_`"
        );
        let mut i = 0;
        while i < Platform::ALL.len() {
            assert!(
                !same(Platform::ALL[i].as_str(), id),
                "this platform has a variant of its own"
            );
            i += 1;
        }
        Platform::Other(CustomPlatform(id))
    }

    /// The platform whose id is `id`: a variant for the platforms that have one, else a
    /// custom platform. Fails with [`crate::ErrorKind::InvalidInput`] for an invalid id.
    pub fn other(id: &str) -> Result<Platform> {
        if let Some(p) = Platform::ALL.into_iter().find(|p| p.as_str() == id) {
            return Ok(p);
        }
        if !valid_id(id) {
            return Err(Error::invalid_input(format!(
                "`{id}` is not a platform id: 1 to 32 lowercase ASCII letters, digits, `-` or `_`"
            )));
        }
        intern(id).map(|id| Platform::Other(CustomPlatform(id)))
    }

    /// The stable lowercase id used in storage and configuration (`x`, `youtube`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Platform::Pinterest => "pinterest",
            Platform::Facebook => "facebook",
            Platform::Instagram => "instagram",
            Platform::YouTube => "youtube",
            Platform::X => "x",
            Platform::LinkedIn => "linkedin",
            Platform::TikTok => "tiktok",
            Platform::Other(c) => c.0,
        }
    }
}

fn intern(id: &str) -> Result<&'static str> {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static IDS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut ids = IDS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(known) = ids.get(id) {
        return Ok(known);
    }
    if ids.len() >= MAX_INTERNED {
        return Err(Error::invalid_input(format!(
            "unknown platform `{id}`: this process already knows {MAX_INTERNED} custom platforms"
        )));
    }
    // Kept for the life of the process, so a `Platform` stays `Copy`; bounded above.
    let leaked: &'static str = Box::leak(id.to_owned().into_boxed_str());
    ids.insert(leaked);
    Ok(leaked)
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = Error;

    /// Parses an id, case-insensitively, with the aliases `twitter` and `yt`; any other valid
    /// id is a custom platform.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "twitter" => Ok(Platform::X),
            "yt" => Ok(Platform::YouTube),
            _ => Platform::other(&lower)
                .map_err(|_| Error::invalid_input(format!("unknown platform `{s}`"))),
        }
    }
}

impl Serialize for Platform {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How a platform counts the length of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TextCounting {
    /// Unicode scalar values (Rust `char`s).
    Chars,
    /// Extended grapheme clusters (what a person sees as one character).
    Graphemes,
    /// UTF-16 code units (JavaScript's `length`).
    Utf16,
    /// UTF-8 bytes.
    Bytes,
    /// A platform-specific weighting (e.g. X's weighted length); the adapter counts.
    Weighted,
}

impl TextCounting {
    /// Counts `text` this way. [`TextCounting::Weighted`] falls back to graphemes: adapters
    /// with a weighting count themselves.
    pub fn count(self, text: &str) -> usize {
        use unicode_segmentation::UnicodeSegmentation;
        match self {
            TextCounting::Chars => text.chars().count(),
            TextCounting::Graphemes | TextCounting::Weighted => text.graphemes(true).count(),
            TextCounting::Utf16 => text.encode_utf16().count(),
            TextCounting::Bytes => text.len(),
        }
    }
}

/// The rule for a post's text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TextRule {
    /// Most units allowed, counted by `counting`.
    pub max: usize,
    /// How the units are counted.
    pub counting: TextCounting,
    /// Whether a post must have text (or, for media platforms, a title).
    pub required: bool,
}

impl TextRule {
    /// A rule of at most `max` units counted by `counting`, text optional.
    pub fn new(max: usize, counting: TextCounting) -> Self {
        TextRule {
            max,
            counting,
            required: false,
        }
    }
}

/// What a platform accepts for one kind of media.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MediaRule {
    /// The kind this rule covers.
    pub kind: MediaKind,
    /// Accepted MIME types (`image/jpeg`, …).
    pub mime_types: Vec<String>,
    /// Largest accepted file, in bytes.
    pub max_bytes: u64,
    /// Shortest accepted duration (videos), when the platform sets one.
    pub min_duration: Option<Duration>,
    /// Longest accepted duration (videos), when the platform sets one.
    pub max_duration: Option<Duration>,
    /// Narrowest accepted aspect ratio (width / height), when the platform sets one.
    pub min_aspect_ratio: Option<f64>,
    /// Widest accepted aspect ratio (width / height), when the platform sets one.
    pub max_aspect_ratio: Option<f64>,
    /// Largest accepted width or height, in pixels.
    pub max_dimension: Option<u32>,
    /// Most characters of alt text, if alt text is supported.
    pub max_alt_text: Option<usize>,
}

impl MediaRule {
    /// A rule for `kind` with the given MIME types and size cap, and no other limit.
    pub fn new(kind: MediaKind, mime_types: &[&str], max_bytes: u64) -> Self {
        MediaRule {
            kind,
            mime_types: mime_types.iter().map(|s| (*s).to_owned()).collect(),
            max_bytes,
            min_duration: None,
            max_duration: None,
            min_aspect_ratio: None,
            max_aspect_ratio: None,
            max_dimension: None,
            max_alt_text: None,
        }
    }
}

/// Limits on a poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PollRule {
    /// Fewest options.
    pub min_options: usize,
    /// Most options.
    pub max_options: usize,
    /// Most characters in one option.
    pub max_option_chars: usize,
    /// Shortest duration.
    pub min_duration: Duration,
    /// Longest duration.
    pub max_duration: Duration,
}

impl PollRule {
    /// A rule of `min_options` to `max_options` options of at most `max_option_chars`
    /// characters, open from `min_duration` to `max_duration`.
    pub fn new(
        min_options: usize,
        max_options: usize,
        max_option_chars: usize,
        min_duration: Duration,
        max_duration: Duration,
    ) -> Self {
        PollRule {
            min_options,
            max_options,
            max_option_chars,
            min_duration,
            max_duration,
        }
    }
}

/// What a publisher accepts, and which optional operations it supports.
///
/// Fields are public so adapters can fill them; the struct is `#[non_exhaustive]`, so start
/// from [`Capabilities::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// The platform these capabilities describe.
    pub platform: Platform,
    /// The rule for the post's text.
    pub text: TextRule,
    /// One rule per accepted media kind; a kind not listed is not accepted.
    pub media: Vec<MediaRule>,
    /// Most media items in one post (or one thread part).
    pub max_media: usize,
    /// Whether images, GIFs and videos may be mixed in one post.
    pub mixed_media: bool,
    /// Whether a media post must have at least one item.
    pub media_required: bool,
    /// Whether several images form a carousel.
    pub carousel: bool,
    /// Most parts in a thread, if threads are supported.
    pub max_thread_parts: Option<usize>,
    /// Poll limits, if polls are supported.
    pub poll: Option<PollRule>,
    /// Whether a link can be attached.
    pub links: bool,
    /// Whether media may come from a URL the platform fetches (otherwise file or bytes).
    pub media_from_url: bool,
    /// Whether [`crate::publish::Publisher::status`] is supported.
    pub status: bool,
    /// Whether [`crate::publish::Publisher::lookup_recent`] is supported.
    pub lookup: bool,
    /// Whether [`crate::publish::Publisher::delete`] is supported.
    pub delete: bool,
}

impl Capabilities {
    /// Capabilities for `platform` accepting text only (up to `max_text` graphemes), no media,
    /// and no optional operation.
    pub fn new(platform: Platform, text: TextRule) -> Self {
        Capabilities {
            platform,
            text,
            media: Vec::new(),
            max_media: 0,
            mixed_media: false,
            media_required: false,
            carousel: false,
            max_thread_parts: None,
            poll: None,
            links: true,
            media_from_url: false,
            status: false,
            lookup: false,
            delete: false,
        }
    }

    /// The rule for `kind`, if that kind is accepted.
    pub fn media_rule(&self, kind: MediaKind) -> Option<&MediaRule> {
        self.media.iter().find(|r| r.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_round_trips() {
        for p in Platform::ALL {
            assert_eq!(p.as_str().parse::<Platform>().ok(), Some(p));
            let json = serde_json::to_string(&p).expect("ser");
            assert_eq!(json, format!("\"{}\"", p.as_str()));
            assert_eq!(serde_json::from_str::<Platform>(&json).ok(), Some(p));
        }
        assert!("my space".parse::<Platform>().is_err());
        assert!("".parse::<Platform>().is_err());
        assert_eq!("Twitter".parse::<Platform>().ok(), Some(Platform::X));
    }

    #[test]
    fn custom_platforms() {
        const TOY: Platform = Platform::custom("toy-net");
        let parsed: Platform = "Toy-Net".parse().expect("a custom id");
        assert_eq!(parsed, TOY);
        assert_eq!(parsed.to_string(), "toy-net");
        let json = serde_json::to_string(&TOY).expect("ser");
        assert_eq!(json, "\"toy-net\"");
        assert_eq!(serde_json::from_str::<Platform>(&json).ok(), Some(TOY));
        assert_eq!(Platform::other("x").ok(), Some(Platform::X));
        assert!(Platform::other("UPPER").is_err());
        assert!(Platform::other(&"a".repeat(33)).is_err());
        assert!(std::panic::catch_unwind(|| Platform::custom("youtube")).is_err());
    }

    #[test]
    fn counting() {
        let s = "e\u{301}👍🏽";
        assert_eq!(TextCounting::Chars.count(s), 4);
        assert_eq!(TextCounting::Graphemes.count(s), 2);
        assert_eq!(TextCounting::Utf16.count(s), 6);
        assert_eq!(TextCounting::Bytes.count(s), 11);
    }
}
