//! One client connection: HTTP/1.1 keep-alive or HTTP/2 (h2c when the first bytes are
//! the HTTP/2 preface, or by ALPN over TLS), with the header-read and keep-alive
//! timeouts enforced from the connection's [`ConnActivity`], graceful close when the
//! server drains, and an immediate drop when a response gives up on its reader.
//!
//! It must never outlive the shutdown deadline by more than the grace the worker
//! allows, and never wait on a client without a timer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::shutdown::Phase;
use super::worker::Shared;
use super::{ConnInfo, ServerSettings, Service};
use crate::http::activity::{ConnActivity, Verdict};
use crate::obs::stats::Stats;

/// The client preface every HTTP/2 connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The per-worker HTTP/1.1 and HTTP/2 connection builders.
///
/// Not hyper-util's auto builder: it reads the first bytes itself and hands them back
/// through a rewind buffer, which makes hyper's HTTP/1 read buffer double to 16 KiB on
/// every connection. Peeking at the socket instead leaves the bytes where they are.
pub struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

/// Builds the connection builders from the settings.
pub fn builders(c: &ServerSettings) -> Builders {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .keep_alive(true)
        // Timeouts are enforced by `serve`, which knows keep-alive from header reads.
        .header_read_timeout(None)
        .max_headers(c.max_headers)
        // The exact limit on a head; the buffer limit alone is approximate (hyper reads
        // into whatever capacity the buffer has grown to).
        .max_header_size(c.max_header_bytes)
        .max_buf_size(c.max_header_bytes);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(c.h2_max_concurrent_streams)
        .max_header_list_size(c.max_header_bytes as u32)
        .max_pending_accept_reset_streams(Some(c.h2_max_pending_resets))
        .max_local_error_reset_streams(Some(c.h2_max_local_error_resets));
    Builders { h1, h2 }
}

/// Serves one accepted connection until it ends.
pub(crate) async fn drive<S: Service>(
    stream: TcpStream,
    shared: Arc<Shared<S>>,
    worker: usize,
    hold: crate::http::activity::ConnHold,
) {
    let peer = stream
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let activity = Arc::new(ConnActivity::with_hold(Some(hold)));
    let _open = ConnCounter::open(shared.status.stats.clone(), worker);
    let tls = shared.settings.tls.clone();
    let head_timeout = shared.settings.header_read_timeout;
    let conn = Conn {
        info: ConnInfo {
            activity: activity.clone(),
            worker,
            peer,
        },
        shared,
    };
    let Some(tls) = tls else {
        // The first bytes must arrive within the header timeout, as the head would.
        let h2 = match tokio::time::timeout(head_timeout, sniff(&stream)).await {
            Ok(Ok(h2)) => h2,
            _ => return,
        };
        return conn.serve(TrackedIo::new(stream, activity), h2).await;
    };
    let io = TrackedIo::new(stream, activity);
    // Boxed: clear-text connections must not carry the TLS state's size.
    Box::pin(conn.serve_tls(tls, io)).await
}

/// Whether a clear-text connection speaks HTTP/2 (it starts with the preface), looking
/// at its first bytes without taking them.
async fn sniff(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            // HTTP/1 (or a closed connection, which hyper's HTTP/1 side ends quietly).
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A preface split across packets: peek returns at once while bytes wait, so
        // look again a little later rather than spin.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What serving one connection needs, whatever its transport.
struct Conn<S> {
    shared: Arc<Shared<S>>,
    info: ConnInfo,
}

impl<S: Service> Conn<S> {
    async fn serve_tls(self, tls: tokio_rustls::TlsAcceptor, io: TrackedIo) {
        // A handshake is part of reading the first request's head: a client that stalls
        // in it is cut at the same deadline as one that stalls in its headers.
        let deadline = self.shared.settings.header_read_timeout;
        match tokio::time::timeout(deadline, tls.accept(io)).await {
            Ok(Ok(io)) => {
                // HTTP/2 over TLS is chosen by ALPN only (RFC 9113 §3.2).
                let h2 = io.get_ref().1.alpn_protocol() == Some(b"h2");
                self.serve(io, h2).await
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        }
    }

    async fn serve<I>(self, io: I, h2: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn { shared, info } = self;
        let s = &shared.settings;
        let timeouts = (s.header_read_timeout, s.keep_alive_timeout);
        let phase = shared.status.phase.clone();
        let activity = info.activity.clone();
        let svc_shared = shared.clone();
        let svc = service_fn(move |req| svc_shared.service.call(req, &info));
        let io = TokioIo::new(io);
        if h2 {
            let conn = shared.builders.h2.serve_connection(io, svc);
            // Boxed: every HTTP/1 connection would otherwise carry the size of HTTP/2's
            // state in its task, idle or not.
            Box::pin(run(
                conn,
                http2::Connection::graceful_shutdown,
                phase,
                &activity,
                timeouts,
            ))
            .await
        } else {
            let conn = shared.builders.h1.serve_connection(io, svc).with_upgrades();
            let shutdown = http1::UpgradeableConnection::graceful_shutdown;
            run(conn, shutdown, phase, &activity, timeouts).await
        }
    }
}

/// Drives `conn` to its end, closing it gracefully when the server drains or the
/// connection idles past the keep-alive timeout, and dropping it when a head takes
/// longer than the header timeout.
async fn run<F>(
    conn: F,
    shutdown: fn(Pin<&mut F>),
    mut phase: watch::Receiver<Phase>,
    activity: &ConnActivity,
    (header_timeout, keep_alive_timeout): (Duration, Duration),
) where
    F: Future<Output = Result<(), hyper::Error>>,
{
    // The activity changes without waking this loop, so it looks again at least this
    // often: timeouts fire within a quarter of the shorter one (at most 2 s) late.
    let recheck = (header_timeout.min(keep_alive_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(2));
    tokio::pin!(conn);
    let mut draining = phase.borrow().is_draining();
    if draining {
        shutdown(conn.as_mut());
    }
    loop {
        let wait = match activity.check(header_timeout, keep_alive_timeout) {
            Verdict::Wait(ms) => Duration::from_millis(ms.max(1)).min(recheck),
            Verdict::IdleTimeout => {
                if !draining {
                    shutdown(conn.as_mut());
                    draining = true;
                }
                header_timeout.max(Duration::from_millis(10))
            }
            Verdict::HeaderTimeout | Verdict::Cut => return,
        };
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = phase.changed(), if !draining => {
                if phase.borrow().is_draining() {
                    shutdown(conn.as_mut());
                    draining = true;
                }
            }
            _ = std::future::poll_fn(|cx| activity.poll_cut(cx)) => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Counts the connection open for as long as it lives (closed on any exit path).
struct ConnCounter(Arc<Stats>, usize);

impl ConnCounter {
    fn open(stats: Arc<Stats>, worker: usize) -> ConnCounter {
        stats
            .worker(worker)
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ConnCounter(stats, worker)
    }
}

impl Drop for ConnCounter {
    fn drop(&mut self) {
        self.0
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

impl TrackedIo {
    fn new(inner: TcpStream, activity: Arc<ConnActivity>) -> TrackedIo {
        TrackedIo { inner, activity }
    }
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
