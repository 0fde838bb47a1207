//! The mock enforces the protocol: requests a careless client would send are refused the way
//! Google refuses them, so the adapter's tests mean something.

use std::time::Duration;

use socialpub_youtube::mock::{ENDPOINTS, YouTubeMock};
use socialpub_youtube::{SCOPE_READONLY, SCOPE_UPLOAD};

const K256: usize = 256 * 1024;

struct Raw {
    mock: YouTubeMock,
    http: reqwest::Client,
    token: String,
}

impl Raw {
    async fn new() -> Raw {
        let mock = YouTubeMock::start().await.expect("mock");
        let (token, _) = mock.issue_token(YouTubeMock::DEFAULT_USER);
        Raw {
            mock,
            http: reqwest::Client::new(),
            token,
        }
    }

    async fn session(&self, total: usize) -> String {
        let resp = self
            .http
            .post(format!(
                "{}upload/youtube/v3/videos?uploadType=resumable&part=snippet,status",
                self.mock.base_url()
            ))
            .bearer_auth(&self.token)
            .header("X-Upload-Content-Length", total.to_string())
            .header("X-Upload-Content-Type", "video/mp4")
            .json(&serde_json::json!({"snippet": {"title": "t"}, "status": {"privacyStatus": "private"}}))
            .send()
            .await
            .expect("start");
        assert_eq!(resp.status().as_u16(), 200);
        resp.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned()
    }

    async fn put(&self, uri: &str, range: &str, body: Vec<u8>) -> (u16, Option<String>, String) {
        // reqwest sends no Content-Length for an empty body; the protocol wants `0`.
        let resp = self
            .http
            .put(uri)
            .bearer_auth(&self.token)
            .header("Content-Range", range)
            .header("Content-Length", body.len().to_string())
            .body(body)
            .send()
            .await
            .expect("put");
        let status = resp.status().as_u16();
        let range = resp
            .headers()
            .get("range")
            .map(|r| r.to_str().expect("ascii").to_owned());
        (status, range, resp.text().await.expect("body"))
    }
}

