//! The everyday commands: accounts, post, schedule, run, status, cancel, disconnect,
//! reencrypt, purge, export. Each takes the assembled [`App`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use socialpub_core::auth::{AccountKey, SealedTokenStore};
use socialpub_core::post::PostPart;
use socialpub_core::schedule::{
    CancelOutcome, Delivery, DeliveryFilter, DeliveryState, Event, EventKind, RetryOutcome,
    Scheduler,
};
use socialpub_core::{Error, Media, Platform, Post, Result, Target, TokenStore};
use uuid::Uuid;

use crate::app::App;
use crate::platforms::display_name;
use crate::progress::Lines;

/// What to publish and where.
#[derive(Debug, Clone, Args)]
pub struct PostArgs {
    /// The text (a caption, a tweet, a video description).
    #[arg(long)]
    pub text: String,
    /// A title (YouTube needs one).
    #[arg(long)]
    pub title: Option<String>,
    /// A media file to attach (repeat for several).
    #[arg(long = "media", value_name = "PATH")]
    pub media: Vec<PathBuf>,
    /// Alt text for the media, in the order of `--media`.
    #[arg(long = "alt", value_name = "TEXT")]
    pub alt: Vec<String>,
    /// A further part of a thread (repeat for several).
    #[arg(long = "thread", value_name = "TEXT")]
    pub thread: Vec<String>,
    /// Where to publish: `x`, `youtube`, or `platform:account_id` (repeat for several;
    /// default: every connected account).
    #[arg(long = "to", value_name = "TARGET")]
    pub to: Vec<String>,
}

impl PostArgs {
    /// Builds the post, probing media files and resolving targets against the connected
    /// accounts.
    pub async fn to_post(&self, app: &App) -> Result<Post> {
        if self.alt.len() > self.media.len() {
            return Err(Error::invalid_input(format!(
                "{} --alt values for {} --media files: each --alt describes the --media at the \
                 same position, so give at most one per file",
                self.alt.len(),
                self.media.len()
            )));
        }
        let mut post = Post::new(self.text.clone());
        if let Some(t) = &self.title {
            post = post.with_title(t.clone());
        }
        let cwd = std::env::current_dir()
            .map_err(|e| Error::internal(format!("cannot read the working directory: {e}")))?;
        for (i, path) in self.media.iter().enumerate() {
            let mut m = media_file(&resolve_media(path, &cwd)?).await?;
            if let Some(alt) = self.alt.get(i) {
                m = m.with_alt_text(alt.clone());
            }
            post = post.with_media(m);
        }
        for text in &self.thread {
            post = post.with_thread_part(PostPart {
                text: text.clone(),
                media: Vec::new(),
            });
        }
        let accounts = app.tokens.store().list(&app.tenant).await?;
        let mut targets: Vec<Target> = Vec::new();
        if self.to.is_empty() {
            targets.extend(
                accounts
                    .iter()
                    .map(|k| Target::new(k.platform, k.account_id.clone())),
            );
        }
        for spec in &self.to {
            let (platform, account) = match spec.split_once(':') {
                Some((p, a)) => (p.parse::<Platform>()?, Some(a)),
                None => (spec.parse::<Platform>()?, None),
            };
            let matching: Vec<&AccountKey> = accounts
                .iter()
                .filter(|k| k.platform == platform && account.is_none_or(|a| a == k.account_id))
                .collect();
            if matching.is_empty() {
                return Err(Error::invalid_input(format!(
                    "no connected {platform} account matches `{spec}`: run `socialpub connect \
                     {platform}` first"
                )));
            }
            targets.extend(
                matching
                    .into_iter()
                    .map(|k| Target::new(k.platform, k.account_id.clone())),
            );
        }
        if targets.is_empty() {
            return Err(Error::invalid_input(
                "no connected account to publish to: run `socialpub connect <platform>` first",
            ));
        }
        // A delivery no worker here could publish would wait for a process configured for
        // its platform: say so now, while the user is here to fix it.
        for t in &targets {
            app.platforms.require(t.platform)?;
        }
        for t in targets {
            if !post.targets.contains(&t) {
                post = post.with_target(t);
            }
        }
        Ok(post)
    }
}

/// The file `--media PATH` names, as an absolute path with no symbolic links or `..` left:
/// the post keeps it, and a worker started in another directory reads it later. Fails when
/// the file cannot be read now.
pub fn resolve_media(path: &Path, cwd: &Path) -> Result<PathBuf> {
    let unreadable = |e: std::io::Error| {
        Error::invalid_input(format!("cannot read --media {}: {e}", path.display())).with_source(e)
    };
    let full = std::fs::canonicalize(cwd.join(path)).map_err(unreadable)?;
    if !full.is_file() {
        return Err(Error::invalid_input(format!(
            "--media {} is not a file",
            path.display()
        )));
    }
    std::fs::File::open(&full).map_err(unreadable)?;
    Ok(full)
}

