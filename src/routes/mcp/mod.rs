//! The MCP front door: `POST /mcp`, MCP's streamable HTTP transport without sessions
//! (README.md, "MCP front door", has the mapping rules).
//!
//! Each POST carries one JSON-RPC message ([`rpc`]): a notification or a response is
//! accepted (202, no body); `initialize`, `ping` and `tools/list` are answered at once;
//! `tools/call` runs the agent through the same lifecycle as `/agent`
//! (`routes::answer`: one `done`, after an error when the agent failed), its events
//! framed as lines and read back with the OpenAI door's classifier
//! (`openai::stream::EventReader`). With a progress token (and a client that accepts
//! `text/event-stream`) the answer is an SSE stream of `notifications/progress`
//! messages with the text so far, then the result; otherwise one JSON response. The
//! text is held up to `MCP_RESULT_MAX_BYTES`. The relay owns the agent's run: when the
//! client leaves, the body aborts the relay and dropping it cancels the agent.
//! Origin and credential are checked at the edge (`routes::authorize`); errors take
//! JSON-RPC's shape ([`error`]).
//!
//! This module must never emit a Sentient event itself nor end an answer another way
//! than `routes::answer` does; an agent's failure is never sent as a successful result.

pub(crate) mod error;
pub(crate) mod rpc;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use self::rpc::{Message, RpcError};
use super::answer;
use super::openai::stream::{EventReader, SentientEvent};
use crate::http::body::{read_body, SseBody};
use crate::http::{HttpError, Reply, ResponseBody};
use crate::protocol::events::Framing;
use crate::protocol::queue::{event_queue, Closed, Ending, EventSink, EventSource, Next};
use crate::routes::App;

/// Initial size of the progress stream's buffer; it grows up to `SSE_QUEUE_BYTES`.
const INITIAL_MESSAGE_BUFFER: usize = 1024;

/// `MCP-Protocol-Version`, sent by clients after `initialize` (2025-06-18).
static MCP_PROTOCOL_VERSION: header::HeaderName =
    header::HeaderName::from_static("mcp-protocol-version");

/// The agent's run (see [`answer::begin`]), polled by the relay.
type AgentRun = Pin<Box<dyn Future<Output = ()> + Send>>;

/// True for `/mcp` (with any slashes): its errors, routed or not, take JSON-RPC's shape.
pub(crate) fn is_mcp_path(path: &str) -> bool {
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    segs.next() == Some("mcp") && segs.next().is_none()
}

/// Whether the client takes an SSE answer: `Accept` absent, or naming
/// `text/event-stream`, `text/*` or `*/*`.
fn accepts_event_stream(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::ACCEPT).iter().peekable();
    if values.peek().is_none() {
        return true;
    }
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|m| m.split(';').next().unwrap_or("").trim())
        .any(|m| {
            m.eq_ignore_ascii_case("text/event-stream")
                || m.eq_ignore_ascii_case("text/*")
                || m == "*/*"
        })
}

fn result_reply(id: &Value, result: &Value) -> Reply {
    let mut out = BytesMut::new();
    rpc::write_result(&mut out, id, result);
    Reply::json(StatusCode::OK, out.freeze())
}

/// `POST /mcp`.
pub(crate) async fn post(
    req: Request<Incoming>,
    headers: &HeaderMap,
    app: &Arc<App>,
    request_id: &HeaderValue,
) -> Result<Reply, HttpError> {
    if !super::agent::is_json_content_type(headers.get(header::CONTENT_TYPE)) {
        return Err(HttpError::UnsupportedMediaType);
    }
    if let Some(v) = headers.get(&MCP_PROTOCOL_VERSION) {
        if !rpc::SUPPORTED_VERSIONS
            .iter()
            .any(|s| s.as_bytes() == v.as_bytes())
        {
            let e = RpcError::new(
                rpc::INVALID_REQUEST,
                format!(
                    "Unsupported MCP-Protocol-Version; this server speaks {}",
                    rpc::SUPPORTED_VERSIONS.join(", ")
                ),
            );
            return Ok(error::rpc_error_reply(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                &e,
            ));
        }
    }
    let s = &app.settings;
    let body = read_body(req.into_body(), headers, s.body_limit, s.body_read_timeout).await?;
    let message = rpc::parse_message(&body.buf[..body.len]);
    drop(body);
    let (id, method, params) = match message {
        Ok(Message::Request { id, method, params }) => (id, method, params),
        Ok(Message::Accepted) => return Ok(Reply::empty(StatusCode::ACCEPTED)),
        Err(e) => {
            return Ok(error::rpc_error_reply(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                &e,
            ))
        }
    };
    let result = match method.as_str() {
        "initialize" => rpc::initialize_result(&params, &s.agent_id),
        "ping" => json!({}),
        "tools/list" => rpc::tools_list_result(&s.agent_id),
        "tools/call" => return Ok(call_tool(headers, app, request_id, id, &params)),
        other => {
            let e = RpcError::new(rpc::METHOD_NOT_FOUND, format!("Method not found: {other}"));
            return Ok(error::rpc_error_reply(StatusCode::OK, &id, &e));
        }
    };
    Ok(result_reply(&id, &result))
}

