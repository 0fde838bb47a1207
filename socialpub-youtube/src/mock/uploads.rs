//! The YouTube mock's uploads: starting a resumable session (`videos.insert`), chunks and
//! status queries as Google counts them, and custom thumbnails.

// Handlers short-circuit with the response to send; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::handlers::{
    UPLOAD_SCOPES, auth_error, bad_request, google_error, missing_part, parts, quota_exceeded,
};
use super::state::base64_like::id;
use super::state::*;
use super::{MockVideo, Shared};
use crate::config::CHUNK_GRANULARITY;
use crate::validate::{
    MAX_DESCRIPTION_BYTES, MAX_TAGS_CHARS, MAX_THUMBNAIL_BYTES, MAX_TITLE_CHARS, tags_length,
};

type Params = Query<HashMap<String, String>>;

/// Checks a video resource the way `videos.insert` does.
fn check_metadata(meta: &Value, now: DateTime<Utc>) -> std::result::Result<(), Response> {
    let snippet = meta.get("snippet").cloned().unwrap_or_default();
    let status = meta.get("status").cloned().unwrap_or_default();
    let title = snippet.get("title").and_then(Value::as_str).unwrap_or("");
    if title.trim().is_empty()
        || title.chars().count() > MAX_TITLE_CHARS
        || title.contains(['<', '>'])
    {
        return Err(bad_request(
            "invalidTitle",
            "The request metadata specifies an invalid or empty video title.",
        ));
    }
    let desc = snippet
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("");
    if desc.len() > MAX_DESCRIPTION_BYTES || desc.contains(['<', '>']) {
        return Err(bad_request(
            "invalidDescription",
            "The request metadata specifies an invalid video description.",
        ));
    }
    let tags: Vec<String> = snippet
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if tags_length(&tags) > MAX_TAGS_CHARS {
        return Err(bad_request(
            "invalidTags",
            "The request metadata specifies invalid video keywords.",
        ));
    }
    if let Some(c) = snippet.get("categoryId")
        && !c
            .as_str()
            .is_some_and(|c| !c.is_empty() && c.chars().all(|x| x.is_ascii_digit()))
    {
        return Err(bad_request(
            "invalidCategoryId",
            "The snippet.categoryId property specifies an invalid category ID.",
        ));
    }
    let privacy = status
        .get("privacyStatus")
        .and_then(Value::as_str)
        .unwrap_or("public");
    if !matches!(privacy, "public" | "private" | "unlisted") {
        return Err(bad_request(
            "invalidVideoMetadata",
            "The request metadata is invalid.",
        ));
    }
    if let Some(at) = status.get("publishAt") {
        let when = at
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        if privacy != "private" || when.is_none_or(|t| t <= now) {
            return Err(bad_request(
                "invalidPublishAt",
                "The request metadata specifies an invalid scheduled publishing time.",
            ));
        }
    }
    Ok(())
}

