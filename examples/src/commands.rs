//! The everyday commands: accounts, post, schedule, run, status, cancel, disconnect,
//! reencrypt, purge, export. Each takes the assembled [`App`].

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use socialpub_core::auth::AccountKey;
use socialpub_core::post::PostPart;
use socialpub_core::schedule::{
    CancelOutcome, Delivery, DeliveryFilter, DeliveryState, Event, EventKind, Scheduler,
};
use socialpub_core::{Error, Media, Platform, Post, Result, Target, TokenStore};
use uuid::Uuid;

use crate::app::App;
use crate::platforms::display_name;

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
        let mut post = Post::new(self.text.clone());
        if let Some(t) = &self.title {
            post = post.with_title(t.clone());
        }
        for (i, path) in self.media.iter().enumerate() {
            let mut m = Media::from_path(path).await?;
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
        for t in targets {
            if !post.targets.contains(&t) {
                post = post.with_target(t);
            }
        }
        Ok(post)
    }
}

/// Parses a time: RFC 3339 (`2026-12-01T09:00:00Z`) or a delay from now (`+90s`, `+10m`,
/// `+2h`, `+1d`).
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Some(delay) = s.strip_prefix('+') {
        return Ok(now + chrono::Duration::from_std(parse_duration(delay)?).unwrap_or_default());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Error::invalid_input(format!(
                "`{s}` is not a time: use RFC 3339 (2026-12-01T09:00:00Z) or +10m ({e})"
            ))
        })
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

/// `accounts`: the connected accounts of the tenant (never their tokens).
pub async fn accounts(app: &App) -> Result<()> {
    let store = app.tokens.store();
    let mut rows = vec![vec![
        "platform".to_owned(),
        "account".to_owned(),
        "name".to_owned(),
        "access expires".to_owned(),
        "refresh token".to_owned(),
    ]];
    for key in store.list(&app.tenant).await? {
        let token = store.get(&key).await?;
        rows.push(vec![
            key.platform.to_string(),
            key.account_id.clone(),
            display_name(&key, token.as_ref()),
            token
                .as_ref()
                .and_then(|t| t.expires_at)
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| "-".into()),
            match token.as_ref().map(|t| t.refresh_token.is_some()) {
                Some(true) => "yes".into(),
                _ => "no".into(),
            },
        ]);
    }
    if rows.len() == 1 {
        println!("No account connected for tenant `{}`.", app.tenant);
    } else {
        print_table(&rows);
    }
    Ok(())
}

/// `schedule`: validates and schedules `post` at `at`; prints its deliveries.
pub async fn schedule(app: &App, post: &Post, at: DateTime<Utc>) -> Result<Vec<Uuid>> {
    let scheduled = app.engine.schedule(&app.tenant, post, at).await?;
    for (id, t) in scheduled.deliveries.iter().zip(&post.targets) {
        println!(
            "scheduled {id} for {}/{} at {}",
            t.platform,
            t.account_id,
            at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    Ok(scheduled.deliveries)
}

/// `post`: publishes now: schedules for now and runs the workers until every delivery of the
/// post has settled. Returns whether all were published.
pub async fn post_now(app: &App, post: &Post) -> Result<bool> {
    let mut events = app.engine.subscribe();
    let ids = schedule(app, post, Utc::now()).await?;
    let workers = app.engine.start();
    let printer = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            println!("{}", describe_event(&e));
        }
    });
    let done = wait_settled(app, &ids, Duration::from_secs(3600)).await;
    workers.shutdown().await;
    printer.abort();
    let done = done?;
    print_status(&done);
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
pub async fn run(app: &App) -> Result<()> {
    let mut events = app.engine.subscribe();
    let workers = app.engine.start();
    println!(
        "workers running for tenant `{}`; Ctrl-C stops them",
        app.tenant
    );
    let printer = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            println!("{}", describe_event(&e));
        }
    });
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| Error::internal(format!("cannot wait for Ctrl-C: {e}")))?;
    println!("stopping: waiting for publishes in flight…");
    workers.shutdown().await;
    printer.abort();
    println!("stopped");
    Ok(())
}

