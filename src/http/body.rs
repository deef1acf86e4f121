//! Bodies: reading a request body under its limits, and the response body type.
//!
//! A request body is read into one buffer (with the parser's padding), refused with
//! 413 as soon as it is known to be too large (from `Content-Length`, before reading
//! any of it) and with 408 when it does not arrive in time. A response body is either
//! complete bytes or an SSE stream fed by an event queue; dropping an SSE body cancels
//! the agent behind it. Nothing here may buffer without a bound.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::task::AbortHandle;

use super::activity::ConnActivity;
use super::error::HttpError;
use crate::http::compress::{compress_all, Compressor, Encoding};
use crate::obs::stats::Stats;
use crate::protocol::queue::{EventSource, Next, StreamSummary};
use crate::protocol::request::BODY_PADDING;

/// The request body, read: `buf[..len]` is the body, followed by parser padding.
pub struct ReadBody {
    pub buf: Vec<u8>,
    pub len: usize,
}

/// Reads a whole request body, enforcing `limit` bytes and the `timeout` deadline.
pub async fn read_body<B>(
    body: B,
    headers: &HeaderMap,
    limit: u64,
    timeout: Duration,
) -> Result<ReadBody, HttpError>
where
    B: Body<Data = Bytes> + Unpin,
{
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if let Some(n) = declared {
        if n > limit {
            return Err(HttpError::PayloadTooLarge { limit });
        }
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize + BODY_PADDING);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut body = body;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(HttpError::BodyTimeout),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(HttpError::BodyRead),
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(HttpError::PayloadTooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    let len = buf.len();
    buf.resize(len + BODY_PADDING, 0);
    Ok(ReadBody { buf, len })
}

/// What the request log line of a request says besides its figures.
pub struct RequestLog {
    pub method: http::Method,
    /// As it is safe to log (credentials in the query already masked).
    pub url: String,
    pub request_id: http::HeaderValue,
}

/// Marks the end of one request, however it ends: its response body finished, its
/// response dropped unsent, or the request's future dropped before there was a
/// response (an HTTP/2 reset mid-request). Its time goes into the worker's figures,
/// the request leaves the in-flight count, the connection may go idle, and the request
/// log line is written with how the response ended. It must run exactly once.
pub struct RequestDone {
    activity: Arc<ConnActivity>,
    stats: Arc<Stats>,
    worker: usize,
    start: Instant,
    /// Index into `ROUTE_LABELS`.
    pub route: usize,
    /// An agent route (`/agent`, `/assist`, `/agent-api`, `/stream`): counted in the
    /// agent's own figures.
    pub agent: bool,
    /// 0 until a response exists.
    pub status: u16,
    pub sse: bool,
    /// Set when request logging is on.
    pub log: Option<Box<RequestLog>>,
    recorded: bool,
}

/// The status logged and counted for a request whose client left before a response
/// existed (nginx's "client closed request").
const CLIENT_CLOSED: u16 = 499;

impl RequestDone {
    /// Counts the request in flight; [`RequestDone`] takes it out again.
    pub fn begin(
        activity: Arc<ConnActivity>,
        stats: Arc<Stats>,
        worker: usize,
        start: Instant,
    ) -> RequestDone {
        activity.begin_request();
        stats.request_began();
        RequestDone {
            activity,
            stats,
            worker,
            start,
            route: crate::http::router::UNROUTED_LABEL,
            agent: false,
            status: 0,
            sse: false,
            log: None,
            recorded: false,
        }
    }

    pub fn worker(&self) -> usize {
        self.worker
    }

    pub fn activity(&self) -> &Arc<ConnActivity> {
        &self.activity
    }

    fn record(&mut self, sent: Option<StreamSummary>) {
        use std::sync::atomic::Ordering::Relaxed;
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        if self.status == 0 {
            self.status = CLIENT_CLOSED;
        }
        let elapsed = self.start.elapsed();
        let w = self.stats.worker(self.worker);
        w.record(elapsed);
        w.record_route(self.route, self.status, elapsed);
        if self.agent {
            w.record_agent(elapsed);
        }
        if let Some(s) = &sent {
            w.events_sent.fetch_add(s.events, Relaxed);
            w.bytes_sent.fetch_add(s.bytes, Relaxed);
        }
        if self.sse {
            w.streams_closed.fetch_add(1, Relaxed);
        }
        self.stats.request_ended();
        self.activity.end_request();
        if let Some(log) = self.log.take() {
            let ms = elapsed.as_secs_f64() * 1000.0;
            let id = log.request_id.to_str().unwrap_or("");
            match sent {
                Some(s) => tracing::info!(
                    method = %log.method,
                    url = %log.url,
                    status = self.status,
                    response_time_ms = ms,
                    request_id = id,
                    events = s.events,
                    bytes = s.bytes,
                    end = s.ending.as_str(),
                    error_code = s.ending.error_code(),
                    "request"
                ),
                None => tracing::info!(
                    method = %log.method,
                    url = %log.url,
                    status = self.status,
                    response_time_ms = ms,
                    request_id = id,
                    end = if self.status == CLIENT_CLOSED { "client_gone" } else { "sent" },
                    "request"
                ),
            }
        }
    }
}

impl Drop for RequestDone {
    fn drop(&mut self) {
        self.record(None);
    }
}

/// The response body agentd sends.
pub struct ResponseBody {
    kind: Kind,
    on_complete: Option<RequestDone>,
    /// Streaming compression of whatever `kind` yields (SSE).
    compressor: Option<Compressor>,
}

enum Kind {
    Full(Option<Bytes>),
    Sse(SseBody),
}

/// An SSE stream read from an event queue.
pub struct SseBody {
    source: EventSource,
    agent: Option<AbortHandle>,
    heartbeat: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
}

impl SseBody {
    /// `agent` is aborted when the body is dropped before the stream ended.
    pub fn new(
        source: EventSource,
        agent: Option<AbortHandle>,
        heartbeat: Option<Duration>,
    ) -> Self {
        SseBody {
            source,
            agent,
            heartbeat: heartbeat.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        match self.source.poll_next(cx) {
            Poll::Ready(Next::Data(b)) => {
                if let Some((d, sleep)) = &mut self.heartbeat {
                    sleep.as_mut().reset(tokio::time::Instant::now() + *d);
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Next::End) => Poll::Ready(None),
            Poll::Ready(Next::Aborted(why)) => Poll::Ready(Some(Err(std::io::Error::other(
                format!("event stream aborted: {why:?}"),
            )))),
            Poll::Pending => {
                if let Some((d, sleep)) = &mut self.heartbeat {
                    if sleep.as_mut().poll(cx).is_ready() {
                        sleep.as_mut().reset(tokio::time::Instant::now() + *d);
                        return Poll::Ready(Some(Ok(Bytes::from_static(b":\n\n"))));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        if let Some(agent) = self.agent.take() {
            if !self.source.is_end() {
                agent.abort();
            }
        }
    }
}

impl ResponseBody {
    pub fn full(bytes: Bytes) -> Self {
        ResponseBody {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            on_complete: None,
            compressor: None,
        }
    }

    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    pub fn sse(body: SseBody) -> Self {
        ResponseBody {
            kind: Kind::Sse(body),
            on_complete: None,
            compressor: None,
        }
    }

    /// Compresses the body with `enc` (and says so in the response's headers).
    pub fn compress(&mut self, enc: Encoding, level: u32, threshold: usize) -> bool {
        match &mut self.kind {
            Kind::Full(Some(b)) if b.len() >= threshold => {
                *b = compress_all(enc, b, level);
                true
            }
            Kind::Full(_) => false,
            Kind::Sse(_) => {
                self.compressor = Some(Compressor::new(enc, level));
                true
            }
        }
    }

    /// Sets what runs when the body is finished or dropped. A stream whose reader is
    /// cut off also cuts its connection.
    pub fn set_completion(&mut self, c: RequestDone) {
        if let Kind::Sse(s) = &self.kind {
            s.source.on_slow_reader(c.activity().clone());
        }
        self.on_complete = Some(c);
    }

    fn finish(&mut self) {
        if let Some(mut c) = self.on_complete.take() {
            let sent = match &self.kind {
                Kind::Sse(s) => Some(s.source.summary()),
                Kind::Full(_) => None,
            };
            c.record(sent);
        }
    }

    pub fn is_sse(&self) -> bool {
        matches!(self.kind, Kind::Sse(_))
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let out = match &mut this.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(Ok)),
            Kind::Sse(s) => s.poll(cx),
        };
        let out = match (out, &mut this.compressor) {
            (Poll::Ready(Some(Ok(data))), Some(c)) => Poll::Ready(Some(Ok(c.write(&data)))),
            (Poll::Ready(None), Some(c)) => {
                let tail = c.finish();
                this.compressor = None;
                Poll::Ready(Some(Ok(tail)))
            }
            (other, _) => other,
        };
        if let Poll::Ready(None) = out {
            this.finish();
        }
        out.map(|o| o.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        if self.compressor.is_some() {
            return false;
        }
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            // Saying so as soon as the last event is taken lets hyper write the final
            // chunk together with it: one write per response instead of two.
            Kind::Sse(s) => s.source.is_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Sse(_) => SizeHint::default(),
        }
    }
}
