//! Validation reports, and the checks any adapter composes from its [`Capabilities`].
//!
//! Validation never touches the network and reports every issue at once, each with a field path
//! (`media[1].size`, `thread[0].text`) so an application can point at the offending field.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::platform::{Capabilities, Platform};
use crate::post::{Media, MediaKind, MediaSource, PlatformOptions, Post};

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Issue {
    /// Where: a path into the post, e.g. `media[0].size`.
    pub path: String,
    /// A stable machine code, e.g. `text_too_long`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} [{}]", self.path, self.message, self.code)
    }
}

/// Every issue found in a post for one platform.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    platform: Option<Platform>,
    issues: Vec<Issue>,
}

impl ValidationReport {
    /// An empty report for `platform`.
    pub fn new(platform: Platform) -> Self {
        ValidationReport {
            platform: Some(platform),
            issues: Vec::new(),
        }
    }

    /// Records an issue.
    pub fn push(
        &mut self,
        path: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.issues.push(Issue {
            path: path.into(),
            code: code.into(),
            message: message.into(),
        });
    }

    /// The post's options of `T`'s platform (the defaults when it has none), or `None` after
    /// recording an `invalid_options` issue at `options.<platform>` when they do not parse.
    pub fn options<T: PlatformOptions + Default>(&mut self, post: &Post) -> Option<T> {
        match post.options::<T>() {
            Ok(o) => Some(o.unwrap_or_default()),
            Err(e) => {
                self.push(
                    format!("options.{}", T::PLATFORM),
                    "invalid_options",
                    e.message().to_owned(),
                );
                None
            }
        }
    }

    /// Appends every issue of `other`.
    pub fn extend(&mut self, other: ValidationReport) {
        self.issues.extend(other.issues);
    }

    /// The platform checked against.
    pub fn platform(&self) -> Option<Platform> {
        self.platform
    }

    /// The issues found, in the order found.
    pub fn issues(&self) -> &[Issue] {
        &self.issues
    }

    /// Whether no issue was found.
    pub fn is_ok(&self) -> bool {
        self.issues.is_empty()
    }

    /// Whether an issue with `code` was found.
    pub fn has(&self, code: &str) -> bool {
        self.issues.iter().any(|i| i.code == code)
    }

    /// One line listing every issue.
    pub fn summary(&self) -> String {
        if self.issues.is_empty() {
            return "post is valid".to_owned();
        }
        let list: Vec<String> = self.issues.iter().map(Issue::to_string).collect();
        format!("post is invalid: {}", list.join("; "))
    }

