//! One WebSocket's task: reads messages, runs one answer at a time (the others wait
//! in order), sends the answer's events and its metrics, answers pings, and closes on
//! idleness, drain, limits and protocol errors (the rules are in [`super`]'s doc).
//!
//! Everything a socket holds is bounded (waiting queries, the answer's event queue,
//! every write and close by a deadline). It must never emit an event itself: answers
//! go through [`crate::routes::answer`], which owns the one-`done` rule.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::message::{parse_message, ClientMessage};
use crate::http::headers::write_millis;
use crate::protocol::events::{write_json_str, Framing};
use crate::protocol::queue::{EventSource, Next};
use crate::protocol::{Query, Session};
use crate::routes::answer;
use crate::routes::App;

/// Queries that may wait behind the running one on a socket.
pub const MAX_WAITING: usize = 16;
/// Initial capacity of a socket's read buffer (it grows to hold a larger frame).
pub const READ_BUFFER: usize = 4096;
/// Outgoing frames are gathered up to this many bytes before a write (every batch is
/// flushed at its end).
const WRITE_BUFFER: usize = 16 * 1024;
/// How long a close we start may take: our close frame out and the client's back.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The running answer's future (see [`answer::begin`]), polled by the socket's loop.
type AgentRun = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Waiting {
    query: Query,
    request_id: Option<Bytes>,
    /// The message's size, counted against `WS_MAX_MESSAGE`.
    size: usize,
}

/// The answer being sent.
struct Answer {
    /// `None` once the agent's run has returned.
    agent: Option<AgentRun>,
    source: EventSource,
    request_id: Option<Bytes>,
    started: Instant,
}

enum Flow {
    Continue,
    Stop,
}

struct Socket {
    ws: WebSocketStream<TokioIo<Upgraded>>,
    app: Arc<App>,
    /// The upgrade request's id, for the agent's log lines.
    request_id: HeaderValue,
    /// Outgoing messages that are not plain slices of an event queue are built here.
    out: BytesMut,
    answer: Option<Answer>,
    waiting: VecDeque<Waiting>,
    waiting_bytes: usize,
    draining: bool,
    write_timeout: Duration,
    max_message: usize,
}

/// Counts a socket open while it lives.
struct OpenSocket(Arc<App>);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0
            .ws_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(super) async fn serve(io: TokioIo<Upgraded>, app: Arc<App>, request_id: HeaderValue) {
    app.ws_open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _open = OpenSocket(app.clone());
    let max_message = app.settings.ws_max_message;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let mut socket = Socket {
        ws,
        write_timeout: app.settings.queue.slow_reader_timeout,
        max_message,
        app,
        request_id,
        out: BytesMut::new(),
        answer: None,
        waiting: VecDeque::new(),
        waiting_bytes: 0,
        draining: false,
    };
    socket.run().await;
}

/// Polls the running agent (if any), then takes what its queue holds.
fn next_output(answer: &mut Option<Answer>) -> impl Future<Output = Next> + '_ {
    poll_fn(move |cx| {
        let Some(a) = answer.as_mut() else {
            return Poll::Pending;
        };
        if let Some(agent) = a.agent.as_mut() {
            if agent.as_mut().poll(cx).is_ready() {
                a.agent = None;
            }
        }
        a.source.poll_next(cx)
    })
}

impl Socket {
    async fn run(&mut self) {
        let mut phase = self.app.phase.clone();
        self.draining = phase.borrow_and_update().is_draining();
        let idle_timeout = self.app.settings.ws_idle_timeout;
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        loop {
            if self.answer.is_none() {
                if self.draining {
                    self.refuse_waiting().await;
                    self.close(CloseCode::Away, "server shutting down").await;
                    return;
                }
                if let Some(w) = self.waiting.pop_front() {
                    self.waiting_bytes -= w.size;
                    self.start(w.query, w.request_id);
                }
            }
            let idle_now = self.answer.is_none();
            tokio::select! {
                changed = phase.changed(), if !self.draining => {
                    if changed.is_err() || phase.borrow_and_update().is_draining() {
                        self.draining = true;
                        self.refuse_waiting().await;
                    }
                }
                out = next_output(&mut self.answer), if self.answer.is_some() => {
                    let sent = match out {
                        Next::Data(chunk) => self.send_events(chunk).await,
                        Next::End => self.send_metrics().await,
                        // The agent waited past the slow-reader deadline: the client
                        // does not read, so nothing more can reach it.
                        Next::Aborted(_) => false,
                    };
                    if !sent {
                        return;
                    }
                    if self.answer.is_none() {
                        idle.as_mut().reset(Instant::now() + idle_timeout);
                    }
                }
                msg = self.ws.next() => {
                    idle.as_mut().reset(Instant::now() + idle_timeout);
                    let flow = match msg {
                        Some(Ok(m)) => self.on_message(m).await,
                        Some(Err(e)) => {
                            self.on_error(e).await;
                            Flow::Stop
                        }
                        // The connection ended (after a close handshake, or not).
                        None => Flow::Stop,
                    };
                    if let Flow::Stop = flow {
                        return;
                    }
                }
                () = &mut idle, if idle_now => {
                    self.close(CloseCode::Normal, "idle timeout").await;
                    return;
                }
            }
        }
    }