/// Probes a media file, refusing one whose content is not a known image or video whatever its
/// name says (a text file named `.png`).
pub async fn media_file(path: &Path) -> Result<Media> {
    use std::io::Read;
    let mut head = Vec::with_capacity(8192);
    std::fs::File::open(path)
        .and_then(|f| f.take(8192).read_to_end(&mut head))
        .map_err(|e| Error::invalid_input(format!("cannot read {}: {e}", path.display())))?;
    if socialpub_core::media::sniff_mime(&head, None).is_none() {
        let named =
            socialpub_core::media::sniff_mime(&[], path.file_name().and_then(|n| n.to_str()))
                .map(|m| format!(" (its name says {m})"))
                .unwrap_or_default();
        return Err(Error::invalid_input(format!(
            "{} is not a known image or video format by its content{named}",
            path.display()
        )));
    }
    Media::from_path(path).await
}

/// Parses a time: RFC 3339 (`2026-12-01T09:00:00Z`) or a delay from now (`+90s`, `+10m`,
/// `+2h`, `+1d`).
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let s = s.trim();
    if let Some(delay) = s.strip_prefix('+') {
        let delay = chrono::Duration::from_std(parse_duration(delay)?)
            .map_err(|_| Error::invalid_input(format!("`{s}` is too far ahead")))?;
        return now
            .checked_add_signed(delay)
            .ok_or_else(|| Error::invalid_input(format!("`{s}` is too far ahead")));
    }
    if s.starts_with('-') {
        return Err(Error::invalid_input(format!(
            "`{s}` is in the past: --at takes a time to come, RFC 3339 (2026-12-01T09:00:00Z) or \
             a delay from now (+10m); to publish now, use --now or `socialpub post`"
        )));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Error::invalid_input(format!(
                "`{s}` is not a time: use RFC 3339 (2026-12-01T09:00:00Z) or +10m ({e})"
            ))
        })
}

/// When `schedule` publishes: `--now`, or the time `--at` gives, which must not have passed
/// unless `allow_past` (a time in the past is most often a typo, and would publish at once).
pub fn schedule_time(
    at: Option<&str>,
    allow_past: bool,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>> {
    let Some(at) = at else {
        return Ok(now);
    };
    let t = parse_time(at, now)?;
    if t < now && !allow_past {
        return Err(Error::invalid_input(format!(
            "{} is in the past: it would be published at once. Check the date, or add \
             --allow-past to publish it now anyway",
            t.format("%Y-%m-%d %H:%M:%S UTC")
        )));
    }
    Ok(t)
}

/// Parses `90s`, `10m`, `2h` or `30d`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s.len().saturating_sub(1);
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| {
        Error::invalid_input(format!("`{s}` is not a duration like 90s, 10m, 2h, 30d"))
    })?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(Error::invalid_input(format!(
                "`{s}` is not a duration like 90s, 10m, 2h, 30d"
            )));
        }
    };
    Ok(Duration::from_secs(secs))
}

/// `accounts`: the connected accounts of the tenant (never their tokens), as a table or, with
/// `json`, as a JSON array.
pub async fn accounts(app: &App, json: bool) -> Result<()> {
    let store = app.tokens.store();
    let mut rows = vec![vec![
        "platform".to_owned(),
        "account".to_owned(),
        "name".to_owned(),
        "access expires".to_owned(),
        "refresh token".to_owned(),
    ]];
    let mut docs = Vec::new();
    for key in store.list(&app.tenant).await? {
        let token = store.get(&key).await.map_err(|e| unseal_hint(&key, e))?;
        let expires = token.as_ref().and_then(|t| t.expires_at);
        let refresh = token.as_ref().is_some_and(|t| t.refresh_token.is_some());
        docs.push(serde_json::json!({
            "platform": key.platform,
            "account_id": key.account_id,
            "name": display_name(&key, token.as_ref()),
            "access_expires_at": expires,
            "refresh_token": refresh,
        }));
        rows.push(vec![
            key.platform.to_string(),
            key.account_id.clone(),
            display_name(&key, token.as_ref()),
            expires
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| "-".into()),
            if refresh { "yes" } else { "no" }.into(),
        ]);
    }
    if json {
        return print_json(&serde_json::Value::Array(docs));
    }
    if rows.len() == 1 {
        out(&format!(
            "No account connected for tenant `{}`.",
            app.tenant
        ))
    } else {
        print_table(&rows)
    }
}

