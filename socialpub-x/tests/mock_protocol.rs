//! The mock enforces X's protocol: raw requests that break it are refused the way X refuses them.

use reqwest::multipart::{Form, Part};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use socialpub_x::mock::{CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, XMock};

struct Raw {
    mock: XMock,
    http: reqwest::Client,
    token: String,
}

impl Raw {
    async fn new() -> Raw {
        let mock = XMock::start().await;
        let token = mock
            .issue_token(mock.user_id())
            .access_token
            .expose_secret()
            .to_owned();
        Raw {
            mock,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            token,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.mock.base_url(), path.trim_start_matches('/'))
    }

    async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("send");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn append(&self, id: &str, index: usize, data: Vec<u8>) -> (u16, Value) {
        let form = Form::new()
            .text("segment_index", index.to_string())
            .part("media", Part::bytes(data).file_name("blob"));
        let r = self
            .http
            .post(self.url(&format!("/2/media/upload/{id}/append")))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await
            .expect("send");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn init(&self, media_type: &str, total: u64, category: &str) -> (u16, Value) {
        self.post_json(
            "/2/media/upload/initialize",
            json!({"media_type":media_type,"total_bytes":total,"media_category":category}),
        )
        .await
    }
}

fn is_invalid_request(body: &Value) -> bool {
    body["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("/problems/invalid-request"))
}

#[tokio::test]
async fn uploads_follow_the_protocol() {
    let raw = Raw::new().await;
    let (s, b) = raw.init("video/mp4", 10, "tweet_image").await;
    assert_eq!(s, 400, "category must match the type");
    assert!(is_invalid_request(&b));
    let (s, _) = raw.init("image/png", 6 * 1024 * 1024, "tweet_image").await;
    assert_eq!(s, 400, "images are capped at 5 MB");
    let (s, _) = raw.init("application/zip", 10, "tweet_image").await;
    assert_eq!(s, 400);

    let (s, b) = raw.init("video/mp4", 10, "tweet_video").await;
    assert_eq!(s, 200, "{b}");
    let id = b["data"]["id"].as_str().expect("id").to_owned();
    assert!(
        b["data"]["media_key"]
            .as_str()
            .expect("key")
            .starts_with("7_")
    );

    assert_eq!(raw.append(&id, 1, vec![1; 4]).await.0, 400, "out of order");
    assert_eq!(raw.append(&id, 0, vec![1; 4]).await.0, 200);
    assert_eq!(
        raw.append(&id, 0, vec![2; 4]).await.0,
        200,
        "resending the last segment"
    );
    assert_eq!(raw.mock.upload(&id).expect("upload").received_bytes, 4);
    assert_eq!(
        raw.append(&id, 2, vec![1; 4]).await.0,
        400,
        "skipping a segment"
    );
    assert_eq!(
        raw.append(&id, 1, vec![1; 7]).await.0,
        400,
        "more than total_bytes"
    );
    let (s, b) = raw
        .post_json(&format!("/2/media/upload/{id}/finalize"), json!({}))
        .await;
    assert_eq!(s, 400, "finalize before all bytes: {b}");
    assert_eq!(raw.append(&id, 1, vec![3; 6]).await.0, 200);

    // Not yet processed: the post is refused.
    let (s, b) = raw
        .post_json(&format!("/2/media/upload/{id}/finalize"), json!({}))
        .await;
    assert_eq!(
        (s, b["data"]["processing_info"]["state"].as_str()),
        (200, Some("pending"))
    );
    let (s, b) = raw
        .post_json(
            "/2/tweets",
            json!({"text":"too early","media":{"media_ids":[id]}}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(b.to_string().contains("Your media IDs are invalid."));
    // A segment after finalize is refused.
    assert_eq!(raw.append(&id, 2, vec![1]).await.0, 400);
    let status = |raw: &Raw, id: String| {
        let req = raw
            .http
            .get(raw.url("/2/media/upload"))
            .query(&[("command", "STATUS"), ("media_id", id.as_str())])
            .bearer_auth(&raw.token);
        async move {
            req.send()
                .await
                .expect("send")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let b = status(&raw, id.clone()).await;
    assert_eq!(b["data"]["processing_info"]["state"], "in_progress");
    let b = status(&raw, id.clone()).await;
    assert_eq!(b["data"]["processing_info"]["state"], "succeeded");
    let (s, _) = raw
        .post_json(
            "/2/tweets",
            json!({"text":"now","media":{"media_ids":[id]}}),
        )
        .await;
    assert_eq!(s, 201);
    let u = raw.mock.upload(&id).expect("upload");
    // The resent segment replaced the first: 2222 then 333333.
    use sha2::Digest;
    let want: String = sha2::Sha256::digest([2, 2, 2, 2, 3, 3, 3, 3, 3, 3])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(u.sha256.as_deref(), Some(want.as_str()));
}

#[tokio::test]
async fn segment_limits() {
    let raw = Raw::new().await;
    let (_, b) = raw.init("video/mp4", 8 * 1024 * 1024, "tweet_video").await;
    let id = b["data"]["id"].as_str().expect("id").to_owned();
    let (s, _) = raw.append(&id, 0, vec![0; 5 * 1024 * 1024 + 1]).await;
    assert_eq!(s, 400, "a segment holds at most 5 MiB");
    let (s, _) = raw.append(&id, 1000, vec![0; 1]).await;
    assert_eq!(s, 400, "segment_index stops at 999");
    let r = raw
        .http
        .post(raw.url(&format!("/2/media/upload/{id}/append")))
        .bearer_auth(&raw.token)
        .body("segment_index=0")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400, "append is multipart");
}

#[tokio::test]
async fn posts_are_checked_like_x_checks_them() {
    let raw = Raw::new().await;
    let (s, b) = raw
        .post_json("/2/tweets", json!({"text":"a".repeat(281)}))
        .await;
    assert_eq!(s, 403);
    assert!(b["detail"].as_str().expect("detail").contains("too long"));
    let (s, _) = raw
        .post_json("/2/tweets", json!({"text":"字".repeat(140)}))
        .await;
    assert_eq!(s, 201);
    let (s, b) = raw
        .post_json("/2/tweets", json!({"text":"字".repeat(140)}))
        .await;
    assert_eq!(s, 403);
    assert!(
        b["detail"]
            .as_str()
            .expect("detail")
            .contains("duplicate content")
    );
    let (s, _) = raw
        .post_json(
            "/2/tweets",
            json!({"text":"p","poll":{"options":["a"],"duration_minutes":60}}),
        )
        .await;
    assert_eq!(s, 400, "a poll needs two options");
    let (s, _) = raw
        .post_json(
            "/2/tweets",
            json!({"text":"r","reply":{"in_reply_to_tweet_id":"1"}}),
        )
        .await;
    assert_eq!(s, 400, "replying to a post that does not exist");

    // Every answer carries the rate-limit headers; creates also the 24-hour caps.
    let r = raw
        .http
        .post(raw.url("/2/tweets"))
        .bearer_auth(&raw.token)
        .json(&json!({"text":"headers"}))
        .send()
        .await
        .expect("send");
    for h in [
        "x-rate-limit-limit",
        "x-rate-limit-remaining",
        "x-rate-limit-reset",
        "x-user-limit-24hour-remaining",
        "x-app-limit-24hour-reset",
    ] {
        assert!(r.headers().contains_key(h), "{h}");
    }

    // No token, a wrong token: X's 401 problem.
    let r = raw
        .http
        .get(raw.url("/2/users/me"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let r = raw
        .http
        .get(raw.url("/2/users/me"))
        .bearer_auth("nope")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn a_spent_window_answers_429() {
    let raw = Raw::new().await;
    let mut last = None;
    for _ in 0..76 {
        let r = raw
            .http
            .get(raw.url("/2/users/me"))
            .bearer_auth(&raw.token)
            .send()
            .await
            .expect("send");
        last = Some((
            r.status().as_u16(),
            r.headers()
                .get("x-rate-limit-remaining")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ));
    }
    assert_eq!(
        last,
        Some((429, Some("0".to_owned()))),
        "75 calls per 15 minutes"
    );
}

#[tokio::test]
async fn oauth_is_strict() {
    let raw = Raw::new().await;
    let authorize = |method: &str, scope: &str, redirect: &str| {
        let mut url = raw.mock.base_url().join("i/oauth2/authorize").expect("url");
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", CLIENT_ID)
            .append_pair("redirect_uri", redirect)
            .append_pair("scope", scope)
            .append_pair("state", "s")
            .append_pair("code_challenge", &"a".repeat(43))
            .append_pair("code_challenge_method", method);
        raw.http.get(url).send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(
            authorize("plain", "tweet.read", REDIRECT_URI)
                .await
                .expect("send")
        ),
        400
    );
    assert_eq!(
        status(
            authorize("S256", "tweet.read,users.read", REDIRECT_URI)
                .await
                .expect("send")
        ),
        400,
        "scopes are space-separated"
    );
    assert_eq!(
        status(
            authorize("S256", "tweet.read", "http://elsewhere/cb")
                .await
                .expect("send")
        ),
        400,
        "the redirect must be registered"
    );
    let r = authorize("S256", "tweet.read", REDIRECT_URI)
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 302);
    let location =
        url::Url::parse(r.headers()["location"].to_str().expect("location")).expect("url");
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code");

    let token_url = raw.url("/2/oauth2/token");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", "the-wrong-verifier"),
    ];
    // No Basic header; a secret in the body; then the wrong verifier.
    let r = raw
        .http
        .post(&token_url)
        .form(&form)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let mut with_secret = form.to_vec();
    with_secret.push(("client_secret", CLIENT_SECRET));
    let r = raw
        .http
        .post(&token_url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&with_secret)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401, "X refuses a secret in the body");
    let r = raw
        .http
        .post(&token_url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&form)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"], "invalid_request");
}
