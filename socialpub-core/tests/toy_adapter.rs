//! A whole adapter for a made-up platform, "toot", in the layout `docs/adapters.md` describes,
//! built on the platform kit: its dialect (a code table), a connector, a publisher and a mock.
//! It passes `PublisherSuite`; the same adapter with one contract broken does not.

#![cfg(feature = "testkit")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde::Deserialize;
use serde_json::{Value, json};
use socialpub_core::auth::oauth::{
    OAuthApp, OAuthAppBuilder, OAuthClient, OAuthConfig, OAuthDefaults,
};
use socialpub_core::auth::{AccountKey, ConnectedAccount, Connector, Token, TokenRefresher};
use socialpub_core::http::{ApiClient, Bearer, Call, Classified, Dialect, RawAnswer, RetryPolicy};
use socialpub_core::platform::{TextCounting, TextRule};
use socialpub_core::testkit::FaultPlan;
use socialpub_core::testkit::conformance::PublisherSuite;
use socialpub_core::testkit::mock::*;
use socialpub_core::validate::check_post;
use socialpub_core::{
    Capabilities, ErrorKind, LookupOutcome, Platform, Post, PublishContext, Publisher, Receipt,
    Result, ValidationReport,
};

const TOOT: Platform = Platform::custom("toot");

// ---- error.rs: the platform's code table; core fills in everything else.
struct TootDialect;

impl Dialect for TootDialect {
    fn platform(&self) -> Platform {
        TOOT
    }

    fn classify(&self, a: &RawAnswer<'_>) -> Classified {
        let code = a.str_at("/error/code").unwrap_or_default();
        let kind = match code {
            "slow_down" => Some(ErrorKind::RateLimited),
            "duplicate" => Some(ErrorKind::Platform),
            _ => None,
        };
        Classified::new()
            .kind_opt(kind)
            .code(code)
            .message(a.str_at("/error/message").unwrap_or_default())
    }
}

// ---- config.rs, oauth.rs: the app, and who a token belongs to.
#[derive(Clone)]
struct TootConfig {
    app: OAuthApp,
    api: ApiClient,
    base: String,
}

fn config(base: &str, timeout: Duration) -> TootConfig {
    let defaults = OAuthDefaults::new(
        format!("{base}/oauth/authorize"),
        format!("{base}/oauth/token"),
        Some(format!("{base}/oauth/revoke")),
        ["write"],
    );
    let app = OAuthAppBuilder::new()
        .client_id("toy-app")
        .client_secret("toy-SECRET")
        .redirect_uri("http://127.0.0.1/cb")
        .build(TOOT, defaults)
        .expect("app");
    let retry =
        RetryPolicy::default().with_delays(Duration::from_millis(5), Duration::from_millis(50));
    let api = ApiClient::new(TootDialect, reqwest::Client::new())
        .with_retry(retry)
        .with_timeout(timeout);
    TootConfig {
        app,
        api,
        base: base.to_owned(),
    }
}

#[derive(Debug, Deserialize)]
struct Me {
    id: String,
    handle: String,
}

#[derive(Debug)]
struct TootConnector {
    oauth: OAuthClient,
    config_base: String,
    api: ApiClient,
}

impl TootConnector {
    fn new(c: &TootConfig) -> TootConnector {
        let oauth = OAuthConfig::from_app(TOOT, &c.app).expect("oauth");
        TootConnector {
            oauth: OAuthClient::new(oauth, c.api.clone()),
            config_base: c.base.clone(),
            api: c.api.clone(),
        }
    }
}

#[async_trait]
impl TokenRefresher for TootConnector {
    fn platform(&self) -> Platform {
        TOOT
    }
    async fn refresh(&self, key: &AccountKey, token: &Token) -> Result<Token> {
        self.oauth.refresh(key, token).await
    }
}

#[async_trait]
impl Connector for TootConnector {
    fn oauth(&self) -> &OAuthClient {
        &self.oauth
    }
    async fn accounts(&self, tenant: &str, token: Token) -> Result<Vec<ConnectedAccount>> {
        let url = format!("{}/api/me", self.config_base);
        let me: Me = self
            .api
            .send_json(
                Bearer::Token(&token.access_token),
                &Call::idempotent("me"),
                |h| h.get(&url),
            )
            .await?;
        let key = AccountKey::new(tenant, TOOT, me.id);
        Ok(vec![ConnectedAccount::new(
            key,
            token,
            format!("@{}", me.handle),
        )])
    }
}

