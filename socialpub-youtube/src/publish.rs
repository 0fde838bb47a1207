//! [`YouTubePublisher`]: validation, the resumable upload, the thumbnail, processing status,
//! reconciliation of unconfirmed uploads, and deletion.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use socialpub_core::http::{Call, ChunkReader};
use socialpub_core::publish::RemotePost;
use socialpub_core::{
    Capabilities, Error, ErrorKind, LookupOutcome, Media, MediaKind, Platform, Post,
    PublishContext, Publisher, Receipt, RemoteState, Result, ValidationReport,
};

use crate::api::{
    ChannelResource, InsertSnippet, InsertStatus, ListResponse, PlaylistItem, Video, VideoInsert,
};
use crate::config::YouTubeConfig;
use crate::options::YouTubeOptions;
use crate::upload::{self, SessionState, UploadRequest};
use crate::validate::{self, DEFAULT_CATEGORY_ID, MAX_THUMBNAIL_BYTES, validate_post};

/// Pages of the uploads list (50 videos each) a lookup reads at most.
const LOOKUP_PAGES: usize = 10;

/// How long after the commit an empty `videos.list` answer still means "processing" (the API
/// may lag right after an upload) rather than "gone".
const LIST_LAG: chrono::Duration = chrono::Duration::minutes(10);

/// The whole checkpoint of a YouTube publish.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// The YouTube checkpoint format.
    #[serde(default)]
    pub(crate) youtube: u32,
    /// The upload in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) upload: Option<SessionState>,
    /// Sessions started so far for this post.
    #[serde(default)]
    pub(crate) sessions: u32,
    /// The video, once the upload completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) video_id: Option<String>,
    /// Whether the thumbnail step ran (set or failed).
    #[serde(default)]
    pub(crate) thumbnail_done: bool,
    /// A thumbnail failure, kept for the receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) thumbnail_warning: Option<String>,
    /// Quota units spent so far.
    #[serde(default)]
    pub(crate) quota_cost: u64,
}

impl Checkpoint {
    pub(crate) fn load(ctx: &PublishContext) -> Checkpoint {
        ctx.checkpoint_as::<Checkpoint>()
            .filter(|c| c.youtube == 1)
            .unwrap_or(Checkpoint {
                youtube: 1,
                ..Checkpoint::default()
            })
    }

    pub(crate) async fn save(&self, ctx: &mut PublishContext) -> Result<()> {
        let v = serde_json::to_value(self)?;
        ctx.save_checkpoint(v).await
    }
}

/// Publishes videos to YouTube channels.
///
/// ```no_run
/// # async fn f(tokens: std::sync::Arc<dyn socialpub_core::auth::AccessTokens>) -> socialpub_core::Result<()> {
/// use socialpub_core::{AccountKey, Media, Platform, Post, PublishContext, Publisher};
/// use socialpub_youtube::{Privacy, YouTubeConfig, YouTubeOptions, YouTubePublisher};
///
/// let publisher = YouTubePublisher::new(YouTubeConfig::builder().build()?);
/// let video = Media::from_path("launch.mp4").await?;
/// let post = Post::new("How we built it")
///     .with_title("Launch day")
///     .with_media(video)
///     .with_options(&YouTubeOptions::new().privacy(Privacy::Unlisted))?;
/// let account = AccountKey::new("tenant-1", Platform::YouTube, "UCxxxxxxxxxxxxxxxxxxxxxx");
/// let mut ctx = PublishContext::new(account, tokens);
/// let receipt = publisher.publish(&mut ctx, &post).await?;
/// println!("{} {:?}", receipt.remote_id, receipt.url);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct YouTubePublisher {
    config: Arc<YouTubeConfig>,
}

