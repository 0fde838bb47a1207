//! The X mock's platform state: users, posts, uploads and rate-limit windows, and how X shows
//! them back. Tokens, faults and the request log live in core's mock kit.

// Checks answer refusals as ready `Response`s; their size is irrelevant in a test server.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::Sha256;

use axum::response::Response;

use super::handlers::{forbidden, invalid};
use crate::api;
use crate::text;

/// Requests per 15 minutes per user, from X's rate-limit table.
pub(crate) fn window_limit(endpoint: &str) -> u64 {
    match endpoint {
        "tweets.create" | "tweets.delete" => 100,
        "users.me" => 75,
        "users.tweets" => 900,
        "media.status" => 1000,
        "media.initialize" | "media.append" | "media.finalize" | "media.metadata" => 1875,
        _ => 900,
    }
}

/// A post the mock holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MockPost {
    /// Its id.
    pub id: String,
    /// Who posted it.
    pub author_id: String,
    /// Its text as sent.
    pub text: String,
    /// The post it replies to.
    pub in_reply_to: Option<String>,
    /// The post it quotes.
    pub quote_of: Option<String>,
    /// Attached media ids.
    pub media_ids: Vec<String>,
    /// Poll options.
    pub poll_options: Vec<String>,
    /// Poll duration in minutes.
    pub poll_minutes: Option<u64>,
    /// Who may reply.
    pub reply_settings: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Where an upload stands, as the mock saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MockUpload {
    /// The media id.
    pub id: String,
    /// The owner's user id.
    pub owner: String,
    /// `media_type` from INIT.
    pub media_type: String,
    /// `media_category` (given or inferred).
    pub category: String,
    /// `total_bytes` from INIT.
    pub total_bytes: u64,
    /// Bytes received so far.
    pub received_bytes: u64,
    /// How many `append` calls each segment got (a retried segment shows 2).
    pub append_calls: Vec<u32>,
    /// `uploading`, `pending`, `in_progress`, `succeeded` or `failed`.
    pub state: String,
    /// The SHA-256 of the bytes received, hex, once all arrived.
    pub sha256: Option<String>,
    /// Alt text set through `/2/media/metadata`.
    pub alt_text: Option<String>,
}

#[derive(Clone)]
pub(crate) struct Upload {
    pub(crate) info: MockUpload,
    pub(crate) hasher: Sha256,
    pub(crate) hasher_before_last: Sha256,
    pub(crate) last_len: u64,
    pub(crate) polls: u32,
    pub(crate) will_fail: bool,
}

#[derive(Default)]
pub(crate) struct Data {
    pub(crate) users: HashMap<String, (String, String)>,
    pub(crate) max_text: HashMap<String, usize>,
    pub(crate) uploads: HashMap<String, Upload>,
    pub(crate) posts: Vec<MockPost>,
    pub(crate) next_id: u64,
    pub(crate) windows: HashMap<(String, String), (DateTime<Utc>, u64)>,
    pub(crate) fail_next_processing: bool,
    /// List reads still to come that leave out the newest post (X's timelines lag).
    pub(crate) lagging_lists: u32,
}

pub(crate) struct Settings {
    pub(crate) check_after_secs: u64,
    pub(crate) processing_polls: u32,
    pub(crate) max_text: usize,
}

pub(crate) fn next_id(d: &mut Data) -> String {
    d.next_id += 1;
    d.next_id.to_string()
}

/// The text X shows back: HTML entities escaped, links as t.co, a t.co link for media.
pub(crate) fn shown_text(p: &MockPost) -> String {
    let mut out = String::new();
    let mut last = 0;
    for r in text::extract_urls(&p.text) {
        out.push_str(&p.text[last..r.start]);
        out.push_str("https://t.co/");
        out.push_str(&p.id[p.id.len().saturating_sub(10)..]);
        last = r.end;
    }
    out.push_str(&p.text[last..]);
    let mut escaped = out
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    if !p.media_ids.is_empty() {
        if !escaped.is_empty() {
            escaped.push(' ');
        }
        escaped.push_str("https://t.co/m");
        escaped.push_str(&p.id[p.id.len().saturating_sub(9)..]);
    }
    escaped
}

