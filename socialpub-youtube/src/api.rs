//! Wire types of the YouTube Data API v3 endpoints this crate calls (and its mock serves).

use serde::{Deserialize, Serialize};

/// The body of `videos.insert`: the parts `snippet` and `status`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VideoInsert {
    pub(crate) snippet: InsertSnippet,
    pub(crate) status: InsertStatus,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InsertSnippet {
    pub(crate) title: String,
    pub(crate) description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tags: Vec<String>,
    pub(crate) category_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) default_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) default_audio_language: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InsertStatus {
    pub(crate) privacy_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) publish_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) self_declared_made_for_kids: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) contains_synthetic_media: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) embeddable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) license: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) public_stats_viewable: Option<bool>,
}

/// A video resource as the API returns it (only the fields read here).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Video {
    pub(crate) id: String,
    pub(crate) snippet: Option<VideoSnippet>,
    pub(crate) status: Option<VideoStatus>,
    pub(crate) processing_details: Option<ProcessingDetails>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct VideoSnippet {
    pub(crate) title: Option<String>,
    pub(crate) published_at: Option<String>,
    pub(crate) channel_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct VideoStatus {
    pub(crate) upload_status: Option<String>,
    pub(crate) failure_reason: Option<String>,
    pub(crate) rejection_reason: Option<String>,
    pub(crate) privacy_status: Option<String>,
    pub(crate) publish_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ProcessingDetails {
    pub(crate) processing_status: Option<String>,
    pub(crate) processing_failure_reason: Option<String>,
    pub(crate) processing_progress: Option<ProcessingProgress>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ProcessingProgress {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parts_total: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parts_processed: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) time_left_ms: Option<serde_json::Value>,
}

/// A `*.list` answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListResponse<T> {
    #[serde(default = "Vec::new")]
    pub(crate) items: Vec<T>,
    #[serde(default)]
    pub(crate) next_page_token: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ChannelResource {
    pub(crate) id: String,
    pub(crate) snippet: Option<ChannelSnippet>,
    pub(crate) content_details: Option<ChannelContentDetails>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ChannelSnippet {
    pub(crate) title: Option<String>,
    pub(crate) custom_url: Option<String>,
    pub(crate) thumbnails: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ChannelContentDetails {
    pub(crate) related_playlists: Option<RelatedPlaylists>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct RelatedPlaylists {
    pub(crate) uploads: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PlaylistItem {
    pub(crate) snippet: Option<PlaylistItemSnippet>,
    pub(crate) content_details: Option<PlaylistItemContent>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PlaylistItemSnippet {
    pub(crate) published_at: Option<String>,
    pub(crate) title: Option<String>,
    pub(crate) resource_id: Option<ResourceId>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PlaylistItemContent {
    pub(crate) video_id: Option<String>,
    pub(crate) video_published_at: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ResourceId {
    pub(crate) video_id: Option<String>,
}