impl YouTubePublisher {
    /// A publisher for `config`. Publishing needs no client credentials: tokens come from the
    /// publish context.
    pub fn new(config: YouTubeConfig) -> Self {
        YouTubePublisher {
            config: Arc::new(config),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &YouTubeConfig {
        &self.config
    }

    fn now(&self) -> DateTime<Utc> {
        self.config.api.clock().now()
    }

    fn metadata(post: &Post, options: &YouTubeOptions) -> VideoInsert {
        VideoInsert {
            snippet: InsertSnippet {
                title: post.title.clone().unwrap_or_default(),
                description: validate::description(post),
                tags: options.tags.clone(),
                category_id: options
                    .category_id
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CATEGORY_ID.to_owned()),
                default_language: options.default_language.clone(),
                default_audio_language: options.default_audio_language.clone(),
            },
            status: InsertStatus {
                privacy_status: options.privacy.as_str().to_owned(),
                publish_at: options
                    .publish_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                self_declared_made_for_kids: options.made_for_kids,
                contains_synthetic_media: options.contains_synthetic_media,
                embeddable: options.embeddable,
                license: options.license.map(|l| {
                    serde_json::to_value(l)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                }),
                public_stats_viewable: options.public_stats_viewable,
            },
        }
    }

    fn watch_url(id: &str) -> String {
        format!("https://www.youtube.com/watch?v={id}")
    }

    fn receipt_for(&self, video: &Video, cp: &Checkpoint) -> Receipt {
        let mut r = Receipt::new(
            Platform::YouTube,
            video.id.clone(),
            Some(Self::watch_url(&video.id)),
        )
        .with_state(state_of(video).unwrap_or(RemoteState::Processing));
        r.quota_cost = Some(cp.quota_cost);
        if let Some(w) = &cp.thumbnail_warning {
            r.warnings.push(w.clone());
        }
        r.extra = extra_of(video);
        r
    }

    async fn set_thumbnail(
        &self,
        ctx: &PublishContext,
        video_id: &str,
        image: &Media,
    ) -> Result<()> {
        // Thumbnails are at most 2 MB: read the whole image, once.
        let mut reader = ChunkReader::open(&image.source, MAX_THUMBNAIL_BYTES as usize + 1).await?;
        if reader.len() > MAX_THUMBNAIL_BYTES {
            return Err(Error::invalid_input(format!(
                "the thumbnail is {} bytes; YouTube allows {MAX_THUMBNAIL_BYTES}",
                reader.len()
            )));
        }
        let data: Bytes = reader.read_at(0, MAX_THUMBNAIL_BYTES as usize).await?;
        let mime = image.mime_or_default().to_owned();
        let mut url = self.config.upload_url("thumbnails/set")?;
        url.query_pairs_mut()
            .append_pair("videoId", video_id)
            .append_pair("uploadType", "media");
        self.config
            .api
            .send(ctx.into(), &Call::idempotent("thumbnails.set"), |http| {
                http.post(url.clone())
                    .header(CONTENT_TYPE, mime.as_str())
                    .body(data.clone())
            })
            .await?;
        Ok(())
    }

    async fn list_video(&self, ctx: &PublishContext, id: &str) -> Result<Option<Video>> {
        let url = self.config.data_url("videos")?;
        let list: ListResponse<Video> = self
            .config
            .api
            .send_json(ctx.into(), &Call::idempotent("videos.list"), |http| {
                http.get(url.clone())
                    .query(&[("part", "snippet,status,processingDetails"), ("id", id)])
            })
            .await?;
        Ok(list.items.into_iter().next())
    }

    async fn uploads_playlist(&self, ctx: &PublishContext) -> Result<String> {
        let url = self.config.data_url("channels")?;
        let list: ListResponse<ChannelResource> = self
            .config
            .api
            .send_json(ctx.into(), &Call::idempotent("channels.list"), |http| {
                http.get(url.clone())
                    .query(&[("part", "contentDetails"), ("mine", "true")])
            })
            .await?;
        list.items
            .into_iter()
            .next()
            .and_then(|c| c.content_details)
            .and_then(|d| d.related_playlists)
            .and_then(|p| p.uploads)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Platform,
                    "the account has no YouTube channel (no uploads playlist)",
                )
                .with_platform(Platform::YouTube)
                .with_operation("channels.list")
                .with_code("noChannel")
            })
    }

    /// Settles an unconfirmed upload from the saved session: `Some` when the session tells.
    async fn lookup_session(&self, ctx: &PublishContext) -> Result<Option<LookupOutcome>> {
        let cp = Checkpoint::load(ctx);
        if let Some(id) = &cp.video_id {
            let receipt = Receipt::new(Platform::YouTube, id.clone(), Some(Self::watch_url(id)))
                .with_state(RemoteState::Processing);
            return Ok(Some(LookupOutcome::Found(receipt)));
        }
        let Some(session) = cp.upload.as_ref() else {
            return Ok(None);
        };
        match self.query_session(ctx, session).await? {
            SessionAnswer::Complete(video) => {
                Ok(Some(LookupOutcome::Found(self.receipt_for(&video, &cp))))
            }
            // The final byte never arrived: no video was created, and publishing again resumes
            // this same session.
            SessionAnswer::Incomplete => Ok(Some(LookupOutcome::Absent)),
            SessionAnswer::Gone => Ok(None),
        }
    }

    async fn query_session(
        &self,
        ctx: &PublishContext,
        session: &SessionState,
    ) -> Result<SessionAnswer> {
        let answer = self
            .config
            .api
            .send(
                ctx.into(),
                &Call::idempotent("videos.insert.status").accept(&[308, 404, 410]),
                |http| {
                    http.put(session.session_uri.as_str())
                        .header(
                            reqwest::header::CONTENT_RANGE,
                            format!("bytes */{}", session.total),
                        )
                        .header(reqwest::header::CONTENT_LENGTH, "0")
                        .body(Bytes::new())
                },
            )
            .await?;
        Ok(match answer.status() {
            308 => SessionAnswer::Incomplete,
            404 | 410 => SessionAnswer::Gone,
            _ => SessionAnswer::Complete(Box::new(answer.json()?)),
        })
    }
}

