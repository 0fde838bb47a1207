//! The YouTube mock's platform state: users and their channels, upload sessions, videos and
//! their processing, quotas. Tokens, faults and the request log live in core's mock kit.

// Checks answer refusals as ready `Response`s; their size is irrelevant in a test server.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::Sha256;

use super::handlers::quota_exceeded;
use super::{MockVideo, ProcessingOutcome, ProcessingScript};

pub(crate) mod base64_like {
    use rand::Rng;

    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    /// A random id of `len` URL-safe characters.
    pub(crate) fn id(len: usize) -> String {
        let mut r = rand::rng();
        (0..len)
            .map(|_| ALPHABET[r.random_range(0..ALPHABET.len())] as char)
            .collect()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sessions_started: AtomicU64,
    pub(crate) videos_created: AtomicU64,
    pub(crate) thumbnails: AtomicU64,
}

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) channel: Option<ChannelRec>,
}

#[derive(Debug, Clone)]
pub(crate) struct ChannelRec {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) custom_thumbnails: bool,
}

impl ChannelRec {
    pub(crate) fn uploads_playlist(&self) -> String {
        format!("UU{}", self.id.get(2..).unwrap_or(&self.id))
    }
}

pub(crate) struct Session {
    pub(crate) user: String,
    pub(crate) channel_id: String,
    pub(crate) total: u64,
    pub(crate) received: u64,
    pub(crate) hasher: Sha256,
    pub(crate) metadata: Value,
    pub(crate) notify: bool,
    pub(crate) gone: Option<StatusCode>,
    pub(crate) video_id: Option<String>,
    pub(crate) lock: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Clone)]
pub(crate) struct VideoRec {
    pub(crate) video: MockVideo,
    pub(crate) created: DateTime<Utc>,
    pub(crate) created_instant: Instant,
    pub(crate) reads: u32,
    pub(crate) script: ProcessingScript,
}

pub(crate) struct MockState {
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) sessions: HashMap<String, Session>,
    pub(crate) videos: Vec<VideoRec>,
    pub(crate) short_keep: VecDeque<u64>,
    pub(crate) expire_tokens_after_chunks: Option<u32>,
    pub(crate) processing: ProcessingScript,
    pub(crate) units_used: u64,
    pub(crate) units_limit: u64,
    pub(crate) inserts_used: u64,
    pub(crate) inserts_limit: u64,
    pub(crate) upload_limit: Option<u32>,
    pub(crate) lock_private: bool,
}

impl MockState {
    pub(crate) fn charge_units(&mut self, units: u64) -> std::result::Result<(), Response> {
        if self.units_used + units > self.units_limit {
            self.units_used = self.units_limit;
            return Err(quota_exceeded());
        }
        self.units_used += units;
        Ok(())
    }

    pub(crate) fn channel_of(&self, user: &str) -> Option<ChannelRec> {
        self.users.get(user).and_then(|u| u.channel.clone())
    }

    pub(crate) fn video_json(&mut self, idx: usize, parts: &[&str], owner: bool) -> Value {
        let v = &mut self.videos[idx];
        let mut out = json!({
            "kind": "youtube#video",
            "etag": format!("etag-{}", v.video.id),
            "id": v.video.id,
        });
        let meta = &v.video.metadata;
        if parts.contains(&"snippet") {
            let mut snippet = meta.get("snippet").cloned().unwrap_or_else(|| json!({}));
            snippet["publishedAt"] =
                json!(v.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            snippet["channelId"] = json!(v.video.channel_id);
            out["snippet"] = snippet;
        }
        let done = v.reads > v.script.reads_while_processing
            || v.script
                .processing_time
                .is_some_and(|t| v.created_instant.elapsed() >= t);
        let mut status = meta.get("status").cloned().unwrap_or_else(|| json!({}));
        status["privacyStatus"] = json!(v.video.privacy_status);
        status["license"] = status.get("license").cloned().unwrap_or(json!("youtube"));
        status["embeddable"] = status.get("embeddable").cloned().unwrap_or(json!(true));
        if let Some(k) = status.get("selfDeclaredMadeForKids").cloned() {
            status["madeForKids"] = k;
        }
        let mut processing = json!({"processingStatus": "processing",
            "processingProgress": {"partsTotal": "1000", "partsProcessed": "10", "timeLeftMs": "60000"}});
        status["uploadStatus"] = json!("uploaded");
        if done {
            match &v.script.outcome {
                ProcessingOutcome::Succeeded => {
                    status["uploadStatus"] = json!("processed");
                    processing = json!({"processingStatus": "succeeded"});
                }
                ProcessingOutcome::Failed(reason) => {
                    status["uploadStatus"] = json!("failed");
                    status["failureReason"] = json!("conversion");
                    processing =
                        json!({"processingStatus": "failed", "processingFailureReason": reason});
                }
                ProcessingOutcome::Rejected(reason) => {
                    status["uploadStatus"] = json!("rejected");
                    status["rejectionReason"] = json!(reason);
                    processing = json!({"processingStatus": "succeeded"});
                }
                ProcessingOutcome::Terminated => {
                    processing = json!({"processingStatus": "terminated"});
                }
            }
        }
        if parts.contains(&"status") {
            out["status"] = status;
        }
        // processingDetails is returned to the owner only.
        if parts.contains(&"processingDetails") && owner {
            out["processingDetails"] = processing;
        }
        out
    }
}
