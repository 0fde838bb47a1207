//! The X mock's media endpoints: `initialize`, `append` in order, `finalize`, `STATUS` polls
//! through processing, and alt text.

// Handlers answer refusals as ready `Response`s; their size is irrelevant in a test server.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use chrono::Utc;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::handlers::{api_call, forbidden, invalid, ok};
use super::state::*;
use super::{MAX_SEGMENT_BYTES, Shared};
use crate::api;

pub(crate) async fn media_initialize(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s2 = s.clone();
    api_call(&s, &headers, "media.initialize", &["media.write"], |user| async move {
        let Ok(init) = serde_json::from_slice::<api::MediaInit>(&body) else {
            return invalid("body", "media_type and total_bytes are required.");
        };
        if !MEDIA_TYPES.contains(&init.media_type.as_str()) {
            return invalid("media_type", "media_type is not supported.");
        }
        let inferred = if init.media_type.starts_with("video/") {
            "tweet_video"
        } else if init.media_type == "image/gif" {
            "tweet_gif"
        } else if init.media_type.starts_with("text/") {
            "subtitles"
        } else {
            "tweet_image"
        };
        let category = init.media_category.clone().unwrap_or_else(|| inferred.to_owned());
        let Some(cap) = category_cap(&category) else {
            return invalid("media_category", "media_category is not supported.");
        };
        let fits = match category.as_str() {
            "tweet_video" | "amplify_video" | "dm_video" => init.media_type.starts_with("video/"),
            "tweet_gif" | "dm_gif" => init.media_type == "image/gif",
            "tweet_image" | "dm_image" => init.media_type.starts_with("image/"),
            _ => init.media_type.starts_with("text/"),
        };
        if !fits {
            return invalid("media_category", "media_category does not match media_type.");
        }
        if init.total_bytes == 0 || init.total_bytes > cap {
            return invalid("total_bytes", &format!("total_bytes must be 1 to {cap} for {category}."));
        }
        let mut d = s2.data();
        let id = next_id(&mut d);
        let upload = Upload {
            info: MockUpload {
                id: id.clone(),
                owner: user,
                media_type: init.media_type,
                category,
                total_bytes: init.total_bytes,
                received_bytes: 0,
                append_calls: Vec::new(),
                state: "uploading".to_owned(),
                sha256: None,
                alt_text: None,
            },
            hasher: Sha256::new(),
            hasher_before_last: Sha256::new(),
            last_len: 0,
            polls: 0,
            will_fail: false,
        };
        let answer = json!({"data":{"id":id,"media_key":media_key(&upload.info),"expires_after_secs":86_400}});
        d.uploads.insert(id, upload);
        ok(200, answer)
    })
    .await
}

pub(crate) async fn media_append(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let s2 = s.clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    api_call(
        &s,
        &headers,
        "media.append",
        &["media.write"],
        |user| async move {
            if !content_type.starts_with("multipart/form-data") {
                return invalid(
                    "media",
                    "APPEND takes multipart/form-data with segment_index and media.",
                );
            }
            // One segment at most (plus the form's own bytes); nothing else is ever buffered.
            let Ok(body) = axum::body::to_bytes(body, MAX_SEGMENT_BYTES + 16 * 1024).await else {
                return invalid(
                    "media",
                    &format!("A segment may hold at most {MAX_SEGMENT_BYTES} bytes."),
                );
            };
            let Some(fields) = multipart_fields(&content_type, &body) else {
                return invalid("media", "The multipart body could not be read.");
            };
            let (Some(index_range), Some(media_range)) =
                (fields.get("segment_index"), fields.get("media"))
            else {
                return invalid("segment_index", "segment_index and media are required.");
            };
            let Some(index) = std::str::from_utf8(&body[index_range.clone()])
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
            else {
                return invalid("segment_index", "segment_index must be an integer.");
            };
            let segment = &body[media_range.clone()];
            if index > 999 {
                return invalid("segment_index", "segment_index must be between 0 and 999.");
            }
            if segment.is_empty() || segment.len() > MAX_SEGMENT_BYTES {
                return invalid(
                    "media",
                    &format!("A segment holds 1 to {MAX_SEGMENT_BYTES} bytes."),
                );
            }
            let mut d = s2.data();
            let Some(u) = d.uploads.get_mut(&id) else {
                return invalid("id", "The media id is not a pending upload.");
            };
            if u.info.owner != user {
                return forbidden("The media id belongs to another account.");
            }
            if u.info.state != "uploading" {
                return invalid("id", "The upload was already finalized.");
            }
            let next = u.info.append_calls.len();
            let len = segment.len() as u64;
            if index + 1 == next {
                // The last segment again (a retry): it replaces the one received.
                if u.info.received_bytes - u.last_len + len > u.info.total_bytes {
                    return invalid("media", "The segments hold more bytes than total_bytes.");
                }
                u.info.received_bytes = u.info.received_bytes - u.last_len + len;
                u.hasher = u.hasher_before_last.clone();
            } else if index == next {
                if u.info.received_bytes + len > u.info.total_bytes {
                    return invalid("media", "The segments hold more bytes than total_bytes.");
                }
                u.info.received_bytes += len;
                u.info.append_calls.push(0);
                u.hasher_before_last = u.hasher.clone();
            } else {
                return invalid(
                    "segment_index",
                    &format!("Segments must be sent in order: expected segment_index {next}."),
                );
            }
            u.hasher.update(segment);
            u.last_len = len;
            if let Some(c) = u.info.append_calls.get_mut(index) {
                *c += 1;
            }
            let expires = (Utc::now() + chrono::Duration::days(1)).timestamp();
            ok(200, json!({"data":{"expires_at":expires}}))
        },
    )
    .await
}