/// `tools/call`: the agent's answer, streamed with progress or as one response.
fn call_tool(
    headers: &HeaderMap,
    app: &Arc<App>,
    request_id: &HeaderValue,
    id: Value,
    params: &Value,
) -> Reply {
    let s = &app.settings;
    let call = match rpc::parse_tool_call(params, &s.agent_id) {
        Ok(c) => c,
        Err(e) => return error::rpc_error_reply(StatusCode::OK, &id, &e),
    };
    let (run, events) = answer::begin(app, call.session, call.query, Framing::Lines, request_id);
    let run: AgentRun = Box::pin(run);
    let progress_token = call
        .progress_token
        .filter(|_| accepts_event_stream(headers));
    let streaming = progress_token.is_some();
    let (sink, source) = event_queue(s.queue, INITIAL_MESSAGE_BUFFER);
    // Without progress the relay still runs as the body's task, so that a client that
    // leaves cancels the agent; the one frame it writes is then the JSON response.
    let relay = answer::run_inline_then_spawn(Box::pin(relay(
        run,
        events,
        sink,
        Relay {
            id,
            progress_token,
            limit: s.mcp_result_max_bytes,
        },
    )));
    if streaming {
        Reply::sse(ResponseBody::sse(SseBody::new(source, relay, s.heartbeat)))
    } else {
        json_stream_reply(SseBody::new(source, relay, None))
    }
}

/// A JSON response whose one frame the relay writes when the answer ends.
fn json_stream_reply(body: SseBody) -> Reply {
    let mut reply = Reply::sse(ResponseBody::sse(body));
    reply.kind = crate::http::reply::ContentKind::Json;
    reply
}

/// Polls the agent's run (until it returns), then takes what the answer's queue holds.
fn next_events<'a>(
    agent: &'a mut Option<AgentRun>,
    source: &'a mut EventSource,
) -> impl Future<Output = Next> + 'a {
    poll_fn(move |cx| {
        if let Some(run) = agent.as_mut() {
            if run.as_mut().poll(cx).is_ready() {
                *agent = None;
            }
        }
        source.poll_next(cx)
    })
}

/// What the relay answers: the request's id, the progress token (SSE when set) and
/// the most text it holds.
struct Relay {
    id: Value,
    progress_token: Option<Value>,
    limit: usize,
}

/// How a `tools/call` ended.
enum Outcome {
    Answer,
    AgentFailed { message: String, code: i64 },
    TooLarge,
}

impl Relay {
    /// Appends the final message: the result (or, for an answer too large, a tool
    /// error), as an SSE event when streaming.
    fn write_final(&self, out: &mut BytesMut, outcome: &Outcome, text: &str) {
        let result = match outcome {
            Outcome::Answer => rpc::tool_result(text, false),
            Outcome::AgentFailed { message, .. } => rpc::tool_result(message, true),
            Outcome::TooLarge => rpc::tool_result(
                "The agent's answer is larger than this server returns (MCP_RESULT_MAX_BYTES)",
                true,
            ),
        };
        match self.progress_token {
            Some(_) => rpc::write_sse(out, |b| rpc::write_result(b, &self.id, &result)),
            None => rpc::write_result(out, &self.id, &result),
        }
    }
}

/// Relays one answer into `sink` until `done` or until the client is gone (returning
/// then drops, so cancels, the agent): progress notifications (when streaming) with
/// the text so far, then the result. An answer that ends any other way is aborted, so
/// the client sees a broken stream rather than a short answer.
async fn relay(run: AgentRun, mut events: EventSource, sink: EventSink, relay: Relay) {
    let mut agent = Some(run);
    let mut reader = EventReader::default();
    let mut text = String::new();
    let mut chars = 0usize;
    let mut failure: Option<(String, i64)> = None;
    let mut out = BytesMut::new();
    loop {
        let data = match next_events(&mut agent, &mut events).await {
            Next::Data(data) => data,
            Next::End | Next::Aborted(_) => {
                sink.abort(Closed::Disconnected);
                return;
            }
        };
        let before = chars;
        let mut outcome = None;
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match reader.read(line) {
                SentientEvent::Text(t) => {
                    chars += t.chars().count();
                    text.push_str(&t);
                }
                SentientEvent::Error { message, code } => failure = Some((message, code)),
                SentientEvent::Done => {
                    outcome = Some(match failure.take() {
                        Some((message, code)) => Outcome::AgentFailed { message, code },
                        None => Outcome::Answer,
                    });
                    break;
                }
                SentientEvent::Extension(_) | SentientEvent::Skip => {}
            }
            if text.len() > relay.limit {
                // Returning after this frame drops the run: the agent is cancelled.
                outcome = Some(Outcome::TooLarge);
                break;
            }
        }
        // The text so far before the result, even when both came in one read (an
        // answer over the limit is not repeated).
        if let Some(token) = &relay.progress_token {
            if chars > before && !matches!(outcome, Some(Outcome::TooLarge)) {
                rpc::write_sse(&mut out, |b| rpc::write_progress(b, token, chars, &text));
            }
        }
        match &outcome {
            Some(o) => relay.write_final(&mut out, o, &text),
            None if out.is_empty() => continue,
            None => {}
        }
        if sink.ready().await.is_err() {
            return;
        }
        let finished = outcome.is_some();
        if let Some(o) = &outcome {
            sink.set_ending(match o {
                Outcome::AgentFailed { code, .. } => Ending::Error(*code),
                _ => Ending::Done,
            });
        }
        if sink.push(finished, |b| b.put_slice(&out)).is_err() || finished {
            return;
        }
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_paths_and_accept() {
        assert!(is_mcp_path("/mcp"));
        assert!(is_mcp_path("//mcp/"));
        assert!(!is_mcp_path("/mcp/x"));
        assert!(!is_mcp_path("/mcpx"));
        let mut h = HeaderMap::new();
        assert!(accepts_event_stream(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        assert!(accepts_event_stream(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!accepts_event_stream(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*;q=0.1"));
        assert!(accepts_event_stream(&h));
    }
}
