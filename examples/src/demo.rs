//! `socialpub demo`: the whole flow with no account and no network. It starts every adapter's
//! mock in process, connects one account per platform through the real OAuth code path,
//! schedules a realistic set of posts a few seconds ahead, runs the workers with progress bars
//! and live events, prints the status table, and checks against the mocks that every valid
//! post was published exactly once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Args;
use socialpub_core::auth::AccountKey;
use socialpub_core::post::PostPart;
use socialpub_core::schedule::policy::RetryPolicy;
use socialpub_core::schedule::{Delivery, DeliveryState, Scheduler};
use socialpub_core::{Error, ErrorKind, Media, Platform, Post, Result, Target};
use socialpub_x::mock::XMock;
use socialpub_youtube::mock::YouTubeMock;
use socialpub_youtube::{Privacy, YouTubeOptions};
use url::Url;
use uuid::Uuid;

use crate::app::App;
use crate::commands::{describe_event, print_table, settled, status_row};
use crate::config::Config;
use crate::platforms::{Endpoints, Platforms, credentials};
use crate::progress::Lines;
use crate::samples;

/// Options of `socialpub demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The store to use (default: a new SQLite file in a temporary directory).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Size of the generated video, in MiB.
    #[arg(long, default_value_t = 128, value_name = "MIB")]
    pub video_mib: u64,
    /// Seconds from now the posts are scheduled for.
    #[arg(long, default_value_t = 3, value_name = "SECONDS")]
    pub lead: u64,
}

/// A post the demo schedules, with a label for the table and its due time.
struct Planned {
    label: &'static str,
    post: Post,
    at: DateTime<Utc>,
}

/// Runs the demo; `Ok(true)` when every valid post was published exactly once. The encryption
/// key and tenant come from the environment when set.
pub async fn run(args: &DemoArgs) -> Result<bool> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    run_with(
        args,
        env("SOCIALPUB_ENCRYPTION_KEY"),
        env("SOCIALPUB_TENANT"),
    )
    .await
}

/// [`run`] with the key and tenant given. A store kept with `--store` needs a `key`: with a
/// random one, the tokens it keeps could never be opened again. The tenant is `tenant`, else
/// the app's default (`default`), so the other commands see the demo's deliveries. Ctrl-C
/// stops it and removes its temporary files (the large video among them).
pub async fn run_with(
    args: &DemoArgs,
    key: Option<String>,
    tenant: Option<String>,
) -> Result<bool> {
    if args.store.is_some() && key.is_none() {
        return Err(Error::configuration(
            "demo --store keeps the store for the other commands, which need the key that \
             sealed its tokens: set SOCIALPUB_ENCRYPTION_KEY first (make one with `openssl rand \
             -base64 32`)",
        ));
    }
    let dir = tempfile::tempdir()
        .map_err(|e| Error::internal(format!("cannot make a temporary directory: {e}")))?;
    let result = tokio::select! {
        r = demo(args, key, tenant, dir.path()) => r,
        r = tokio::signal::ctrl_c() => {
            r.map_err(|e| Error::internal(format!("cannot wait for Ctrl-C: {e}")))?;
            Err(Error::internal("interrupted; the demo's temporary files are removed"))
        }
    };
    // The demo's tasks are dropped with it: nothing holds the directory any more.
    drop(dir);
    result
}

