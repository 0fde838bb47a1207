//! Google's resumable upload protocol for `videos.insert`, made crash-safe.
//!
//! 1. Start a session: `POST /upload/youtube/v3/videos?uploadType=resumable&part=snippet,status`
//!    with the video resource as JSON, `X-Upload-Content-Length` and `X-Upload-Content-Type`;
//!    the session URI comes back in `Location`.
//! 2. `PUT` chunks (a multiple of 256 KiB except the last) with
//!    `Content-Range: bytes FIRST-LAST/TOTAL`. `308 Resume Incomplete` carries
//!    `Range: bytes=0-N`: the next chunk starts at `N + 1`, which may be before the end of the
//!    chunk just sent (Google may keep fewer bytes than it received).
//! 3. After a 5xx, a network error or a timeout, ask the session what it holds
//!    (`PUT` with an empty body and `Content-Range: bytes */TOTAL`) and resume from there. A
//!    session that answers `404`/`410` is gone: start a new one. A `401` refreshes the token
//!    and continues the same session.
//! 4. The final chunk's `200`/`201` carries the video resource.
//!
//! YouTube creates the video only when the last byte arrives, so the request carrying the final
//! chunk is the *commit*: [`socialpub_core::PublishContext::commit_point`] is called right
//! before it. If that request times out, the session is asked: `200`/`201` means the video
//! exists (no second upload), `308` means it does not. A session that vanished after the final
//! chunk went out leaves the outcome unknown ([`ErrorKind::Unconfirmed`]), never a blind second
//! session.
//!
//! The session URI and the acknowledged offset are saved with
//! [`socialpub_core::PublishContext::save_checkpoint`] after every step, so a publish restarted
//! after a crash asks the saved session where it stopped instead of uploading again.
//!
//! Source: <https://developers.google.com/youtube/v3/guides/using_resumable_upload_protocol>.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, LOCATION};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use socialpub_core::http::{Answer, Call, ChunkReader};
use socialpub_core::publish::Progress;
use socialpub_core::{Error, ErrorKind, Media, Platform, PublishContext, Result};
use url::Url;

use crate::api::{Video, VideoInsert};
use crate::config::YouTubeConfig;
use crate::publish::Checkpoint;

/// The state of an upload kept in the publish checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionState {
    /// The resumable session URI (from `Location`).
    pub(crate) session_uri: String,
    /// The file's size.
    pub(crate) total: u64,
    /// Bytes Google acknowledged.
    pub(crate) offset: u64,
    /// Which metadata and file the session was started for.
    pub(crate) fingerprint: String,
    /// Whether the final chunk may have been sent (so the video may exist).
    #[serde(default)]
    pub(crate) final_sent: bool,
}

/// What is uploaded.
pub(crate) struct UploadRequest<'a> {
    pub(crate) metadata: &'a VideoInsert,
    pub(crate) notify_subscribers: Option<bool>,
    pub(crate) media: &'a Media,
}

/// A fingerprint of the metadata and the file's identity, so a checkpoint is reused only for
/// the same upload.
pub(crate) fn fingerprint(metadata: &VideoInsert, media: &Media, total: u64) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(metadata).unwrap_or_default());
    h.update(serde_json::to_vec(&media.source).unwrap_or_default());
    h.update(total.to_be_bytes());
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the session said when asked.
enum SessionStatus {
    /// Upload complete: the video.
    Complete(Box<Video>),
    /// Resume at this offset.
    Incomplete(u64),
    /// The session is gone (404/410).
    Gone,
}

/// One chunk request's outcome.
enum Sent {
    Complete(Box<Video>),
    Acknowledged(u64),
    Gone,
    /// Worth a status query and another try (or final, when the error is not retryable).
    Retry(Error),
}

/// The next byte to send, from a `Range: bytes=0-N` header (`None` header: 0).
pub(crate) fn next_offset(headers: &HeaderMap) -> Result<u64> {
    let Some(v) = headers.get("range") else {
        return Ok(0);
    };
    let s = v.to_str().unwrap_or_default().trim();
    let end = s
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| (a.trim() == "0").then_some(b))
        .and_then(|b| b.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Platform,
                format!("YouTube answered 308 with an unreadable Range header `{s}`"),
            )
            .with_platform(Platform::YouTube)
            .with_operation("videos.insert.upload")
        })?;
    Ok(end + 1)
}

/// The result of an upload.
pub(crate) struct Uploaded {
    pub(crate) video: Video,
}

