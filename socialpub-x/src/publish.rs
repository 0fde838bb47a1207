//! [`XPublisher`]: posts, threads, polls, quotes and media through `POST /2/tweets`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use socialpub_core::http::{Call, RateLimit};
use socialpub_core::publish::RemotePost;
use socialpub_core::{
    Capabilities, Error, ErrorKind, LookupOutcome, Platform, Post, PublishContext, Publisher,
    Receipt, RemoteState, Result, ValidationReport,
};
use unicode_normalization::UnicodeNormalization;

use crate::api;
use crate::config::XConfig;
use crate::options::XOptions;
use crate::text::extract_urls;
use crate::upload::{Session, Upload, Uploaded};
use crate::validate::{capabilities, part_text, validate_post};

/// Media uploaded this close to X's expiry are uploaded again rather than attached.
const MEDIA_EXPIRY_MARGIN: chrono::Duration = chrono::Duration::minutes(10);
/// The code X's refusal of a repeated text gets (see `error.rs`).
const DUPLICATE: &str = "duplicate-content";
/// Posts created this long before the commit point still count in a reconcile (clock skew).
const LOOKUP_SLACK: chrono::Duration = chrono::Duration::minutes(2);

/// Publishes to X. Share one (`Arc<dyn Publisher>`) for every X account of the application.
///
/// ```no_run
/// # async fn f() -> socialpub_core::Result<()> {
/// use std::sync::Arc;
/// use secrecy::SecretString;
/// use socialpub_core::auth::{AccountKey, StaticToken};
/// use socialpub_core::{Platform, Post, PublishContext, Publisher};
/// use socialpub_x::{XConfig, XPublisher};
///
/// let publisher = XPublisher::new(XConfig::builder().build()?);
/// let tokens = Arc::new(StaticToken(SecretString::from("user-access-token")));
/// let mut ctx = PublishContext::new(AccountKey::new("acme", Platform::X, "2244994945"), tokens);
/// let receipt = publisher.publish(&mut ctx, &Post::new("Hello from socialpub")).await?;
/// println!("{}", receipt.url.unwrap_or_default());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct XPublisher {
    config: Arc<XConfig>,
}

/// What a publish keeps between attempts: per part, the media X holds, the post id once
/// created, and when its create went out without an answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// A digest of the post, so a checkpoint of another post is never resumed.
    post: String,
    parts: Vec<PartState>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PartState {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    media: Vec<Uploaded>,
    /// The upload in progress (of media item `media.len()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<Session>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// Set when the create request is about to go out, cleared once its id is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sent_at: Option<DateTime<Utc>>,
}

