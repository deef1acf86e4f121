//! One client connection: HTTP/1.1 keep-alive or HTTP/2 (detected by hyper-util's auto
//! builder; over TLS when configured, else h2c), with the header-read and keep-alive
//! timeouts enforced from the connection's [`ConnActivity`], and graceful close when
//! the server drains.
//!
//! It must never outlive the shutdown deadline by more than the grace the worker
//! allows, and never wait on a client without a timer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::shutdown::Phase;
use super::App;
use crate::http::activity::{ConnActivity, Verdict};

/// Builds the per-worker connection builder from the configuration.
pub fn builder(app: &App) -> auto::Builder<TokioExecutor> {
    let c = &app.config;
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Timeouts are enforced by `drive`, which knows keep-alive from header reads.
        .header_read_timeout(None)
        .max_headers(c.max_headers as usize)
        .max_buf_size(c.max_header_bytes as usize);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(c.h2_max_concurrent_streams)
        .max_header_list_size(c.max_header_bytes as u32)
        .max_pending_accept_reset_streams(Some(c.h2_max_pending_resets as usize))
        .max_local_error_reset_streams(Some(c.h2_max_local_error_resets as usize));
    b
}

/// Serves one accepted connection until it ends.
pub async fn drive(
    stream: TcpStream,
    app: Arc<App>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    worker: usize,
    phase: watch::Receiver<Phase>,
    hold: crate::http::activity::ConnHold,
) {
    let peer = stream
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let activity = Arc::new(ConnActivity::with_hold(Some(hold)));
    let _open = ConnCounter::open(app.clone(), worker);
    let io = TrackedIo {
        inner: stream,
        activity: activity.clone(),
    };
    let Some(tls) = app.tls.clone() else {
        return serve(
            TokioIo::new(io),
            app,
            builder,
            worker,
            phase,
            activity,
            peer,
        )
        .await;
    };
    // A handshake is part of reading the first request's head: a client that stalls in
    // it is cut at the same deadline as one that stalls in its headers.
    let handshake = tokio::time::timeout(app.config.header_read_timeout(), tls.accept(io)).await;
    match handshake {
        Ok(Ok(io)) => {
            serve(
                TokioIo::new(io),
                app,
                builder,
                worker,
                phase,
                activity,
                peer,
            )
            .await
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

async fn serve<I>(
    io: TokioIo<I>,
    app: Arc<App>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    worker: usize,
    mut phase: watch::Receiver<Phase>,
    activity: Arc<ConnActivity>,
    peer: std::net::IpAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeouts = (
        app.config.header_read_timeout(),
        app.config.keep_alive_timeout(),
    );
    // The activity changes without waking this loop, so it looks again at least this
    // often: timeouts fire within a quarter of the shorter one (at most 2 s) late.
    let recheck =
        (timeouts.0.min(timeouts.1) / 4).clamp(Duration::from_millis(10), Duration::from_secs(2));
    let svc_activity = activity.clone();
    let svc = service_fn(move |req| {
        crate::routes::handle(req, app.clone(), svc_activity.clone(), worker, peer)
    });
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let mut draining = *phase.borrow() != Phase::Running;
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let wait = match activity.check(timeouts.0, timeouts.1) {
            Verdict::Wait(ms) => Duration::from_millis(ms.max(1)).min(recheck),
            Verdict::IdleTimeout => {
                if !draining {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
                timeouts.0.max(Duration::from_millis(10))
            }
            Verdict::HeaderTimeout => return,
        };
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = phase.changed(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Counts the connection open for as long as it lives (closed on any exit path).
struct ConnCounter(Arc<App>, usize);

impl ConnCounter {
    fn open(app: Arc<App>, worker: usize) -> ConnCounter {
        app.stats
            .worker(worker)
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ConnCounter(app, worker)
    }
}

impl Drop for ConnCounter {
    fn drop(&mut self) {
        self.0
            .stats
            .worker(self.1)
            .connections_closed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The socket, noting every read in the connection's activity.
struct TrackedIo {
    inner: TcpStream,
    activity: Arc<ConnActivity>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        res
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
