//! X's rules as [`Capabilities`], and the checks a post must pass before any request.
//!
//! Sources: X's media best practices (4 images, or 1 GIF, or 1 video; image ≤ 5 MB, GIF
//! ≤ 15 MB, video ≤ 512 MB and 0.5–140 s, aspect ratio 1:3–3:1), the `POST /2/tweets`
//! reference (poll of 2–4 options of 1–25 characters for 5–10080 minutes; media, poll and
//! quote exclusive of each other; at most 10 tagged users) and twitter-text (weighted length).

use std::time::Duration;

use socialpub_core::media::{MediaKind, MediaSource};
use socialpub_core::platform::{MediaRule, PollRule, TextCounting, TextRule};
use socialpub_core::validate::check_post;
use socialpub_core::{Capabilities, Platform, Post, ValidationReport};

use crate::options::{XOptions, is_x_id};
use crate::text;

/// Largest image: 5 MB.
pub const MAX_IMAGE_BYTES: u64 = 5 * 1024 * 1024;
/// Largest animated GIF: 15 MB.
pub const MAX_GIF_BYTES: u64 = 15 * 1024 * 1024;
/// Largest video: 512 MB.
pub const MAX_VIDEO_BYTES: u64 = 512 * 1024 * 1024;
/// Shortest video.
pub const MIN_VIDEO_DURATION: Duration = Duration::from_millis(500);
/// Longest video (longer ones need paid tiers X does not expose through the API).
pub const MAX_VIDEO_DURATION: Duration = Duration::from_secs(140);
/// Most characters of alt text.
pub const MAX_ALT_TEXT: usize = 1000;
/// Most images in one post.
pub const MAX_IMAGES: usize = 4;
/// Most parts in a thread this adapter publishes in one go (X's composer allows 25).
pub const MAX_THREAD_PARTS: usize = 25;
/// Most users tagged in media.
pub const MAX_TAGGED_USERS: usize = 10;

/// What the X publisher accepts, with `max_text` weighted characters per post.
pub fn capabilities(max_text: usize) -> Capabilities {
    let mut text = TextRule::new(max_text, TextCounting::Weighted);
    text.required = false;
    let mut caps = Capabilities::new(Platform::X, text);
    let mut image = MediaRule::new(
        MediaKind::Image,
        &["image/jpeg", "image/png", "image/webp"],
        MAX_IMAGE_BYTES,
    );
    image.max_alt_text = Some(MAX_ALT_TEXT);
    let mut gif = MediaRule::new(MediaKind::Gif, &["image/gif"], MAX_GIF_BYTES);
    gif.max_alt_text = Some(MAX_ALT_TEXT);
    let mut video = MediaRule::new(
        MediaKind::Video,
        &["video/mp4", "video/quicktime"],
        MAX_VIDEO_BYTES,
    );
    video.min_duration = Some(MIN_VIDEO_DURATION);
    video.max_duration = Some(MAX_VIDEO_DURATION);
    video.min_aspect_ratio = Some(1.0 / 3.0);
    video.max_aspect_ratio = Some(3.0);
    caps.media = vec![image, gif, video];
    caps.max_media = MAX_IMAGES;
    caps.mixed_media = false;
    caps.max_thread_parts = Some(MAX_THREAD_PARTS);
    caps.poll = Some(PollRule::new(
        2,
        4,
        25,
        Duration::from_secs(5 * 60),
        Duration::from_secs(10_080 * 60),
    ));
    caps.links = true;
    caps.media_from_url = false;
    caps.status = true;
    caps.lookup = true;
    caps.delete = true;
    caps
}

/// The text X receives for a part: the first part carries the post's link, appended unless
/// the text already holds it.
pub(crate) fn part_text(post: &Post, index: usize) -> String {
    let text = if index == 0 {
        post.text.as_str()
    } else {
        post.thread.get(index - 1).map_or("", |p| p.text.as_str())
    };
    match (&post.link, index) {
        (Some(link), 0) if !text.contains(link.as_str()) => {
            if text.trim().is_empty() {
                link.to_string()
            } else {
                format!("{} {link}", text.trim_end())
            }
        }
        _ => text.to_owned(),
    }
}

