//! YouTube's rules: the capabilities, every metadata and file check made before any request,
//! and [`is_short`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use socialpub_core::platform::{MediaRule, TextCounting, TextRule};
use socialpub_core::validate::check_post;
use socialpub_core::{
    Capabilities, Media, MediaKind, MediaSource, Platform, Post, ValidationReport,
};

use crate::options::{Privacy, YouTubeOptions};

/// Most characters in a title.
pub const MAX_TITLE_CHARS: usize = 100;
/// Most UTF-8 bytes in a description.
pub const MAX_DESCRIPTION_BYTES: usize = 5000;
/// Most characters of all tags together, counted by [`tags_length`].
pub const MAX_TAGS_CHARS: usize = 500;
/// Largest video file: 256 GB.
pub const MAX_VIDEO_BYTES: u64 = 256 * 1024 * 1024 * 1024;
/// Longest video of a verified channel (unverified channels are limited to 15 minutes, which
/// YouTube enforces after the upload).
pub const MAX_VIDEO_DURATION: Duration = Duration::from_secs(12 * 3600);
/// Largest custom thumbnail: 2 MB.
pub const MAX_THUMBNAIL_BYTES: u64 = 2 * 1024 * 1024;
/// Longest video YouTube classifies as a Short.
pub const MAX_SHORT_DURATION: Duration = Duration::from_secs(180);
/// The category used when none is given: 22, People & Blogs.
pub const DEFAULT_CATEGORY_ID: &str = "22";

/// The length of `tags` as YouTube counts it against [`MAX_TAGS_CHARS`]: the characters of
/// every tag, a comma between tags, and two quotes around each tag that contains a space.
///
/// ```
/// use socialpub_youtube::tags_length;
/// assert_eq!(tags_length(&["rust", "video editing"]), 4 + 1 + 13 + 2);
/// ```
pub fn tags_length<S: AsRef<str>>(tags: &[S]) -> usize {
    let chars: usize = tags
        .iter()
        .map(|t| {
            let t = t.as_ref();
            t.chars().count() + if t.contains(' ') { 2 } else { 0 }
        })
        .sum();
    chars + tags.len().saturating_sub(1)
}

/// Whether YouTube will classify `video` as a Short: a vertical or square frame and at most
/// three minutes (the limit was 60 seconds before October 2024). There is no API flag for
/// Shorts; YouTube decides from the file. `None` when the dimensions or the duration are
/// unknown (probe the file with [`Media::from_path`] or set them yourself).
///
/// ```
/// use std::time::Duration;
/// use socialpub_core::{Media, MediaKind, MediaSource};
/// use socialpub_youtube::is_short;
///
/// let clip = Media::new(MediaKind::Video, MediaSource::File { path: "clip.mp4".into() })
///     .with_dimensions(1080, 1920)
///     .with_duration(Duration::from_secs(45));
/// assert_eq!(is_short(&clip), Some(true));
/// ```
pub fn is_short(video: &Media) -> Option<bool> {
    if video.kind != MediaKind::Video {
        return Some(false);
    }
    let (w, h) = (video.width?, video.height?);
    let d = video.duration?;
    Some(h >= w && d <= MAX_SHORT_DURATION)
}

/// What the YouTube publisher accepts.
pub fn capabilities() -> Capabilities {
    let mut text = TextRule::new(MAX_DESCRIPTION_BYTES, TextCounting::Bytes);
    text.required = false;
    let mut caps = Capabilities::new(Platform::YouTube, text);
    // MIME types are checked below (any video/*), so the rule lists none.
    let mut video = MediaRule::new(MediaKind::Video, &[], MAX_VIDEO_BYTES);
    video.max_duration = Some(MAX_VIDEO_DURATION);
    caps.media = vec![video];
    caps.max_media = 1;
    caps.media_required = true;
    caps.links = true;
    caps.media_from_url = false;
    caps.status = true;
    caps.lookup = true;
    caps.delete = true;
    caps
}

/// The description sent: the post's text, then its link on a line of its own.
pub(crate) fn description(post: &Post) -> String {
    match &post.link {
        Some(link) if post.text.trim().is_empty() => link.to_string(),
        Some(link) => format!("{}\n\n{}", post.text, link),
        None => post.text.clone(),
    }
}

fn accepted_video_mime(mime: &str) -> bool {
    let m = mime.to_ascii_lowercase();
    m.starts_with("video/") || m == "application/octet-stream"
}