/// An error reading `key`'s token, with the likely cause when the token is there but does not
/// open: the key configured under its key id is not the one that sealed it.
pub fn unseal_hint(key: &AccountKey, e: Error) -> Error {
    if e.kind() != socialpub_core::ErrorKind::Storage {
        return e;
    }
    Error::new(
        socialpub_core::ErrorKind::Storage,
        format!(
            "cannot open the token of {key}: {} (`socialpub check` tells whether the key is \
             the wrong one)",
            e.message()
        ),
    )
    .with_source(e)
}

/// `schedule`: validates and schedules `post` at `at`; prints its deliveries.
pub async fn schedule(app: &App, post: &Post, at: DateTime<Utc>) -> Result<Vec<Uuid>> {
    let scheduled = app.engine.schedule(&app.tenant, post, at).await?;
    for (id, t) in scheduled.deliveries.iter().zip(&post.targets) {
        out(&format!(
            "scheduled {id} for {}/{} at {}",
            t.platform,
            t.account_id,
            at.format("%Y-%m-%d %H:%M:%S UTC")
        ))?;
    }
    Ok(scheduled.deliveries)
}

/// `post`: publishes now: schedules for now and runs the workers until every delivery of the
/// post has settled. Returns whether all were published. Event lines go through `lines`, so
/// they do not tear the progress bars.
pub async fn post_now(app: &App, post: &Post, lines: &Lines) -> Result<bool> {
    let mut events = app.engine.subscribe();
    let ids = schedule(app, post, Utc::now()).await?;
    let workers = app.engine.start();
    let printer = {
        let lines = lines.clone();
        tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                lines.line(describe_event(&e));
            }
        })
    };
    let done = wait_settled(app, &ids, Duration::from_secs(3600)).await;
    workers.shutdown().await;
    printer.abort();
    lines.clear();
    let done = done?;
    print_status(&done)?;
    Ok(done.iter().all(|d| d.state == DeliveryState::Published))
}

/// Waits until every delivery in `ids` is final, needs a person (`needs_reauth`, an
/// `unconfirmed` no lookup settles) or `limit` passed; returns them as they stand.
pub async fn wait_settled(app: &App, ids: &[Uuid], limit: Duration) -> Result<Vec<Delivery>> {
    let start = std::time::Instant::now();
    loop {
        let mut all = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(d) = app.engine.get(&app.tenant, *id).await? {
                all.push(d);
            }
        }
        if all.iter().all(settled) || start.elapsed() >= limit {
            return Ok(all);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether nothing will happen to `d` without a person: final, `needs_reauth`, or an
/// `unconfirmed` delivery with nothing left to try. An `unconfirmed` delivery a worker holds
/// (its lookup in flight) is not settled: the claim clears its run time, not its state.
pub fn settled(d: &Delivery) -> bool {
    d.state.is_terminal()
        || d.state == DeliveryState::NeedsReauth
        || (d.state == DeliveryState::Unconfirmed && d.run_at.is_none() && d.lease.is_none())
}

/// `run`: the workers, until Ctrl-C; then a graceful stop (publishes in flight finish, claimed
/// deliveries not yet started are released).
pub async fn run(app: &App, lines: &Lines) -> Result<()> {
    let mut events = app.engine.subscribe();
    let workers = app.engine.start();
    lines.line(format!(
        "workers running for tenant `{}`; Ctrl-C stops them",
        app.tenant
    ));
    let printer = {
        let lines = lines.clone();
        tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                lines.line(describe_event(&e));
            }
        })
    };
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| Error::internal(format!("cannot wait for Ctrl-C: {e}")))?;
    lines.line("stopping: waiting for publishes in flight…".to_owned());
    workers.shutdown().await;
    printer.abort();
    lines.clear();
    out("stopped")
}