pub(crate) async fn insert(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Params,
    body: axum::body::Bytes,
) -> Response {
    let s2 = shared.clone();
    {
        let mut s = s2.state();
        let user = match s2.user(&headers, UPLOAD_SCOPES) {
            Ok(u) => u,
            Err(r) => return r,
        };
        if q.get("uploadType").map(String::as_str) != Some("resumable") {
            return bad_request(
                "invalidUploadType",
                "This mock accepts uploadType=resumable only.",
            );
        }
        if parts(&q).is_empty() {
            return missing_part();
        }
        if s.inserts_used >= s.inserts_limit {
            return quota_exceeded();
        }
        s.inserts_used += 1;
        let Some(channel) = s.channel_of(&user) else {
            return google_error(
                StatusCode::UNAUTHORIZED,
                "youtubeSignupRequired",
                "youtube.header",
                "Unauthorized",
            );
        };
        let total = headers
            .get("x-upload-content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let Some(total) = total.filter(|t| *t > 0) else {
            return bad_request(
                "badRequest",
                "The X-Upload-Content-Length header is missing or invalid.",
            );
        };
        let ctype = headers
            .get("x-upload-content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !(ctype.starts_with("video/") || ctype == "application/octet-stream") {
            return bad_request(
                "invalidContentType",
                "X-Upload-Content-Type must be video/* or application/octet-stream.",
            );
        }
        let meta: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return bad_request("parseError", "The request body is not JSON."),
        };
        if let Err(r) = check_metadata(&meta, Utc::now()) {
            return r;
        }
        if let Some(limit) = s.upload_limit {
            let n = s
                .videos
                .iter()
                .filter(|v| v.video.channel_id == channel.id)
                .count();
            if n >= limit as usize {
                return bad_request(
                    "uploadLimitExceeded",
                    "The user has exceeded the number of videos they may upload.",
                );
            }
        }
        let upload_id = id(48);
        s.sessions.insert(
            upload_id.clone(),
            Session {
                user,
                channel_id: channel.id,
                total,
                received: 0,
                hasher: Sha256::new(),
                metadata: meta,
                notify: q.get("notifySubscribers").map(String::as_str) != Some("false"),
                gone: None,
                video_id: None,
                lock: Arc::new(tokio::sync::Mutex::new(())),
            },
        );
        s2.counters.sessions_started.fetch_add(1, Ordering::SeqCst);
        // The session URI is absolute, on the host the client called.
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1");
        let Ok(mut loc) = url::Url::parse(&format!("http://{host}/upload/youtube/v3/videos"))
        else {
            return bad_request("badRequest", "The Host header is not a host.");
        };
        loc.query_pairs_mut()
            .append_pair("uploadType", "resumable")
            .append_pair(
                "part",
                q.get("part")
                    .map(String::as_str)
                    .unwrap_or("snippet,status"),
            )
            .append_pair("upload_id", &upload_id);
        let mut resp = (StatusCode::OK, [(header::LOCATION, loc.to_string())]).into_response();
        if let Ok(v) = HeaderValue::from_str(&upload_id) {
            resp.headers_mut().insert("x-guploader-uploadid", v);
        }
        resp
    }
}

/// A parsed `Content-Range`.
enum RangeHeader {
    /// `bytes */TOTAL`
    Query(u64),
    /// `bytes FIRST-LAST/TOTAL`
    Bytes(u64, u64, u64),
}

fn parse_content_range(v: &str) -> Option<RangeHeader> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total: u64 = total.trim().parse().ok()?;
    if range == "*" {
        return Some(RangeHeader::Query(total));
    }
    let (a, b) = range.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b && b < total).then_some(RangeHeader::Bytes(a, b, total))
}

/// Reads a refused request's body to its end, so the client is not cut off mid-send.
async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    while let Some(Ok(_)) = stream.next().await {}
}

fn range_308(received: u64) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if received > 0
        && let Ok(v) = HeaderValue::from_str(&format!("bytes=0-{}", received - 1))
    {
        r.headers_mut().insert(header::RANGE, v);
    }
    r
}

fn session_gone(code: StatusCode) -> Response {
    google_error(
        code,
        "notFound",
        "global",
        "The upload session was not found or has expired.",
    )
}

/// Names a `PUT` to an upload session: a `bytes */TOTAL` status query or a chunk.
pub(crate) fn upload_endpoint(parts: &Parts) -> &'static str {
    let query = parts
        .headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range);
    match query {
        Some(RangeHeader::Query(_)) => "upload.status",
        _ => "upload.chunk",
    }
}

pub(crate) async fn upload_put(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
) -> Response {
    let range = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range);
    upload_inner(&shared, &headers, &q, range, body).await
}

