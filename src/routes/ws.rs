//! `GET /ws`: the agent over WebSocket (PROTOCOL.md §7).
//!
//! The upgrade is validated here (`Connection: upgrade`, `Upgrade: websocket`,
//! `Sec-WebSocket-Version: 13`, a 16-byte base64 `Sec-WebSocket-Key`; anything else is
//! a 400 in the usual JSON error shape) and answered with a `101` [`Reply`]; hyper then
//! hands the socket over and one task on this worker serves it until it closes.
//!
//! Messages are text frames of JSON. `{"type":"ping"}` gets `{"type":"pong"}`.
//! `{"type":"agent-query","prompt":…,"id"?:ULID,"requestId"?:any}` (or, the guide's other
//! shape, `{"type":"agent-query","query":{"id"?,"prompt"},"requestId"?}`) runs the configured
//! agent exactly as `/agent` does: the same prompt and id rules, a synthesized session,
//! and `routes::agent::run_agent`'s failure rules (every answer ends with `done`). Each
//! event is one text message, its JSON with `"requestId"` appended as the last key when
//! the query had one; then `{"type":"metrics","processingTime":<ms>,"requestId"?:…}`,
//! the time from the answer's start, in milliseconds with microsecond decimals. Bad
//! JSON, an invalid field, an unknown type or a binary message gets
//! `{"type":"error","error":"…","requestId"?:…}` and the socket stays open. Replies to
//! a message that carried a `requestId` carry it too.
//!
//! One answer runs at a time per socket. Queries that arrive meanwhile wait, in order
//! (at most [`MAX_WAITING`] of them and `WS_MAX_MESSAGE` bytes in all; beyond that
//! they are refused with an error); pings and errors are answered at once, so a pong
//! may come between two events of a running answer. The socket is read all the time,
//! so a close frame or a dropped connection cancels the running agent at once.
//!
//! Limits: a message (or a frame) over `WS_MAX_MESSAGE` closes the socket with 1009,
//! refused from the frame header before the payload is buffered; invalid UTF-8 closes
//! with 1007, a protocol violation with 1002. No message from the client for
//! `WS_IDLE_TIMEOUT` while no answer runs closes it with 1000; the server draining
//! lets the running answer finish (the shutdown deadline still cuts it with error +
//! done), refuses waiting queries, then closes with 1001. Events go through the
//! per-answer bounded queue (`SSE_QUEUE_BYTES`); every write to the socket must finish
//! within `SSE_SLOW_READER_TIMEOUT`, and the agent waits no longer than that for queue
//! space, so a client that stops reading is dropped (and its agent cancelled) instead
//! of growing memory. The close handshake is answered by the library; a close we start
//! waits for the client's reply, within [`CLOSE_TIMEOUT`].
//!
//! Cost: an event without `requestId` is a slice of the queue's buffer (no copy, no
//! allocation); with one it is built in a buffer the socket reuses. The socket's read
//! buffer starts at [`READ_BUFFER`] bytes, so thousands of idle sockets stay cheap.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method, Request, Version};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::agent::run_agent;
use crate::http::{HttpError, Reply};
use crate::protocol::events::{write_json_str, write_json_value, Framing};
use crate::protocol::ids::{next_ulid, parse_canonical_ulid};
use crate::protocol::queue::{event_queue, EventSource, Next, QueueLimits};
use crate::protocol::request::{check_prompt, Issue};
use crate::protocol::{Query, ResponseHandler, Session};
use crate::server::shutdown::Phase;
use crate::server::App;

/// Queries that may wait behind the running one on a socket.
pub const MAX_WAITING: usize = 16;
/// Initial capacity of a socket's read buffer (it grows to hold a larger frame).
pub const READ_BUFFER: usize = 4096;
/// Outgoing frames are gathered up to this many bytes before a write (every batch is
/// flushed at its end).
const WRITE_BUFFER: usize = 16 * 1024;
/// Initial size of an answer's event buffer; it grows up to `SSE_QUEUE_BYTES`.
const INITIAL_EVENT_BUFFER: usize = 1024;
/// How long a close we start may take: our close frame out and the client's back.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type AgentRun = Pin<Box<dyn Future<Output = ()> + Send>>;

