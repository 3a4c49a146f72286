//! Accepting and serving connections: at most [`connection_cap`] open at
//! once, each closed when its client is too slow to send a request.
//!
//! Every connection holds a file descriptor, and so do the jobs the server
//! runs (pipes, log files). Without a cap, clients that open connections and
//! never finish a request could use up the process's descriptors and make
//! steps fail to start. Past the cap, new connections wait in the kernel's
//! accept queue until an open one closes. A connection that has not sent a
//! whole request head within the header read timeout is closed, whether it
//! is new or idle between keep-alive requests, so idle clients cannot hold
//! every slot either. The timeout covers reading request heads only, so a
//! long response such as an SSE stream is never cut by it.
//!
//! Only HTTP/1.1 is served: the header read timeout exists for HTTP/1 alone,
//! and browsers use HTTP/2 only over TLS, which this server does not speak.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections served at once at most, however many descriptors the
/// process may open.
pub const MAX_CONNECTIONS: usize = 8192;

/// Descriptors kept for the jobs (pipes, log files, the database) and not
/// given to connections.
const RESERVED_DESCRIPTORS: u64 = 512;

/// The cap on open connections: the process's descriptor limit, raised to
/// its hard limit first, less what the jobs need, and at most
/// [`MAX_CONNECTIONS`] and `requested`. Many systems start processes with a
/// soft limit of 1,024, which would allow fewer live log viewers than a team
/// needs.
pub fn connection_cap(requested: Option<usize>) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};

    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(err) => {
                tracing::warn!(soft, hard, error = %err, "failed to raise the open file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(err) => {
            tracing::warn!(error = %err, "failed to read the open file limit");
            1024
        }
    };
    let cap = usize::try_from(limit.saturating_sub(RESERVED_DESCRIPTORS) / 2)
        .unwrap_or(MAX_CONNECTIONS)
        .clamp(64, MAX_CONNECTIONS)
        .min(requested.unwrap_or(usize::MAX));
    tracing::info!(
        open_file_limit = limit,
        connection_cap = cap,
        "connection cap set"
    );
    cap
}

/// Time a client has to send a request head, on a new connection and between
/// keep-alive requests, when the server is not given another.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on the connections `listener` accepts, each in its own task,
/// until `stopping` is cancelled. Then the listener is closed, so that new
/// connections are refused, and every open connection is closed once the
/// response it is sending ends (idle ones at once).
///
/// Returns the tracker of the connection tasks; its `wait` returns once the
/// listener is closed and every connection has ended.
pub fn serve_connections(
    mut listener: LimitedListener,
    app: Router,
    header_read_timeout: Duration,
    stopping: CancellationToken,
) -> TaskTracker {
    let connections = TaskTracker::new();
    let tracker = connections.clone();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);

    tokio::spawn(async move {
        loop {
            let (io, addr) = tokio::select! {
                accepted = axum::serve::Listener::accept(&mut listener) => accepted,
                () = stopping.cancelled() => break,
            };
            let service = TowerToHyperService::new(app.clone());
            let builder = builder.clone();
            let stopping = stopping.clone();
            tracker.spawn(async move {
                let connection = builder.serve_connection(TokioIo::new(io), service);
                tokio::pin!(connection);
                let result = tokio::select! {
                    result = connection.as_mut() => result,
                    () = stopping.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                // Timed-out and reset connections are the client's doing.
                if let Err(err) = result {
                    tracing::debug!(%addr, error = %err, "connection closed with an error");
                }
            });
        }
        drop(listener);
        tracker.close();
    });
    connections
}

pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, max_connections: usize) -> LimitedListener {
        LimitedListener {
            inner,
            permits: Arc::new(Semaphore::new(max_connections)),
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        // axum's own accept retries on errors such as EMFILE.
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (
            LimitedStream {
                io,
                _permit: permit,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that frees its slot when dropped.
pub struct LimitedStream {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