fn digest(post: &Post) -> String {
    let json = serde_json::to_vec(post).unwrap_or_default();
    Sha256::digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Text reduced to what survives X's rewrites: NFC, links removed (X turns them into t.co
/// links, and adds one for media), whitespace collapsed.
fn comparable(text: &str) -> String {
    let plain: String = text.nfc().collect();
    let mut out = String::new();
    let mut last = 0;
    for r in extract_urls(&plain) {
        out.push_str(&plain[last..r.start]);
        out.push(' ');
        last = r.end;
    }
    out.push_str(&plain[last..]);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A post's text as X shows it back (`&`, `<`, `>` escaped as HTML entities), made comparable.
fn comparable_shown(text: &str) -> String {
    comparable(
        &text
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

impl XPublisher {
    /// A publisher using `config`.
    pub fn new(config: XConfig) -> XPublisher {
        XPublisher {
            config: Arc::new(config),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &XConfig {
        &self.config
    }

    async fn save(&self, ctx: &mut PublishContext, cp: &Checkpoint) -> Result<()> {
        ctx.save_checkpoint(serde_json::to_value(cp)?).await
    }

    /// Sends the create request: once (a rate limit that refused it is waited out within the
    /// retry policy; anything that may have reached X is unconfirmed).
    async fn create(
        &self,
        ctx: &PublishContext,
        body: &api::CreateTweet,
    ) -> Result<(String, RateLimit)> {
        let url = self.config.api("/2/tweets")?;
        let answer = self
            .config
            .api
            .send(ctx.into(), &Call::commit("tweets.create"), |http| {
                http.post(url.clone()).json(body)
            })
            .await?;
        let created = answer.json::<api::Data<api::Tweet>>()?;
        if answer.rate_limit().should_pause(100.0) {
            tracing::info!(rate_limit = ?answer.rate_limit(), "X posting limit reached");
        }
        Ok((created.data.id, answer.rate_limit().clone()))
    }

    fn body(
        &self,
        post: &Post,
        options: &XOptions,
        index: usize,
        media: &[Uploaded],
        previous: Option<&str>,
    ) -> api::CreateTweet {
        let text = part_text(post, index);
        let first = index == 0;
        api::CreateTweet {
            text: (!text.is_empty()).then_some(text),
            reply: previous.map(|id| api::Reply {
                in_reply_to_tweet_id: id.to_owned(),
            }),
            quote_tweet_id: options.quote_tweet_id.clone().filter(|_| first),
            poll: post.poll.as_ref().filter(|_| first).map(|p| api::PollBody {
                options: p.options.clone(),
                duration_minutes: p.duration.as_secs() / 60,
            }),
            media: (!media.is_empty()).then(|| api::MediaBody {
                media_ids: media.iter().map(|m| m.id.clone()).collect(),
                tagged_user_ids: if first {
                    options.tagged_user_ids.clone()
                } else {
                    Vec::new()
                },
            }),
            reply_settings: options
                .reply_settings
                .filter(|_| first)
                .map(|r| r.as_str().to_owned()),
        }
    }

    /// The account's posts since `since`, newest first, and whether that is all of them: pages
    /// of `GET /2/users/{id}/tweets` followed by their `next_token`, at most `lookup_pages` of
    /// them.
    async fn recent(
        &self,
        ctx: &PublishContext,
        since: DateTime<Utc>,
    ) -> Result<(Vec<api::Tweet>, bool)> {
        let account = ctx.account().account_id.clone();
        let url = self.config.api(&format!("/2/users/{account}/tweets"))?;
        let start = (since - LOOKUP_SLACK).to_rfc3339_opts(SecondsFormat::Secs, true);
        let max = self.config.lookup_window.to_string();
        let mut tweets = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..self.config.lookup_pages {
            let page: api::TweetPage = self
                .config
                .api
                .send_json(ctx.into(), &Call::idempotent("users.tweets"), |http| {
                    let mut query = vec![
                        ("max_results", max.as_str()),
                        ("start_time", start.as_str()),
                        ("tweet.fields", "created_at,referenced_tweets"),
                    ];
                    if let Some(t) = &token {
                        query.push(("pagination_token", t.as_str()));
                    }
                    http.get(url.clone()).query(&query)
                })
                .await?;
            tweets.extend(page.data);
            match page.meta.next_token {
                Some(next) => token = Some(next),
                None => return Ok((tweets, true)),
            }
        }
        Ok((tweets, false))
    }

    /// The post among `tweets` with `text`, replying to `parent` when given.
    fn find<'a>(
        tweets: &'a [api::Tweet],
        text: &str,
        parent: Option<&str>,
    ) -> Option<&'a api::Tweet> {
        let want = comparable(text);
        tweets.iter().rev().find(|t| {
            comparable_shown(&t.text) == want
                && parent.is_none_or(|p| {
                    t.referenced_tweets
                        .iter()
                        .any(|r| r.kind == "replied_to" && r.id == p)
                })
        })
    }

    fn receipt(
        &self,
        ids: &[String],
        media: serde_json::Value,
        rate_limit: Option<&RateLimit>,
    ) -> Result<Receipt> {
        let first = ids
            .first()
            .ok_or_else(|| Error::internal("a publish created no post"))?;
        let mut receipt = Receipt::new(
            Platform::X,
            first.clone(),
            Some(self.config.post_url(first)),
        );
        receipt.parts = ids
            .iter()
            .map(|id| RemotePost {
                id: id.clone(),
                url: Some(self.config.post_url(id)),
            })
            .collect();
        receipt.extra = serde_json::json!({ "media_ids": media });
        if let Some(limits) = rate_limit {
            // The posting limits after this publish: the scheduler paces the account with them.
            receipt = receipt.with_rate_limit(limits.clone());
        }
        Ok(receipt)
    }

    fn limit_for_post(&self, post: &Post) -> usize {
        post.targets
            .iter()
            .filter(|t| t.platform == Platform::X)
            .map(|t| self.config.max_text_for(&t.account_id))
            .min()
            .unwrap_or(self.config.max_text)
    }
}

#[async_trait]
impl Publisher for XPublisher {
    fn platform(&self) -> Platform {
        Platform::X
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(self.config.max_text)
    }

    fn validate(&self, post: &Post) -> ValidationReport {
        validate_post(post, self.limit_for_post(post))
    }

    async fn publish(&self, ctx: &mut PublishContext, post: &Post) -> Result<Receipt> {
        let max = self.config.max_text_for(&ctx.account().account_id);
        validate_post(post, max).into_result()?;
        let options = post.options::<XOptions>()?.unwrap_or_default();
        let parts: Vec<_> = post.parts().collect();
        let digest = digest(post);
        let mut cp = ctx
            .checkpoint_as::<Checkpoint>()
            .filter(|c| c.post == digest)
            .unwrap_or(Checkpoint {
                post: digest,
                parts: Vec::new(),
            });
        cp.parts.resize(parts.len(), PartState::default());
        let mut previous = options.in_reply_to_tweet_id.clone();
        let mut rate_limit = None;

        for (i, (_, media)) in parts.iter().enumerate() {
            if let Some(id) = cp.parts[i].id.clone() {
                tracing::debug!(part = i, id = %id, "resuming after a part X already has");
                previous = Some(id);
                continue;
            }
            let text = part_text(post, i);
            let sent_before = cp.parts[i].sent_at;
            if let Some(sent_at) = sent_before {
                // An earlier attempt sent this part and never heard back: look before sending
                // it again, or the thread would hold it twice.
                let (tweets, _) = self.recent(ctx, sent_at).await?;
                if let Some(found) = Self::find(&tweets, &text, previous.as_deref()) {
                    tracing::info!(part = i, id = %found.id, "found the unconfirmed part on X");
                    cp.parts[i].id = Some(found.id.clone());
                    cp.parts[i].sent_at = None;
                    self.save(ctx, &cp).await?;
                    previous = Some(found.id.clone());
                    continue;
                }
            }

            // Media X still holds from an earlier attempt are kept; from the first expired one
            // on, they are uploaded again. A session cut off mid-file resumes.
            let now = self.config.api.clock().now();
            let keep = cp.parts[i]
                .media
                .iter()
                .take_while(|m| m.expires_at.is_none_or(|at| at - MEDIA_EXPIRY_MARGIN > now))
                .count()
                .min(media.len());
            if keep < cp.parts[i].media.len() {
                cp.parts[i].media.truncate(keep);
                cp.parts[i].session = None;
            }
            for (j, m) in media.iter().enumerate().skip(keep) {
                let previous_session = cp.parts[i].session.take();
                let mut upload =
                    Upload::begin(&self.config, ctx, i, j, m, previous_session).await?;
                cp.parts[i].session = Some(upload.session().clone());
                self.save(ctx, &cp).await?;
                while !upload.is_sent() {
                    upload.send_next(ctx).await?;
                    cp.parts[i].session = Some(upload.session().clone());
                    self.save(ctx, &cp).await?;
                }
                let uploaded = upload.finish(ctx).await?;
                cp.parts[i].session = None;
                cp.parts[i].media.push(uploaded);
                self.save(ctx, &cp).await?;
            }

            let body = self.body(post, &options, i, &cp.parts[i].media, previous.as_deref());
            ctx.commit_point().await?;
            // The first send counts: a lookup reads from it.
            cp.parts[i].sent_at = Some(sent_before.unwrap_or(self.config.api.clock().now()));
            self.save(ctx, &cp).await?;
            let (id, limits) = match self.create(ctx, &body).await {
                Ok(created) => created,
                Err(e) if sent_before.is_some() && e.code() == Some(DUPLICATE) => {
                    // An earlier send of this very part landed after all and the list did not
                    // show it yet: look again rather than fail a post that exists.
                    let since = sent_before.unwrap_or_default();
                    let (tweets, _) = self.recent(ctx, since).await?;
                    let Some(found) = Self::find(&tweets, &text, previous.as_deref()) else {
                        return Err(Error::new(
                            ErrorKind::Unconfirmed,
                            format!(
                                "X refused part {} of the post as a duplicate of one it already                                  has, which its list does not show yet: look it up again later",
                                i + 1
                            ),
                        )
                        .with_platform(Platform::X)
                        .with_operation("tweets.create")
                        .with_source(e));
                    };
                    tracing::info!(part = i, id = %found.id, "X has the part already");
                    (found.id.clone(), RateLimit::default())
                }
                Err(e) => {
                    if e.kind() != ErrorKind::Unconfirmed {
                        // X answered and created nothing: a retry need not look first.
                        cp.parts[i].sent_at = None;
                        if let Err(save) = self.save(ctx, &cp).await {
                            tracing::warn!(error = %save, "could not clear the sent mark");
                        }
                    }
                    return Err(e);
                }
            };
            rate_limit = Some(limits);
            cp.parts[i].id = Some(id.clone());
            cp.parts[i].sent_at = None;
            if let Err(e) = self.save(ctx, &cp).await {
                // The post exists: failing now would invite a duplicate. Carry on; the receipt
                // holds the id.
                tracing::warn!(error = %e, part = i, "could not save the checkpoint after creating a post");
            }
            previous = Some(id);
        }

        let ids: Vec<String> = cp.parts.iter().filter_map(|p| p.id.clone()).collect();
        let media: Vec<Vec<String>> = cp
            .parts
            .iter()
            .map(|p| p.media.iter().map(|m| m.id.clone()).collect())
            .collect();
        self.receipt(&ids, serde_json::json!(media), rate_limit.as_ref())
    }

    async fn status(&self, ctx: &PublishContext, receipt: &Receipt) -> Result<Receipt> {
        let url = self
            .config
            .api(&format!("/2/tweets/{}", receipt.remote_id))?;
        let got = self
            .config
            .api
            .send(ctx.into(), &Call::idempotent("tweets.get"), |http| {
                http.get(url.clone())
            })
            .await;
        match got {
            Ok(_) => Ok(receipt.clone().with_state(RemoteState::Published)),
            Err(e) if e.code() == Some("resource-not-found") || e.status() == Some(404) => {
                Ok(receipt.clone().with_state(RemoteState::Failed {
                    reason: "the post no longer exists on X".to_owned(),
                }))
            }
            Err(e) => Err(e),
        }
    }

    async fn lookup_recent(
        &self,
        ctx: &PublishContext,
        post: &Post,
        since: DateTime<Utc>,
    ) -> Result<LookupOutcome> {
        let options = post.options::<XOptions>()?.unwrap_or_default();
        let digest = digest(post);
        let cp = ctx
            .checkpoint_as::<Checkpoint>()
            .filter(|c| c.post == digest)
            .unwrap_or_default();
        let n = post.parts().count();
        let (tweets, complete) = self.recent(ctx, since).await?;
        let mut previous = options.in_reply_to_tweet_id.clone();
        let mut ids = Vec::new();
        for i in 0..n {
            if let Some(id) = cp.parts.get(i).and_then(|p| p.id.clone()) {
                previous = Some(id.clone());
                ids.push(id);
                continue;
            }
            let text = part_text(post, i);
            if comparable(&text).is_empty() && previous.is_none() {
                return Ok(LookupOutcome::Unknown {
                    reason: "a post without text cannot be told apart from other media posts"
                        .to_owned(),
                });
            }
            match Self::find(&tweets, &text, previous.as_deref()) {
                Some(t) => {
                    previous = Some(t.id.clone());
                    ids.push(t.id.clone());
                }
                None => break,
            }
        }
        if ids.len() == n {
            let media: Vec<Vec<String>> = cp
                .parts
                .iter()
                .map(|p| p.media.iter().map(|m| m.id.clone()).collect())
                .collect();
            return Ok(LookupOutcome::Found(self.receipt(
                &ids,
                serde_json::json!(media),
                None,
            )?));
        }
        if !complete {
            return Ok(LookupOutcome::Unknown {
                reason: format!(
                    "the account posted more than {} times since; the post may be among older ones",
                    self.config.lookup_window * self.config.lookup_pages
                ),
            });
        }
        if ids.is_empty() {
            return Ok(LookupOutcome::Absent);
        }
        // The first parts exist: the caller must not publish them again.
        let media: Vec<Vec<String>> = cp
            .parts
            .iter()
            .map(|p| p.media.iter().map(|m| m.id.clone()).collect())
            .collect();
        Ok(LookupOutcome::Partial(self.receipt(
            &ids,
            serde_json::json!(media),
            None,
        )?))
    }

    async fn delete(&self, ctx: &PublishContext, receipt: &Receipt) -> Result<()> {
        let mut ids: Vec<&str> = receipt.parts.iter().map(|p| p.id.as_str()).collect();
        if ids.is_empty() {
            ids.push(&receipt.remote_id);
        }
        // The last part first, so a half-finished delete leaves the head of the thread.
        for id in ids.into_iter().rev() {
            let url = self.config.api(&format!("/2/tweets/{id}"))?;
            let done = self
                .config
                .api
                .send(ctx.into(), &Call::idempotent("tweets.delete"), |http| {
                    http.delete(url.clone())
                })
                .await;
            match done {
                Ok(_) => {}
                Err(e) if e.code() == Some("resource-not-found") || e.status() == Some(404) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparable_text_survives_x_rewrites() {
        assert_eq!(
            comparable("Tom & Jerry <3 https://example.com/x"),
            comparable_shown("Tom &amp; Jerry &lt;3 https://t.co/abc123")
        );
        assert_eq!(
            comparable("literally &amp;"),
            comparable_shown("literally &amp;amp;")
        );
        assert_eq!(
            comparable("with media"),
            comparable_shown("with media https://t.co/media1")
        );
        assert_eq!(comparable("cafe\u{301}  \n ok"), "caf\u{e9} ok");
    }
}