/// `check`'s look at the store: opens one sealed token (of any tenant) with the configured
/// keys. Returns what it found, to print; fails with the likely cause when the token does not
/// open: `wrong key (key id X)` when the key configured under the token's key id is not the
/// one that sealed it.
pub async fn check_tokens(app: &App) -> Result<String> {
    let sealed_store = app.store.sealed_tokens();
    let keys = sealed_store.list_sealed(None).await?;
    let Some(key) = keys.first() else {
        return Ok("no token stored yet".to_owned());
    };
    let Some(sealed) = sealed_store.get_sealed(key).await? else {
        return Ok("no token stored yet".to_owned());
    };
    match app.sealed.open(key, &sealed) {
        Ok(_) => Ok(format!(
            "{} token(s) stored; the one of {key} opens (sealed with key id `{}`)",
            keys.len(),
            sealed.key_id
        )),
        Err(e) if e.kind() == socialpub_core::ErrorKind::Configuration => {
            Err(Error::configuration(format!(
                "the token of {key} was sealed with key id `{}`, which this configuration does \
                 not have: add that key under [old_encryption_keys], or set \
                 SOCIALPUB_ENCRYPTION_KEY_ID to it",
                sealed.key_id
            )))
        }
        Err(e) => Err(Error::configuration(format!(
            "wrong key (key id `{}`): the token of {key} does not open with the key configured \
             under that id. Set SOCIALPUB_ENCRYPTION_KEY to the key that sealed it ({})",
            sealed.key_id,
            e.message()
        ))),
    }
}

/// `status`: the tenant's deliveries (optionally in some states), or one delivery's history,
/// as tables or, with `json`, as JSON.
pub async fn status(
    app: &App,
    id: Option<&str>,
    states: &[DeliveryState],
    json: bool,
) -> Result<()> {
    let all = app
        .engine
        .list(&DeliveryFilter::tenant(app.tenant.clone()).limit(100_000))
        .await?;
    let short = short_ids(all.iter().map(|d| d.id));
    if let Some(spec) = id {
        let id = resolve_id(spec, all.iter().map(|d| d.id))?;
        let d = app
            .engine
            .get(&app.tenant, id)
            .await?
            .ok_or_else(|| Error::invalid_input(format!("no delivery {id} in this tenant")))?;
        let history = app.engine.history(&app.tenant, id).await?;
        if json {
            let mut doc = delivery_json(&d, &short);
            let entries: Vec<serde_json::Value> = history
                .iter()
                .map(|h| {
                    serde_json::json!({
                        "at": h.at,
                        "from": h.from,
                        "to": h.to,
                        "attempt": h.attempt,
                        "worker": h.worker,
                        "message": h.message,
                    })
                })
                .collect();
            if let Some(obj) = doc.as_object_mut() {
                obj.insert("history".into(), entries.into());
            }
            return print_json(&doc);
        }
        out(&format!("delivery {id} (post {})", d.post_id))?;
        out(&format!("text: {}", excerpt(&d.post.text, 200)))?;
        out("")?;
        print_status_with(std::slice::from_ref(&d), &short)?;
        out("")?;
        let mut rows = vec![vec![
            "at".to_owned(),
            "from".to_owned(),
            "to".to_owned(),
            "attempt".to_owned(),
            "worker".to_owned(),
            "note".to_owned(),
        ]];
        for h in history {
            rows.push(vec![
                h.at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                h.from.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                h.to.to_string(),
                h.attempt.to_string(),
                h.worker.unwrap_or_default(),
                h.message.unwrap_or_default(),
            ]);
        }
        return print_table(&rows);
    }
    let shown: Vec<Delivery> = all
        .into_iter()
        .filter(|d| states.is_empty() || states.contains(&d.state))
        .collect();
    if json {
        let docs: Vec<serde_json::Value> = shown.iter().map(|d| delivery_json(d, &short)).collect();
        return print_json(&serde_json::Value::Array(docs));
    }
    if shown.is_empty() && states.is_empty() {
        out(&format!("No delivery for tenant `{}`.", app.tenant))
    } else if shown.is_empty() {
        out(&format!(
            "No delivery in those states for tenant `{}`.",
            app.tenant
        ))
    } else {
        print_status_with(&shown, &short)
    }
}

/// The shortest prefix of each id, of at least [`SHORT_ID_MIN`] characters, that no other id
/// of `ids` shares (as git abbreviates commits). Ids are UUIDv7: those made in the same
/// moments share their first characters, so some prefixes are longer.
pub fn short_ids(ids: impl IntoIterator<Item = Uuid>) -> HashMap<Uuid, String> {
    let mut texts: Vec<(Uuid, String)> = ids.into_iter().map(|id| (id, id.to_string())).collect();
    texts.sort_by(|a, b| a.1.cmp(&b.1));
    let common = |a: &str, b: &str| a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let mut out = HashMap::with_capacity(texts.len());
    for i in 0..texts.len() {
        let text = &texts[i].1;
        let before = i.checked_sub(1).map_or(0, |j| common(&texts[j].1, text));
        let after = texts.get(i + 1).map_or(0, |n| common(&n.1, text));
        let len = (before.max(after) + 1).max(SHORT_ID_MIN).min(text.len());
        out.insert(texts[i].0, text[..len].to_owned());
    }
    out
}

