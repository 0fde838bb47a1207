//! The fault layer every mock route runs behind: it names the request, logs it, applies the
//! next fault queued for its endpoint, and counts the request body bytes that arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::routes::Naming;
use super::{Conn, MockKit, bearer_token, set_header};
use crate::testkit::faults::Fault;

#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) kit: MockKit,
    pub(crate) names: Arc<Vec<(Method, String, Naming)>>,
}

impl Guard {
    fn name(&self, parts: &Parts) -> &'static str {
        let Some(path) = parts.extensions.get::<MatchedPath>() else {
            return "unknown";
        };
        self.names
            .iter()
            .find(|(m, p, _)| *m == parts.method && p == path.as_str())
            .map_or("unknown", |(_, _, n)| match n {
                Naming::Fixed(s) => s,
                Naming::By(f) => f(parts),
            })
    }
}

/// Reads `body` to its end (or its first error).
async fn drain(body: Body) {
    let mut s = body.into_data_stream();
    while let Some(Ok(_)) = s.next().await {}
}

/// Where a watched body stands.
struct Watch {
    seen: Arc<AtomicU64>,
    /// Bytes after which the connection breaks.
    cut: Option<u64>,
    /// The bytes up to the cut were delivered: the break comes next.
    breaking: bool,
    done: bool,
}

fn broken() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "the connection dropped mid-request (fault injection)",
    )
}

/// A request body that counts the bytes read into `seen` and, when `cut` is set, ends with an
/// error after that many bytes, as a connection breaking mid-upload does.
fn watched(body: Body, seen: Arc<AtomicU64>, cut: Option<u64>) -> Body {
    let watch = Watch {
        seen,
        cut,
        breaking: false,
        done: false,
    };
    let stream = futures::stream::unfold(
        (body.into_data_stream(), watch),
        |(mut s, mut w)| async move {
            if w.done {
                return None;
            }
            if w.breaking {
                w.done = true;
                return Some((Err(broken()), (s, w)));
            }
            let mut frame = match s.next().await? {
                Ok(f) => f,
                Err(e) => {
                    w.done = true;
                    return Some((Err(std::io::Error::other(e)), (s, w)));
                }
            };
            if let Some(cut) = w.cut {
                let before = w.seen.load(Ordering::SeqCst);
                if before + frame.len() as u64 >= cut {
                    let keep = usize::try_from(cut.saturating_sub(before)).unwrap_or(0);
                    frame = frame.slice(..keep.min(frame.len()));
                    w.breaking = true;
                    if frame.is_empty() {
                        w.done = true;
                        return Some((Err(broken()), (s, w)));
                    }
                }
            }
            w.seen.fetch_add(frame.len() as u64, Ordering::SeqCst);
            Some((Ok::<Bytes, std::io::Error>(frame), (s, w)))
        },
    );
    Body::from_stream(stream)
}

fn has_body(parts: &Parts) -> bool {
    let len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    len.is_some_and(|l| l > 0) || parts.headers.contains_key(header::TRANSFER_ENCODING)
}

/// The fault layer every mock route runs behind: names the request, logs it, applies the next
/// fault queued for its endpoint, and counts the body bytes that arrive.
pub(crate) async fn fault_layer(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let kit = &guard.kit;
    let (parts, body) = req.into_parts();
    let endpoint = guard.name(&parts);
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let entry = kit.log().start(endpoint, parts.method.as_str(), &path);
    let conn = parts
        .extensions
        .get::<ConnectInfo<Conn>>()
        .map(|c| c.0.clone());
    let seen = Arc::new(AtomicU64::new(0));
    let fault = kit.faults().take(endpoint);
    let cut = match &fault {
        Some(Fault::Drop) => {
            let len = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            // About half arrives; a body of unknown length breaks after its first bytes.
            Some(len.map_or(1, |l| (l / 2).max(1)))
        }
        _ => None,
    };
    let body_present = has_body(&parts);
    let token = bearer_token(&parts.headers).map(str::to_owned);
    let req = Request::from_parts(parts, watched(body, seen.clone(), cut));
    let response = match fault {
        Some(Fault::Status {
            status,
            body,
            headers,
        }) => {
            drain(req.into_body()).await;
            let mut r = match body {
                Some(b) => {
                    let mut r = (
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        b,
                    )
                        .into_response();
                    set_header(&mut r, "content-type", "application/json");
                    r
                }
                None => kit.dialect().error(endpoint, status),
            };
            for (k, v) in &headers {
                set_header(&mut r, k, v);
            }
            r
        }
        Some(Fault::RateLimit(wait)) => {
            drain(req.into_body()).await;
            kit.dialect().rate_limited(endpoint, wait)
        }
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(Fault::DelayAfter(d)) => {
            let r = next.run(req).await;
            tokio::time::sleep(d).await;
            r
        }
        Some(Fault::Drop) => {
            if body_present {
                // The platform acts on what arrived before the break; the answer never leaves.
                let _ = next.run(req).await;
            }
            if let Some(c) = &conn {
                c.kill();
            }
            kit.log().finish(entry, 0, seen.load(Ordering::SeqCst));
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Some(Fault::ExpireToken) => {
            if let Some(t) = &token {
                kit.oauth().expire_access_token(t);
            }
            next.run(req).await
        }
        _ => next.run(req).await,
    };
    kit.log().finish(
        entry,
        response.status().as_u16(),
        seen.load(Ordering::SeqCst),
    );
    response
}