async fn demo(
    args: &DemoArgs,
    key: Option<String>,
    tenant: Option<String>,
    dir: &Path,
) -> Result<bool> {
    let started = Instant::now();
    let out = Lines::new();

    // 1. The platforms: every adapter's mock, in this process.
    let x_mock = XMock::builder().check_after_secs(1).start().await;
    let yt_mock = YouTubeMock::start().await?;
    out.line(format!(
        "▸ mocks: X at {}, YouTube at {}",
        x_mock.base_url(),
        yt_mock.base_url()
    ));

    // 2. The app, configured as a user would, but pointed at the mocks.
    // The key from the environment when there is one, so the CLI can open a kept store later.
    let key = match key {
        Some(k) => socialpub_core::auth::EncryptionKey::from_base64(&k)?,
        None => socialpub_core::auth::EncryptionKey::generate(),
    };
    let store_url = match &args.store {
        Some(s) => s.clone(),
        None => format!("sqlite://{}", dir.join("socialpub-demo.db").display()),
    };
    let key_b64 = key.to_base64();
    let config = Config::from_toml("", |name| match name {
        "SOCIALPUB_TENANT" => tenant.clone(),
        "SOCIALPUB_STORE_URL" => Some(store_url.clone()),
        "SOCIALPUB_ENCRYPTION_KEY" => Some(key_b64.as_str().to_owned()),
        _ => None,
    })?;
    out.line(format!(
        "▸ store: {}, tenant `{}`",
        config.store, config.tenant
    ));
    let http = socialpub_core::http::default_client(Duration::from_secs(60))?;
    let platforms = Platforms::from_config(&config, http.clone())?
        .with_platform(
            Platform::X,
            credentials(
                socialpub_x::mock::CLIENT_ID,
                Some(socialpub_x::mock::CLIENT_SECRET),
            ),
            Endpoints::x_mock(&x_mock),
        )
        .with_platform(
            Platform::YouTube,
            credentials(YouTubeMock::CLIENT_ID, Some(YouTubeMock::CLIENT_SECRET)),
            Endpoints::youtube_mock(&yt_mock),
        );
    let wrapped = out.wrap(platforms.publishers()?);
    let app = App::open_with(&config, platforms, |mut b| {
        // Demo pacing: retries, status polls and reconciliation in seconds, not minutes.
        let mut retry = RetryPolicy::default();
        retry.base = Duration::from_millis(500);
        retry.cap = Duration::from_secs(2);
        retry.poll_base = Duration::from_millis(300);
        retry.poll_cap = Duration::from_secs(1);
        retry.lookup_base = Duration::from_millis(500);
        retry.lookup_window = Duration::from_secs(20);
        // An absent post is trusted once no create from a lost lease can still land: after
        // the lease (here 5 s) and `absent_after`.
        retry.absent_after = Duration::from_secs(2);
        for p in wrapped {
            b = b.publisher(p);
        }
        b.workers(2).lease(Duration::from_secs(5)).retry(retry)
    })
    .await?;

    // 3. Connect one account per platform through the real OAuth code path: authorization URL
    //    with PKCE and state, the consent page (the mock approves as its user), the redirect
    //    back with a code, the exchange, account discovery, and the token sealed in the store.
    let x_account = connect_through_mock(
        &app,
        Some(&out),
        Platform::X,
        socialpub_x::mock::REDIRECT_URI,
    )
    .await?;
    let yt_account = connect_through_mock(
        &app,
        Some(&out),
        Platform::YouTube,
        YouTubeMock::REDIRECT_URI,
    )
    .await?;

    // 4. Media, made on the fly.
    let media = make_media(dir, args.video_mib).await?;
    out.line(format!(
        "▸ media: 2 PNG images with alt text, a {} MiB MP4 ({})",
        args.video_mib,
        media.video.display()
    ));

    // 5. The posts.
    let now = Utc::now();
    let lead = chrono::Duration::seconds(i64::try_from(args.lead).unwrap_or(3));
    let x = |p: Post| p.with_target(Target::new(Platform::X, x_account.account_id.clone()));
    let mut video = Post::new(format!(
        "A {} MiB video, streamed in chunks to X and YouTube from one scheduled post",
        args.video_mib
    ))
    .with_title("socialpub demo: one post, two platforms")
    .with_media(Media::from_path(&media.video).await?);
    video.set_options(&YouTubeOptions::new().privacy(Privacy::Unlisted))?;
    let plan = vec![
        // Due first, so its create is the first one X sees: the mock answers 503 to it.
        Planned {
            label: "retry after a 503",
            post: x(Post::new(
                "This post meets a 503 on its first try; socialpub checks before posting again.",
            )),
            at: now + lead - chrono::Duration::seconds(1),
        },
        Planned {
            label: "text",
            post: x(Post::new(
                "Hello from the socialpub demo 👋 Scheduled, then published by a worker.",
            )),
            at: now + lead,
        },
        Planned {
            label: "thread",
            post: x(Post::new("A thread, scheduled as one post 🧵 1/3")
                .with_thread_part(PostPart {
                    text: "Each part replies to the one before it. 2/3".into(),
                    media: vec![],
                })
                .with_thread_part(PostPart {
                    text: "A retry resumes the thread instead of starting over. 3/3".into(),
                    media: vec![],
                })),
            at: now + lead,
        },
        Planned {
            label: "images with alt text",
            post: x(
                Post::new("Two images, each with alt text for screen readers.")
                    .with_media(
                        Media::from_path(&media.images[0])
                            .await?
                            .with_alt_text("A gradient from teal to navy"),
                    )
                    .with_media(
                        Media::from_path(&media.images[1])
                            .await?
                            .with_alt_text("A gradient from orange to crimson"),
                    ),
            ),
            at: now + lead,
        },
        Planned {
            label: "video",
            post: video
                .with_target(Target::new(Platform::X, x_account.account_id.clone()))
                .with_target(Target::new(
                    Platform::YouTube,
                    yt_account.account_id.clone(),
                )),
            at: now + lead,
        },
        Planned {
            label: "invalid: too long for X",
            post: x(Post::new(format!(
                "This post is far too long for X, and socialpub says so before sending anything. {}",
                "Every word counts. ".repeat(14)
            ))),
            at: now + lead,
        },
    ];

    x_mock.faults().fail_next("tweets.create", 1, 503);
    let mut events = app.engine.subscribe();
    let mut scheduled: Vec<(&'static str, Uuid)> = Vec::new();
    let mut rejected: Vec<(&'static str, Target, String)> = Vec::new();
    for p in &plan {
        match app.engine.schedule(&app.tenant, &p.post, p.at).await {
            Ok(s) => {
                for id in s.deliveries {
                    scheduled.push((p.label, id));
                }
                out.line(format!(
                    "▸ scheduled {:<22} for {}",
                    p.label,
                    p.at.format("%H:%M:%S")
                ));
            }
            Err(e) if matches!(e.kind(), ErrorKind::Validation | ErrorKind::InvalidInput) => {
                out.line(format!("▸ rejected  {:<22}  {}", p.label, reason(&e)));
                for t in &p.post.targets {
                    rejected.push((p.label, t.clone(), reason(&e)));
                }
            }
            Err(e) => return Err(e),
        }
    }

    // 6. The workers, with live events, until every delivery has settled.
    let labels: HashMap<Uuid, &'static str> = scheduled.iter().map(|(l, id)| (*id, *l)).collect();
    let printer = {
        let out = out.clone();
        tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                let label = e
                    .delivery_id
                    .and_then(|id| labels.get(&id))
                    .copied()
                    .unwrap_or("");
                out.line(format!("  {label:<22} {}", describe_event(&e)));
            }
        })
    };
    let workers = app.engine.start();
    let ids: Vec<Uuid> = scheduled.iter().map(|(_, id)| *id).collect();
    let deliveries = crate::commands::wait_settled(&app, &ids, Duration::from_secs(120)).await;
    workers.shutdown().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    printer.abort();
    out.clear();
    let deliveries = deliveries?;

    // 7. The status table.
    let mut rows = vec![
        [
            "post",
            "platform",
            "account",
            "state",
            "remote id or URL",
            "attempts",
            "error",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (label, id) in &scheduled {
        if let Some(d) = deliveries.iter().find(|d| d.id == *id) {
            let r = status_row(d);
            // status_row: id, due, platform, account, state, attempts, remote, text, error.
            rows.push(vec![
                (*label).to_owned(),
                r[2].clone(),
                r[3].clone(),
                r[4].clone(),
                r[6].clone(),
                r[5].clone(),
                r[8].clone(),
            ]);
        }
    }
    for (label, t, e) in &rejected {
        rows.push(vec![
            (*label).to_owned(),
            t.platform.to_string(),
            t.account_id.clone(),
            "rejected".to_owned(),
            String::new(),
            "0".to_owned(),
            e.clone(),
        ]);
    }
    out.line(String::new());
    print_table(&rows)?;
    out.line(String::new());

    // 8. Check against the mocks' own state: each valid post published exactly once.
    let problems = verify(&deliveries, &x_mock, &yt_mock, &rejected);
    let elapsed = started.elapsed();
    app.store.close().await;
    if problems.is_empty() {
        out.line(format!(
            "✔ {} deliveries published exactly once (checked against the mocks), {} post rejected up front; {:.1} s",
            deliveries.len(),
            rejected.len(),
            elapsed.as_secs_f64()
        ));
        Ok(true)
    } else {
        for p in &problems {
            out.line(format!("✘ {p}"));
        }
        out.line(format!("{:.1} s", elapsed.as_secs_f64()));
        Ok(false)
    }
}

/// The validation issues of a refused post, on one line.
fn reason(e: &Error) -> String {
    match e.validation_report() {
        Some(report) => report
            .issues()
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("; "),
        None => e.message().to_owned(),
    }
}

/// Connects the mock's user: the authorization URL is opened by an HTTP client standing in for
/// the browser; the mock's consent page approves and redirects to `redirect_uri` with a code
/// and the state, which complete the connection exactly as the callback server would.
pub async fn connect_through_mock(
    app: &App,
    out: Option<&Lines>,
    platform: Platform,
    redirect_uri: &str,
) -> Result<AccountKey> {
    let redirect = Url::parse(redirect_uri)
        .map_err(|e| Error::internal(format!("bad mock redirect URI: {e}")))?;
    let connector = app.platforms.connector(platform, &redirect)?;
    let request = connector.authorize(&app.tenant).await?;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::internal(format!("cannot build the browser stand-in: {e}")))?;
    let consent =
        browser.get(request.url.clone()).send().await.map_err(|e| {
            Error::internal(format!("the {platform} mock's consent page failed: {e}"))
        })?;
    let location = consent
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Error::internal(format!(
                "the {platform} mock did not redirect back (HTTP {})",
                consent.status()
            ))
        })?;
    let back = Url::parse(location)
        .map_err(|e| Error::internal(format!("bad redirect from the mock: {e}")))?;
    let param = |name: &str| {
        back.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let (Some(code), Some(state)) = (param("code"), param("state")) else {
        return Err(Error::internal(format!(
            "the {platform} mock redirected without a code"
        )));
    };
    let accounts = connector.complete(&code, &state).await?;
    crate::connect::keep(app, &accounts).await?;
    if let Some(out) = out {
        for a in &accounts {
            out.line(format!(
                "▸ connected {platform} account {} ({}) by OAuth; token sealed in the store",
                a.key.account_id, a.name
            ));
        }
    }
    accounts
        .into_iter()
        .next()
        .map(|a| a.key)
        .ok_or_else(|| Error::internal(format!("the {platform} mock connected no account")))
}