enum SessionAnswer {
    Complete(Box<Video>),
    Incomplete,
    Gone,
}

/// Maps a video's `status` and `processingDetails` to a [`RemoteState`]; `None` when neither
/// says anything.
fn state_of(v: &Video) -> Option<RemoteState> {
    let status = v.status.clone().unwrap_or_default();
    let processing = v.processing_details.clone().unwrap_or_default();
    match status.upload_status.as_deref() {
        Some("rejected") => {
            return Some(RemoteState::Failed {
                reason: format!(
                    "rejected by YouTube: {}",
                    status
                        .rejection_reason
                        .as_deref()
                        .unwrap_or("no reason given")
                ),
            });
        }
        Some("failed") => {
            return Some(RemoteState::Failed {
                reason: format!(
                    "upload failed: {}",
                    status
                        .failure_reason
                        .as_deref()
                        .unwrap_or("no reason given")
                ),
            });
        }
        Some("deleted") => {
            return Some(RemoteState::Failed {
                reason: "the video was deleted".to_owned(),
            });
        }
        _ => {}
    }
    match processing.processing_status.as_deref() {
        Some("failed") => Some(RemoteState::Failed {
            reason: format!(
                "processing failed: {}",
                processing
                    .processing_failure_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ),
        }),
        Some("terminated") => Some(RemoteState::Failed {
            reason: "processing was terminated".to_owned(),
        }),
        Some("succeeded") => Some(RemoteState::Published),
        Some("processing") => Some(RemoteState::Processing),
        _ => match status.upload_status.as_deref() {
            Some("processed") => Some(RemoteState::Published),
            Some("uploaded") => Some(RemoteState::Processing),
            _ => None,
        },
    }
}

fn extra_of(v: &Video) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    if let Some(s) = &v.status {
        for (k, val) in [
            ("upload_status", &s.upload_status),
            ("privacy_status", &s.privacy_status),
            ("publish_at", &s.publish_at),
            ("failure_reason", &s.failure_reason),
            ("rejection_reason", &s.rejection_reason),
        ] {
            if let Some(val) = val {
                m.insert(k.into(), val.clone().into());
            }
        }
    }
    if let Some(p) = &v.processing_details {
        if let Some(s) = &p.processing_status {
            m.insert("processing_status".into(), s.clone().into());
        }
        if let Some(pr) = &p.processing_progress
            && let Ok(val) = serde_json::to_value(pr)
        {
            m.insert("processing_progress".into(), val);
        }
    }
    if m.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::Value::Object(m)
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[async_trait]
impl Publisher for YouTubePublisher {
    fn platform(&self) -> Platform {
        Platform::YouTube
    }

