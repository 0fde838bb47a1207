//! The `socialpub` binary as a user runs it: a reader that goes away, a wrong key, a store that
//! cannot be opened, Ctrl-C in the demo.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use socialpub_core::auth::{AccountKey, EncryptionKey, Token};
use socialpub_core::schedule::Scheduler;
use socialpub_core::{Platform, Post, Target};
use socialpub_examples::app::App;
use socialpub_examples::config::Config;
use socialpub_examples::platforms::Platforms;

/// The binary with a clean `SOCIALPUB_*` environment: only what a test sets.
fn socialpub(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_socialpub"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SOCIALPUB_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir).env("RUST_LOG", "error");
    cmd
}

fn key() -> String {
    EncryptionKey::generate().to_base64().as_str().to_owned()
}

/// A SQLite store in `dir` sealed with `key`, holding a token and `n` scheduled posts.
async fn store_with(dir: &std::path::Path, key: &str, n: usize) -> String {
    let url = format!("sqlite://{}", dir.join("socialpub.db").display());
    let config = Config::from_toml("", |name| match name {
        "SOCIALPUB_STORE_URL" => Some(url.clone()),
        "SOCIALPUB_ENCRYPTION_KEY" => Some(key.to_owned()),
        _ => None,
    })
    .expect("config");
    let platforms = Platforms::from_config(&config, reqwest::Client::new()).expect("platforms");
    let app = App::open(&config, platforms).await.expect("app");
    app.tokens
        .connect(
            &AccountKey::new("default", Platform::X, "42"),
            &Token::new("access").with_refresh_token("refresh"),
        )
        .await
        .expect("token");
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    for i in 0..n {
        let post = Post::new(format!("post {i}: {}", "words ".repeat(40)))
            .with_target(Target::new(Platform::X, "42"));
        app.engine
            .schedule("default", &post, later)
            .await
            .expect("schedule");
    }
    app.store.close().await;
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_into_a_reader_that_goes_away_exits_quietly() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = key();
    // Well over a pipe's buffer, so the writer meets the closed pipe.
    let url = store_with(dir.path(), &key, 300).await;
    let mut child = socialpub(dir.path())
        .arg("export")
        .env("SOCIALPUB_STORE_URL", &url)
        .env("SOCIALPUB_ENCRYPTION_KEY", &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut head = [0u8; 64];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut head)
        .expect("the start of the export");
    // `head` has what it wanted; dropping the pipe closes it.
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_wrong_key_and_fails_for_a_store_it_cannot_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let right = key();
    let url = store_with(dir.path(), &right, 0).await;

    let ok = socialpub(dir.path())
        .arg("check")
        .env("SOCIALPUB_STORE_URL", &url)
        .env("SOCIALPUB_ENCRYPTION_KEY", &right)
        .output()
        .expect("run");
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("opens"),
        "{ok:?}"
    );

    let wrong = socialpub(dir.path())
        .arg("check")
        .env("SOCIALPUB_STORE_URL", &url)
        .env("SOCIALPUB_ENCRYPTION_KEY", key())
        .output()
        .expect("run");
    assert!(!wrong.status.success(), "a wrong key fails the check");
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("wrong key (key id `primary`)"), "{stderr}");

    let unopenable = socialpub(dir.path())
        .arg("check")
        .env("SOCIALPUB_STORE_URL", "sqlite:///no/such/dir/socialpub.db")
        .env("SOCIALPUB_ENCRYPTION_KEY", &right)
        .output()
        .expect("run");
    assert!(!unopenable.status.success(), "{unopenable:?}");
    let stderr = String::from_utf8_lossy(&unopenable.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_in_the_demo_leaves_no_temporary_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut child = socialpub(tmp.path())
        .args(["demo", "--video-mib", "64", "--lead", "60"])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Wait for the demo's video to exist, then press Ctrl-C.
    let start = Instant::now();
    let has_video = || {
        walk(tmp.path())
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "mp4"))
    };
    while !has_video() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the demo made no video"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = child.wait().expect("wait");
    assert!(
        !status.success(),
        "an interrupted demo does not claim success"
    );
    let left = walk(tmp.path());
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            files.extend(walk(&path));
            if std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none()) {
                files.push(path);
            }
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_take_json_and_status_takes_a_short_id() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = key();
    let url = store_with(dir.path(), &key, 2).await;
    let run = |args: &[&str]| {
        socialpub(dir.path())
            .args(args)
            .env("SOCIALPUB_STORE_URL", &url)
            .env("SOCIALPUB_ENCRYPTION_KEY", &key)
            .output()
            .expect("run")
    };
    let out = run(&["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 2);
    let first = &list[0];
    assert!(first["due_at"].is_string(), "{first}");
    assert!(
        first["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("post ")),
        "{first}"
    );
    let short = first["short_id"].as_str().expect("short id");
    assert!(short.len() < 36, "{short}");

    // The table shows the same short id, the due time and the text; the short id finds it.
    let table = run(&["status"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains(short), "{text}");
    assert!(text.contains("due") && text.contains("post 0"), "{text}");
    let one = run(&["status", short]);
    assert!(one.status.success(), "{one:?}");
    assert!(
        String::from_utf8_lossy(&one.stdout).contains(first["id"].as_str().expect("id")),
        "{one:?}"
    );

    let accounts = run(&["accounts", "--json"]);
    assert!(accounts.status.success(), "{accounts:?}");
    let accounts: serde_json::Value = serde_json::from_slice(&accounts.stdout).expect("JSON");
    assert_eq!(accounts[0]["account_id"], "42");
    assert!(
        !String::from_utf8_lossy(&run(&["accounts", "--json"]).stdout).contains("\"access\""),
        "no token in the listing"
    );
}

#[test]
fn a_negative_delay_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = socialpub(dir.path())
        .args(["schedule", "--at", "-10m", "--text", "hi"])
        .env("SOCIALPUB_STORE_URL", "memory:")
        .env("SOCIALPUB_ENCRYPTION_KEY", key())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`-10m` is in the past"), "{stderr}");
}