struct DemoMedia {
    images: [PathBuf; 2],
    video: PathBuf,
}

async fn make_media(dir: &Path, video_mib: u64) -> Result<DemoMedia> {
    let images = [dir.join("teal.png"), dir.join("orange.png")];
    let colors = [
        ([0, 128, 128], [10, 20, 80]),
        ([255, 140, 0], [160, 10, 40]),
    ];
    for (path, (from, to)) in images.iter().zip(colors) {
        tokio::fs::write(path, samples::png(640, 360, from, to))
            .await
            .map_err(|e| Error::internal(format!("cannot write {}: {e}", path.display())))?;
    }
    let video = dir.join("demo-video.mp4");
    samples::write_video(
        &video,
        video_mib.max(1) * 1024 * 1024,
        Duration::from_secs(42),
        1280,
        720,
    )?;
    Ok(DemoMedia { images, video })
}

/// Checks the mocks' state against the deliveries: every valid delivery published, with
/// exactly one post (per thread part) or video on the platform, and nothing else there.
fn verify(
    deliveries: &[Delivery],
    x: &XMock,
    yt: &YouTubeMock,
    rejected: &[(&'static str, Target, String)],
) -> Vec<String> {
    let mut problems = Vec::new();
    let x_posts = x.posts();
    let videos: Vec<_> = yt.videos().into_iter().filter(|v| !v.deleted).collect();
    let mut expected_x_posts = 0;
    let mut expected_videos = 0;
    for d in deliveries {
        let who = format!("{}/{}", d.target.platform, d.id);
        if d.state != DeliveryState::Published {
            problems.push(format!("{who} is {}, not published", d.state));
            continue;
        }
        let Some(receipt) = &d.receipt else {
            problems.push(format!("{who} is published without a receipt"));
            continue;
        };
        match d.target.platform {
            Platform::X => {
                let parts: Vec<String> = d.post.parts().map(|(t, _)| t.to_owned()).collect();
                expected_x_posts += parts.len();
                for (i, text) in parts.iter().enumerate() {
                    let same: Vec<_> = x_posts.iter().filter(|p| &p.text == text).collect();
                    if same.len() != 1 {
                        problems.push(format!(
                            "{who}: part {} is on X {} times",
                            i + 1,
                            same.len()
                        ));
                    } else if receipt.parts.get(i).map(|p| &p.id) != Some(&same[0].id) {
                        problems.push(format!("{who}: part {} has another id on X", i + 1));
                    }
                }
            }
            Platform::YouTube => {
                expected_videos += 1;
                if !videos.iter().any(|v| v.id == receipt.remote_id) {
                    problems.push(format!(
                        "{who}: video {} is not on YouTube",
                        receipt.remote_id
                    ));
                }
            }
            _ => {}
        }
    }
    if x_posts.len() != expected_x_posts {
        problems.push(format!(
            "X holds {} posts, {} expected",
            x_posts.len(),
            expected_x_posts
        ));
    }
    if videos.len() != expected_videos {
        problems.push(format!(
            "YouTube holds {} videos, {} expected",
            videos.len(),
            expected_videos
        ));
    }
    if rejected.is_empty() {
        problems.push("the invalid post was not rejected".to_owned());
    }
    if deliveries.iter().any(|d| !settled(d)) {
        problems.push("some deliveries did not settle in time".to_owned());
    }
    problems
}