/// The fewest characters a short id has.
pub const SHORT_ID_MIN: usize = 8;

/// The one id of `ids` that `spec` names: a whole id, or a prefix only one of them has.
pub fn resolve_id(spec: &str, ids: impl IntoIterator<Item = Uuid>) -> Result<Uuid> {
    let spec = spec.trim().to_ascii_lowercase();
    if let Ok(id) = Uuid::parse_str(&spec) {
        return Ok(id);
    }
    if spec.len() < 4 || !spec.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(Error::invalid_input(format!(
            "`{spec}` is not a delivery id: give the id `status` shows, or at least its first 4 \
             characters"
        )));
    }
    let matching: Vec<Uuid> = ids
        .into_iter()
        .filter(|id| id.to_string().starts_with(&spec))
        .collect();
    match matching.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::invalid_input(format!(
            "no delivery id of this tenant starts with `{spec}`"
        ))),
        many => Err(Error::invalid_input(format!(
            "`{spec}` is ambiguous: {} deliveries start with it ({}); give more characters",
            many.len(),
            many.iter()
                .take(5)
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Resolves `spec` among the tenant's deliveries.
pub async fn resolve(app: &App, spec: &str) -> Result<Uuid> {
    if let Ok(id) = Uuid::parse_str(spec.trim()) {
        return Ok(id);
    }
    let all = app
        .engine
        .list(&DeliveryFilter::tenant(app.tenant.clone()).limit(100_000))
        .await?;
    resolve_id(spec, all.iter().map(|d| d.id))
}

/// A delivery as `--json` shows it: what the table shows, in full (never a token or an
/// adapter's checkpoint).
pub fn delivery_json(d: &Delivery, short: &HashMap<Uuid, String>) -> serde_json::Value {
    serde_json::json!({
        "id": d.id,
        "short_id": short.get(&d.id).cloned().unwrap_or_else(|| d.id.to_string()),
        "post_id": d.post_id,
        "platform": d.target.platform,
        "account_id": d.target.account_id,
        "state": d.state,
        "due_at": d.due_at,
        "run_at": d.run_at,
        "attempt": d.attempt,
        "max_attempts": d.max_attempts,
        "text": d.post.text,
        "title": d.post.title,
        "remote_id": d.receipt.as_ref().map(|r| r.remote_id.clone()),
        "url": d.receipt.as_ref().and_then(|r| r.url.clone()),
        "error": d.last_error.as_ref().map(|e| serde_json::json!({
            "kind": e.kind,
            "message": e.message,
        })),
    })
}

/// `retry`: publishes a failed (or `needs_reauth`) delivery again: the same delivery, a new
/// attempt, its history kept. `Ok(false)` when it is not one to retry.
pub async fn retry(app: &App, id: Uuid) -> Result<bool> {
    match app.engine.retry(&app.tenant, id).await? {
        RetryOutcome::Retrying(d) => {
            out(&format!(
                "retrying {id} ({}/{}): due now; `socialpub run` publishes it",
                d.target.platform, d.target.account_id
            ))?;
            Ok(true)
        }
        RetryOutcome::NotRetryable(state) => {
            let why = match state {
                DeliveryState::Published => "it is already published",
                DeliveryState::Cancelled => "it was cancelled: schedule the post again",
                DeliveryState::Unconfirmed => {
                    "it may already be on the platform (unconfirmed): check the account first"
                }
                _ => "only a failed or needs_reauth delivery is retried",
            };
            out(&format!("not retried: {id} is {state}; {why}"))?;
            Ok(false)
        }
        _ => Err(Error::invalid_input(format!(
            "no delivery {id} in this tenant"
        ))),
    }
}

/// `cancel`: cancels a delivery unless its create request may already be out.
pub async fn cancel(app: &App, id: Uuid) -> Result<bool> {
    match app.engine.cancel(&app.tenant, id).await? {
        CancelOutcome::Cancelled(_) => {
            out(&format!("cancelled {id}: it will not be published"))?;
            Ok(true)
        }
        CancelOutcome::AlreadyCancelled => {
            out(&format!("{id} was already cancelled"))?;
            Ok(true)
        }
        CancelOutcome::TooLate(state) => {
            out(&format!("too late to cancel {id}: it is {state}"))?;
            Ok(false)
        }
        CancelOutcome::NotFound => Err(Error::invalid_input(format!(
            "no delivery {id} in this tenant"
        ))),
        _ => Ok(false),
    }
}

/// What `disconnect` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnected {
    /// Revoked at the platform, then deleted here.
    Revoked,
    /// The platform no longer knew the token (already revoked or expired); deleted here.
    AlreadyInvalid,
    /// Deleted here only (`--local`): the token was not revoked and stays valid at the
    /// platform until it expires or the user removes the app's access.
    ForgottenLocally,
}

/// `disconnect`: revokes the account's token at the platform and deletes it here. A token that
/// cannot be revoked (no credentials for the platform, no revocation endpoint, the platform
/// unreachable) is kept, with the reason, unless `local`, which deletes it without contacting
/// the platform.
pub async fn disconnect(
    app: &App,
    platform: Platform,
    account: &str,
    local: bool,
) -> Result<Disconnected> {
    let key = AccountKey::new(app.tenant.clone(), platform, account);
    let store = app.tokens.store();
    if !store.list(&app.tenant).await?.contains(&key) {
        return Err(Error::invalid_input(format!("{key} is not connected")));
    }
    let keep_hint = format!(
        "the token is kept; `socialpub disconnect {platform} {account} --local` forgets it here \
         without revoking it (it then stays valid at {platform} until it expires or the app's \
         access is removed in the account's settings)"
    );
    let outcome = if local {
        Disconnected::ForgottenLocally
    } else {
        let redirect = url::Url::parse("http://127.0.0.1/callback")
            .map_err(|e| Error::internal(format!("bad redirect URI: {e}")))?;
        let connector = app.platforms.connector(platform, &redirect).map_err(|e| {
            Error::configuration(format!("not revoked: {}; {keep_hint}", e.message()))
        })?;
        let token = store.get(&key).await.map_err(|e| {
            Error::new(
                e.kind(),
                format!("not revoked: {}; {keep_hint}", e.message()),
            )
        })?;
        let Some(token) = token else {
            return Err(Error::invalid_input(format!("{key} is not connected")));
        };
        match connector.revoke(&key, &token).await {
            Ok(()) => Disconnected::Revoked,
            Err(e) if e.kind() == socialpub_core::ErrorKind::ReauthRequired => {
                Disconnected::AlreadyInvalid
            }
            Err(e) if e.kind() == socialpub_core::ErrorKind::Unsupported => {
                return Err(Error::unsupported(format!(
                    "not revoked: {platform} offers no way to revoke a token; {keep_hint}"
                )));
            }
            Err(e) => {
                return Err(Error::new(
                    e.kind(),
                    format!(
                        "not revoked: {platform} answered: {}; {keep_hint}",
                        without_details(&e.to_string())
                    ),
                ));
            }
        }
    };
    store.delete(&key).await?;
    let line = match outcome {
        Disconnected::Revoked => {
            format!("disconnected {key}: token revoked at {platform} and deleted here")
        }
        Disconnected::AlreadyInvalid => format!(
            "disconnected {key}: {platform} no longer accepted the token (already revoked or \
             expired); deleted here"
        ),
        Disconnected::ForgottenLocally => format!(
            "forgot {key} here: the token was NOT revoked, and stays valid at {platform} until \
             it expires or the app's access is removed in the account's settings"
        ),
    };
    out(&line)?;
    Ok(outcome)
}

/// `reencrypt`: re-seals with the current key every token sealed with an older one (after a
/// key rotation; see the security guide). Prints how many.
pub async fn reencrypt(app: &App) -> Result<usize> {
    let n = app.sealed.reencrypt_all().await?;
    out(&format!("re-sealed {n} tokens with the current key"))?;
    Ok(n)
}

/// `purge`: deletes final deliveries and events older than `older_than`.
pub async fn purge(app: &App, older_than: Duration) -> Result<()> {
    let report = app.engine.purge_older_than(older_than).await?;
    out(&format!(
        "purged {} deliveries and {} events",
        report.deliveries, report.events
    ))
}

/// `export`: everything kept about `tenant` as JSON on standard output (tokens excluded),
/// with the accounts connected.
pub async fn export(app: &App, tenant: &str) -> Result<()> {
    let mut doc = app.engine.export_tenant(tenant).await?;
    let accounts: Vec<serde_json::Value> = app
        .tokens
        .store()
        .list(tenant)
        .await?
        .into_iter()
        .map(|k| serde_json::json!({ "platform": k.platform, "account_id": k.account_id }))
        .collect();
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("accounts".into(), accounts.into());
    }
    print_json(&doc)
}

/// Writes `text` and a newline to standard output. A reader that went away (`socialpub export
/// | head`) is not an error: the rest of the output is dropped and the command ends normally.
pub fn out(text: &str) -> Result<()> {
    write_out(&mut std::io::stdout().lock(), text)
}

/// [`out`] to any writer.
pub fn write_out(w: &mut impl std::io::Write, text: &str) -> Result<()> {
    match w
        .write_all(text.as_bytes())
        .and_then(|()| w.write_all(b"\n"))
        .and_then(|()| w.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::internal(format!(
            "cannot write to standard output: {e}"
        ))),
    }
}

