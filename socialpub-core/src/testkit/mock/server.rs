//! [`MockServer`]: a platform mock served on a free port of 127.0.0.1, whose connections the
//! fault layer can kill mid-request (a connection that breaks, as networks do).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

use crate::error::{Error, Result};

/// A running mock server. Dropping it stops the server.
#[derive(Debug)]
pub struct MockServer {
    base: Url,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

impl MockServer {
    /// Serves `router` on a free port of 127.0.0.1. Handlers may read [`Conn`] (as
    /// `ConnectInfo<Conn>`) to kill their connection.
    pub async fn start(router: Router) -> Result<MockServer> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::internal(format!("a mock server cannot bind a port: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("a mock server has no address: {e}")))?;
        let base = Url::parse(&format!("http://{addr}/"))
            .map_err(|e| Error::internal(format!("bad mock URL: {e}")))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(
            KillableListener { inner: listener },
            router.into_make_service_with_connect_info::<Conn>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        let task = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::warn!(error = %e, "a mock server stopped");
            }
        });
        Ok(MockServer {
            base,
            shutdown: Some(tx),
            task,
        })
    }

    /// The base URL, `http://127.0.0.1:PORT/`.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The base URL without its trailing slash, to prefix paths with.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }
}

/// Kills one connection: its reads and writes fail from then on, so the server closes it
/// without an answer.
#[derive(Debug, Clone, Default)]
struct KillSwitch {
    killed: Arc<AtomicBool>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl KillSwitch {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().ok().and_then(|mut w| w.take()) {
            w.wake();
        }
    }

    fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

/// One client connection to a mock: its peer, and a switch that breaks it.
#[derive(Debug, Clone)]
pub struct Conn {
    peer: SocketAddr,
    kill: KillSwitch,
}

impl Conn {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Breaks the connection: nothing more is read or written on it, so the client sees it
    /// drop without an answer.
    pub fn kill(&self) {
        self.kill.kill();
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

struct KillableListener {
    inner: TcpListener,
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let kill = KillSwitch::default();
                    return (
                        KillableStream {
                            inner: stream,
                            kill: kill.clone(),
                        },
                        Conn { peer, kill },
                    );
                }
                // Out of file descriptors and the like: wait and try again, as axum does.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Conn {
            peer: self.inner.local_addr()?,
            kill: KillSwitch::default(),
        })
    }
}

struct KillableStream {
    inner: TcpStream,
    kill: KillSwitch,
}

fn killed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection dropped by the mock",
    )
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.kill.is_killed() {
            return Poll::Ready(Err(killed()));
        }
        if let Ok(mut w) = self.kill.waker.lock() {
            *w = Some(cx.waker().clone());
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.kill.is_killed() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.is_killed() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