// ---------------------------------------------------------------------- upgrade

/// The connection's slot and drain token, carried into the upgraded socket's task.
#[derive(Clone)]
pub struct Hold(pub crate::http::activity::ConnHold);

/// `GET /ws`: validates the upgrade, answers `101` and serves the socket in a task on
/// this worker.
pub fn upgrade(
    req: Request<Incoming>,
    headers: &HeaderMap,
    app: &Arc<App>,
    request_id: &HeaderValue,
) -> Result<Reply, HttpError> {
    // Before anything else: a page from a refused origin must not get a socket.
    if !app.cors.allows_websocket(headers) {
        return Err(HttpError::OriginNotAllowed);
    }
    let key = match check_upgrade(req.method(), req.version(), headers) {
        Ok(key) => key,
        Err((issues, bad_version)) => {
            let reply = HttpError::Validation(issues).into_reply(request_id);
            // RFC 6455 §4.4: tell the client which version we speak.
            return Ok(if bad_version {
                reply.with_header(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                )
            } else {
                reply
            });
        }
    };
    let accept = accept_key(key);
    let hold = req.extensions().get::<Hold>().cloned();
    let on_upgrade = hyper::upgrade::on(req);
    let (app, request_id) = (app.clone(), request_id.clone());
    tokio::spawn(async move {
        let _hold = hold;
        match on_upgrade.await {
            Ok(upgraded) => serve(TokioIo::new(upgraded), app, request_id).await,
            Err(e) => {
                tracing::debug!(request_id = ?request_id, error = %e, "websocket upgrade failed")
            }
        }
    });
    Ok(Reply::websocket_upgrade(accept))
}

fn issue(path: &'static str, message: &'static str) -> Issue {
    Issue {
        path: path.into(),
        message: message.into(),
    }
}

/// True when a comma-separated header (all its lines) has `token`, ignoring case.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// A `Sec-WebSocket-Key`: base64 of 16 bytes, so 22 base64 characters then `==`.
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key[22..] == *b"=="
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Checks a WebSocket opening handshake (RFC 6455 §4.2.1). Returns the key, or every
/// problem found and whether the version was one of them.
fn check_upgrade<'h>(
    method: &Method,
    version: Version,
    headers: &'h HeaderMap,
) -> Result<&'h [u8], (Vec<Issue>, bool)> {
    let mut issues = Vec::new();
    if version != Version::HTTP_11 {
        issues.push(issue(
            "/version",
            "WebSocket upgrades need HTTP/1.1 (RFC 6455)",
        ));
    }
    if method != Method::GET {
        issues.push(issue("/method", "must be GET"));
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        issues.push(issue("/headers/connection", "must include 'upgrade'"));
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        issues.push(issue("/headers/upgrade", "must be 'websocket'"));
    }
    let bad_version = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes().trim_ascii() != b"13");
    if bad_version {
        issues.push(issue("/headers/sec-websocket-version", "must be 13"));
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) if is_valid_key(k.as_bytes().trim_ascii()) => {
            Some(k.as_bytes().trim_ascii())
        }
        _ => {
            issues.push(issue(
                "/headers/sec-websocket-key",
                "must be one base64-encoded 16-byte value",
            ));
            None
        }
    };
    match key {
        Some(key) if issues.is_empty() => Ok(key),
        _ => Err((issues, bad_version)),
    }
}

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + the RFC 6455 GUID)).
fn accept_key(key: &[u8]) -> HeaderValue {
    use aws_lc_rs::digest;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    let mut out = [0u8; 28];
    base64_encode(ctx.finish().as_ref(), &mut out);
    // Base64 characters are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Standard base64 with padding of `input` into `out` (exactly `4 * ceil(len / 3)`
/// bytes long).
fn base64_encode(input: &[u8], out: &mut [u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (chunk, o) in input.chunks(3).zip(out.chunks_mut(4)) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, c) in o.iter_mut().enumerate() {
            *c = if i <= chunk.len() {
                ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]
            } else {
                b'='
            };
        }
    }
}