/// Every rule `post` breaks on X with a limit of `max_text` weighted characters.
pub fn validate_post(post: &Post, max_text: usize) -> ValidationReport {
    let caps = capabilities(max_text);
    // The link is counted inside the text it is sent in.
    let mut sent = post.clone();
    sent.text = part_text(post, 0);
    sent.link = None;
    let count = |s: &str| text::weighted_length(s);
    let mut r = check_post(&caps, &sent, Some(&count));

    for (i, (t, media)) in sent.parts().enumerate() {
        let prefix = if i == 0 {
            String::new()
        } else {
            format!("thread[{}].", i - 1)
        };
        if text::parse(t, max_text).has_invalid_characters {
            r.push(
                format!("{prefix}text"),
                "text_invalid_characters",
                "the text holds a character X refuses (U+FFFE, U+FEFF or U+FFFF)",
            );
        }
        let alone = media
            .iter()
            .any(|m| matches!(m.kind, MediaKind::Gif | MediaKind::Video));
        if alone && media.len() > 1 {
            r.push(
                format!("{prefix}media"),
                "too_many_media",
                "a GIF or a video must be the only media item of its post",
            );
        }
        for (j, m) in media.iter().enumerate() {
            if m.size == Some(0) && m.kind != MediaKind::Video {
                r.push(
                    format!("{prefix}media[{j}].size"),
                    "media_empty",
                    "the media file is empty",
                );
            }
            if let MediaSource::Bytes { data } = &m.source
                && m.size.is_some_and(|s| s != data.len() as u64)
            {
                r.push(
                    format!("{prefix}media[{j}].size"),
                    "media_size_mismatch",
                    "the media size does not match its bytes",
                );
            }
            if m.kind == MediaKind::Video
                && let (Some(w), Some(h)) = (m.width, m.height)
                && (w < 32 || h < 32)
            {
                r.push(
                    format!("{prefix}media[{j}].dimensions"),
                    "dimensions_too_small",
                    format!("{w}×{h} is under X's 32×32 minimum"),
                );
            }
        }
    }

    let options = r.options::<XOptions>(post).unwrap_or_default();
    if let Some(q) = &options.quote_tweet_id {
        if !is_x_id(q) {
            r.push(
                "options.x.quote_tweet_id",
                "invalid_post_id",
                format!("`{q}` is not an X post id (1 to 19 digits)"),
            );
        }
        if !post.media.is_empty() {
            r.push(
                "options.x.quote_tweet_id",
                "quote_with_media",
                "X does not combine a quote with media",
            );
        }
        if post.poll.is_some() {
            r.push(
                "options.x.quote_tweet_id",
                "quote_with_poll",
                "X does not combine a quote with a poll",
            );
        }
    }
    if let Some(id) = &options.in_reply_to_tweet_id
        && !is_x_id(id)
    {
        r.push(
            "options.x.in_reply_to_tweet_id",
            "invalid_post_id",
            format!("`{id}` is not an X post id (1 to 19 digits)"),
        );
    }
    if post.poll.is_some() && !post.media.is_empty() {
        r.push(
            "poll",
            "poll_with_media",
            "X does not combine a poll with media",
        );
    }
    if !options.tagged_user_ids.is_empty() {
        if post.media.is_empty() {
            r.push(
                "options.x.tagged_user_ids",
                "tags_without_media",
                "users can only be tagged in media",
            );
        }
        if options.tagged_user_ids.len() > MAX_TAGGED_USERS {
            r.push(
                "options.x.tagged_user_ids",
                "too_many_tags",
                format!("at most {MAX_TAGGED_USERS} users can be tagged"),
            );
        }
        if let Some(bad) = options.tagged_user_ids.iter().find(|id| !is_x_id(id)) {
            r.push(
                "options.x.tagged_user_ids",
                "invalid_user_id",
                format!("`{bad}` is not an X user id"),
            );
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use socialpub_core::Media;
    use socialpub_core::post::{Poll, PostPart};

    fn image() -> Media {
        Media::new(
            MediaKind::Image,
            MediaSource::Bytes {
                data: Bytes::from_static(b"\x89PNG\r\n\x1a\n"),
            },
        )
        .with_mime("image/png")
    }

    #[test]
    fn accepts_plain_and_link_posts() {
        assert!(validate_post(&Post::new("hello"), 280).is_ok());
        let p = Post::new("a".repeat(256))
            .with_link(url::Url::parse("https://example.com/a/long/path").expect("url"));
        // 256 + space + 23 = 280
        assert!(validate_post(&p, 280).is_ok());
        let p = Post::new("a".repeat(257))
            .with_link(url::Url::parse("https://example.com/").expect("url"));
        assert!(validate_post(&p, 280).has("text_too_long"));
    }

    #[test]
    fn counts_weighted_and_per_account() {
        let cjk = Post::new("字".repeat(141));
        assert!(validate_post(&cjk, 280).has("text_too_long"));
        assert!(validate_post(&cjk, 25_000).is_ok());
    }

    #[test]
    fn media_rules() {
        let gif = Media::new(
            MediaKind::Gif,
            MediaSource::Bytes {
                data: Bytes::from_static(b"GIF89a"),
            },
        )
        .with_mime("image/gif");
        let mut five = Post::new("five");
        for _ in 0..5 {
            five = five.with_media(image());
        }
        assert!(validate_post(&five, 280).has("too_many_media"));
        let two_gifs = Post::new("gifs")
            .with_media(gif.clone())
            .with_media(gif.clone());
        assert!(validate_post(&two_gifs, 280).has("too_many_media"));
        let mixed = Post::new("mixed").with_media(gif).with_media(image());
        assert!(validate_post(&mixed, 280).has("mixed_media"));
        let mut big = image();
        big.size = Some(MAX_IMAGE_BYTES + 1);
        assert!(validate_post(&Post::new("big").with_media(big), 280).has("media_too_large"));
        let long_video = Media::new(
            MediaKind::Video,
            MediaSource::File {
                path: "v.mp4".into(),
            },
        )
        .with_mime("video/mp4")
        .with_duration(Duration::from_secs(141));
        assert!(validate_post(&Post::new("v").with_media(long_video), 280).has("media_too_long"));
        let bmp = image().with_mime("image/bmp");
        assert!(validate_post(&Post::new("bmp").with_media(bmp), 280).has("mime_unsupported"));
        let alt = image().with_alt_text("x".repeat(1001));
        assert!(validate_post(&Post::new("alt").with_media(alt), 280).has("alt_text_too_long"));
        let url = Media::from_url(
            MediaKind::Image,
            url::Url::parse("https://example.com/a.png").expect("url"),
        );
        assert!(
            validate_post(&Post::new("url").with_media(url), 280).has("url_source_unsupported")
        );
        // Media alone needs no text.
        assert!(validate_post(&Post::new("").with_media(image()), 280).is_ok());
    }

    #[test]
    fn exclusive_fields_polls_and_threads() {
        let poll = Poll {
            options: vec!["yes".into(), "no".into()],
            duration: Duration::from_secs(3600),
        };
        let p = Post::new("poll")
            .with_poll(poll.clone())
            .with_media(image());
        assert!(validate_post(&p, 280).has("poll_with_media"));
        let quote = XOptions {
            quote_tweet_id: Some("123".into()),
            ..XOptions::default()
        };
        let p = Post::new("q")
            .with_poll(poll.clone())
            .with_options(&quote)
            .expect("options");
        assert!(validate_post(&p, 280).has("quote_with_poll"));
        let bad = XOptions {
            quote_tweet_id: Some("12a".into()),
            ..XOptions::default()
        };
        let p = Post::new("q").with_options(&bad).expect("options");
        assert!(validate_post(&p, 280).has("invalid_post_id"));
        let p = Post::new("poll").with_poll(Poll {
            options: vec!["only".into(), "x".repeat(26)],
            duration: Duration::from_secs(60),
        });
        let r = validate_post(&p, 280);
        assert!(r.has("poll_option_length") && r.has("poll_duration"), "{r}");
        let mut thread = Post::new("1/");
        for i in 0..MAX_THREAD_PARTS {
            thread = thread.with_thread_part(PostPart {
                text: format!("{}/", i + 2),
                media: vec![],
            });
        }
        assert!(validate_post(&thread, 280).has("thread_too_long"));
        let p = Post::new("ok").with_thread_part(PostPart {
            text: "字".repeat(141),
            media: vec![],
        });
        let r = validate_post(&p, 280);
        assert!(r.issues().iter().any(|i| i.path == "thread[0].text"), "{r}");
        let p = Post::new("bad \u{FEFF}");
        assert!(validate_post(&p, 280).has("text_invalid_characters"));
    }
}