/// Runs (or resumes) the upload of `req`, keeping `cp` current in `ctx`.
pub(crate) async fn upload(
    cfg: &YouTubeConfig,
    ctx: &mut PublishContext,
    cp: &mut Checkpoint,
    req: UploadRequest<'_>,
) -> Result<Uploaded> {
    let mut reader = ChunkReader::open(&req.media.source, cfg.chunk_size).await?;
    let total = reader.len();
    if total == 0 {
        return Err(
            Error::invalid_input("the video file is empty").with_platform(Platform::YouTube)
        );
    }
    let mime = req.media.mime_or_default().to_owned();
    let fp = fingerprint(req.metadata, req.media, total);

    let mut up = Upload {
        cfg,
        total,
        mime,
        failures: 0,
        maybe_created: false,
        commit_recorded: false,
    };

    // Resume a saved session for this very upload, or start one.
    let mut need_query = false;
    match &cp.upload {
        Some(s) if s.fingerprint == fp && s.total == total => {
            tracing::debug!(offset = s.offset, total, "resuming a saved upload session");
            need_query = true;
            // An earlier attempt may have sent the final chunk: if the session is gone now,
            // the video may exist, and only a lookup can tell.
            up.maybe_created = s.final_sent;
        }
        _ => {
            up.start_session(ctx, cp, &req, &fp).await?;
        }
    }

    let mut prefetched: Option<socialpub_core::http::Chunk> = None;
    loop {
        let Some(session) = cp.upload.clone() else {
            return Err(Error::internal("upload session lost from the checkpoint"));
        };
        if need_query {
            match up.query(ctx, &session).await {
                Ok(SessionStatus::Complete(video)) => return Ok(Uploaded { video: *video }),
                Ok(SessionStatus::Incomplete(next)) => {
                    need_query = false;
                    up.maybe_created = false;
                    up.advance(ctx, cp, next).await?;
                }
                Ok(SessionStatus::Gone) => {
                    if up.maybe_created {
                        return Err(up.unconfirmed(
                            "the upload session vanished after the final chunk was sent",
                        ));
                    }
                    tracing::info!("the upload session expired; starting a new one");
                    up.start_session(ctx, cp, &req, &fp).await?;
                    need_query = false;
                }
                Err(e) if e.is_retryable() => {
                    up.back_off(e).await?;
                }
                Err(e) => return Err(up.settle(e)),
            }
            continue;
        }

        let offset = session.offset;
        if offset >= total {
            // Everything acknowledged but no video yet: only the session can tell.
            up.back_off(
                Error::new(
                    ErrorKind::Transient,
                    "all bytes acknowledged without a video",
                )
                .with_platform(Platform::YouTube),
            )
            .await?;
            need_query = true;
            continue;
        }
        let chunk = match prefetched.take() {
            Some(c) if c.offset == offset => c,
            _ => reader.chunk_at(offset).await?,
        };
        let is_final = chunk.end() == total;
        if is_final && !up.commit_recorded {
            // The final byte creates the video: record the commit before sending it, and keep
            // in the checkpoint that it may have gone out.
            ctx.commit_point().await?;
            up.commit_recorded = true;
            if let Some(s) = cp.upload.as_mut()
                && !s.final_sent
            {
                s.final_sent = true;
                cp.save(ctx).await?;
            }
        }
        if is_final {
            up.maybe_created = true;
        }
        let range = chunk.content_range(total);
        tracing::debug!(
            offset,
            len = chunk.data.len(),
            total,
            is_final,
            "sending chunk"
        );
        // Read the next chunk while this one is on the wire: two chunks in memory at most.
        let ahead = chunk.end();
        let put = up.put_chunk(ctx, &session, &range, chunk.data);
        let sent = if ahead < total {
            let (sent, next) = tokio::join!(put, reader.chunk_at(ahead));
            // A failed read-ahead is retried (and reported) when the chunk is needed.
            prefetched = next.ok();
            sent
        } else {
            put.await
        };
        match sent {
            Sent::Complete(video) => {
                ctx.report_progress(Progress::new(0, 0, total, total));
                return Ok(Uploaded { video: *video });
            }
            Sent::Acknowledged(next) => {
                up.maybe_created = false;
                if next > offset {
                    up.failures = 0;
                } else {
                    up.failures += 1;
                    if up.failures > cfg.max_upload_failures {
                        return Err(Error::new(
                            ErrorKind::Transient,
                            "YouTube keeps acknowledging no progress on the upload",
                        )
                        .with_platform(Platform::YouTube)
                        .with_operation("videos.insert.upload"));
                    }
                }
                up.advance(ctx, cp, next).await?;
            }
            Sent::Gone => {
                // The chunk itself was refused by a vanished session: nothing was created.
                up.maybe_created = false;
                tracing::info!("the upload session expired; starting a new one");
                up.start_session(ctx, cp, &req, &fp).await?;
            }
            Sent::Retry(e) => {
                up.back_off(e).await?;
                need_query = true;
            }
        }
    }
}

