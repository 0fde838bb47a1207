//! X's chunked media upload: `initialize`, `append` per segment, `finalize`, then `STATUS`
//! until processing ends, and alt text through `/2/media/metadata`.
//!
//! Media are read chunk by chunk with core's [`ChunkReader`], so memory stays at one chunk
//! however large the file. Every step is idempotent and retried with the configured
//! [`socialpub_core::http::RetryPolicy`]; a failed `append` is retried for that segment only.
//! The session (media id and next segment) can be saved after each segment, so a publish that
//! stopped mid-file resumes where X stopped receiving instead of sending the file again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::multipart::{Form, Part};
use serde::{Deserialize, Serialize};
use socialpub_core::http::{Call, ChunkReader};
use socialpub_core::media::{Media, MediaKind};
use socialpub_core::publish::Progress;
use socialpub_core::{Error, ErrorKind, Platform, PublishContext, Result};

use crate::api;
use crate::config::XConfig;

/// X accepts at most 1000 segments (`segment_index` 0–999).
pub const MAX_SEGMENTS: usize = 1000;

/// How long to sleep between STATUS polls when X gives no `check_after_secs`.
const DEFAULT_CHECK_AFTER: u64 = 1;

/// A media item X holds, ready to attach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Uploaded {
    pub id: String,
    /// When X forgets it; a resumed publish after this uploads again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// An upload session in progress, as saved in a publish checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    /// The media id from INIT.
    pub id: String,
    /// The file's size.
    pub total: u64,
    /// The chunk size the segments were cut at.
    pub chunk_size: usize,
    /// The first segment X has not acknowledged.
    pub next_segment: usize,
    /// When X drops the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Sessions this close to expiry are started over rather than resumed.
const SESSION_MARGIN: chrono::Duration = chrono::Duration::minutes(10);

/// `tweet_image`, `tweet_gif` or `tweet_video`. GIFs and videos must say so to get the
/// asynchronous processing that makes them playable.
pub(crate) fn category(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Gif => "tweet_gif",
        MediaKind::Video => "tweet_video",
        _ => "tweet_image",
    }
}

/// The `media` field of an APPEND: the segment's bytes as a binary file part, as X's own
/// clients send it. The bytes are shared, not copied, so a retry costs no memory.
fn segment_part(data: &bytes::Bytes) -> Part {
    let part = |d: &bytes::Bytes| {
        Part::stream_with_length(reqwest::Body::from(d.clone()), d.len() as u64).file_name("blob")
    };
    // The constant always parses; the fallback only keeps `unwrap` out.
    part(data)
        .mime_str("application/octet-stream")
        .unwrap_or_else(|_| part(data))
}

/// One media item on its way to X: INIT (or a resumed session), APPEND segment by segment,
/// then FINALIZE, STATUS and alt text.
pub(crate) struct Upload<'a> {
    config: &'a XConfig,
    media: &'a Media,
    reader: ChunkReader,
    session: Session,
    part: usize,
    index: usize,
}