/// Every rule `post` breaks, at `now` (for `publishAt`).
pub(crate) fn validate_post(post: &Post, now: DateTime<Utc>) -> ValidationReport {
    let caps = capabilities();
    let mut r = ValidationReport::new(Platform::YouTube);
    // The description includes the link; check it as sent.
    let mut probe = post.clone();
    probe.text = description(post);
    probe.link = None;
    let generic = check_post(&caps, &probe, None);
    for i in generic.issues() {
        // An empty description is fine on YouTube: the title is what is required.
        if i.code == "text_required" {
            continue;
        }
        r.push(i.path.clone(), i.code.clone(), i.message.clone());
    }
    let text = description(post);
    if text.contains('<') || text.contains('>') {
        r.push(
            "text",
            "description_angle_brackets",
            "YouTube does not accept `<` or `>` in a description",
        );
    }
    match post.title.as_deref().map(str::trim) {
        None | Some("") => r.push("title", "title_required", "a YouTube video needs a title"),
        Some(_) => {
            let title = post.title.as_deref().unwrap_or_default();
            let n = title.chars().count();
            if n > MAX_TITLE_CHARS {
                r.push(
                    "title",
                    "title_too_long",
                    format!("the title is {n} characters; YouTube allows {MAX_TITLE_CHARS}"),
                );
            }
            if title.contains('<') || title.contains('>') {
                r.push(
                    "title",
                    "title_angle_brackets",
                    "YouTube does not accept `<` or `>` in a title",
                );
            }
        }
    }
    for (i, m) in post.media.iter().enumerate() {
        if m.kind != MediaKind::Video {
            continue;
        }
        if let Some(mime) = &m.mime
            && !accepted_video_mime(mime)
        {
            r.push(
                format!("media[{i}].mime"),
                "mime_unsupported",
                format!("YouTube uploads video files; {mime} is not one"),
            );
        }
    }
    let Some(options) = r.options::<YouTubeOptions>(post) else {
        return r;
    };
    validate_options(&options, now, &mut r);
    r
}

fn is_language_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 35
        && s.split('-')
            .all(|p| !p.is_empty() && p.len() <= 8 && p.chars().all(|c| c.is_ascii_alphanumeric()))
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