    fn capabilities(&self) -> Capabilities {
        validate::capabilities()
    }

    fn validate(&self, post: &Post) -> ValidationReport {
        validate_post(post, self.now())
    }

    async fn publish(&self, ctx: &mut PublishContext, post: &Post) -> Result<Receipt> {
        self.validate(post).into_result()?;
        let options = post.options::<YouTubeOptions>()?.unwrap_or_default();
        let video_media = post
            .media
            .iter()
            .find(|m| m.kind == MediaKind::Video)
            .ok_or_else(|| Error::invalid_input("a YouTube post needs a video"))?;
        let metadata = Self::metadata(post, &options);
        let mut cp = Checkpoint::load(ctx);

        let video = match cp.video_id.clone() {
            // An earlier attempt finished the upload: do not upload again.
            Some(id) => match self.list_video(ctx, &id).await? {
                Some(v) => v,
                None => Video {
                    id,
                    ..Video::default()
                },
            },
            None => {
                let uploaded = upload::upload(
                    &self.config,
                    ctx,
                    &mut cp,
                    UploadRequest {
                        metadata: &metadata,
                        notify_subscribers: options.notify_subscribers,
                        media: video_media,
                    },
                )
                .await?;
                cp.video_id = Some(uploaded.video.id.clone());
                cp.upload = None;
                cp.save(ctx).await?;
                tracing::info!(video_id = %uploaded.video.id, "video uploaded");
                uploaded.video
            }
        };

        if let Some(thumb) = &options.thumbnail
            && !cp.thumbnail_done
        {
            cp.quota_cost += self.config.quota.thumbnails_set;
            if let Err(e) = self.set_thumbnail(ctx, &video.id, thumb).await {
                tracing::warn!(video_id = %video.id, error = %e, "the thumbnail was not set");
                cp.thumbnail_warning = Some(format!("thumbnail not set: {e}"));
            }
            cp.thumbnail_done = true;
            cp.save(ctx).await?;
        }
        Ok(self.receipt_for(&video, &cp))
    }

    async fn status(&self, ctx: &PublishContext, receipt: &Receipt) -> Result<Receipt> {
        let mut out = receipt.clone();
        match self.list_video(ctx, &receipt.remote_id).await? {
            Some(v) => {
                if let Some(state) = state_of(&v) {
                    out.state = state;
                }
                let extra = extra_of(&v);
                if !extra.is_null() {
                    out.extra = extra;
                }
            }
            None if self.now() - receipt.created_at < LIST_LAG => {
                out.state = RemoteState::Processing;
            }
            None => {
                out.state = RemoteState::Failed {
                    reason: "the video is gone (deleted, or not visible to this account)"
                        .to_owned(),
                };
            }
        }
        Ok(out)
    }