    /// Starts the agent on `query`; its events are taken in `run`'s loop.
    fn start(&mut self, query: Query, request_id: Option<Bytes>) {
        let session = Session::synthesized(&self.app.settings.agent_id);
        let (run, source) =
            answer::begin(&self.app, session, query, Framing::Lines, &self.request_id);
        let agent: AgentRun = Box::pin(run);
        self.answer = Some(Answer {
            agent: Some(agent),
            source,
            request_id,
            started: Instant::now(),
        });
    }

    async fn on_message(&mut self, msg: Message) -> Flow {
        match msg {
            Message::Text(text) => self.on_text(&text).await,
            Message::Binary(_) => {
                self.send_error("binary messages are not supported: send JSON text", None)
                    .await
            }
            // The library answers pings itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Flow::Continue,
            Message::Close(_) => {
                // The library queued the reply; send it, then end (the server closes the
                // TCP connection first, RFC 6455 §7.1.1). Dropping the answer cancels it.
                let _ = timeout(CLOSE_TIMEOUT, self.ws.flush()).await;
                Flow::Stop
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        match parse_message(text) {
            ClientMessage::Ping { request_id: None } => {
                self.send(Utf8Bytes::from_static(r#"{"type":"pong"}"#))
                    .await
            }
            ClientMessage::Ping {
                request_id: Some(rid),
            } => {
                self.out.put_slice(br#"{"type":"pong","requestId":"#);
                self.out.put_slice(&rid);
                self.out.put_u8(b'}');
                let msg = self.take_out();
                self.send(msg).await
            }
            ClientMessage::Invalid { error, request_id } => {
                self.send_error(&error, request_id.as_deref()).await
            }
            ClientMessage::Query { query, request_id } => {
                if self.draining {
                    self.send_error("The server is shutting down", request_id.as_deref())
                        .await
                } else if self.answer.is_none() {
                    self.start(query, request_id);
                    Flow::Continue
                } else if self.waiting.len() >= MAX_WAITING
                    || self.waiting_bytes + text.len() > self.max_message
                {
                    self.send_error(
                        "too many queries waiting on this socket: one answer runs at a time",
                        request_id.as_deref(),
                    )
                    .await
                } else {
                    self.waiting_bytes += text.len();
                    self.waiting.push_back(Waiting {
                        query,
                        request_id,
                        size: text.len(),
                    });
                    Flow::Continue
                }
            }
        }
    }

    /// Every waiting query gets an error (the server is draining).
    async fn refuse_waiting(&mut self) {
        while let Some(w) = self.waiting.pop_front() {
            self.waiting_bytes -= w.size;
            if let Flow::Stop = self
                .send_error("The server is shutting down", w.request_id.as_deref())
                .await
            {
                self.waiting.clear();
                self.waiting_bytes = 0;
                return;
            }
        }
    }

    /// The bytes built in `out` as one message (the buffer's space is reused once the
    /// message is written).
    fn take_out(&mut self) -> Utf8Bytes {
        let bytes = self.out.split().freeze();
        // Only ever built from `&str` pieces and JSON.
        Utf8Bytes::try_from(bytes).unwrap_or_else(|_| Utf8Bytes::from_static("{}"))
    }

    /// Sends one message and flushes it, within the write deadline.
    async fn send(&mut self, msg: Utf8Bytes) -> Flow {
        match timeout(self.write_timeout, self.ws.send(Message::Text(msg))).await {
            Ok(Ok(())) => Flow::Continue,
            _ => Flow::Stop,
        }
    }

    async fn send_error(&mut self, error: &str, request_id: Option<&[u8]>) -> Flow {
        self.out.put_slice(br#"{"type":"error","error":"#);
        write_json_str(&mut self.out, error);
        if let Some(rid) = request_id {
            self.out.put_slice(br#","requestId":"#);
            self.out.put_slice(rid);
        }
        self.out.put_u8(b'}');
        let msg = self.take_out();
        self.send(msg).await
    }

    /// One event line (`{…}`, no newline) as a message: the line itself, or with the
    /// query's `requestId` appended as the last key.
    fn event_message(&mut self, line: Bytes) -> Utf8Bytes {
        let rid = self.answer.as_ref().and_then(|a| a.request_id.as_ref());
        let bytes = match rid {
            None => line,
            Some(rid) => {
                let body = line.strip_suffix(b"}").unwrap_or(&line);
                self.out.reserve(body.len() + rid.len() + 14);
                self.out.put_slice(body);
                self.out.put_slice(br#","requestId":"#);
                self.out.put_slice(rid);
                self.out.put_u8(b'}');
                self.out.split().freeze()
            }
        };
        // Events are only ever encoded from `&str` pieces.
        Utf8Bytes::try_from(bytes).unwrap_or_else(|_| Utf8Bytes::from_static("{}"))
    }

    /// `{"type":"metrics",…}` for the answer that just ended, into the write buffer.
    fn metrics_message(&mut self) -> Option<Utf8Bytes> {
        let a = self.answer.take()?;
        self.out
            .put_slice(br#"{"type":"metrics","processingTime":"#);
        write_millis(&mut self.out, a.started.elapsed());
        if let Some(rid) = &a.request_id {
            self.out.put_slice(br#","requestId":"#);
            self.out.put_slice(rid);
        }
        self.out.put_u8(b'}');
        Some(self.take_out())
    }

    /// Sends a chunk of event lines (and the metrics, when the answer just ended) as
    /// one batch: false when the client does not take it in time or is gone.
    async fn send_events(&mut self, chunk: Bytes) -> bool {
        let limit = self.write_timeout;
        let write = async {
            let mut rest = chunk;
            while !rest.is_empty() {
                let end = memchr::memchr(b'\n', &rest).unwrap_or(rest.len());
                let line = rest.split_to(end);
                if rest.has_remaining() {
                    rest.advance(1);
                }
                let msg = self.event_message(line);
                self.ws.feed(Message::Text(msg)).await?;
            }
            if self.answer.as_ref().is_some_and(|a| a.source.is_end()) {
                if let Some(m) = self.metrics_message() {
                    self.ws.feed(Message::Text(m)).await?;
                }
            }
            self.ws.flush().await
        };
        matches!(timeout(limit, write).await, Ok(Ok(())))
    }

    async fn send_metrics(&mut self) -> bool {
        match self.metrics_message() {
            Some(m) => matches!(self.send(m).await, Flow::Continue),
            None => true,
        }
    }

    /// A read failed. A limit or protocol violation gets its close code (1009, 1007,
    /// 1002) before the connection ends; I/O errors just end it.
    async fn on_error(&mut self, e: WsError) {
        let (code, reason) = match &e {
            // The client went away without a close frame: nobody to tell.
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return,
            WsError::Capacity(_) => (CloseCode::Size, "message too big"),
            WsError::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8"),
            WsError::Protocol(_) => (CloseCode::Protocol, "protocol error"),
            _ => {
                tracing::debug!(error = %e, "websocket read failed");
                return;
            }
        };
        tracing::debug!(error = %e, "websocket closed by the server");
        // Cancel the running agent first.
        self.answer = None;
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        if !matches!(
            timeout_at(deadline, self.ws.close(Some(frame))).await,
            Ok(Ok(()))
        ) {
            return;
        }
        // The rest of the stream cannot be parsed any more: half-close, then drain what
        // the client still sends (so closing does not reset the connection before it
        // read our close frame) until it closes too.
        let io = self.ws.get_mut();
        let _ = timeout_at(deadline, io.shutdown()).await;
        let mut buf = [0u8; 1024];
        while let Ok(Ok(n)) = timeout_at(deadline, io.read(&mut buf)).await {
            if n == 0 {
                break;
            }
        }
    }

    /// Starts the close handshake and waits for the client's close frame (messages
    /// that arrive meanwhile are ignored), at most [`CLOSE_TIMEOUT`].
    async fn close(&mut self, code: CloseCode, reason: &'static str) {
        self.answer = None;
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = timeout(CLOSE_TIMEOUT, async {
            if self.ws.close(Some(frame)).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        })
        .await;
    }
}