// ---- publish.rs: the publisher. `bug` breaks one promise, to show the suite catches it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bug {
    None,
    CreateBeforeCommitPoint,
    RetryTheCommit,
}

#[derive(Debug, Deserialize)]
struct Created {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Listed {
    posts: Vec<Value>,
}

struct TootPublisher {
    c: TootConfig,
    bug: Bug,
}

impl std::fmt::Debug for TootPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TootPublisher")
            .field("app", &self.c.app)
            .finish()
    }
}

#[async_trait]
impl Publisher for TootPublisher {
    fn platform(&self) -> Platform {
        TOOT
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(TOOT, TextRule::new(100, TextCounting::Graphemes))
    }
    fn validate(&self, post: &Post) -> ValidationReport {
        check_post(&self.capabilities(), post, None)
    }
    async fn publish(&self, ctx: &mut PublishContext, post: &Post) -> Result<Receipt> {
        self.validate(post).into_result()?;
        let url = format!("{}/api/posts", self.c.base);
        let call = match self.bug {
            Bug::RetryTheCommit => Call::idempotent("posts.create"),
            _ => Call::commit("posts.create"),
        };
        let send = || {
            self.c
                .api
                .send_json::<Created, _>((&*ctx).into(), &call, |h| {
                    h.post(&url).json(&json!({"text": post.text}))
                })
        };
        let created = if self.bug == Bug::CreateBeforeCommitPoint {
            let created = send().await?;
            ctx.commit_point().await?;
            created
        } else {
            ctx.commit_point().await?;
            send().await?
        };
        Ok(Receipt::new(TOOT, created.id, None))
    }
    async fn lookup_recent(
        &self,
        ctx: &PublishContext,
        post: &Post,
        since: DateTime<Utc>,
    ) -> Result<LookupOutcome> {
        let url = format!("{}/api/posts", self.c.base);
        let since = (since - chrono::Duration::minutes(1)).to_rfc3339();
        let listed: Listed = self
            .c
            .api
            .send_json(ctx.into(), &Call::idempotent("posts.list"), |h| {
                h.get(&url).query(&[("since", &since)])
            })
            .await?;
        Ok(
            match listed
                .posts
                .iter()
                .find(|p| p["text"] == post.text.as_str())
            {
                Some(p) => LookupOutcome::Found(Receipt::new(
                    TOOT,
                    p["id"].as_str().unwrap_or_default(),
                    None,
                )),
                None => LookupOutcome::Absent,
            },
        )
    }
}

// ---- mock/: the platform state and endpoints; the kit does faults, OAuth, tokens and the log.
struct TootMockDialect;

impl MockDialect for TootMockDialect {
    fn error(&self, _endpoint: &str, status: u16) -> Response {
        let code = if status == 429 { "slow_down" } else { "oops" };
        json_response(
            status,
            &json!({"error": {"code": code, "message": "injected"}}),
        )
    }
}

type Posts = Arc<Mutex<Vec<(String, String, DateTime<Utc>)>>>;
type St = (MockKit, Posts);

async fn me(State((kit, _)): State<St>, h: HeaderMap) -> Response {
    match kit.bearer(&h, Scopes::None) {
        Ok(g) => json_response(200, &json!({"id": g.user, "handle": "toy"})),
        Err(r) => r,
    }
}

async fn create(State((kit, posts)): State<St>, h: HeaderMap, body: axum::body::Bytes) -> Response {
    let user = match kit.bearer(&h, Scopes::All(&["write"])) {
        Ok(g) => g.user,
        Err(r) => return r,
    };
    let Some(text) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["text"].as_str().map(str::to_owned))
    else {
        return json_response(
            400,
            &json!({"error": {"code": "bad_body", "message": "text is required"}}),
        );
    };
    let mut p = posts.lock().expect("lock");
    if p.iter().any(|(_, t, _)| *t == text) {
        return json_response(
            422,
            &json!({"error": {"code": "duplicate", "message": "posted already"}}),
        );
    }
    let id = format!("{user}-{}", p.len() + 1);
    p.push((id.clone(), text, Utc::now()));
    json_response(201, &json!({"id": id}))
}