impl<'a> Upload<'a> {
    /// Opens `media` (item `index` of thread part `part`) and resumes `previous` when it is a
    /// live session for the same bytes; otherwise starts a session with INIT.
    pub async fn begin(
        config: &'a XConfig,
        ctx: &PublishContext,
        part: usize,
        index: usize,
        media: &'a Media,
        previous: Option<Session>,
    ) -> Result<Upload<'a>> {
        let reader = ChunkReader::open(&media.source, config.chunk_size).await?;
        let total = reader.len();
        if total == 0 {
            return Err(Error::invalid_input("the media file is empty").with_platform(Platform::X));
        }
        let segments = reader.chunk_count();
        if segments > MAX_SEGMENTS {
            return Err(Error::invalid_input(format!(
                "the file needs {segments} segments of {} bytes; X takes at most {MAX_SEGMENTS}: \
                 raise the chunk size",
                config.chunk_size
            ))
            .with_platform(Platform::X));
        }
        let now = config.api.clock().now();
        let resumable = previous.filter(|s| {
            s.total == total
                && s.chunk_size == config.chunk_size
                && s.next_segment <= segments
                && s.expires_at.is_none_or(|at| at - SESSION_MARGIN > now)
        });
        let session = match resumable {
            Some(s) => {
                tracing::debug!(media_id = %s.id, next = s.next_segment, "resuming an X upload");
                s
            }
            None => init(config, ctx, media, total).await?,
        };
        Ok(Upload {
            config,
            media,
            reader,
            session,
            part,
            index,
        })
    }

    /// Where the upload stands, to save in a checkpoint.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whether X has every segment.
    pub fn is_sent(&self) -> bool {
        self.session.next_segment >= self.reader.chunk_count()
    }

    /// Sends the next segment (retrying it alone) and reports progress.
    pub async fn send_next(&mut self, ctx: &PublishContext) -> Result<()> {
        let config = self.config;
        let segment = self.session.next_segment;
        let chunk = self.reader.chunk(segment).await?;
        let url = config.api(&format!("/2/media/upload/{}/append", self.session.id))?;
        config
            .api
            .send(ctx.into(), &Call::idempotent("media.append"), |http| {
                let form = Form::new()
                    .text("segment_index", segment.to_string())
                    .part("media", segment_part(&chunk.data));
                http.post(url.clone()).multipart(form)
            })
            .await?;
        self.session.next_segment += 1;
        ctx.report_progress(Progress::new(
            self.part,
            self.index,
            chunk.end(),
            self.reader.len(),
        ));
        Ok(())
    }

    /// Finalizes, waits for processing, sets the alt text: the media is then ready to attach.
    pub async fn finish(self, ctx: &PublishContext) -> Result<Uploaded> {
        let Upload {
            config,
            media,
            session,
            ..
        } = self;
        let id = session.id.clone();
        let finalize_url = config.api(&format!("/2/media/upload/{id}/finalize"))?;
        let mut info = config
            .api
            .send_json::<api::Data<api::MediaInfo>, _>(
                ctx.into(),
                &Call::idempotent("media.finalize"),
                |http| http.post(finalize_url.clone()),
            )
            .await?
            .data;

        let deadline = tokio::time::Instant::now() + config.processing_timeout;
        let status_url = config.api("/2/media/upload")?;
        // No processing info means ready (images).
        while let Some(processing) = &info.processing_info {
            match processing.state.as_str() {
                "succeeded" => break,
                "failed" => {
                    let err = processing.error.clone();
                    let reason = err
                        .as_ref()
                        .and_then(|e| e.message.clone().or(e.name.clone()))
                        .unwrap_or_else(|| "no reason given".to_owned());
                    let mut e = Error::new(
                        ErrorKind::Platform,
                        format!("X could not process the {}: {reason}", media.kind.as_str()),
                    )
                    .with_platform(Platform::X)
                    .with_operation("media.status");
                    if let Some(code) = err.and_then(|e| e.code) {
                        e = e.with_code(code.to_string());
                    }
                    return Err(e);
                }
                _ => {}
            }
            let wait =
                Duration::from_secs(processing.check_after_secs.unwrap_or(DEFAULT_CHECK_AFTER));
            if tokio::time::Instant::now() + wait > deadline {
                return Err(Error::new(
                    ErrorKind::Transient,
                    format!(
                        "X is still processing media {id} after {} s",
                        config.processing_timeout.as_secs()
                    ),
                )
                .with_platform(Platform::X)
                .with_operation("media.status"));
            }
            tracing::debug!(media_id = %id, state = %processing.state, wait_s = wait.as_secs(), "X media processing");
            tokio::time::sleep(wait).await;
            info = config
                .api
                .send_json::<api::Data<api::MediaInfo>, _>(
                    ctx.into(),
                    &Call::idempotent("media.status"),
                    |http| {
                        http.get(status_url.clone())
                            .query(&[("command", "STATUS"), ("media_id", id.as_str())])
                    },
                )
                .await?
                .data;
        }

        if let Some(alt) = media.alt_text.as_deref().filter(|a| !a.trim().is_empty()) {
            let metadata_url = config.api("/2/media/metadata")?;
            let body = api::MediaMetadata {
                id: id.clone(),
                metadata: api::Metadata {
                    alt_text: api::AltText {
                        text: alt.to_owned(),
                    },
                },
            };
            config
                .api
                .send(ctx.into(), &Call::idempotent("media.metadata"), |http| {
                    http.post(metadata_url.clone()).json(&body)
                })
                .await?;
        }
        Ok(Uploaded {
            id,
            expires_at: session.expires_at,
        })
    }
}

/// INIT: a new session for `total` bytes of `media`.
async fn init(
    config: &XConfig,
    ctx: &PublishContext,
    media: &Media,
    total: u64,
) -> Result<Session> {
    let started = config.api.clock().now();
    let init_url = config.api("/2/media/upload/initialize")?;
    let init = api::MediaInit {
        media_type: media.mime_or_default().to_owned(),
        total_bytes: total,
        media_category: Some(category(media.kind).to_owned()),
    };
    let info = config
        .api
        .send_json::<api::Data<api::MediaInfo>, _>(
            ctx.into(),
            &Call::idempotent("media.initialize"),
            |http| http.post(init_url.clone()).json(&init),
        )
        .await?
        .data;
    let id = info.id;
    let expires_at = info
        .expires_after_secs
        .and_then(|s| i64::try_from(s).ok())
        .map(|s| started + chrono::Duration::seconds(s));

    tracing::debug!(media_id = %id, total, "X upload initialized");
    Ok(Session {
        id,
        total,
        chunk_size: config.chunk_size,
        next_segment: 0,
        expires_at,
    })
}
