//! `socialpub`: schedule and publish posts from the command line. See `socialpub --help`.

// A command-line app talks to its user on standard error (standard output goes through
// `commands::out`, which stops quietly when the reader goes away).
#![allow(clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use socialpub_core::schedule::DeliveryState;
use socialpub_core::{Platform, Result};
use socialpub_examples::app::App;
use socialpub_examples::commands::{self, PostArgs};
use socialpub_examples::config::Config;
use socialpub_examples::connect;
use socialpub_examples::demo::{self, DemoArgs};
use socialpub_examples::mock::Mocks;
use socialpub_examples::platforms::Platforms;
use socialpub_examples::progress::Lines;

/// A small scheduler for social posts, built on the socialpub crates.
#[derive(Debug, Parser)]
#[command(name = "socialpub", version, about)]
struct Cli {
    /// The configuration file (default: socialpub.toml in the working directory, if present).
    #[arg(long, global = true, env = "SOCIALPUB_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole flow against in-process mocks: no account, no network.
    Demo(DemoArgs),
    /// Start every platform's mock on 127.0.0.1 and print the configuration that points this
    /// app at them (until Ctrl-C).
    Mock,
    /// Check the configuration and the store: opens it and one stored token with the key.
    Check,
    /// Connect an account by OAuth through a callback server on 127.0.0.1.
    Connect {
        /// `x` or `youtube`.
        platform: Platform,
        /// Print the URL instead of opening a browser.
        #[arg(long)]
        no_browser: bool,
    },
    /// List the connected accounts.
    Accounts {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publish now, and wait for the outcome.
    Post(PostArgs),
    /// Schedule a post for later (`run` publishes it).
    Schedule {
        /// When: RFC 3339 (2026-12-01T09:00:00Z) or from now (+10m, +2h).
        #[arg(
            long,
            required_unless_present = "now",
            conflicts_with = "now",
            allow_hyphen_values = true
        )]
        at: Option<String>,
        /// Now (`run` publishes it at once).
        #[arg(long)]
        now: bool,
        /// Accept an `--at` in the past (it is published at once).
        #[arg(long)]
        allow_past: bool,
        #[command(flatten)]
        post: PostArgs,
    },
    /// Run the workers until Ctrl-C.
    Run,
    /// Show deliveries, or one delivery with its history.
    Status {
        /// A delivery id, or a prefix of it only one delivery has.
        id: Option<String>,
        /// Only deliveries in this state (repeatable): scheduled, published, failed, …
        #[arg(long)]
        state: Vec<DeliveryState>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publish a failed delivery again: a new attempt, the same delivery, its history kept.
    Retry {
        /// The delivery id (or a prefix only it has).
        id: String,
    },
    /// Cancel a scheduled delivery.
    Cancel {
        /// The delivery id (or a prefix only it has).
        id: String,
    },
    /// Revoke an account's token at the platform and delete it here.
    Disconnect {
        /// `x` or `youtube`.
        platform: Platform,
        /// The account id (see `accounts`).
        account: String,
        /// Forget the token here without revoking it (when it cannot be revoked).
        #[arg(long)]
        local: bool,
    },
    /// Re-seal every token with the current key, after a key rotation.
    Reencrypt,
    /// Delete finished deliveries and events older than a retention period.
    Purge {
        /// The retention: 90d, 12h, …
        #[arg(long, default_value = "90d")]
        older_than: String,
    },
    /// Print everything kept about a tenant as JSON (tokens excluded).
    Export {
        /// The tenant (default: the configured one).
        #[arg(long)]
        tenant: Option<String>,
    },
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            tracing::debug!(error = ?e, "command failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error, filtered by `RUST_LOG` (default: warnings only).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Runs a command; `Ok(false)` when it ran but did not succeed (exit status 1).
async fn run(cli: Cli) -> Result<bool> {
    if let Command::Demo(args) = &cli.command {
        return demo::run(args).await;
    }
    let config = Config::load(cli.config.as_deref())?;
    if let Command::Mock = cli.command {
        let mocks = Mocks::start(&config).await?;
        for line in mocks.instructions() {
            commands::out(&line)?;
        }
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| socialpub_core::Error::internal(format!("cannot wait for Ctrl-C: {e}")))?;
        return Ok(true);
    }
    if let Command::Check = cli.command {
        check(&config)?;
    }
    if let Command::Connect { platform, .. } = &cli.command {
        config.credentials(*platform)?;
    }
    let http = socialpub_core::http::default_client(std::time::Duration::from_secs(120))?;
    let platforms = Platforms::from_config(&config, http)?;
    // `post` and `run` show their uploads as progress bars.
    let lines = Lines::new();
    let app = if matches!(cli.command, Command::Post(_) | Command::Run) {
        let wrapped = lines.wrap(platforms.publishers()?);
        App::open_with(&config, platforms, move |mut b| {
            for p in wrapped {
                b = b.publisher(p);
            }
            b
        })
        .await?
    } else {
        App::open(&config, platforms).await?
    };
    let ok = match cli.command {
        Command::Demo(_) | Command::Mock => true,
        Command::Check => {
            let found = commands::check_tokens(&app).await?;
            commands::out(&format!("tokens:   {found}"))?;
            true
        }
        Command::Connect {
            platform,
            no_browser,
        } => {
            let listener = connect::bind(config.callback_port).await?;
            let accounts = connect::connect(&app, platform, listener, |url| {
                if no_browser {
                    let _ = commands::out(&format!(
                        "Open this URL to connect the account:\n\n  {url}\n"
                    ));
                } else {
                    connect::open_in_browser(url);
                }
            })
            .await?;
            for a in &accounts {
                commands::out(&format!(
                    "connected {} {} ({}); its token is stored encrypted",
                    a.key.platform, a.key.account_id, a.name
                ))?;
            }
            true
        }
        Command::Accounts { json } => commands::accounts(&app, json).await.map(|()| true)?,
        Command::Post(args) => {
            let post = args.to_post(&app).await?;
            commands::post_now(&app, &post, &lines).await?
        }
        Command::Schedule {
            at,
            now: _,
            allow_past,
            post,
        } => {
            let at = commands::schedule_time(at.as_deref(), allow_past, chrono::Utc::now())?;
            let post = post.to_post(&app).await?;
            commands::schedule(&app, &post, at).await?;
            true
        }
        Command::Run => commands::run(&app, &lines).await.map(|()| true)?,
        Command::Status { id, state, json } => commands::status(&app, id.as_deref(), &state, json)
            .await
            .map(|()| true)?,
        Command::Retry { id } => {
            let id = commands::resolve(&app, &id).await?;
            commands::retry(&app, id).await?
        }
        Command::Cancel { id } => {
            let id = commands::resolve(&app, &id).await?;
            commands::cancel(&app, id).await?
        }
        Command::Disconnect {
            platform,
            account,
            local,
        } => commands::disconnect(&app, platform, &account, local)
            .await
            .map(|_| true)?,
        Command::Reencrypt => commands::reencrypt(&app).await.map(|_| true)?,
        Command::Purge { older_than } => {
            let retention = commands::parse_duration(&older_than)?;
            commands::purge(&app, retention).await.map(|()| true)?
        }
        Command::Export { tenant } => {
            let tenant = tenant.unwrap_or_else(|| app.tenant.clone());
            commands::export(&app, &tenant).await.map(|()| true)?
        }
    };
    app.store.close().await;
    Ok(ok)
}

/// Prints the configuration; the store and a token are checked once the app is open.
fn check(config: &Config) -> Result<()> {
    let say = |line: String| commands::out(&line);
    say(format!("tenant:   {}", config.tenant))?;
    say(format!("store:    {}", config.store))?;
    say(format!("callback: {}", config.redirect_uri()?))?;
    let ring = config.key_ring()?;
    say(format!("key:      `{}` (well formed)", ring.current_id()))?;
    for platform in socialpub_examples::platforms::SUPPORTED {
        match config.credentials(platform) {
            Ok(c) => say(format!(
                "{:<9} client id {}{}{}",
                platform.as_str(),
                c.client_id,
                if c.client_secret.is_some() {
                    ", secret set"
                } else {
                    ", public client"
                },
                c.mock_url
                    .as_deref()
                    .map(|u| format!(", the mock at {u}"))
                    .unwrap_or_default()
            ))?,
            Err(_) => say(format!("{:<9} no credentials", platform.as_str()))?,
        }
    }
    Ok(())
}
