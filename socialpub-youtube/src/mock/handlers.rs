//! The YouTube mock's endpoints: Google's error shapes ([`YouTubeMockDialect`]) and the Data
//! API reads; uploads are in `uploads.rs`.

// Handlers short-circuit with the response to send; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use socialpub_core::testkit::mock::{MockDialect, Routes};

use super::Shared;
use super::state::*;
use super::uploads::{insert, thumbnails_set, upload_endpoint, upload_put};
use crate::config::{SCOPE_MANAGE, SCOPE_READONLY, SCOPE_UPLOAD};

type Params = Query<HashMap<String, String>>;

const FORCE_SSL: &str = "https://www.googleapis.com/auth/youtube.force-ssl";

pub(crate) fn google_error(
    status: StatusCode,
    reason: &str,
    domain: &str,
    message: &str,
) -> Response {
    let body = json!({
        "error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
        }
    });
    (status, axum::Json(body)).into_response()
}

pub(crate) fn auth_error() -> Response {
    let body = json!({
        "error": {
            "code": 401,
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            "errors": [{"message": "Invalid Credentials", "domain": "global", "reason": "authError",
                        "location": "Authorization", "locationType": "header"}],
            "status": "UNAUTHENTICATED",
        }
    });
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

pub(crate) fn quota_exceeded() -> Response {
    google_error(
        StatusCode::FORBIDDEN,
        "quotaExceeded",
        "youtube.quota",
        "The request cannot be completed because you have exceeded your quota.",
    )
}

pub(crate) fn bad_request(reason: &str, message: &str) -> Response {
    google_error(StatusCode::BAD_REQUEST, reason, "youtube.video", message)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// Google's error shapes: its error object on the API, RFC 6749 errors on the OAuth
/// endpoints, `rateLimitExceeded` for a 429.
#[derive(Debug, Clone, Copy)]
pub struct YouTubeMockDialect;

impl MockDialect for YouTubeMockDialect {
    fn error(&self, endpoint: &str, status: u16) -> Response {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if endpoint.starts_with("oauth.") {
            return match status {
                400 => oauth_error(code, "invalid_grant", "Token has been expired or revoked."),
                401 => oauth_error(code, "invalid_client", "The OAuth client was not found."),
                _ => oauth_error(code, "server_error", "injected failure"),
            };
        }
        match status {
            401 => auth_error(),
            403 => google_error(code, "forbidden", "youtube", "Forbidden"),
            404 => google_error(code, "notFound", "global", "Not Found"),
            429 => google_error(
                code,
                "rateLimitExceeded",
                "usageLimits",
                "Rate Limit Exceeded",
            ),
            500..=599 => google_error(code, "backendError", "global", "Backend Error"),
            _ => google_error(code, "badRequest", "global", "Bad Request"),
        }
    }

    fn unauthorized(&self) -> Response {
        auth_error()
    }

    fn missing_scope(&self, _scope: &str) -> Response {
        google_error(
            StatusCode::FORBIDDEN,
            "insufficientPermissions",
            "global",
            "Request had insufficient authentication scopes.",
        )
    }
}

/// YouTube's endpoints, after the OAuth ones.
pub(crate) fn routes(routes: Routes<Arc<Shared>>) -> Routes<Arc<Shared>> {
    routes
        .get("/youtube/v3/channels", "channels.list", channels_list)
        .get("/youtube/v3/videos", "videos.list", videos_list)
        .delete("/youtube/v3/videos", "videos.delete", videos_delete)
        .get(
            "/youtube/v3/playlistItems",
            "playlistItems.list",
            playlist_items,
        )
        .post("/upload/youtube/v3/videos", "videos.insert", insert)
        .route_by(
            Method::PUT,
            "/upload/youtube/v3/videos",
            upload_endpoint,
            upload_put,
        )
        .post(
            "/upload/youtube/v3/thumbnails/set",
            "thumbnails.set",
            thumbnails_set,
        )
}

// ---------------------------------------------------------------------------------------------
// Data API

const READ_SCOPES: &[&str] = &[SCOPE_READONLY, SCOPE_MANAGE, FORCE_SSL];
pub(crate) const UPLOAD_SCOPES: &[&str] = &[SCOPE_UPLOAD, SCOPE_MANAGE, FORCE_SSL];
const MANAGE_SCOPES: &[&str] = &[SCOPE_MANAGE, FORCE_SSL];

pub(crate) fn parts(q: &HashMap<String, String>) -> Vec<String> {
    q.get("part")
        .map(|p| p.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default()
}

pub(crate) fn missing_part() -> Response {
    google_error(
        StatusCode::BAD_REQUEST,
        "required",
        "global",
        "Required parameter: part",
    )
}

async fn channels_list(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let s2 = shared.clone();
    {
        let mut s = s2.state();
        let user = match s2.user(&headers, READ_SCOPES) {
            Ok(u) => u,
            Err(r) => return r,
        };
        if let Err(r) = s.charge_units(1) {
            return r;
        }
        let parts = parts(&q);
        if parts.is_empty() {
            return missing_part();
        }
        let items: Vec<Value> = s
            .channel_of(&user)
            .filter(|_| q.get("mine").map(String::as_str) == Some("true"))
            .map(|c| {
                let mut item = json!({"kind": "youtube#channel", "etag": "e", "id": c.id});
                if parts.iter().any(|p| p == "snippet") {
                    item["snippet"] = json!({
                        "title": c.title,
                        "customUrl": format!("@{}", c.title.to_lowercase().replace(' ', "")),
                        "thumbnails": {"default": {"url": format!("https://yt3.example/{}.jpg", c.id), "width": 88, "height": 88}},
                    });
                }
                if parts.iter().any(|p| p == "contentDetails") {
                    item["contentDetails"] = json!({"relatedPlaylists": {"uploads": c.uploads_playlist(), "likes": ""}});
                }
                item
            })
            .into_iter()
            .collect();
        axum::Json(json!({
            "kind": "youtube#channelListResponse",
            "etag": "e",
            "pageInfo": {"totalResults": items.len(), "resultsPerPage": 5},
            "items": items,
        }))
        .into_response()
    }
}

async fn videos_list(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let s2 = shared.clone();
    {
        let mut s = s2.state();
        let user = match s2.user(&headers, READ_SCOPES) {
            Ok(u) => u,
            Err(r) => return r,
        };
        if let Err(r) = s.charge_units(1) {
            return r;
        }
        let parts = parts(&q);
        if parts.is_empty() {
            return missing_part();
        }
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let channel = s.channel_of(&user).map(|c| c.id);
        let ids: Vec<String> = q
            .get("id")
            .map(|i| i.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let mut items = Vec::new();
        for vid in ids {
            let Some(idx) = s
                .videos
                .iter()
                .position(|v| v.video.id == vid && !v.video.deleted)
            else {
                continue;
            };
            let owner = channel.as_deref() == Some(s.videos[idx].video.channel_id.as_str());
            // Private videos are visible to their owner only.
            if !owner && s.videos[idx].video.privacy_status == "private" {
                continue;
            }
            if owner {
                s.videos[idx].reads += 1;
            }
            items.push(s.video_json(idx, &parts, owner));
        }
        axum::Json(json!({
            "kind": "youtube#videoListResponse",
            "etag": "e",
            "pageInfo": {"totalResults": items.len(), "resultsPerPage": items.len()},
            "items": items,
        }))
        .into_response()
    }
}

async fn videos_delete(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let s2 = shared.clone();
    {
        let mut s = s2.state();
        let user = match s2.user(&headers, MANAGE_SCOPES) {
            Ok(u) => u,
            Err(r) => return r,
        };
        if let Err(r) = s.charge_units(50) {
            return r;
        }
        let channel = s.channel_of(&user).map(|c| c.id);
        let vid = q.get("id").cloned().unwrap_or_default();
        match s
            .videos
            .iter_mut()
            .find(|v| v.video.id == vid && !v.video.deleted)
        {
            Some(v) if Some(&v.video.channel_id) == channel.as_ref() => {
                v.video.deleted = true;
                StatusCode::NO_CONTENT.into_response()
            }
            Some(_) => google_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "youtube.video",
                "The video that you are trying to delete cannot be deleted.",
            ),
            None => google_error(
                StatusCode::NOT_FOUND,
                "videoNotFound",
                "youtube.video",
                "The video that you are trying to delete cannot be found.",
            ),
        }
    }
}

async fn playlist_items(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let s2 = shared.clone();
    {
        let mut s = s2.state();
        let user = match s2.user(&headers, READ_SCOPES) {
            Ok(u) => u,
            Err(r) => return r,
        };
        if let Err(r) = s.charge_units(1) {
            return r;
        }
        let playlist = q.get("playlistId").cloned().unwrap_or_default();
        let Some(channel) = s
            .users
            .values()
            .filter_map(|u| u.channel.clone())
            .find(|c| c.uploads_playlist() == playlist)
        else {
            return google_error(
                StatusCode::NOT_FOUND,
                "playlistNotFound",
                "youtube.playlistItem",
                "The playlist identified with the request's playlistId parameter cannot be found.",
            );
        };
        let own = s.channel_of(&user).is_some_and(|c| c.id == channel.id);
        let max: usize = q
            .get("maxResults")
            .and_then(|m| m.parse().ok())
            .unwrap_or(5)
            .clamp(0, 50);
        let start: usize = q.get("pageToken").and_then(|p| p.parse().ok()).unwrap_or(0);
        let all: Vec<&VideoRec> = s
            .videos
            .iter()
            .rev()
            .filter(|v| v.video.channel_id == channel.id && !v.video.deleted)
            .filter(|v| own || v.video.privacy_status != "private")
            .collect();
        let items: Vec<Value> = all
            .iter()
            .skip(start)
            .take(max)
            .map(|v| {
                let at = v.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                json!({
                    "kind": "youtube#playlistItem",
                    "id": format!("item-{}", v.video.id),
                    "snippet": {
                        "publishedAt": at,
                        "channelId": channel.id,
                        "title": v.video.title,
                        "playlistId": playlist,
                        "resourceId": {"kind": "youtube#video", "videoId": v.video.id},
                    },
                    "contentDetails": {"videoId": v.video.id, "videoPublishedAt": at},
                })
            })
            .collect();
        let mut out = json!({
            "kind": "youtube#playlistItemListResponse",
            "pageInfo": {"totalResults": all.len(), "resultsPerPage": max},
            "items": items,
        });
        if start + max < all.len() {
            out["nextPageToken"] = json!((start + max).to_string());
        }
        axum::Json(out).into_response()
    }
}
