//! The X mock's endpoints: X's error shapes ([`XMockDialect`]), the bearer and rate-limit
//! check of every API call, and the handlers of users, posts and media.

// Handlers answer refusals as ready `Response`s; their size is irrelevant in a test server.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use socialpub_core::testkit::mock::{MockDialect, Routes, Scopes, set_header};

use super::state::*;
use super::uploads::{
    media_append, media_finalize, media_initialize, media_metadata, media_status,
};
use super::{Shared, WINDOW_SECS};
use crate::api;

// ---------------------------------------------------------------- responses

fn respond(status: u16, content_type: &str, body: Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub(crate) fn ok(status: u16, body: Value) -> Response {
    respond(status, "application/json; charset=utf-8", body)
}

fn problem(status: u16, body: Value) -> Response {
    respond(status, "application/problem+json", body)
}

pub(crate) fn unauthorized() -> Response {
    problem(
        401,
        json!({"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}),
    )
}

pub(crate) fn forbidden(detail: &str) -> Response {
    problem(
        403,
        json!({"detail":detail,"type":"about:blank","title":"Forbidden","status":403}),
    )
}

pub(crate) fn invalid(parameter: &str, message: &str) -> Response {
    problem(
        400,
        json!({
            "errors":[{"parameters":{parameter:[]},"message":message}],
            "title":"Invalid Request",
            "detail":"One or more parameters to your request was invalid.",
            "type":"https://api.twitter.com/2/problems/invalid-request"
        }),
    )
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    ok(
        status,
        json!({"error":error,"error_description":description}),
    )
}

fn too_many() -> Response {
    problem(
        429,
        json!({"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}),
    )
}

fn not_found_post(id: &str) -> Response {
    ok(
        200,
        json!({"errors":[{
            "value":id,"detail":format!("Could not find tweet with id: [{id}]."),
            "title":"Not Found Error","resource_type":"tweet","parameter":"id","resource_id":id,
            "type":"https://api.twitter.com/2/problems/resource-not-found"
        }]}),
    )
}

/// X's error shapes: RFC 7807 problems, OAuth errors on the OAuth endpoints, and
/// `x-rate-limit-*` headers on a 429.
#[derive(Debug, Clone, Copy)]
pub struct XMockDialect;

fn rate_headers(r: &mut Response, endpoint: &str, reset: i64) {
    set_header(r, "x-rate-limit-limit", &window_limit(endpoint).to_string());
    set_header(r, "x-rate-limit-remaining", "0");
    set_header(r, "x-rate-limit-reset", &reset.to_string());
}

impl MockDialect for XMockDialect {
    fn error(&self, endpoint: &str, status: u16) -> Response {
        if endpoint.starts_with("oauth.") {
            return match status {
                400 => oauth_error(
                    400,
                    "invalid_request",
                    "Value passed for the token was invalid.",
                ),
                401 => oauth_error(
                    401,
                    "unauthorized_client",
                    "Missing valid authorization header",
                ),
                s => oauth_error(s, "server_error", "injected failure"),
            };
        }
        match status {
            401 => unauthorized(),
            403 => forbidden("Forbidden"),
            429 => {
                let mut r = too_many();
                rate_headers(&mut r, endpoint, Utc::now().timestamp() + 1);
                r
            }
            s => {
                let title = StatusCode::from_u16(s)
                    .ok()
                    .and_then(|c| c.canonical_reason())
                    .unwrap_or("Error");
                problem(
                    s,
                    json!({"title":title,"detail":title,"type":"about:blank","status":s}),
                )
            }
        }
    }

    fn rate_limited(&self, endpoint: &str, wait: Duration) -> Response {
        let mut r = too_many();
        let secs = i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 2).max(1);
        rate_headers(&mut r, endpoint, Utc::now().timestamp() + secs);
        r
    }

    fn unauthorized(&self) -> Response {
        unauthorized()
    }

    fn missing_scope(&self, scope: &str) -> Response {
        forbidden(&format!("This request requires the `{scope}` scope."))
    }
}

/// X's API endpoints, after the OAuth ones.
pub(crate) fn routes(routes: Routes<Arc<Shared>>) -> Routes<Arc<Shared>> {
    routes
        .get("/2/users/me", "users.me", users_me)
        .get("/2/users/{id}/tweets", "users.tweets", users_tweets)
        .post("/2/tweets", "tweets.create", create_tweet)
        .get("/2/tweets/{id}", "tweets.get", get_tweet)
        .delete("/2/tweets/{id}", "tweets.delete", delete_tweet)
        .post(
            "/2/media/upload/initialize",
            "media.initialize",
            media_initialize,
        )
        .post("/2/media/upload/{id}/append", "media.append", media_append)
        .post(
            "/2/media/upload/{id}/finalize",
            "media.finalize",
            media_finalize,
        )
        .get("/2/media/upload", "media.status", media_status)
        .post("/2/media/metadata", "media.metadata", media_metadata)
}

/// Checks the bearer token and scopes, and counts the call against the user's window.
fn authorize_call(
    s: &Shared,
    headers: &HeaderMap,
    endpoint: &str,
    scopes: &[&str],
) -> Result<(String, Vec<(String, String)>), Response> {
    let user = s.kit.bearer(headers, Scopes::All(scopes))?.user;
    let mut d = s.data();
    let now = Utc::now();
    let limit = window_limit(endpoint);
    let window = d
        .windows
        .entry((endpoint.to_owned(), user.clone()))
        .or_insert((now, 0));
    if (now - window.0).num_seconds() >= WINDOW_SECS {
        *window = (now, 0);
    }
    let reset = window.0.timestamp() + WINDOW_SECS;
    let mut rate = vec![
        ("x-rate-limit-limit".to_owned(), limit.to_string()),
        ("x-rate-limit-reset".to_owned(), reset.to_string()),
    ];
    if window.1 >= limit {
        rate.push(("x-rate-limit-remaining".to_owned(), "0".to_owned()));
        let mut r = too_many();
        for (k, v) in &rate {
            set_header(&mut r, k, v);
        }
        return Err(r);
    }
    window.1 += 1;
    rate.push((
        "x-rate-limit-remaining".to_owned(),
        (limit - window.1).to_string(),
    ));
    if endpoint == "tweets.create" {
        let day = (now + chrono::Duration::hours(24)).timestamp().to_string();
        let posted = d.posts.iter().filter(|p| p.author_id == user).count();
        rate.push(("x-user-limit-24hour-limit".to_owned(), "17000".to_owned()));
        rate.push((
            "x-user-limit-24hour-remaining".to_owned(),
            17000usize.saturating_sub(posted + 1).to_string(),
        ));
        rate.push(("x-user-limit-24hour-reset".to_owned(), day.clone()));
        rate.push(("x-app-limit-24hour-limit".to_owned(), "10000".to_owned()));
        rate.push((
            "x-app-limit-24hour-remaining".to_owned(),
            10000usize.saturating_sub(d.posts.len() + 1).to_string(),
        ));
        rate.push(("x-app-limit-24hour-reset".to_owned(), day));
    }
    Ok((user, rate))
}

/// Runs an authorized API handler with the user id, adding the rate-limit headers.
pub(crate) async fn api_call<F, Fut>(
    s: &Shared,
    headers: &HeaderMap,
    endpoint: &'static str,
    scopes: &[&str],
    handler: F,
) -> Response
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Response>,
{
    match authorize_call(s, headers, endpoint, scopes) {
        Err(r) => r,
        Ok((user, rate)) => {
            let mut r = handler(user).await;
            for (k, v) in &rate {
                set_header(&mut r, k, v);
            }
            set_header(&mut r, "x-transaction-id", &super::random_id());
            r
        }
    }
}

// ---------------------------------------------------------------- users and posts

async fn users_me(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let s2 = s.clone();
    api_call(
        &s,
        &headers,
        "users.me",
        &["tweet.read", "users.read"],
        |user| async move {
            let d = s2.data();
            let (username, name) = d.users.get(&user).cloned().unwrap_or_default();
            ok(
                200,
                json!({"data":{"id":user,"username":username,"name":name}}),
            )
        },
    )
    .await
}

async fn users_tweets(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s2 = s.clone();
    api_call(&s, &headers, "users.tweets", &["tweet.read", "users.read"], |_user| async move {
        let max: usize = match q.get("max_results").map(|m| m.parse()) {
            None => 10,
            Some(Ok(m)) if (5..=100).contains(&m) => m,
            _ => return invalid("max_results", "max_results must be between 5 and 100"),
        };
        let since = match q.get("start_time") {
            None => None,
            Some(t) => match DateTime::parse_from_rfc3339(t) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(_) => return invalid("start_time", "start_time must be an RFC 3339 time"),
            },
        };
        let fields = q.get("tweet.fields").cloned().unwrap_or_default();
        let mut d = s2.data();
        let lag = d.lagging_lists > 0;
        d.lagging_lists = d.lagging_lists.saturating_sub(1);
        if !d.users.contains_key(&id) {
            return problem(
                404,
                json!({"title":"Not Found Error","type":"https://api.twitter.com/2/problems/resource-not-found","detail":format!("Could not find user with id: [{id}]."),"resource_type":"user","resource_id":id}),
            );
        }
        // The token is opaque to clients; here it is the offset of the page, newest first.
        let offset = match q.get("pagination_token") {
            None => 0,
            Some(t) => match t.strip_prefix("7140dibdnow9c7btw").and_then(|n| n.parse().ok()) {
                Some(n) => n,
                None => return invalid("pagination_token", "The pagination token is not valid."),
            },
        };
        let mut mine: Vec<&MockPost> = d
            .posts
            .iter()
            .filter(|p| p.author_id == id && since.is_none_or(|t| p.created_at >= t))
            .collect();
        mine.reverse();
        if lag && !mine.is_empty() {
            mine.remove(0);
        }
        let window: Vec<&MockPost> = mine.iter().skip(offset).take(max).copied().collect();
        let more = mine.len() > offset + window.len();
        let page: Vec<Value> = window.iter().map(|p| post_json(p, &fields)).collect();
        let mut meta = json!({"result_count":page.len()});
        if let (Some(first), Some(last)) = (window.first(), window.last()) {
            meta["newest_id"] = json!(first.id);
            meta["oldest_id"] = json!(last.id);
        }
        if more {
            meta["next_token"] = json!(format!("7140dibdnow9c7btw{}", offset + window.len()));
        }
        if page.is_empty() {
            return ok(200, json!({"meta":meta}));
        }
        ok(200, json!({"data":page,"meta":meta}))
    })
    .await
}

async fn create_tweet(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let s2 = s.clone();
    api_call(
        &s,
        &headers,
        "tweets.create",
        &["tweet.read", "tweet.write", "users.read"],
        |user| async move {
            let Ok(body) = serde_json::from_slice::<api::CreateTweet>(&body) else {
                return invalid(
                    "body",
                    "The request body is not valid JSON for this endpoint.",
                );
            };
            let mut d = s2.data();
            if let Err(r) = check_create(&d, &s2.settings, &user, &body) {
                return r;
            }
            let id = next_id(&mut d);
            let post = MockPost {
                id: id.clone(),
                author_id: user,
                text: body.text.clone().unwrap_or_default(),
                in_reply_to: body.reply.as_ref().map(|r| r.in_reply_to_tweet_id.clone()),
                quote_of: body.quote_tweet_id.clone(),
                media_ids: body
                    .media
                    .as_ref()
                    .map(|m| m.media_ids.clone())
                    .unwrap_or_default(),
                poll_options: body
                    .poll
                    .as_ref()
                    .map(|p| p.options.clone())
                    .unwrap_or_default(),
                poll_minutes: body.poll.as_ref().map(|p| p.duration_minutes),
                reply_settings: body.reply_settings.clone(),
                created_at: Utc::now(),
            };
            let answer =
                json!({"data":{"id":id,"text":shown_text(&post),"edit_history_tweet_ids":[id]}});
            d.posts.push(post);
            ok(201, answer)
        },
    )
    .await
}

async fn get_tweet(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s2 = s.clone();
    api_call(
        &s,
        &headers,
        "tweets.get",
        &["tweet.read", "users.read"],
        |_user| async move {
            let d = s2.data();
            match d.posts.iter().find(|p| p.id == id) {
                Some(p) => ok(200, json!({"data":post_json(p, "")})),
                None => not_found_post(&id),
            }
        },
    )
    .await
}

async fn delete_tweet(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s2 = s.clone();
    api_call(
        &s,
        &headers,
        "tweets.delete",
        &["tweet.read", "tweet.write", "users.read"],
        |user| async move {
            let mut d = s2.data();
            match d.posts.iter().position(|p| p.id == id) {
                None => not_found_post(&id),
                Some(i) if d.posts[i].author_id != user => {
                    forbidden("You are not authorized to delete this Tweet.")
                }
                Some(i) => {
                    d.posts.remove(i);
                    ok(200, json!({"data":{"deleted":true}}))
                }
            }
        },
    )
    .await
}