pub(crate) fn post_json(p: &MockPost, fields: &str) -> Value {
    let mut v = json!({"id":p.id,"text":shown_text(p),"edit_history_tweet_ids":[p.id]});
    if fields.contains("created_at") {
        v["created_at"] = json!(p.created_at.to_rfc3339_opts(SecondsFormat::Millis, true));
    }
    if fields.contains("referenced_tweets") {
        let mut refs = Vec::new();
        if let Some(r) = &p.in_reply_to {
            refs.push(json!({"type":"replied_to","id":r}));
        }
        if let Some(q) = &p.quote_of {
            refs.push(json!({"type":"quoted","id":q}));
        }
        if !refs.is_empty() {
            v["referenced_tweets"] = json!(refs);
        }
    }
    v
}

pub(crate) fn check_create(
    d: &Data,
    s: &Settings,
    user: &str,
    body: &api::CreateTweet,
) -> Result<(), Response> {
    let text = body.text.clone().unwrap_or_default();
    let media = body
        .media
        .as_ref()
        .map(|m| m.media_ids.clone())
        .unwrap_or_default();
    if text.is_empty() && media.is_empty() && body.poll.is_none() {
        return Err(invalid(
            "text",
            "Post text is required unless media is attached.",
        ));
    }
    if body.poll.is_some() && (!media.is_empty() || body.quote_tweet_id.is_some()) {
        return Err(invalid(
            "poll",
            "A poll cannot be combined with media or a quote.",
        ));
    }
    if body.quote_tweet_id.is_some() && !media.is_empty() {
        return Err(invalid(
            "quote_tweet_id",
            "A quote cannot be combined with media.",
        ));
    }
    if let Some(poll) = &body.poll {
        if !(2..=4).contains(&poll.options.len())
            || poll
                .options
                .iter()
                .any(|o| o.is_empty() || o.chars().count() > 25)
        {
            return Err(invalid(
                "poll.options",
                "A poll has 2 to 4 options of 1 to 25 characters.",
            ));
        }
        if !(5..=10_080).contains(&poll.duration_minutes) {
            return Err(invalid(
                "poll.duration_minutes",
                "duration_minutes must be between 5 and 10080.",
            ));
        }
    }
    if !media.is_empty() {
        if media.len() > 4 {
            return Err(invalid(
                "media.media_ids",
                "At most 4 media ids may be attached.",
            ));
        }
        let mut kinds = Vec::new();
        for id in &media {
            let ok = d
                .uploads
                .get(id)
                .is_some_and(|u| u.info.owner == user && u.info.state == "succeeded");
            if !ok {
                return Err(invalid("media.media_ids", "Your media IDs are invalid."));
            }
            if let Some(u) = d.uploads.get(id) {
                kinds.push(u.info.category.clone());
            }
        }
        let alone = kinds.iter().any(|k| k != "tweet_image");
        if alone && kinds.len() > 1 {
            return Err(invalid(
                "media.media_ids",
                "A GIF or video must be the only media attached.",
            ));
        }
    }
    if let Some(r) = &body.reply
        && !d.posts.iter().any(|p| p.id == r.in_reply_to_tweet_id)
    {
        return Err(invalid(
            "reply.in_reply_to_tweet_id",
            "The post you are replying to does not exist or is not visible to you.",
        ));
    }
    if let Some(q) = &body.quote_tweet_id
        && !d.posts.iter().any(|p| &p.id == q)
    {
        return Err(invalid(
            "quote_tweet_id",
            "The quoted post does not exist or is not visible to you.",
        ));
    }
    let max = d.max_text.get(user).copied().unwrap_or(s.max_text);
    let info = text::parse(&text, max);
    if info.weighted_length > max || info.has_invalid_characters {
        return Err(forbidden(
            "Your Tweet text is too long. For more information on how Twitter determines text length see https://github.com/twitter/twitter-text.",
        ));
    }
    if !text.is_empty()
        && d.posts
            .iter()
            .any(|p| p.author_id == user && p.text == text)
    {
        return Err(forbidden(
            "You are not allowed to create a Tweet with duplicate content.",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- media

pub(crate) const MEDIA_TYPES: [&str; 13] = [
    "video/mp4",
    "video/webm",
    "video/mp2t",
    "video/quicktime",
    "text/srt",
    "text/vtt",
    "image/jpeg",
    "image/gif",
    "image/bmp",
    "image/png",
    "image/webp",
    "image/pjpeg",
    "image/tiff",
];

pub(crate) fn category_cap(category: &str) -> Option<u64> {
    match category {
        "tweet_image" | "dm_image" => Some(5 * 1024 * 1024),
        "tweet_gif" | "dm_gif" => Some(15 * 1024 * 1024),
        "tweet_video" | "dm_video" | "amplify_video" => Some(512 * 1024 * 1024),
        "subtitles" => Some(1024 * 1024),
        _ => None,
    }
}

pub(crate) fn media_json(u: &Upload, s: &Settings) -> Value {
    let mut v = json!({
        "id":u.info.id,
        "media_key":media_key(&u.info),
        "size":u.info.total_bytes,
        "expires_after_secs":86_400,
    });
    match u.info.state.as_str() {
        "pending" | "in_progress" => {
            let mut p = json!({"state":u.info.state,"check_after_secs":s.check_after_secs});
            if u.info.state == "in_progress" {
                p["progress_percent"] = json!(50);
            }
            v["processing_info"] = p;
        }
        "succeeded" if u.info.category != "tweet_image" => {
            v["processing_info"] = json!({"state":"succeeded","progress_percent":100});
        }
        "failed" => {
            v["processing_info"] = json!({"state":"failed","progress_percent":100,
                "error":{"code":1,"name":"InvalidMedia","message":"Unsupported video format"}});
        }
        _ => {}
    }
    v
}

pub(crate) fn media_key(u: &MockUpload) -> String {
    let prefix = match u.category.as_str() {
        "tweet_video" | "amplify_video" | "dm_video" => "7",
        "tweet_gif" | "dm_gif" => "16",
        _ => "3",
    };
    format!("{prefix}_{}", u.id)
}

/// The fields of a `multipart/form-data` body: name → (byte range of the content).
pub(crate) fn multipart_fields(
    content_type: &str,
    body: &[u8],
) -> Option<HashMap<String, std::ops::Range<usize>>> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    // A literal search through the regex crate uses its fast substring search.
    let finder = regex::bytes::Regex::new(&regex::escape(&delimiter)).ok()?;
    let mut fields = HashMap::new();
    let mut at = finder.find(body)?.end();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Some(fields); // the closing delimiter
        }
        let headers_start = at + 2; // CRLF after the delimiter
        let headers_end = headers_start
            + body
                .get(headers_start..)?
                .windows(4)
                .take(8192)
                .position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(body.get(headers_start..headers_end)?).ok()?;
        let name = head
            .split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?
            .split(';')
            .map(str::trim)
            .find_map(|p| p.strip_prefix("name="))?
            .trim_matches('"')
            .to_owned();
        let content_start = headers_end + 4;
        let next = finder.find_at(body, content_start)?;
        // The content ends at the CRLF before the next delimiter.
        let content_end = next.start().checked_sub(2)?;
        fields.insert(name, content_start..content_end.max(content_start));
        at = next.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::ENDPOINTS;

    #[test]
    fn parses_multipart() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"segment_index\"\r\n\r\n3\r\n--XyZ\r\nContent-Disposition: form-data; name=\"media\"; filename=\"blob\"\r\nContent-Type: application/octet-stream\r\n\r\nab\r\n--cd\r\n--XyZ--\r\n";
        let f = multipart_fields("multipart/form-data; boundary=XyZ", body).expect("fields");
        assert_eq!(&body[f["segment_index"].clone()], b"3");
        assert_eq!(&body[f["media"].clone()], b"ab\r\n--cd");
        assert!(multipart_fields("multipart/form-data", body).is_none());
    }

    #[test]
    fn every_endpoint_has_a_limit() {
        for e in ENDPOINTS {
            assert!(window_limit(e) > 0);
        }
    }
}
