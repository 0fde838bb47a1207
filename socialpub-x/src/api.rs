//! Wire types of the X API v2 endpoints this crate calls (and its mock serves).

use serde::{Deserialize, Serialize};

/// `{"data": …}` around every v2 answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct Data<T> {
    pub data: T,
}

/// `GET /2/users/me`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct User {
    pub id: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub name: String,
}

/// `POST /2/tweets` body.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct CreateTweet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote_tweet_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<PollBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_settings: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct Reply {
    pub in_reply_to_tweet_id: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct PollBody {
    pub options: Vec<String>,
    pub duration_minutes: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct MediaBody {
    pub media_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tagged_user_ids: Vec<String>,
}

/// A post as `POST /2/tweets` and the lookups return it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct Tweet {
    pub id: String,
    #[serde(default)]
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referenced_tweets: Vec<ReferencedTweet>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct ReferencedTweet {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// `GET /2/users/{id}/tweets`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct TweetPage {
    #[serde(default)]
    pub data: Vec<Tweet>,
    #[serde(default)]
    pub meta: PageMeta,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct PageMeta {
    #[serde(default)]
    pub result_count: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `POST /2/media/upload/initialize` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct MediaInit {
    pub media_type: String,
    pub total_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_category: Option<String>,
}

/// The media object INIT, FINALIZE and STATUS return.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct MediaInfo {
    #[serde(alias = "media_id_string", alias = "media_id")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_after_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_info: Option<ProcessingInfo>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct ProcessingInfo {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_after_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_percent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProcessingError>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct ProcessingError {
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// `POST /2/media/metadata` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct MediaMetadata {
    pub id: String,
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct Metadata {
    pub alt_text: AltText,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct AltText {
    pub text: String,
}