pub(crate) async fn media_finalize(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s2 = s.clone();
    api_call(
        &s,
        &headers,
        "media.finalize",
        &["media.write"],
        |user| async move {
            let mut d = s2.data();
            let fail = d.fail_next_processing;
            let Some(u) = d.uploads.get_mut(&id) else {
                return invalid("id", "The media id is not an upload.");
            };
            if u.info.owner != user {
                return forbidden("The media id belongs to another account.");
            }
            if u.info.state == "uploading" {
                if u.info.received_bytes != u.info.total_bytes {
                    return invalid(
                        "id",
                        &format!(
                            "FINALIZE before all bytes arrived: {} of {} received.",
                            u.info.received_bytes, u.info.total_bytes
                        ),
                    );
                }
                u.info.sha256 = Some(
                    u.hasher
                        .clone()
                        .finalize()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                );
                if u.info.category == "tweet_image" {
                    u.info.state = "succeeded".to_owned();
                } else {
                    u.info.state = "pending".to_owned();
                    u.will_fail = fail;
                }
            }
            let answer = json!({"data":media_json(u, &s2.settings)});
            if fail && u.will_fail {
                d.fail_next_processing = false;
            }
            ok(200, answer)
        },
    )
    .await
}

pub(crate) async fn media_status(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s2 = s.clone();
    api_call(
        &s,
        &headers,
        "media.status",
        &["media.write"],
        |user| async move {
            if q.get("command").map(String::as_str) != Some("STATUS") {
                return invalid("command", "command must be STATUS.");
            }
            let id = q.get("media_id").cloned().unwrap_or_default();
            let mut d = s2.data();
            let Some(u) = d.uploads.get_mut(&id) else {
                return invalid("media_id", "The media id is not an upload.");
            };
            if u.info.owner != user {
                return forbidden("The media id belongs to another account.");
            }
            match u.info.state.as_str() {
                "uploading" => return invalid("media_id", "The upload was not finalized."),
                "pending" | "in_progress" => {
                    u.polls += 1;
                    u.info.state = if u.polls >= s2.settings.processing_polls {
                        if u.will_fail { "failed" } else { "succeeded" }
                    } else {
                        "in_progress"
                    }
                    .to_owned();
                }
                _ => {}
            }
            ok(200, json!({"data":media_json(u, &s2.settings)}))
        },
    )
    .await
}

pub(crate) async fn media_metadata(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s2 = s.clone();
    api_call(
        &s,
        &headers,
        "media.metadata",
        &["media.write"],
        |user| async move {
            let Ok(meta) = serde_json::from_slice::<api::MediaMetadata>(&body) else {
                return invalid("metadata", "id and metadata.alt_text.text are required.");
            };
            let mut d = s2.data();
            let Some(u) = d.uploads.get_mut(&meta.id) else {
                return invalid("id", "The media id is not an upload.");
            };
            if u.info.owner != user {
                return forbidden("The media id belongs to another account.");
            }
            if !matches!(u.info.category.as_str(), "tweet_image" | "tweet_gif") {
                return invalid("id", "Alt text is supported on images and GIFs.");
            }
            if meta.metadata.alt_text.text.chars().count() > 1000 {
                return invalid(
                    "metadata.alt_text.text",
                    "Alt text holds at most 1000 characters.",
                );
            }
            u.info.alt_text = Some(meta.metadata.alt_text.text);
            ok(
                200,
                json!({"data":{"id":meta.id,"associated_metadata":true}}),
            )
        },
    )
    .await
}