/// Prints `doc` as pretty JSON.
pub fn print_json(doc: &serde_json::Value) -> Result<()> {
    out(&serde_json::to_string_pretty(doc)?)
}

/// One line for an event, as `run`, `post` and the demo print them; it names the delivery.
pub fn describe_event(e: &Event) -> String {
    let who = format!("{}/{}", e.target.platform, e.target.account_id);
    let mut line = format!(
        "{} {:<12} {who}",
        e.at.format("%H:%M:%S%.3f"),
        e.kind.as_str()
    );
    if let Some(id) = e.delivery_id {
        line.push_str(&format!(" {id}"));
    }
    if e.attempt > 0 {
        line.push_str(&format!(" attempt {}", e.attempt));
    }
    match e.kind {
        EventKind::Published | EventKind::Recovered => {
            if let Some(r) = &e.receipt {
                line.push_str(&format!(
                    " → {}",
                    r.url.clone().unwrap_or_else(|| r.remote_id.clone())
                ));
            }
        }
        EventKind::Retrying => {
            if let Some(next) = e.next_at {
                line.push_str(&format!(" (again at {})", next.format("%H:%M:%S%.3f")));
            }
        }
        _ => {}
    }
    if let Some(m) = &e.message {
        line.push_str(&format!(": {}", without_details(m)));
    }
    line
}

