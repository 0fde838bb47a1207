//! `socialpub connect <platform>`: the OAuth authorization code flow through a callback server
//! on 127.0.0.1. It serves one callback, checks its state, exchanges the code and stores the
//! token, sealed, in the app's store, and only then answers the browser with the outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use socialpub_core::{Error, ErrorKind, Platform, Result};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use url::Url;

use crate::app::App;
use socialpub_core::auth::ConnectedAccount;

use crate::platforms::DISPLAY_NAME;

/// How long to wait for the user to come back. Pending authorizations expire after 10 minutes.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(600);

type Reply = std::result::Result<(String, String), String>;

/// What the connection came to, for the browser's page: the accounts connected, or why not.
type Outcome = std::result::Result<String, String>;

/// The callback handed to `connect`, with the channel its page waits on for the outcome.
type Handoff = (Reply, oneshot::Sender<Outcome>);

/// How long the browser's page waits for the token exchange before saying to look at the
/// terminal.
const EXCHANGE_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Callback {
    expected_state: String,
    reply: Arc<Mutex<Option<oneshot::Sender<Handoff>>>>,
}

/// Binds the callback server's listener on 127.0.0.1:`port` (0 picks a free port), with a
/// clear error when the port is taken.
pub async fn bind(port: u16) -> Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
        Error::configuration(format!(
            "cannot listen on 127.0.0.1:{port} for the OAuth callback: {e} (set \
             SOCIALPUB_CALLBACK_PORT to a free port, and register its redirect URI)"
        ))
        .with_source(e)
    })
}

/// Connects an account of `platform` for the app's tenant: starts the authorization, hands its
/// URL to `open` (which opens a browser or prints it), serves the callback on `listener`,
/// then exchanges the code and stores the tokens encrypted. Returns the accounts connected.
pub async fn connect(
    app: &App,
    platform: Platform,
    listener: TcpListener,
    open: impl FnOnce(&Url),
) -> Result<Vec<ConnectedAccount>> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal(format!("the callback listener has no address: {e}")))?;
    let redirect = Url::parse(&format!("http://127.0.0.1:{}/callback", addr.port()))
        .map_err(|e| Error::internal(format!("bad redirect URI: {e}")))?;
    let connector = app.platforms.connector(platform, &redirect)?;
    let request = connector.authorize(&app.tenant).await?;

    let (tx, rx) = oneshot::channel();
    let state = Callback {
        expected_state: request.state.clone(),
        reply: Arc::new(Mutex::new(Some(tx))),
    };
    let router = Router::new()
        .route("/callback", get(callback))
        .with_state(state);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    tracing::info!(%platform, redirect_uri = %redirect, "waiting for the OAuth callback");
    open(&request.url);
    let outcome = tokio::time::timeout(CALLBACK_TIMEOUT, rx).await;
    let stop_server = |stop: oneshot::Sender<()>| {
        let _ = stop.send(());
    };

    let ((code, state), page) = match outcome {
        Err(_) => {
            stop_server(stop);
            let _ = server.await;
            return Err(Error::invalid_input(
                "no OAuth callback arrived within 10 minutes; run connect again",
            )
            .with_platform(platform));
        }
        Ok(Err(_)) => {
            stop_server(stop);
            let _ = server.await;
            return Err(Error::internal("the callback server stopped early"));
        }
        Ok(Ok((Err(denied), page))) => {
            let _ = page.send(Err(format!("the authorization was not granted: {denied}")));
            stop_server(stop);
            let _ = server.await;
            return Err(Error::new(
                ErrorKind::Platform,
                format!("the authorization was not granted: {denied}"),
            )
            .with_platform(platform));
        }
        Ok(Ok((Ok(pair), page))) => (pair, page),
    };
    // The browser's page waits for this: "Connected" only once the token is stored.
    let result = async {
        let accounts = connector.complete(&code, &state).await?;
        keep(app, &accounts).await?;
        Ok::<_, Error>(accounts)
    }
    .await;
    let _ = page.send(match &result {
        Ok(accounts) => Ok(accounts
            .iter()
            .map(|a| format!("{} ({})", a.key.account_id, a.name))
            .collect::<Vec<_>>()
            .join(", ")),
        Err(e) => Err(crate::commands::without_details(&e.to_string()).to_owned()),
    });
    // Graceful: the page is answered before the server stops.
    stop_server(stop);
    let _ = server.await;
    result
}

