//! [`Routes`]: a mock's endpoints, each with the name its faults and log entries go under,
//! and the OAuth server's endpoints at a platform's paths.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::Query;
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use serde_json::json;

use super::{MockKit, OAuthAnswer, form, json_response, set_header};

/// How a route's requests are named.
#[derive(Clone, Copy)]
pub(crate) enum Naming {
    Fixed(&'static str),
    By(fn(&Parts) -> &'static str),
}

/// A mock's endpoints: each route with the name its faults and log entries go under.
pub struct Routes<S> {
    pub(crate) paths: BTreeMap<String, MethodRouter<S>>,
    pub(crate) names: Vec<(Method, String, Naming)>,
}

impl<S> std::fmt::Debug for Routes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("paths", &self.paths.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes {
            paths: BTreeMap::new(),
            names: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(mut self, method: Method, path: &str, naming: Naming, mr: MethodRouter<S>) -> Self {
        let merged = match self.paths.remove(path) {
            Some(existing) => existing.merge(mr),
            None => mr,
        };
        self.paths.insert(path.to_owned(), merged);
        self.names.push((method, path.to_owned(), naming));
        self
    }

    /// `GET path`, named `endpoint`.
    pub fn get<H, T>(self, path: &str, endpoint: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let mr = axum::routing::get(handler);
        self.add(Method::GET, path, Naming::Fixed(endpoint), mr)
    }

    /// `POST path`, named `endpoint`.
    pub fn post<H, T>(self, path: &str, endpoint: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let mr = axum::routing::post(handler);
        self.add(Method::POST, path, Naming::Fixed(endpoint), mr)
    }

    /// `PUT path`, named `endpoint`.
    pub fn put<H, T>(self, path: &str, endpoint: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let mr = axum::routing::put(handler);
        self.add(Method::PUT, path, Naming::Fixed(endpoint), mr)
    }

    /// `DELETE path`, named `endpoint`.
    pub fn delete<H, T>(self, path: &str, endpoint: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let mr = axum::routing::delete(handler);
        self.add(Method::DELETE, path, Naming::Fixed(endpoint), mr)
    }

    /// `method path`, named per request by `name` (one URL serving two operations, as a
    /// resumable upload's chunk and status query do).
    pub fn route_by<H, T>(
        self,
        method: Method,
        path: &str,
        name: fn(&Parts) -> &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let mr = axum::routing::on(
            axum::routing::MethodFilter::try_from(method.clone())
                .unwrap_or(axum::routing::MethodFilter::GET),
            handler,
        );
        self.add(method, path, Naming::By(name), mr)
    }

    /// The OAuth server's endpoints at the platform's paths: the consent page (`GET`, named
    /// `oauth.authorize`), the token endpoint (`POST` form, or `GET` query for platforms that
    /// exchange with GET; `oauth.token`) and the revocation endpoint (`POST` form;
    /// `oauth.revoke`).
    pub fn oauth(self, kit: &MockKit, paths: OAuthPaths<'_>) -> Self {
        let o = kit.oauth().clone();
        let authorize = move |Query(q): Query<HashMap<String, String>>| {
            let o = o.clone();
            async move { oauth_response(o.authorize(&q)) }
        };
        let o = kit.oauth().clone();
        let token_post = move |headers: HeaderMap, body: Bytes| {
            let o = o.clone();
            async move {
                let form_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
                if !form_type {
                    return json_response(
                        400,
                        &json!({"error": "invalid_request", "error_description": "Content-Type must be application/x-www-form-urlencoded"}),
                    );
                }
                oauth_response(o.token(&headers, &form(&body)))
            }
        };
        let o = kit.oauth().clone();
        let token_get = move |headers: HeaderMap, Query(q): Query<HashMap<String, String>>| {
            let o = o.clone();
            async move { oauth_response(o.token(&headers, &q)) }
        };
        let o = kit.oauth().clone();
        let revoke =
            move |headers: HeaderMap, Query(q): Query<HashMap<String, String>>, body: Bytes| {
                let o = o.clone();
                async move {
                    let mut f = form(&body);
                    for (k, v) in q {
                        f.entry(k).or_insert(v);
                    }
                    oauth_response(o.revoke(&headers, &f))
                }
            };
        let mut routes = self
            .get(paths.authorize, "oauth.authorize", authorize)
            .post(paths.token, "oauth.token", token_post);
        if paths.token_by_get {
            routes = routes.get(paths.token, "oauth.token", token_get);
        }
        match paths.revoke {
            Some(p) => routes.post(p, "oauth.revoke", revoke),
            None => routes,
        }
    }
}

/// Where a platform serves its OAuth endpoints.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct OAuthPaths<'a> {
    /// The consent page.
    pub authorize: &'a str,
    /// The token endpoint.
    pub token: &'a str,
    /// The revocation endpoint, if any.
    pub revoke: Option<&'a str>,
    /// Whether the token endpoint also takes `GET` with query parameters (Meta).
    pub token_by_get: bool,
}

impl<'a> OAuthPaths<'a> {
    /// The consent page, token and revocation endpoints at these paths.
    pub fn new(authorize: &'a str, token: &'a str, revoke: Option<&'a str>) -> Self {
        OAuthPaths {
            authorize,
            token,
            revoke,
            token_by_get: false,
        }
    }

    /// The token endpoint also takes `GET`.
    pub fn token_by_get(mut self) -> Self {
        self.token_by_get = true;
        self
    }
}

fn oauth_response(a: OAuthAnswer) -> Response {
    match a {
        OAuthAnswer::Redirect(to) => {
            let mut r = StatusCode::FOUND.into_response();
            set_header(&mut r, "location", &to);
            r
        }
        OAuthAnswer::Page(msg) => (
            StatusCode::BAD_REQUEST,
            format!("Something went wrong: {msg}"),
        )
            .into_response(),
        OAuthAnswer::Json(status, body) => json_response(status, &body),
    }
}