#[tokio::test]
async fn sessions_need_the_upload_headers() {
    let r = Raw::new().await;
    let resp = r
        .http
        .post(format!(
            "{}upload/youtube/v3/videos?uploadType=resumable&part=snippet",
            r.mock.base_url()
        ))
        .bearer_auth(&r.token)
        .header("X-Upload-Content-Type", "video/mp4")
        .json(&serde_json::json!({"snippet": {"title": "t"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400, "no X-Upload-Content-Length");
    let resp = r
        .http
        .post(format!(
            "{}upload/youtube/v3/videos?uploadType=resumable&part=snippet",
            r.mock.base_url()
        ))
        .bearer_auth(&r.token)
        .header("X-Upload-Content-Length", "10")
        .header("X-Upload-Content-Type", "image/png")
        .json(&serde_json::json!({"snippet": {"title": "t"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400, "not a video type");
    let resp = r
        .http
        .post(format!(
            "{}upload/youtube/v3/videos?uploadType=resumable&part=snippet",
            r.mock.base_url()
        ))
        .bearer_auth(&r.token)
        .header("X-Upload-Content-Length", "10")
        .header("X-Upload-Content-Type", "video/mp4")
        .json(&serde_json::json!({"snippet": {"title": "<b>"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.expect("body").contains("invalidTitle"));
}

#[tokio::test]
async fn chunks_must_follow_the_protocol() {
    let r = Raw::new().await;
    let total = 2 * K256 + 10;
    let uri = r.session(total).await;
    // Not a multiple of 256 KiB and not the last chunk.
    let (s, _, body) = r.put(&uri, "bytes 0-999/524298", vec![0; 1000]).await;
    assert_eq!(s, 400, "{body}");
    // The wrong total.
    let (s, _, _) = r
        .put(&uri, &format!("bytes 0-{}/999999", K256 - 1), vec![0; K256])
        .await;
    assert_eq!(s, 400);
    // Out of order: the session holds nothing yet.
    let (s, _, _) = r
        .put(
            &uri,
            &format!("bytes {K256}-{}/{total}", 2 * K256 - 1),
            vec![0; K256],
        )
        .await;
    assert_eq!(s, 400);
    // Length differs from the range.
    let (s, _, _) = r
        .put(
            &uri,
            &format!("bytes 0-{}/{total}", K256 - 1),
            vec![0; K256 - 1],
        )
        .await;
    assert_eq!(s, 400);
    // A status query before anything: 308 without Range.
    let (s, range, _) = r.put(&uri, &format!("bytes */{total}"), Vec::new()).await;
    assert_eq!((s, range), (308, None));
    // A proper chunk: 308 with Range.
    let (s, range, _) = r
        .put(
            &uri,
            &format!("bytes 0-{}/{total}", K256 - 1),
            vec![1; K256],
        )
        .await;
    assert_eq!((s, range.as_deref()), (308, Some("bytes=0-262143")));
    let (s, range, _) = r.put(&uri, &format!("bytes */{total}"), Vec::new()).await;
    assert_eq!((s, range.as_deref()), (308, Some("bytes=0-262143")));
    // The rest in one final chunk: the video.
    let (s, _, body) = r
        .put(
            &uri,
            &format!("bytes {K256}-{}/{total}", total - 1),
            vec![2; K256 + 10],
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let video: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(video["status"]["uploadStatus"], "uploaded");
    // Asking again returns the same video; sending more is refused.
    let (s, _, again) = r.put(&uri, &format!("bytes */{total}"), Vec::new()).await;
    assert_eq!(s, 200);
    let again: serde_json::Value = serde_json::from_str(&again).expect("json");
    assert_eq!(again["id"], video["id"]);
    assert_eq!(r.mock.stats().videos_created, 1);
}

#[tokio::test]
async fn tokens_and_scopes_are_checked() {
    let r = Raw::new().await;
    let channels = format!("{}youtube/v3/channels?part=id&mine=true", r.mock.base_url());
    let ok = r
        .http
        .get(&channels)
        .bearer_auth(&r.token)
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status().as_u16(), 200);
    let (upload_only, _) = r
        .mock
        .issue_token_with_scopes(YouTubeMock::DEFAULT_USER, &[SCOPE_UPLOAD]);
    let resp = r
        .http
        .get(&channels)
        .bearer_auth(&upload_only)
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.status().as_u16(),
        403,
        "youtube.upload cannot read channels"
    );
    assert!(
        resp.text()
            .await
            .expect("body")
            .contains("insufficientPermissions")
    );
    let (read_only, _) = r
        .mock
        .issue_token_with_scopes(YouTubeMock::DEFAULT_USER, &[SCOPE_READONLY]);
    let resp = r
        .http
        .post(format!(
            "{}upload/youtube/v3/videos?uploadType=resumable&part=snippet",
            r.mock.base_url()
        ))
        .bearer_auth(&read_only)
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.status().as_u16(),
        403,
        "youtube.readonly cannot upload"
    );
    r.mock.expire_access_tokens();
    let resp = r
        .http
        .get(&channels)
        .bearer_auth(&r.token)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.text().await.expect("body").contains("authError"));
}

#[tokio::test]
async fn faults_apply_per_endpoint() {
    let r = Raw::new().await;
    assert!(ENDPOINTS.contains(&"channels.list"));
    let channels = format!("{}youtube/v3/channels?part=id&mine=true", r.mock.base_url());
    r.mock.faults().fail_next("channels.list", 1, 503);
    r.mock.faults().drop_next("channels.list", 1);
    let resp = r
        .http
        .get(&channels)
        .bearer_auth(&r.token)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.text().await.expect("body").contains("backendError"));
    let dropped = r.http.get(&channels).bearer_auth(&r.token).send().await;
    assert!(
        dropped.is_err(),
        "the connection was dropped without an answer"
    );
    r.mock
        .faults()
        .delay_next("channels.list", 1, Duration::from_millis(300));
    let slow = r
        .http
        .get(&channels)
        .bearer_auth(&r.token)
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(slow.is_err_and(|e| e.is_timeout()));
    let resp = r
        .http
        .get(&channels)
        .bearer_auth(&r.token)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200, "faults are used up");
}

#[tokio::test]
async fn quota_runs_out() {
    let r = Raw::new().await;
    r.mock.set_quota(2, 100);
    let channels = format!("{}youtube/v3/channels?part=id&mine=true", r.mock.base_url());
    for _ in 0..2 {
        let resp = r
            .http
            .get(&channels)
            .bearer_auth(&r.token)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 200);
    }
    let resp = r
        .http
        .get(&channels)
        .bearer_auth(&r.token)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 403);
    let body = resp.text().await.expect("body");
    assert!(
        body.contains("quotaExceeded") && body.contains("youtube.quota"),
        "{body}"
    );
    assert_eq!(r.mock.quota_used(), (2, 0));
}