struct Upload<'a> {
    cfg: &'a YouTubeConfig,
    total: u64,
    mime: String,
    /// Consecutive failures without progress.
    failures: u32,
    /// The final chunk went out and nothing since proved the video was not created.
    maybe_created: bool,
    /// The commit point was recorded in this attempt.
    commit_recorded: bool,
}

impl Upload<'_> {
    async fn start_session(
        &mut self,
        ctx: &mut PublishContext,
        cp: &mut Checkpoint,
        req: &UploadRequest<'_>,
        fp: &str,
    ) -> Result<()> {
        let cfg = self.cfg;
        if cp.sessions >= cfg.max_sessions {
            return Err(Error::new(
                ErrorKind::Transient,
                format!(
                    "{} upload sessions expired for this video; giving up for now",
                    cp.sessions
                ),
            )
            .with_platform(Platform::YouTube)
            .with_operation("videos.insert"));
        }
        let mut url = cfg.upload_url("videos")?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("uploadType", "resumable")
                .append_pair("part", "snippet,status");
            if let Some(n) = req.notify_subscribers {
                q.append_pair("notifySubscribers", if n { "true" } else { "false" });
            }
        }
        let body = Bytes::from(serde_json::to_vec(req.metadata)?);
        let total = self.total;
        let mime = self.mime.clone();
        let answer = cfg
            .api
            .send((&*ctx).into(), &Call::idempotent("videos.insert"), |http| {
                http.post(url.clone())
                    .header(CONTENT_TYPE, "application/json; charset=UTF-8")
                    .header("X-Upload-Content-Length", total.to_string())
                    .header("X-Upload-Content-Type", mime.as_str())
                    .body(body.clone())
            })
            .await?;
        let location = answer.header(LOCATION.as_str()).ok_or_else(|| {
            Error::new(
                ErrorKind::Platform,
                "YouTube started an upload session without a Location header",
            )
            .with_platform(Platform::YouTube)
            .with_operation("videos.insert")
            .with_status(answer.status())
        })?;
        let session_uri = match Url::parse(location) {
            Ok(u) => u,
            Err(_) => cfg.upload_url("videos")?.join(location).map_err(|e| {
                Error::new(
                    ErrorKind::Platform,
                    format!("YouTube gave an unreadable session URI: {e}"),
                )
                .with_platform(Platform::YouTube)
            })?,
        };
        cp.sessions += 1;
        cp.quota_cost += cfg.quota.videos_insert;
        cp.upload = Some(SessionState {
            session_uri: session_uri.to_string(),
            total,
            offset: 0,
            fingerprint: fp.to_owned(),
            final_sent: false,
        });
        self.failures = 0;
        cp.save(ctx).await
    }

    async fn advance(
        &mut self,
        ctx: &mut PublishContext,
        cp: &mut Checkpoint,
        next: u64,
    ) -> Result<()> {
        let Some(s) = cp.upload.as_mut() else {
            return Ok(());
        };
        if next > self.total {
            return Err(Error::new(
                ErrorKind::Platform,
                format!(
                    "YouTube acknowledged {next} bytes of a {}-byte file",
                    self.total
                ),
            )
            .with_platform(Platform::YouTube));
        }
        if s.offset != next {
            if next > s.offset {
                self.failures = 0;
            }
            s.offset = next;
            cp.save(ctx).await?;
        }
        ctx.report_progress(Progress::new(0, 0, next, self.total));
        Ok(())
    }

    async fn put_chunk(
        &self,
        ctx: &PublishContext,
        s: &SessionState,
        range: &str,
        data: Bytes,
    ) -> Sent {
        let call = Call::once("videos.insert.upload")
            .timeout(self.cfg.chunk_timeout)
            .accept(&[308, 404, 410]);
        let sent = self
            .cfg
            .api
            .send(ctx.into(), &call, |http| {
                http.put(s.session_uri.as_str())
                    .header(CONTENT_TYPE, self.mime.as_str())
                    .header(CONTENT_RANGE, range)
                    .body(data.clone())
            })
            .await;
        match sent {
            Ok(answer) => self.read_answer(&answer),
            Err(e) => Sent::Retry(e),
        }
    }

    fn read_answer(&self, answer: &Answer) -> Sent {
        match answer.status() {
            308 => match next_offset(answer.headers()) {
                Ok(n) => Sent::Acknowledged(n),
                Err(e) => Sent::Retry(e),
            },
            404 | 410 => Sent::Gone,
            status => match answer.json::<Video>() {
                Ok(v) if !v.id.is_empty() => Sent::Complete(Box::new(v)),
                _ => Sent::Retry(
                    Error::new(
                        ErrorKind::Transient,
                        "the upload finished but the answer has no video id",
                    )
                    .with_platform(Platform::YouTube)
                    .with_operation("videos.insert.upload")
                    .with_status(status)
                    .with_body(answer.body()),
                ),
            },
        }
    }

    async fn query(&self, ctx: &PublishContext, s: &SessionState) -> Result<SessionStatus> {
        let call = Call::once("videos.insert.status").accept(&[308, 404, 410]);
        let answer = self
            .cfg
            .api
            .send(ctx.into(), &call, |http| {
                http.put(s.session_uri.as_str())
                    .header(CONTENT_RANGE, format!("bytes */{}", self.total))
                    .header(CONTENT_LENGTH, "0")
                    .body(Bytes::new())
            })
            .await?;
        match self.read_answer(&answer) {
            Sent::Complete(v) => Ok(SessionStatus::Complete(v)),
            Sent::Acknowledged(n) => Ok(SessionStatus::Incomplete(n)),
            Sent::Gone => Ok(SessionStatus::Gone),
            Sent::Retry(e) => Err(e),
        }
    }

    /// Waits before the next try, or gives up after too many failures in a row.
    async fn back_off(&mut self, e: Error) -> Result<()> {
        if !e.is_retryable() {
            return Err(self.settle(e));
        }
        let cfg = self.cfg;
        let retry = cfg.api.retry();
        self.failures += 1;
        if self.failures > cfg.max_upload_failures {
            return Err(self.settle(e));
        }
        let wait = match e.retry_after() {
            Some(w) if w > retry.max_wait => return Err(self.settle(e)),
            Some(w) => w,
            None => {
                let exp = retry
                    .min_delay
                    .saturating_mul(1u32 << self.failures.min(16))
                    .min(retry.max_delay);
                let ms = u64::try_from(exp.as_millis()).unwrap_or(u64::MAX);
                Duration::from_millis(rand::rng().random_range(0..=ms))
            }
        };
        tracing::debug!(error = %e, wait_ms = wait.as_millis() as u64, "upload request failed; will ask the session and resume");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// An error to return: if the final chunk may have created the video, the outcome is
    /// unknown.
    fn settle(&self, e: Error) -> Error {
        if self.maybe_created
            && matches!(
                e.kind(),
                ErrorKind::Transient | ErrorKind::RateLimited | ErrorKind::Unauthorized
            )
        {
            self.unconfirmed(e.message()).with_source(e)
        } else {
            e
        }
    }

    fn unconfirmed(&self, why: &str) -> Error {
        Error::new(
            ErrorKind::Unconfirmed,
            format!(
                "{why}; the video may exist: reconcile with lookup_recent before uploading again"
            ),
        )
        .with_platform(Platform::YouTube)
        .with_operation("videos.insert.upload")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn range_header_gives_the_next_offset() {
        let mut h = HeaderMap::new();
        assert_eq!(next_offset(&h).expect("none"), 0);
        h.insert("range", HeaderValue::from_static("bytes=0-262143"));
        assert_eq!(next_offset(&h).expect("range"), 262_144);
        h.insert("range", HeaderValue::from_static("bytes=5-9"));
        assert!(next_offset(&h).is_err());
    }

    #[test]
    fn checkpoint_round_trips() {
        let cp = Checkpoint {
            youtube: 1,
            upload: Some(SessionState {
                session_uri: "https://x/upload?upload_id=1".into(),
                total: 10,
                offset: 4,
                fingerprint: "f".into(),
                final_sent: false,
            }),
            sessions: 1,
            video_id: None,
            thumbnail_done: false,
            thumbnail_warning: None,
            quota_cost: 1,
        };
        let v = serde_json::to_value(&cp).expect("ser");
        assert_eq!(serde_json::from_value::<Checkpoint>(v).expect("de"), cp);
    }
}
