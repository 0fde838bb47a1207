//! What `post`, `run` and the demo show while they work: event lines, and a progress bar per
//! media upload in flight, each naming its delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressState, ProgressStyle};
use socialpub_core::auth::AccountKey;
use socialpub_core::publish::{LookupOutcome, Progress, PublishContext, Receipt};
use socialpub_core::validate::ValidationReport;
use socialpub_core::{Capabilities, Platform, Post, Publisher, Result};

/// Before this long, an upload's speed is not shown: the first chunk is often sent before the
/// bar exists, and bytes over a few milliseconds give absurd readings.
pub const SPEED_AFTER: Duration = Duration::from_secs(1);

/// Lines to standard output that do not tear the progress bars, and the bars themselves.
#[derive(Clone)]
pub struct Lines {
    multi: MultiProgress,
    bars: Arc<Mutex<HashMap<String, ProgressBar>>>,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lines")
    }
}

impl Default for Lines {
    fn default() -> Self {
        Self::new()
    }
}

impl Lines {
    /// Lines and bars on the terminal (bars only when standard error is one).
    pub fn new() -> Self {
        Lines {
            multi: MultiProgress::new(),
            bars: Arc::default(),
        }
    }

    /// Prints a line above the bars.
    pub fn line(&self, line: String) {
        if self.multi.is_hidden() {
            let _ = crate::commands::out(&line);
        } else {
            let _ = self.multi.println(line);
        }
    }

    /// Finishes and removes every bar.
    pub fn clear(&self) {
        if let Ok(bars) = self.bars.lock() {
            for b in bars.values() {
                b.finish();
            }
        }
        let _ = self.multi.clear();
    }

    /// Wraps each publisher so that its uploads show as bars here.
    pub fn wrap(&self, publishers: Vec<Arc<dyn Publisher>>) -> Vec<Arc<dyn Publisher>> {
        publishers
            .into_iter()
            .map(|p| {
                Arc::new(WithProgress {
                    inner: p,
                    lines: self.clone(),
                }) as Arc<dyn Publisher>
            })
            .collect()
    }

    fn update(&self, id: String, label: &str, p: Progress) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        let bar = bars.entry(id).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(p.total_bytes));
            let base = p.bytes_sent;
            if let Ok(style) = ProgressStyle::with_template(
                "  {msg:<44} [{bar:30}] {bytes:>10}/{total_bytes:<10} {speed:>12}",
            ) {
                let style = style.progress_chars("=> ").with_key(
                    "speed",
                    move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let sent = s.pos().saturating_sub(base);
                        let _ = w.write_str(&speed_text(sent, s.elapsed()).unwrap_or_default());
                    },
                );
                bar.set_style(style);
            }
            bar.set_message(label.to_owned());
            bar
        });
        bar.set_position(p.bytes_sent);
        if p.bytes_sent >= p.total_bytes {
            bar.finish();
        }
    }
}

/// An upload's speed, `bytes` over `elapsed`, once [`SPEED_AFTER`] has passed and something
/// was sent; `None` before.
pub fn speed_text(bytes: u64, elapsed: Duration) -> Option<String> {
    if elapsed < SPEED_AFTER || bytes == 0 {
        return None;
    }
    let per_sec = (bytes as f64 / elapsed.as_secs_f64()) as u64;
    Some(format!("{}/s", HumanBytes(per_sec)))
}

/// The label of an upload's bar: the delivery (the start of its id), the platform, the
/// post's title or text, and which media.
pub fn bar_label(delivery: Option<&str>, platform: Platform, post: &Post, media: usize) -> String {
    let what = crate::commands::excerpt(post.title.as_deref().unwrap_or(&post.text), 18);
    let id: String = delivery.unwrap_or("?").chars().take(13).collect();
    format!("{id} {platform} {what} #{}", media + 1)
}

/// A publisher that shows its uploads as progress bars, around any other: an example of
/// decorating a [`Publisher`] without touching the adapter.
#[derive(Debug)]
struct WithProgress {
    inner: Arc<dyn Publisher>,
    lines: Lines,
}

#[async_trait]
impl Publisher for WithProgress {
    fn platform(&self) -> Platform {
        self.inner.platform()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn validate(&self, post: &Post) -> ValidationReport {
        self.inner.validate(post)
    }

    async fn publish(&self, ctx: &mut PublishContext, post: &Post) -> Result<Receipt> {
        let lines = self.lines.clone();
        let platform = self.inner.platform();
        // The engine sets the delivery id as the idempotency key.
        let delivery = ctx.idempotency_key().map(str::to_owned);
        let attempt = ctx.attempt();
        let shown = post.clone();
        let sink = move |_key: &AccountKey, p: Progress| {
            let label = bar_label(delivery.as_deref(), platform, &shown, p.media_index);
            let id = format!(
                "{}/{attempt}/{}/{}",
                delivery.as_deref().unwrap_or(""),
                p.part,
                p.media_index
            );
            lines.update(id, &label, p);
        };
        let with_sink = ctx.clone().with_progress(Arc::new(sink));
        *ctx = with_sink;
        self.inner.publish(ctx, post).await
    }

    async fn status(&self, ctx: &PublishContext, receipt: &Receipt) -> Result<Receipt> {
        self.inner.status(ctx, receipt).await
    }

    async fn lookup_recent(
        &self,
        ctx: &PublishContext,
        post: &Post,
        since: DateTime<Utc>,
    ) -> Result<LookupOutcome> {
        self.inner.lookup_recent(ctx, post, since).await
    }

    async fn delete(&self, ctx: &PublishContext, receipt: &Receipt) -> Result<()> {
        self.inner.delete(ctx, receipt).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_speed_before_a_second_has_passed() {
        // The reading that started at 137 GiB/s: a first chunk "sent" in a millisecond.
        assert_eq!(
            speed_text(128 * 1024 * 1024, Duration::from_millis(1)),
            None
        );
        assert_eq!(speed_text(0, Duration::from_secs(5)), None);
        assert_eq!(
            speed_text(8 * 1024 * 1024, Duration::from_secs(2)).as_deref(),
            Some("4.00 MiB/s")
        );
    }

    #[test]
    fn a_bar_names_its_delivery() {
        let post = Post::new("A long video description that goes on");
        let label = bar_label(
            Some("0197a3b2-4c1d-7abc-8def-0123456789ab"),
            Platform::X,
            &post,
            0,
        );
        assert!(label.starts_with("0197a3b2-4c1d x A long video"), "{label}");
        assert!(label.ends_with("#1"), "{label}");
    }
}