/// Stores the tokens of newly connected accounts, sealed, with their display names.
pub async fn keep(app: &App, accounts: &[ConnectedAccount]) -> Result<()> {
    for account in accounts {
        let mut token = account.token.clone();
        token
            .extras
            .insert(DISPLAY_NAME.to_owned(), serde_json::json!(account.name));
        app.tokens.connect(&account.key, &token).await?;
        tracing::info!(account = %account.key, "account connected; token stored encrypted");
    }
    Ok(())
}

async fn callback(
    State(cb): State<Callback>,
    Query(params): Query<HashMap<String, String>>,
) -> (StatusCode, Html<String>) {
    let state = params.get("state").map(String::as_str).unwrap_or_default();
    // A callback with another state is not ours (or is forged): refuse it and keep waiting.
    if state != cb.expected_state {
        return (
            StatusCode::BAD_REQUEST,
            page("This sign-in link is not the one socialpub is waiting for."),
        );
    }
    let reply = if let Some(err) = params.get("error") {
        let why = params
            .get("error_description")
            .map(|d| format!("{err}: {d}"))
            .unwrap_or_else(|| err.clone());
        Err(why)
    } else if let Some(code) = params.get("code") {
        Ok((code.clone(), state.to_owned()))
    } else {
        return (
            StatusCode::BAD_REQUEST,
            page("The callback has no authorization code."),
        );
    };
    let sender = cb.reply.lock().ok().and_then(|mut s| s.take());
    let Some(tx) = sender else {
        return (
            StatusCode::CONFLICT,
            page("This sign-in was already completed."),
        );
    };
    let (done_tx, done_rx) = oneshot::channel();
    if tx.send((reply, done_tx)).is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            page("socialpub stopped waiting for this sign-in; run connect again."),
        );
    }
    match tokio::time::timeout(EXCHANGE_WAIT, done_rx).await {
        Ok(Ok(Ok(accounts))) => (
            StatusCode::OK,
            page(&format!(
                "Connected {}. You can close this window and return to the terminal.",
                escape(&accounts)
            )),
        ),
        // The page answered; what it says is the outcome.
        Ok(Ok(Err(why))) => (
            StatusCode::OK,
            page(&format!(
                "Not connected: {}. The terminal says more; run connect again.",
                escape(&why)
            )),
        ),
        _ => (
            StatusCode::GATEWAY_TIMEOUT,
            page("The connection is taking long: the terminal shows how it ends."),
        ),
    }
}

/// `text` safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(message: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>socialpub</title><p>{message}</p>"
    ))
}

/// Opens `url` in the default browser, or prints it when that is not possible.
#[allow(clippy::print_stdout)]
pub fn open_in_browser(url: &Url) {
    println!("Open this URL to connect the account:\n\n  {url}\n");
    let opener = if cfg!(target_os = "macos") {
        Some(("open", vec![url.to_string()]))
    } else if cfg!(target_os = "windows") {
        // `start` would read the `&` in the URL as a command separator.
        Some((
            "rundll32",
            vec!["url.dll,FileProtocolHandler".into(), url.to_string()],
        ))
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Some(("xdg-open", vec![url.to_string()]))
    } else {
        None
    };
    if let Some((cmd, args)) = opener {
        let spawned = std::process::Command::new(cmd)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if spawned.is_err() {
            tracing::debug!("could not start a browser; open the URL above by hand");
        }
    }
}