// ------------------------------------------------------------- client messages

/// One message from the client, validated.
#[derive(Debug)]
enum ClientMessage {
    Ping {
        request_id: Option<Bytes>,
    },
    Query {
        query: Query,
        request_id: Option<Bytes>,
    },
    Invalid {
        error: Cow<'static, str>,
        request_id: Option<Bytes>,
    },
}

/// A field seen without committing to its type, so each field gets its own message.
#[derive(Debug, Default)]
enum Loose<'a> {
    #[default]
    Missing,
    Str(Cow<'a, str>),
    Other,
}

struct LooseVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for LooseVisitor<'a> {
    type Value = Loose<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Other)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor(PhantomData))
    }
}

/// `requestId` may be any JSON value, `null` included (which is echoed too).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// The message's keys; unknown ones are ignored, as in `/agent` bodies.
#[derive(serde::Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Loose<'a>,
    #[serde(borrow, default)]
    prompt: Loose<'a>,
    #[serde(borrow, default)]
    id: Loose<'a>,
    #[serde(rename = "requestId", default, deserialize_with = "present")]
    request_id: Option<serde_json::Value>,
    /// The guide's second shape: `{"type":"agent-query","query":{"id","prompt"}}`.
    #[serde(default)]
    query: Option<serde_json::Value>,
}

/// A `serde_json::Value` member seen as [`Loose`] (for the nested `query` shape).
fn loose(v: Option<&serde_json::Value>) -> Loose<'_> {
    match v {
        None => Loose::Missing,
        Some(serde_json::Value::String(s)) => Loose::Str(std::borrow::Cow::Borrowed(s)),
        Some(_) => Loose::Other,
    }
}

/// Parses and validates one text message. Never panics.
fn parse_message(text: &str) -> ClientMessage {
    let wire: Wire<'_> = match serde_json::from_str(text) {
        // serde also reads a struct from an array; only an object is a message.
        Ok(_) if !text.trim_start().starts_with('{') => {
            return ClientMessage::Invalid {
                error: "the message must be a JSON object".into(),
                request_id: None,
            };
        }
        Ok(w) => w,
        Err(e) => {
            let error = if e.is_data() {
                format!("the message must be a JSON object: {e}")
            } else {
                format!("invalid JSON: {e}")
            };
            return ClientMessage::Invalid {
                error: error.into(),
                request_id: None,
            };
        }
    };
    // Re-encoded compact, with the protocol's escapes, once per message.
    let request_id = wire.request_id.as_ref().map(|v| {
        let mut b = BytesMut::new();
        match write_json_value(&mut b, v, false) {
            Ok(()) => b.freeze(),
            Err(_) => Bytes::from_static(b"null"),
        }
    });
    let invalid = |error: &'static str, request_id| ClientMessage::Invalid {
        error: error.into(),
        request_id,
    };
    match wire.kind {
        Loose::Str(t) if t == "ping" => ClientMessage::Ping { request_id },
        Loose::Str(t) if t == "agent-query" => {
            // Either shape: `prompt` and `id` at the top, or inside `query` (which wins).
            let (prompt, id) = match &wire.query {
                None | Some(serde_json::Value::Null) => (wire.prompt, wire.id),
                Some(serde_json::Value::Object(q)) => (loose(q.get("prompt")), loose(q.get("id"))),
                Some(_) => return invalid("query: must be object", request_id),
            };
            let prompt = match prompt {
                Loose::Str(p) => match check_prompt(&p) {
                    Ok(_) => p.into_owned(),
                    Err(m) => {
                        return ClientMessage::Invalid {
                            error: format!("prompt: {m}").into(),
                            request_id,
                        }
                    }
                },
                Loose::Missing => {
                    return invalid("prompt: must have required property 'prompt'", request_id)
                }
                Loose::Other => return invalid("prompt: must be string", request_id),
            };
            let id = match id {
                Loose::Missing => next_ulid(),
                Loose::Str(s) => match parse_canonical_ulid(&s) {
                    Some(id) => id,
                    None => {
                        return invalid(
                            "id: must be a ULID: 26 upper-case Crockford base32 characters, the first 0-7",
                            request_id,
                        )
                    }
                },
                Loose::Other => return invalid("id: must be string", request_id),
            };
            ClientMessage::Query {
                query: Query {
                    id,
                    prompt,
                    context: None,
                },
                request_id,
            }
        }
        Loose::Str(_) => invalid(
            "unknown type: expected \"ping\" or \"agent-query\"",
            request_id,
        ),
        Loose::Missing => invalid(
            "type: must have required property 'type' (\"ping\" or \"agent-query\")",
            request_id,
        ),
        Loose::Other => invalid("type: must be string", request_id),
    }
}