/// `status`: the tenant's deliveries (optionally in some states), or one delivery's history.
pub async fn status(app: &App, id: Option<Uuid>, states: &[DeliveryState]) -> Result<()> {
    if let Some(id) = id {
        let d = app
            .engine
            .get(&app.tenant, id)
            .await?
            .ok_or_else(|| Error::invalid_input(format!("no delivery {id} in this tenant")))?;
        print_status(std::slice::from_ref(&d));
        println!();
        let mut rows = vec![vec![
            "at".to_owned(),
            "from".to_owned(),
            "to".to_owned(),
            "attempt".to_owned(),
            "worker".to_owned(),
            "note".to_owned(),
        ]];
        for h in app.engine.history(&app.tenant, id).await? {
            rows.push(vec![
                h.at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                h.from.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                h.to.to_string(),
                h.attempt.to_string(),
                h.worker.unwrap_or_default(),
                h.message.unwrap_or_default(),
            ]);
        }
        print_table(&rows);
        return Ok(());
    }
    let filter = DeliveryFilter::tenant(app.tenant.clone()).states(states.iter().copied());
    let all = app.engine.list(&filter).await?;
    if all.is_empty() && states.is_empty() {
        println!("No delivery for tenant `{}`.", app.tenant);
    } else if all.is_empty() {
        println!("No delivery in those states for tenant `{}`.", app.tenant);
    } else {
        print_status(&all);
    }
    Ok(())
}

/// `cancel`: cancels a delivery unless its create request may already be out.
pub async fn cancel(app: &App, id: Uuid) -> Result<bool> {
    match app.engine.cancel(&app.tenant, id).await? {
        CancelOutcome::Cancelled(_) => {
            println!("cancelled {id}: it will not be published");
            Ok(true)
        }
        CancelOutcome::AlreadyCancelled => {
            println!("{id} was already cancelled");
            Ok(true)
        }
        CancelOutcome::TooLate(state) => {
            println!("too late to cancel {id}: it is {state}");
            Ok(false)
        }
        CancelOutcome::NotFound => Err(Error::invalid_input(format!(
            "no delivery {id} in this tenant"
        ))),
        _ => Ok(false),
    }
}

/// `disconnect`: revokes the account's token at the platform and deletes it here.
pub async fn disconnect(app: &App, platform: Platform, account: &str) -> Result<()> {
    let key = AccountKey::new(app.tenant.clone(), platform, account);
    if app.tokens.disconnect(&key).await? {
        println!("disconnected {key}: token revoked at {platform} and deleted");
        Ok(())
    } else {
        Err(Error::invalid_input(format!("{key} is not connected")))
    }
}

/// `reencrypt`: re-seals with the current key every token sealed with an older one (after a
/// key rotation; see the security guide). Prints how many.
pub async fn reencrypt(app: &App) -> Result<usize> {
    let n = app.sealed.reencrypt_all().await?;
    println!("re-sealed {n} tokens with the current key");
    Ok(n)
}

/// `purge`: deletes final deliveries and events older than `older_than`.
pub async fn purge(app: &App, older_than: Duration) -> Result<()> {
    let report = app.engine.purge_older_than(older_than).await?;
    println!(
        "purged {} deliveries and {} events",
        report.deliveries, report.events
    );
    Ok(())
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
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// One line for an event, as `run` and the demo print them.
pub fn describe_event(e: &Event) -> String {
    let who = format!("{}/{}", e.target.platform, e.target.account_id);
    let mut line = format!(
        "{} {:<12} {who}",
        e.at.format("%H:%M:%S%.3f"),
        e.kind.as_str()
    );
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

/// The status table: platform, account, state, remote id or URL, attempts, error.
pub fn print_status(deliveries: &[Delivery]) {
    let mut rows = vec![header()];
    rows.extend(deliveries.iter().map(status_row));
    print_table(&rows);
}

/// The status table's header.
pub fn header() -> Vec<String> {
    [
        "id", "platform", "account", "state", "remote", "attempts", "error",
    ]
    .map(String::from)
    .to_vec()
}

/// One delivery as a status row.
pub fn status_row(d: &Delivery) -> Vec<String> {
    vec![
        d.id.to_string(),
        d.target.platform.to_string(),
        d.target.account_id.clone(),
        d.state.to_string(),
        d.receipt
            .as_ref()
            .map(|r| r.url.clone().unwrap_or_else(|| r.remote_id.clone()))
            .unwrap_or_default(),
        d.attempt.to_string(),
        error_cell(d),
    ]
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
pub fn print_table(rows: &[Vec<String>]) {
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
        println!("{}", line.join("  ").trim_end());
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
            println!("{}", rule.join("  "));
        }
    }
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
