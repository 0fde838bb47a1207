//! `socialpub`: schedule and publish posts from the command line. See `socialpub --help`.

// A command-line app talks to its user on standard output and standard error.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use socialpub_core::Platform;
use socialpub_examples::config::Config;

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
    /// Check the configuration: store URL, encryption key, platform credentials.
    Check,
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            tracing::debug!(error = ?e, "command failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error, filtered by `RUST_LOG` (default: warnings, and the app's own info).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,socialpub=info,socialpub_examples=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> socialpub_core::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Check => check(&config),
    }
}

fn check(config: &Config) -> socialpub_core::Result<ExitCode> {
    println!("tenant:   {}", config.tenant);
    println!("store:    {}", config.store);
    println!("callback: {}", config.redirect_uri()?);
    let ring = config.key_ring()?;
    println!("key:      `{}` (valid)", ring.current_id());
    for platform in [Platform::X, Platform::YouTube] {
        match config.credentials(platform) {
            Ok(c) => println!(
                "{:<9} client id {}{}",
                platform.as_str(),
                c.client_id,
                if c.client_secret.is_some() {
                    ", secret set"
                } else {
                    ", public client"
                }
            ),
            Err(_) => println!("{:<9} no credentials", platform.as_str()),
        }
    }
    Ok(ExitCode::SUCCESS)
}