fn validate_options(o: &YouTubeOptions, now: DateTime<Utc>, r: &mut ValidationReport) {
    if let Some(at) = o.publish_at {
        if o.privacy != Privacy::Private {
            r.push(
                "options.youtube.publish_at",
                "publish_at_needs_private",
                format!(
                    "a scheduled publication time works only with private videos; this one is {}",
                    o.privacy.as_str()
                ),
            );
        }
        if at <= now {
            r.push(
                "options.youtube.publish_at",
                "publish_at_in_past",
                format!(
                    "the publication time {} is not in the future",
                    at.to_rfc3339()
                ),
            );
        }
    }
    if let Some(c) = &o.category_id
        && (c.is_empty() || !c.chars().all(|ch| ch.is_ascii_digit()))
    {
        r.push(
            "options.youtube.category_id",
            "invalid_category",
            format!("a category id is a number such as 22; got `{c}`"),
        );
    }
    for (i, t) in o.tags.iter().enumerate() {
        if t.trim().is_empty() {
            r.push(
                format!("options.youtube.tags[{i}]"),
                "empty_tag",
                "a tag is empty",
            );
        }
        if t.contains('<') || t.contains('>') || t.contains(',') {
            r.push(
                format!("options.youtube.tags[{i}]"),
                "invalid_tag",
                "a tag may not contain `<`, `>` or a comma",
            );
        }
    }
    let n = tags_length(&o.tags);
    if n > MAX_TAGS_CHARS {
        r.push(
            "options.youtube.tags",
            "tags_too_long",
            format!(
                "the tags are {n} characters as YouTube counts them (commas, and quotes around tags with spaces); the limit is {MAX_TAGS_CHARS}"
            ),
        );
    }
    for (field, lang) in [
        ("default_language", &o.default_language),
        ("default_audio_language", &o.default_audio_language),
    ] {
        if let Some(l) = lang
            && !is_language_tag(l)
        {
            r.push(
                format!("options.youtube.{field}"),
                "invalid_language",
                format!("`{l}` is not a BCP-47 language tag such as en or pt-BR"),
            );
        }
    }
    if let Some(t) = &o.thumbnail {
        let p = "options.youtube.thumbnail";
        if t.kind != MediaKind::Image {
            r.push(
                format!("{p}.kind"),
                "thumbnail_not_image",
                "a thumbnail is a JPEG or PNG image",
            );
        }
        let mime = t.mime_or_default().to_ascii_lowercase();
        if !matches!(mime.as_str(), "image/jpeg" | "image/png") {
            r.push(
                format!("{p}.mime"),
                "thumbnail_mime",
                format!("a thumbnail is a JPEG or PNG image; this one is {mime}"),
            );
        }
        if let Some(size) = t.size
            && size > MAX_THUMBNAIL_BYTES
        {
            r.push(
                format!("{p}.size"),
                "thumbnail_too_large",
                format!("the thumbnail is {size} bytes; YouTube allows {MAX_THUMBNAIL_BYTES}"),
            );
        }
        if let MediaSource::Url { .. } = t.source {
            r.push(
                format!("{p}.source"),
                "url_source_unsupported",
                "a thumbnail is uploaded from a file or bytes, not from a URL",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn video() -> Media {
        Media::new(
            MediaKind::Video,
            MediaSource::Bytes {
                data: Bytes::from_static(b"0000"),
            },
        )
        .with_mime("video/mp4")
    }

    fn post() -> Post {
        Post::new("A description")
            .with_title("A title")
            .with_media(video())
    }

    #[test]
    fn a_plain_video_is_valid() {
        let r = validate_post(&post(), Utc::now());
        assert!(r.is_ok(), "{r}");
    }

    #[test]
    fn tags_count_commas_and_quotes() {
        assert_eq!(tags_length::<&str>(&[]), 0);
        assert_eq!(tags_length(&["a"]), 1);
        assert_eq!(tags_length(&["a", "b c"]), 1 + 1 + 3 + 2);
        // 50 tags of 9 chars: 450 + 49 commas = 499 is fine; one more char is not.
        let mut tags = vec!["abcdefghi".to_owned(); 50];
        assert_eq!(tags_length(&tags), 499);
        tags[0].push('j');
        assert_eq!(tags_length(&tags), 500);
        tags[1] = "abcd efgh".to_owned();
        assert_eq!(tags_length(&tags), 502);
        let p = post()
            .with_options(&YouTubeOptions::new().tags(tags))
            .expect("options");
        assert!(validate_post(&p, Utc::now()).has("tags_too_long"));
    }

    #[test]
    fn every_rule_is_reported_at_once() {
        let now = Utc::now();
        let mut p = Post::new(format!("{}<b>", "é".repeat(2500)))
            .with_title(format!("{}>", "t".repeat(100)))
            .with_media(video().with_mime("image/png"));
        p.set_options(
            &YouTubeOptions::new()
                .privacy(Privacy::Public)
                .publish_at(now - chrono::Duration::minutes(1))
                .category_id("music")
                .default_language("not a tag")
                .thumbnail(
                    Media::from_bytes(Bytes::from(vec![0u8; 10]), Some("t.gif"))
                        .with_mime("image/gif"),
                ),
        )
        .expect("options");
        let r = validate_post(&p, now);
        for code in [
            "text_too_long",
            "description_angle_brackets",
            "title_too_long",
            "title_angle_brackets",
            "publish_at_needs_private",
            "publish_at_in_past",
            "invalid_category",
            "invalid_language",
            "thumbnail_mime",
            "media_kind_unsupported",
        ] {
            assert!(r.has(code), "missing {code}: {r}");
        }
    }

    #[test]
    fn description_limit_is_in_bytes() {
        // 1250 four-byte emoji = 5000 bytes: fine. One more byte is not.
        let p = Post::new("😀".repeat(1250))
            .with_title("t")
            .with_media(video());
        assert!(validate_post(&p, Utc::now()).is_ok());
        let p = Post::new(format!("{}a", "😀".repeat(1250)))
            .with_title("t")
            .with_media(video());
        assert!(validate_post(&p, Utc::now()).has("text_too_long"));
    }

    #[test]
    fn missing_title_and_video_are_reported() {
        let r = validate_post(&Post::new("text"), Utc::now());
        assert!(r.has("title_required"));
        assert!(r.has("media_required"));
    }

    #[test]
    fn scheduled_private_video_is_valid() {
        let now = Utc::now();
        let p = post()
            .with_options(
                &YouTubeOptions::new()
                    .privacy(Privacy::Private)
                    .publish_at(now + chrono::Duration::hours(2)),
            )
            .expect("options");
        assert!(validate_post(&p, now).is_ok());
    }

    #[test]
    fn shorts() {
        let v = video();
        assert_eq!(is_short(&v), None);
        let v = v.with_dimensions(1080, 1920);
        assert_eq!(is_short(&v), None);
        assert_eq!(
            is_short(&v.clone().with_duration(Duration::from_secs(180))),
            Some(true)
        );
        assert_eq!(
            is_short(&v.clone().with_duration(Duration::from_secs(181))),
            Some(false)
        );
        let square = video()
            .with_dimensions(720, 720)
            .with_duration(Duration::from_secs(30));
        assert_eq!(is_short(&square), Some(true));
        let wide = video()
            .with_dimensions(1920, 1080)
            .with_duration(Duration::from_secs(30));
        assert_eq!(is_short(&wide), Some(false));
    }
}