async fn list(
    State((kit, posts)): State<St>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = kit.bearer(&h, Scopes::None) {
        return r;
    }
    let since = q
        .get("since")
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    let p = posts.lock().expect("lock");
    let found: Vec<Value> = p
        .iter()
        .filter(|(_, _, at)| since.is_none_or(|s| *at >= s))
        .map(|(id, t, _)| json!({"id": id, "text": t}))
        .collect();
    json_response(200, &json!({"posts": found}))
}

async fn start_mock() -> (MockServer, MockKit, Posts) {
    let server = OAuthServerConfig::new(
        "toy-app",
        Some("toy-SECRET".to_owned()),
        "http://127.0.0.1/cb",
    );
    let kit = MockKit::new(
        TootMockDialect,
        MockOAuth::new(server, "42"),
        FaultPlan::new(),
    );
    let posts: Posts = Arc::default();
    let routes = Routes::new()
        .oauth(
            &kit,
            OAuthPaths::new("/oauth/authorize", "/oauth/token", Some("/oauth/revoke")),
        )
        .get("/api/me", "me", me)
        .post("/api/posts", "posts.create", create)
        .get("/api/posts", "posts.list", list);
    let server = kit
        .serve(routes, (kit.clone(), posts.clone()))
        .await
        .expect("mock");
    (server, kit, posts)
}

// ---- tests/conformance.rs
async fn suite(bug: Bug) {
    let (server, kit, posts) = start_mock().await;
    let timeout = Duration::from_secs(1);
    let c = config(server.base(), timeout);
    let connector = Arc::new(TootConnector::new(&c));
    let counted = posts.clone();
    PublisherSuite {
        publisher: Arc::new(TootPublisher { c, bug }),
        refresher: connector,
        token: kit.oauth().issue_token("42", &["write"]),
        kit,
        account: AccountKey::new("acme", TOOT, "42"),
        post: Arc::new(|label| Post::new(format!("hello from the toy: {label}"))),
        invalid_post: Post::new("x".repeat(101)),
        posts: Arc::new(move || counted.lock().map(|p| p.len()).unwrap_or(0)),
        commit_endpoint: "posts.create",
        before_commit_endpoint: None,
        upload: None,
        request_timeout: timeout,
        secrets: vec!["toy-SECRET".to_owned()],
    }
    .run()
    .await;
}

#[tokio::test]
async fn the_toy_adapter_passes_the_suite() {
    suite(Bug::None).await;
}

#[tokio::test]
async fn the_suite_catches_a_create_before_the_commit_point() {
    let outcome = std::panic::AssertUnwindSafe(suite(Bug::CreateBeforeCommitPoint))
        .catch_unwind()
        .await;
    assert!(
        outcome.is_err(),
        "a create before the commit point must fail the suite"
    );
}

#[tokio::test]
async fn the_suite_catches_a_retried_commit() {
    let outcome = std::panic::AssertUnwindSafe(suite(Bug::RetryTheCommit))
        .catch_unwind()
        .await;
    assert!(
        outcome.is_err(),
        "a commit retried after a timeout must fail the suite"
    );
}

#[tokio::test]
async fn the_toy_connects_through_the_kit() {
    let (server, kit, _) = start_mock().await;
    let c = config(server.base(), Duration::from_secs(5));
    let connector = TootConnector::new(&c);
    let request = connector.authorize("acme").await.expect("authorize");
    let q: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
    let consent = kit.oauth().authorize(&q);
    let OAuthAnswer::Redirect(back) = consent else {
        panic!("consent refused: {consent:?}")
    };
    let back = url::Url::parse(&back).expect("url");
    let p: HashMap<String, String> = back.query_pairs().into_owned().collect();
    let accounts = connector
        .complete(&p["code"], &p["state"])
        .await
        .expect("complete");
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].key, AccountKey::new("acme", TOOT, "42"));
    assert_eq!(accounts[0].name, "@toy");
    assert_eq!(kit.oauth().exchanges(), 1);
}