/// A message made from an `Error`'s `Display`, without the details it ends with in
/// parentheses (`(kind=…, status=…)`), for tables and event lines.
pub fn without_details(message: &str) -> &str {
    match message.rfind(" (kind=") {
        Some(i) if message.ends_with(')') => &message[..i],
        _ => message,
    }
}

/// The status table of `deliveries`, with their short ids among themselves.
pub fn print_status(deliveries: &[Delivery]) -> Result<()> {
    print_status_with(deliveries, &short_ids(deliveries.iter().map(|d| d.id)))
}

/// The status table, each id shortened as `short` says.
pub fn print_status_with(deliveries: &[Delivery], short: &HashMap<Uuid, String>) -> Result<()> {
    let mut rows = vec![header()];
    rows.extend(deliveries.iter().map(|d| {
        let mut row = status_row(d);
        if let Some(s) = short.get(&d.id) {
            row[0] = s.clone();
        }
        row
    }));
    print_table(&rows)
}

/// The status table's header.
pub fn header() -> Vec<String> {
    [
        "id", "due", "platform", "account", "state", "attempts", "remote", "text", "error",
    ]
    .map(String::from)
    .to_vec()
}

/// One delivery as a status row (its full id; [`print_status_with`] shortens it): id, due
/// time, platform, account, state, attempts, remote id or URL, a text excerpt, error.
pub fn status_row(d: &Delivery) -> Vec<String> {
    vec![
        d.id.to_string(),
        d.due_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        d.target.platform.to_string(),
        d.target.account_id.clone(),
        d.state.to_string(),
        d.attempt.to_string(),
        d.receipt
            .as_ref()
            .map(|r| r.url.clone().unwrap_or_else(|| r.remote_id.clone()))
            .unwrap_or_default(),
        excerpt(d.post.title.as_deref().unwrap_or(&d.post.text), 30),
        error_cell(d),
    ]
}

/// The first `max` characters of `text` on one line, with `…` when cut.
pub fn excerpt(text: &str, max: usize) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        one_line
            .chars()
            .take(max.saturating_sub(1))
            .chain(std::iter::once('…'))
            .collect()
    }
}

/// The error column: the last error's message and class; for a delivery published after a
/// failure, what it recovered from.
pub fn error_cell(d: &Delivery) -> String {
    let Some(e) = &d.last_error else {
        return String::new();
    };
    let message = without_details(&e.message);
    if d.state == DeliveryState::Published {
        format!("recovered from: {message} [{}]", e.kind)
    } else {
        format!("{message} [{}]", e.kind)
    }
}

/// Prints rows as aligned columns; the first row is the header.
pub fn print_table(rows: &[Vec<String>]) -> Result<()> {
    for line in table_lines(rows) {
        out(&line)?;
    }
    Ok(())
}