    async fn lookup_recent(
        &self,
        ctx: &PublishContext,
        post: &Post,
        since: DateTime<Utc>,
    ) -> Result<LookupOutcome> {
        if let Some(outcome) = self.lookup_session(ctx).await? {
            return Ok(outcome);
        }
        // No session to ask: look for the video among the channel's recent uploads, newest
        // first, page by page until the pages reach back before the commit.
        let playlist = self.uploads_playlist(ctx).await?;
        let url = self.config.data_url("playlistItems")?;
        let title = post.title.clone().unwrap_or_default();
        // Allow for clock skew between us and Google.
        let window_start = since - chrono::Duration::minutes(5);
        let mut token: Option<String> = None;
        let mut covered = false;
        for _ in 0..LOOKUP_PAGES {
            let list: ListResponse<PlaylistItem> = self
                .config
                .api
                .send_json(
                    ctx.into(),
                    &Call::idempotent("playlistItems.list"),
                    |http| {
                        let mut query = vec![
                            ("part", "snippet,contentDetails"),
                            ("playlistId", playlist.as_str()),
                            ("maxResults", "50"),
                        ];
                        if let Some(t) = &token {
                            query.push(("pageToken", t.as_str()));
                        }
                        http.get(url.clone()).query(&query)
                    },
                )
                .await?;
            let mut oldest: Option<DateTime<Utc>> = None;
            for item in &list.items {
                let snippet = item.snippet.clone().unwrap_or_default();
                let at = snippet.published_at.as_deref().and_then(parse_time);
                if let Some(at) = at {
                    oldest = Some(oldest.map_or(at, |o: DateTime<Utc>| o.min(at)));
                }
                let id = snippet
                    .resource_id
                    .and_then(|r| r.video_id)
                    .or_else(|| item.content_details.clone().and_then(|c| c.video_id));
                if let (Some(id), Some(at)) = (id, at)
                    && at >= window_start
                    && snippet.title.as_deref() == Some(title.as_str())
                {
                    let mut r =
                        Receipt::new(Platform::YouTube, id.clone(), Some(Self::watch_url(&id)))
                            .with_state(RemoteState::Processing);
                    r.parts = vec![RemotePost {
                        id: id.clone(),
                        url: Some(Self::watch_url(&id)),
                    }];
                    return Ok(LookupOutcome::Found(r));
                }
            }
            if oldest.is_some_and(|o| o < window_start) {
                covered = true;
                break;
            }
            match list.next_page_token {
                Some(next) => token = Some(next),
                None => {
                    covered = true;
                    break;
                }
            }
        }
        let settle = chrono::Duration::from_std(self.config.lookup_settle)
            .unwrap_or(chrono::Duration::minutes(2));
        if self.now() - since < settle {
            return Ok(LookupOutcome::Unknown {
                reason: "the upload is too recent for the channel's uploads list to be sure"
                    .to_owned(),
            });
        }
        if covered {
            Ok(LookupOutcome::Absent)
        } else {
            Ok(LookupOutcome::Unknown {
                reason: format!(
                    "more uploads since then than {LOOKUP_PAGES} pages of the uploads list hold"
                ),
            })
        }
    }

    async fn delete(&self, ctx: &PublishContext, receipt: &Receipt) -> Result<()> {
        let url = self.config.data_url("videos")?;
        let id = receipt.remote_id.as_str();
        match self
            .config
            .api
            .send(ctx.into(), &Call::idempotent("videos.delete"), |http| {
                http.delete(url.clone()).query(&[("id", id)])
            })
            .await
        {
            Ok(_) => Ok(()),
            // Deleting twice (a retry after a lost answer) finds nothing: it is gone either way.
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ProcessingDetails, VideoStatus};

    fn video(upload: &str, processing: Option<&str>) -> Video {
        Video {
            id: "v".into(),
            status: Some(VideoStatus {
                upload_status: Some(upload.into()),
                ..VideoStatus::default()
            }),
            processing_details: processing.map(|p| ProcessingDetails {
                processing_status: Some(p.into()),
                ..ProcessingDetails::default()
            }),
            ..Video::default()
        }
    }

    #[test]
    fn states_map() {
        assert_eq!(
            state_of(&video("uploaded", None)),
            Some(RemoteState::Processing)
        );
        assert_eq!(
            state_of(&video("uploaded", Some("processing"))),
            Some(RemoteState::Processing)
        );
        assert_eq!(
            state_of(&video("processed", Some("succeeded"))),
            Some(RemoteState::Published)
        );
        assert!(matches!(
            state_of(&video("uploaded", Some("failed"))),
            Some(RemoteState::Failed { .. })
        ));
        assert!(matches!(
            state_of(&video("uploaded", Some("terminated"))),
            Some(RemoteState::Failed { .. })
        ));
        let mut v = video("rejected", Some("succeeded"));
        if let Some(s) = v.status.as_mut() {
            s.rejection_reason = Some("duplicate".into());
        }
        assert_eq!(
            state_of(&v),
            Some(RemoteState::Failed {
                reason: "rejected by YouTube: duplicate".into()
            })
        );
    }
}