async fn upload_inner(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    range: Option<RangeHeader>,
    body: Body,
) -> Response {
    let upload_id = q.get("upload_id").cloned().unwrap_or_default();
    // Checks that need no body.
    let lock: std::result::Result<_, Response> = (|| {
        let s = shared.state();
        let user = shared.user(headers, UPLOAD_SCOPES)?;
        match s.sessions.get(&upload_id) {
            None => Err(session_gone(StatusCode::NOT_FOUND)),
            // A session belongs to the account that started it.
            Some(sess) if sess.user != user => Err(auth_error()),
            Some(sess) => match sess.gone {
                Some(code) => Err(session_gone(code)),
                None => Ok(sess.lock.clone()),
            },
        }
    })();
    let lock = match lock {
        Ok(l) => l,
        Err(r) => {
            drain(body).await;
            return r;
        }
    };
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());

    let (first, last, total) = match range {
        None => {
            drain(body).await;
            return bad_request("badContent", "Content-Range is missing or malformed.");
        }
        Some(RangeHeader::Query(total)) => {
            drain(body).await;
            let mut s = shared.state();
            let Some(sess) = s.sessions.get(&upload_id) else {
                return session_gone(StatusCode::NOT_FOUND);
            };
            if total != sess.total || content_length != Some(0) {
                return bad_request(
                    "badContent",
                    "A status query is an empty PUT with Content-Range: bytes */TOTAL.",
                );
            }
            if let Some(vid) = sess.video_id.clone() {
                let idx = s.videos.iter().position(|v| v.video.id == vid);
                return match idx {
                    Some(i) => (
                        StatusCode::OK,
                        axum::Json(s.video_json(i, &["snippet", "status"], true)),
                    )
                        .into_response(),
                    None => session_gone(StatusCode::NOT_FOUND),
                };
            }
            return range_308(sess.received);
        }
        Some(RangeHeader::Bytes(a, b, t)) => (a, b, t),
    };

    // One chunk at a time per session.
    let _guard = lock.lock().await;
    let len = last - first + 1;
    let checked: std::result::Result<(Sha256, u64), Response> = (|| {
        let mut s = shared.state();
        let short = s.short_keep.front().copied();
        let Some(sess) = s.sessions.get(&upload_id) else {
            return Err(session_gone(StatusCode::NOT_FOUND));
        };
        let problem = if total != sess.total {
            Some("Content-Range total differs from X-Upload-Content-Length.".to_owned())
        } else if sess.video_id.is_some() {
            Some("The upload is already complete.".to_owned())
        } else if first != sess.received {
            Some(format!(
                "Content-Range starts at {first}; the session holds {} bytes.",
                sess.received
            ))
        } else if content_length != Some(len) {
            Some(format!(
                "Content-Length {content_length:?} does not match the Content-Range length {len}."
            ))
        } else if last + 1 < total && len % CHUNK_GRANULARITY as u64 != 0 {
            Some(format!(
                "A chunk other than the last must be a multiple of 262144 bytes; this one is {len}."
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(bad_request("badContent", &p));
        }
        let hasher = sess.hasher.clone();
        let keep = match short {
            Some(n) => {
                s.short_keep.pop_front();
                len.saturating_sub(n)
            }
            None => len,
        };
        Ok((hasher, keep))
    })();
    let (mut hasher, keep) = match checked {
        Ok(c) => c,
        Err(r) => {
            drain(body).await;
            return r;
        }
    };
    // Of a chunk whose connection breaks, the mock keeps whole 256 KiB blocks only, so the
    // client must resend from where the session says: the hash is kept as of the last whole
    // block too.
    let block = CHUNK_GRANULARITY as u64;
    let mut stream = body.into_data_stream();
    let mut got = 0u64;
    let mut hashed = 0u64;
    let mut at_block = (hasher.clone(), 0u64);
    let mut broken = false;
    loop {
        match stream.next().await {
            Some(Ok(mut frame)) => {
                got += frame.len() as u64;
                while !frame.is_empty() && hashed < keep {
                    let to_block = block - hashed % block;
                    let take = to_block.min(keep - hashed).min(frame.len() as u64);
                    let part = frame.split_to(usize::try_from(take).unwrap_or(frame.len()));
                    hasher.update(&part);
                    hashed += part.len() as u64;
                    if hashed.is_multiple_of(block) {
                        at_block = (hasher.clone(), hashed);
                    }
                }
            }
            Some(Err(_)) => {
                broken = true;
                break;
            }
            None => break,
        }
    }
    let interrupted = broken;
    if !interrupted && got != len {
        return bad_request(
            "badContent",
            "The body length does not match Content-Range.",
        );
    }
    let kept = if interrupted {
        hasher = at_block.0;
        at_block.1
    } else {
        hashed
    };
    let mut s = shared.state();
    let expire_now = if kept > 0 && !interrupted {
        match s.expire_tokens_after_chunks {
            Some(n) if n <= 1 => {
                s.expire_tokens_after_chunks = None;
                true
            }
            Some(n) => {
                s.expire_tokens_after_chunks = Some(n - 1);
                false
            }
            None => false,
        }
    } else {
        false
    };
    let script = s.processing.clone();
    let lock_private = s.lock_private;
    let Some(sess) = s.sessions.get_mut(&upload_id) else {
        return session_gone(StatusCode::NOT_FOUND);
    };
    sess.received += kept;
    sess.hasher = hasher;
    let received = sess.received;
    let complete = received == sess.total;
    let mut created = None;
    if complete {
        let vid = id(11);
        sess.video_id = Some(vid.clone());
        let meta = sess.metadata.clone();
        let snippet = meta.get("snippet").cloned().unwrap_or_default();
        let status = meta.get("status").cloned().unwrap_or_default();
        let privacy = if lock_private {
            "private".to_owned()
        } else {
            status
                .get("privacyStatus")
                .and_then(Value::as_str)
                .unwrap_or("public")
                .to_owned()
        };
        let video = MockVideo {
            id: vid.clone(),
            channel_id: sess.channel_id.clone(),
            title: snippet
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            privacy_status: privacy,
            publish_at: status
                .get("publishAt")
                .and_then(Value::as_str)
                .map(str::to_owned),
            size: sess.total,
            sha256: sess
                .hasher
                .clone()
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            metadata: meta,
            notify_subscribers: sess.notify,
            thumbnail: None,
            deleted: false,
        };
        s.videos.push(VideoRec {
            video,
            created: Utc::now(),
            created_instant: Instant::now(),
            reads: 0,
            script,
        });
        shared
            .counters
            .videos_created
            .fetch_add(1, Ordering::SeqCst);
        created = Some(s.videos.len() - 1);
    }
    if expire_now {
        shared.kit.oauth().expire_access_tokens();
    }
    if interrupted {
        // The client is gone; nobody reads this answer.
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    match created {
        Some(idx) => (
            StatusCode::CREATED,
            axum::Json(s.video_json(idx, &["snippet", "status"], true)),
        )
            .into_response(),
        None => range_308(received),
    }
}

pub(crate) async fn thumbnails_set(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Params,
    body: Body,
) -> Response {
    // Read at most one byte past the limit: the image is small, an oversized one is refused.
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    while let Some(Ok(frame)) = stream.next().await {
        size += frame.len() as u64;
    }
    let mut s = shared.state();
    thumbnail_answer(&mut s, &shared, &headers, &q, size)
}

fn thumbnail_answer(
    s: &mut MockState,
    shared: &Shared,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    size: u64,
) -> Response {
    let user = match shared.user(headers, UPLOAD_SCOPES) {
        Ok(u) => u,
        Err(r) => return r,
    };
    if let Err(r) = s.charge_units(50) {
        return r;
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !matches!(
        ctype.as_str(),
        "image/jpeg" | "image/png" | "application/octet-stream"
    ) {
        return bad_request(
            "mediaBodyRequired",
            "The request does not include the image content.",
        );
    }
    if size == 0 {
        return bad_request(
            "mediaBodyRequired",
            "The request does not include the image content.",
        );
    }
    if size > MAX_THUMBNAIL_BYTES {
        return google_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "uploadTooLarge",
            "global",
            "Media larger than 2097152 bytes is not allowed.",
        );
    }
    let Some(channel) = s.channel_of(&user) else {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "youtubeSignupRequired",
            "youtube.header",
            "Unauthorized",
        );
    };
    let vid = q.get("videoId").cloned().unwrap_or_default();
    let Some(v) = s
        .videos
        .iter_mut()
        .find(|v| v.video.id == vid && !v.video.deleted)
    else {
        return google_error(
            StatusCode::NOT_FOUND,
            "videoNotFound",
            "youtube.thumbnail",
            "The video that you are trying to insert a thumbnail image for cannot be found.",
        );
    };
    if v.video.channel_id != channel.id || !channel.custom_thumbnails {
        return google_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "youtube.thumbnail",
            "The authenticated user doesn't have permissions to upload and set custom video thumbnails.",
        );
    }
    v.video.thumbnail = Some((ctype, size));
    shared.counters.thumbnails.fetch_add(1, Ordering::SeqCst);
    let url = |q: &str| format!("https://i.ytimg.example/vi/{vid}/{q}.jpg");
    axum::Json(json!({
        "kind": "youtube#thumbnailSetResponse",
        "etag": "e",
        "items": [{
            "default": {"url": url("default"), "width": 120, "height": 90},
            "medium": {"url": url("mqdefault"), "width": 320, "height": 180},
            "high": {"url": url("hqdefault"), "width": 480, "height": 360},
        }],
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert!(matches!(
            parse_content_range("bytes */10"),
            Some(RangeHeader::Query(10))
        ));
        assert!(matches!(
            parse_content_range("bytes 0-4/10"),
            Some(RangeHeader::Bytes(0, 4, 10))
        ));
        assert!(parse_content_range("bytes 5-4/10").is_none());
        assert!(parse_content_range("bytes 0-10/10").is_none());
    }
}