// ---------------------------------------------------------------- the socket

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

async fn serve(io: TokioIo<Upgraded>, app: Arc<App>, request_id: HeaderValue) {
    app.ws_open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _open = OpenSocket(app.clone());
    let c = &app.config;
    let max_message = usize::try_from(c.ws_max_message).unwrap_or(usize::MAX);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let mut socket = Socket {
        ws,
        write_timeout: c.slow_reader_timeout(),
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
        self.draining = *phase.borrow_and_update() != Phase::Running;
        let idle_timeout = Duration::from_millis(self.app.config.ws_idle_timeout);
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
                    if changed.is_err() || *phase.borrow_and_update() != Phase::Running {
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
        let c = &self.app.config;
        let limits = QueueLimits {
            capacity: c.sse_queue_bytes as usize,
            slow_reader_timeout: c.slow_reader_timeout(),
        };
        let (sink, source) = event_queue(limits, INITIAL_EVENT_BUFFER);
        let session = Session::synthesized(&self.app.agent_id);
        let handler = ResponseHandler::new(sink, Framing::Lines, session.processor_id.clone());
        let agent: AgentRun = Box::pin(run_agent(
            self.app.clone(),
            session,
            query,
            handler,
            self.request_id.clone(),
        ));
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
        let us = a.started.elapsed().as_micros();
        self.out
            .put_slice(br#"{"type":"metrics","processingTime":"#);
        self.out
            .put_slice(itoa::Buffer::new().format(us / 1000).as_bytes());
        let frac = (us % 1000) as u16;
        self.out.put_slice(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455() {
        // RFC 6455 §1.3.
        let v = accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(v, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn base64_pads() {
        let enc = |s: &[u8]| {
            let mut out = vec![0u8; s.len().div_ceil(3) * 4];
            base64_encode(s, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(enc(b""), "");
        assert_eq!(enc(b"f"), "Zg==");
        assert_eq!(enc(b"fo"), "Zm8=");
        assert_eq!(enc(b"foo"), "Zm9v");
        assert_eq!(enc(b"foobar"), "Zm9vYmFy");
        assert_eq!(enc(&[0xfb, 0xff]), "+/8=");
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const GOOD: &[(&str, &str)] = &[
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn upgrade_checks() {
        let h = headers(GOOD);
        assert_eq!(
            check_upgrade(&Method::GET, Version::HTTP_11, &h).unwrap(),
            b"dGhlIHNhbXBsZSBub25jZQ=="
        );
        let (issues, bad_version) =
            check_upgrade(&Method::GET, Version::HTTP_2, &headers(&[])).unwrap_err();
        assert!(bad_version);
        assert_eq!(issues.len(), 5, "{issues:?}");
        let mut h = headers(GOOD);
        h.insert("sec-websocket-version", HeaderValue::from_static("8"));
        let (issues, bad_version) = check_upgrade(&Method::GET, Version::HTTP_11, &h).unwrap_err();
        assert!(bad_version);
        assert_eq!(issues[0].path, "/headers/sec-websocket-version");
        let mut h = headers(GOOD);
        h.insert("sec-websocket-key", HeaderValue::from_static("short=="));
        let (issues, bad_version) = check_upgrade(&Method::GET, Version::HTTP_11, &h).unwrap_err();
        assert!(!bad_version);
        assert_eq!(issues[0].path, "/headers/sec-websocket-key");
        let mut h = headers(GOOD);
        h.append(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert!(check_upgrade(&Method::GET, Version::HTTP_11, &h).is_err());
        assert!(check_upgrade(&Method::HEAD, Version::HTTP_11, &headers(GOOD)).is_err());
    }

    fn error_of(text: &str) -> String {
        match parse_message(text) {
            ClientMessage::Invalid { error, .. } => error.into_owned(),
            other => panic!("expected an error for {text}, got {other:?}"),
        }
    }

    #[test]
    fn messages() {
        assert!(matches!(
            parse_message(r#"{"type":"ping"}"#),
            ClientMessage::Ping { request_id: None }
        ));
        match parse_message(r#"{"type":"ping","requestId":{"a":[1,"\u2028"]}}"#) {
            ClientMessage::Ping {
                request_id: Some(r),
            } => assert_eq!(&r[..], br#"{"a":[1,"\u2028"]}"#),
            other => panic!("{other:?}"),
        }
        match parse_message(r#"{"requestId":null,"prompt":"h\u00e9","type":"agent-query","x":1}"#) {
            ClientMessage::Query { query, request_id } => {
                assert_eq!(query.prompt, "hé");
                assert_eq!(request_id.as_deref(), Some(&b"null"[..]));
            }
            other => panic!("{other:?}"),
        }
        match parse_message(
            r#"{"type":"agent-query","prompt":"x","id":"01JDX3ABCDEFGHJKMNPQRSTVWX"}"#,
        ) {
            ClientMessage::Query { query, .. } => {
                assert_eq!(query.id.to_string(), "01JDX3ABCDEFGHJKMNPQRSTVWX")
            }
            other => panic!("{other:?}"),
        }
        assert!(error_of("{").starts_with("invalid JSON"));
        assert!(error_of("[1]").starts_with("the message must be a JSON object"));
        assert!(error_of("[\"ping\"]").starts_with("the message must be a JSON object"));
        assert!(error_of("7").starts_with("the message must be a JSON object"));
        assert!(error_of(r#"{"type":"nope"}"#).starts_with("unknown type"));
        assert!(error_of(r#"{"prompt":"x"}"#).starts_with("type: must have"));
        assert_eq!(error_of(r#"{"type":1}"#), "type: must be string");
        assert!(error_of(r#"{"type":"agent-query"}"#).starts_with("prompt: must have"));
        assert_eq!(
            error_of(r#"{"type":"agent-query","prompt":null}"#),
            "prompt: must be string"
        );
        assert_eq!(
            error_of(r#"{"type":"agent-query","prompt":""}"#),
            "prompt: must NOT have fewer than 1 characters"
        );
        assert!(error_of(
            r#"{"type":"agent-query","prompt":"x","id":"01jdx3abcdefghjkmnpqrstvwx"}"#
        )
        .starts_with("id: must be a ULID"));
        assert_eq!(
            error_of(r#"{"type":"agent-query","prompt":"x","id":[]}"#),
            "id: must be string"
        );
        match parse_message(
            r#"{"type":"agent-query","query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"nested"},"requestId":"r2"}"#,
        ) {
            ClientMessage::Query { query, request_id } => {
                assert_eq!(query.prompt, "nested");
                assert_eq!(query.id.to_string(), "01JDX3ABCDEFGHJKMNPQRSTVWX");
                assert_eq!(request_id.as_deref(), Some(&br#""r2""#[..]));
            }
            _ => panic!("the guide's nested shape is a query"),
        }
        assert!(error_of(r#"{"type":"agent-query","query":{"id":"x"}}"#)
            .starts_with("prompt: must have"));
        assert_eq!(
            error_of(r#"{"type":"agent-query","query":"x"}"#),
            "query: must be object"
        );
        match parse_message(r#"{"type":"bad","requestId":7}"#) {
            ClientMessage::Invalid { request_id, .. } => {
                assert_eq!(request_id.as_deref(), Some(&b"7"[..]))
            }
            other => panic!("{other:?}"),
        }
    }
}