/// Rows as aligned lines, the header underlined; cells over 60 characters are cut (but the
/// last).
pub fn table_lines(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count().min(60))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut lines = Vec::with_capacity(rows.len() + 1);
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                let cell: String = if cell.chars().count() > 60 && c + 1 < row.len() {
                    cell.chars().take(59).chain(std::iter::once('…')).collect()
                } else {
                    cell.clone()
                };
                if c + 1 == row.len() {
                    cell
                } else {
                    format!("{cell:<w$}", w = widths[c])
                }
            })
            .collect();
        lines.push(line.join("  ").trim_end().to_owned());
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
            lines.push(rule.join("  "));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        let now = Utc::now();
        assert_eq!(
            parse_time("+10m", now).expect("relative"),
            now + chrono::Duration::minutes(10)
        );
        assert!(parse_time("2026-12-01T09:00:00Z", now).is_ok());
        assert!(parse_time("tomorrow", now).is_err());
        assert_eq!(
            parse_duration("90d").expect("days"),
            Duration::from_secs(90 * 86_400)
        );
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn a_time_in_the_past_is_refused_unless_allowed() {
        let now = Utc::now();
        let e = schedule_time(Some("2020-01-01T09:00:00Z"), false, now).expect_err("past");
        assert!(e.message().contains("--allow-past"), "{e}");
        assert!(schedule_time(Some("2020-01-01T09:00:00Z"), true, now).is_ok());
        let e = schedule_time(Some("-10m"), false, now).expect_err("a negative delay");
        assert!(e.message().contains("`-10m` is in the past"), "{e}");
        assert_eq!(schedule_time(None, false, now).expect("--now"), now);
        assert_eq!(
            schedule_time(Some("+1h"), false, now).expect("later"),
            now + chrono::Duration::hours(1)
        );
    }

    #[test]
    fn short_ids_are_the_shortest_unique_prefixes() {
        // UUIDv7 made in the same millisecond share their first 15 characters.
        let a = Uuid::parse_str("0197a3b2-4c1d-7abc-8def-0123456789ab").expect("a");
        let b = Uuid::parse_str("0197a3b2-4c1d-7abd-8def-0123456789ab").expect("b");
        let c = Uuid::parse_str("11111111-2222-7333-8444-555555555555").expect("c");
        let short = short_ids([a, b, c]);
        assert_eq!(short[&a], "0197a3b2-4c1d-7abc");
        assert_eq!(short[&b], "0197a3b2-4c1d-7abd");
        assert_eq!(short[&c], "11111111");
        for (id, s) in &short {
            assert_eq!(resolve_id(s, [a, b, c]).expect("unique"), *id);
        }
        let e = resolve_id("0197a3b2", [a, b, c]).expect_err("ambiguous");
        assert!(e.message().contains("ambiguous"), "{e}");
        assert!(
            resolve_id("2222", [a, b, c]).is_err(),
            "a prefix, not a substring"
        );
        assert!(resolve_id("xyz!", [a, b, c]).is_err());
        assert_eq!(resolve_id(&c.to_string(), []).expect("a whole id"), c);
    }

    #[test]
    fn the_status_row_shows_the_due_time_and_the_text() {
        let (deliveries, _) = socialpub_core::testkit::schedule::new_post("t", &["a"], 0);
        let d = &deliveries[0];
        let row = status_row(d);
        assert_eq!(row.len(), header().len());
        assert_eq!(row[1], d.due_at.format("%Y-%m-%d %H:%M UTC").to_string());
        assert_eq!(row[7], excerpt(&d.post.text, 30));
        assert_eq!(excerpt("a  b\nc", 10), "a b c");
        assert_eq!(excerpt("abcdefghijkl", 5), "abcd…");
    }

    #[test]
    fn a_reader_that_went_away_is_not_an_error() {
        struct Closed;
        impl std::io::Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert!(write_out(&mut Closed, "anything").is_ok());
    }

    #[test]
    fn an_unconfirmed_delivery_is_settled_only_when_nobody_holds_it() {
        use socialpub_core::schedule::Lease;
        let (deliveries, _) = socialpub_core::testkit::schedule::new_post("t", &["a"], 0);
        let mut d = deliveries.into_iter().next().expect("a delivery");
        assert!(!settled(&d), "scheduled");
        d.state = DeliveryState::Unconfirmed;
        d.run_at = None;
        d.lease = Some(Lease {
            owner: "w".into(),
            fence: 1,
            expires_at: Utc::now(),
        });
        assert!(!settled(&d), "a worker is looking it up");
        d.lease = None;
        assert!(settled(&d), "nothing left to try");
        d.run_at = Some(Utc::now());
        assert!(!settled(&d), "due for another lookup");
    }
}