    /// `Ok(())` when valid, else an [`crate::ErrorKind::Validation`] error with this report.
    pub fn into_result(self) -> Result<()> {
        if self.is_ok() {
            Ok(())
        } else {
            Err(Error::validation(self))
        }
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// The generic checks every adapter starts from: text length (with the capabilities' counting,
/// or `count` when given), media kinds, counts, mixing, MIME types, sizes, durations, aspect
/// ratios, alt text, threads, polls, links and URL sources.
///
/// `count` overrides how text is measured (e.g. X's weighted length).
pub fn check_post(
    caps: &Capabilities,
    post: &Post,
    count: Option<&dyn Fn(&str) -> usize>,
) -> ValidationReport {
    let mut r = ValidationReport::new(caps.platform);
    let counter = |s: &str| match count {
        Some(f) => f(s),
        None => caps.text.counting.count(s),
    };
    let parts: Vec<(&str, &[Media])> = post.parts().collect();
    if !post.thread.is_empty() {
        match caps.max_thread_parts {
            None => r.push(
                "thread",
                "threads_unsupported",
                format!("{} does not support threads", caps.platform),
            ),
            Some(max) if parts.len() > max => r.push(
                "thread",
                "thread_too_long",
                format!(
                    "a thread has at most {max} parts; this one has {}",
                    parts.len()
                ),
            ),
            _ => {}
        }
    }
    for (i, (text, media)) in parts.iter().enumerate() {
        let prefix = if i == 0 {
            String::new()
        } else {
            format!("thread[{}].", i - 1)
        };
        check_text(
            &mut r,
            caps,
            &format!("{prefix}text"),
            text,
            &counter,
            media.is_empty(),
        );
        check_media(&mut r, caps, &format!("{prefix}media"), media);
    }
    if let Some(poll) = &post.poll {
        match &caps.poll {
            None => r.push(
                "poll",
                "polls_unsupported",
                format!("{} does not support polls", caps.platform),
            ),
            Some(rule) => {
                let n = poll.options.len();
                if n < rule.min_options || n > rule.max_options {
                    r.push(
                        "poll.options",
                        "poll_option_count",
                        format!(
                            "a poll needs {} to {} options; it has {n}",
                            rule.min_options, rule.max_options
                        ),
                    );
                }
                for (i, o) in poll.options.iter().enumerate() {
                    let len = o.chars().count();
                    if len == 0 || len > rule.max_option_chars {
                        r.push(
                            format!("poll.options[{i}]"),
                            "poll_option_length",
                            format!(
                                "a poll option has 1 to {} characters; this one has {len}",
                                rule.max_option_chars
                            ),
                        );
                    }
                }
                if poll.duration < rule.min_duration || poll.duration > rule.max_duration {
                    r.push(
                        "poll.duration",
                        "poll_duration",
                        format!(
                            "a poll runs {} to {} minutes; this one runs {}",
                            rule.min_duration.as_secs() / 60,
                            rule.max_duration.as_secs() / 60,
                            poll.duration.as_secs() / 60
                        ),
                    );
                }
            }
        }
    }
    if post.link.is_some() && !caps.links {
        r.push(
            "link",
            "links_unsupported",
            format!("{} does not take a link on a post", caps.platform),
        );
    }
    r
}

fn check_text(
    r: &mut ValidationReport,
    caps: &Capabilities,
    path: &str,
    text: &str,
    counter: &dyn Fn(&str) -> usize,
    no_media: bool,
) {
    if text.trim().is_empty() {
        if caps.text.required || (no_media && caps.max_media > 0 && !caps.media_required) {
            r.push(path, "text_required", "the text is empty");
        }
        return;
    }
    let n = counter(text);
    if n > caps.text.max {
        r.push(
            path,
            "text_too_long",
            format!(
                "the text is {n} {} long; {} allows {}",
                unit(caps.text.counting),
                caps.platform,
                caps.text.max
            ),
        );
    }
}

fn unit(c: crate::platform::TextCounting) -> &'static str {
    use crate::platform::TextCounting::*;
    match c {
        Chars | Graphemes | Weighted => "characters",
        Utf16 => "UTF-16 units",
        Bytes => "bytes",
    }
}

fn check_media(r: &mut ValidationReport, caps: &Capabilities, path: &str, media: &[Media]) {
    if media.is_empty() {
        if caps.media_required {
            r.push(
                path,
                "media_required",
                format!("{} needs at least one media item", caps.platform),
            );
        }
        return;
    }
    if media.len() > caps.max_media {
        r.push(
            path,
            "too_many_media",
            format!(
                "{} allows at most {} media items; this post has {}",
                caps.platform,
                caps.max_media,
                media.len()
            ),
        );
    }
    let kinds: std::collections::BTreeSet<&str> = media.iter().map(|m| m.kind.as_str()).collect();
    if kinds.len() > 1 && !caps.mixed_media {
        r.push(
            path,
            "mixed_media",
            format!(
                "{} does not mix media kinds in one post ({})",
                caps.platform,
                kinds.into_iter().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    for (i, m) in media.iter().enumerate() {
        let p = format!("{path}[{i}]");
        check_one(r, caps, &p, m);
    }
}

fn check_one(r: &mut ValidationReport, caps: &Capabilities, p: &str, m: &Media) {
    let Some(rule) = caps.media_rule(m.kind) else {
        r.push(
            format!("{p}.kind"),
            "media_kind_unsupported",
            format!(
                "{} does not accept {} media",
                caps.platform,
                m.kind.as_str()
            ),
        );
        return;
    };
    if let MediaSource::Url { .. } = m.source
        && !caps.media_from_url
    {
        r.push(
            format!("{p}.source"),
            "url_source_unsupported",
            format!(
                "{} uploads media from a file or bytes, not from a URL",
                caps.platform
            ),
        );
    }
    if let Some(mime) = &m.mime
        && !rule.mime_types.is_empty()
        && !rule.mime_types.iter().any(|t| t.eq_ignore_ascii_case(mime))
    {
        r.push(
            format!("{p}.mime"),
            "mime_unsupported",
            format!(
                "{} does not accept {mime} (accepted: {})",
                caps.platform,
                rule.mime_types.join(", ")
            ),
        );
    }
    if let Some(size) = m.size
        && size > rule.max_bytes
    {
        r.push(
            format!("{p}.size"),
            "media_too_large",
            format!(
                "the {} is {size} bytes; {} allows {}",
                m.kind.as_str(),
                caps.platform,
                rule.max_bytes
            ),
        );
    }
    if let Some(d) = m.duration {
        if let Some(min) = rule.min_duration
            && d < min
        {
            r.push(
                format!("{p}.duration"),
                "media_too_short",
                format!(
                    "the {} lasts {:.1} s; {} needs at least {:.1} s",
                    m.kind.as_str(),
                    d.as_secs_f64(),
                    caps.platform,
                    min.as_secs_f64()
                ),
            );
        }
        if let Some(max) = rule.max_duration
            && d > max
        {
            r.push(
                format!("{p}.duration"),
                "media_too_long",
                format!(
                    "the {} lasts {:.1} s; {} allows at most {:.1} s",
                    m.kind.as_str(),
                    d.as_secs_f64(),
                    caps.platform,
                    max.as_secs_f64()
                ),
            );
        }
    }
    if let Some(ratio) = m.aspect_ratio() {
        let lo = rule.min_aspect_ratio.is_some_and(|min| ratio < min - 1e-3);
        let hi = rule.max_aspect_ratio.is_some_and(|max| ratio > max + 1e-3);
        if lo || hi {
            r.push(
                format!("{p}.aspect_ratio"),
                "aspect_ratio",
                format!(
                    "the aspect ratio {ratio:.3} is outside {:.3}..{:.3}",
                    rule.min_aspect_ratio.unwrap_or(0.0),
                    rule.max_aspect_ratio.unwrap_or(f64::INFINITY)
                ),
            );
        }
    }
    if let (Some(max), Some(w), Some(h)) = (rule.max_dimension, m.width, m.height)
        && (w > max || h > max)
    {
        r.push(
            format!("{p}.dimensions"),
            "dimensions_too_large",
            format!("{w}×{h} exceeds {max} pixels on a side"),
        );
    }
    if let Some(alt) = &m.alt_text {
        match rule.max_alt_text {
            None => r.push(
                format!("{p}.alt_text"),
                "alt_text_unsupported",
                format!(
                    "{} does not take alt text on {}",
                    caps.platform,
                    m.kind.as_str()
                ),
            ),
            Some(max) if alt.chars().count() > max => r.push(
                format!("{p}.alt_text"),
                "alt_text_too_long",
                format!("alt text has at most {max} characters"),
            ),
            _ => {}
        }
    }
    if m.kind == MediaKind::Video && m.size == Some(0) {
        r.push(
            format!("{p}.size"),
            "media_empty",
            "the video file is empty",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{MediaRule, PollRule, TextCounting, TextRule};
    use crate::post::{Poll, PostPart};
    use std::time::Duration;

    fn caps() -> Capabilities {
        let mut c = Capabilities::new(Platform::X, TextRule::new(10, TextCounting::Graphemes));
        c.media = vec![MediaRule::new(MediaKind::Image, &["image/png"], 100), {
            let mut v = MediaRule::new(MediaKind::Video, &["video/mp4"], 1000);
            v.max_duration = Some(Duration::from_secs(10));
            v
        }];
        c.max_media = 2;
        c.max_thread_parts = Some(2);
        c.poll = Some(PollRule {
            min_options: 2,
            max_options: 4,
            max_option_chars: 5,
            min_duration: Duration::from_secs(300),
            max_duration: Duration::from_secs(600),
        });
        c
    }

    #[test]
    fn reports_every_issue_with_paths() {
        let img = Media::from_bytes(bytes::Bytes::from(vec![0u8; 200]), Some("a.png"))
            .with_mime("image/png");
        let vid = Media::new(
            MediaKind::Video,
            MediaSource::Bytes {
                data: bytes::Bytes::new(),
            },
        )
        .with_duration(Duration::from_secs(20));
        let post = Post::new("this text is too long")
            .with_media(img.clone())
            .with_media(vid)
            .with_media(img)
            .with_thread_part(PostPart::default())
            .with_thread_part(PostPart {
                text: "ok".into(),
                media: vec![],
            })
            .with_poll(Poll {
                options: vec!["toolong".into()],
                duration: Duration::from_secs(60),
            });
        let r = check_post(&caps(), &post, None);
        for code in [
            "text_too_long",
            "too_many_media",
            "mixed_media",
            "media_too_large",
            "media_too_long",
            "thread_too_long",
            "text_required",
            "poll_option_count",
            "poll_option_length",
            "poll_duration",
        ] {
            assert!(r.has(code), "missing {code}: {r}");
        }
        assert!(r.issues().iter().any(|i| i.path == "media[0].size"));
        assert!(r.issues().iter().any(|i| i.path == "thread[0].text"));
        let err = r.into_result().expect_err("invalid");
        assert_eq!(err.kind(), crate::ErrorKind::Validation);
    }

    #[test]
    fn valid_post_passes() {
        let post = Post::new("short");
        assert!(check_post(&caps(), &post, None).is_ok());
    }
}
