//! The OpenAI-compatible front door: `GET /v1/models` and `POST /v1/chat/completions`
//! (README.md, "OpenAI-compatible front door", has the mapping rules).
//!
//! A chat request is translated ([`request`]) into the same `Session` and `Query` that
//! `/agent` takes, and answered through the same lifecycle (`routes::answer`: one
//! `done`, after an error when the agent failed) with the events framed as lines; a
//! relay reads them back ([`stream::EventReader`]) and writes OpenAI chunks
//! ([`stream::ChunkWriter`]) into a second bounded queue that the SSE body sends, or,
//! without `stream`, collects the whole answer (at most `CHAT_COMPLETION_MAX_BYTES`)
//! into one `chat.completion`. The relay owns the agent's run: when the client leaves,
//! the body aborts the relay and dropping it cancels the agent, exactly as on `/agent`.
//! Errors use OpenAI's shape ([`error`]). Authentication ([`authorize`]): what `/agent`
//! accepts, plus a configured API key sent as the bearer token.
//!
//! This module must never emit a Sentient event itself nor end an answer another way
//! than `routes::answer` does; an answer that fails is never sent as a short success.

pub mod error;
pub mod request;
pub mod stream;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use hyper::body::Incoming;

use self::stream::{ChunkWriter, EventReader, SentientEvent};
use super::answer;
use crate::edge::auth::{AuthError, Authenticator};
use crate::http::body::SseBody;
use crate::http::{HttpError, Reply, ResponseBody};
use crate::protocol::events::{write_json_str, Framing};
use crate::protocol::queue::{event_queue, Closed, Ending, EventSink, EventSource, Next};
use crate::routes::App;

/// Initial size of the chunk queue's buffer; it grows up to `SSE_QUEUE_BYTES`.
const INITIAL_CHUNK_BUFFER: usize = 1024;

/// The agent's run (see [`answer::begin`]), polled by the relay.
pub(crate) type AgentRun = Pin<Box<dyn Future<Output = ()> + Send>>;

/// True for paths under `/v1/`: their errors, routed or not, take OpenAI's shape.
pub fn is_openai_path(path: &str) -> bool {
    path.split('/').find(|s| !s.is_empty()) == Some("v1")
}

/// Authentication on `/v1/*`. A bearer token equal to a configured API key
/// (`API_KEY_SECRET`, compared in constant time) is accepted: that is how OpenAI
/// clients send their key. Otherwise the rule of `/agent`: with a JWT key configured
/// the bearer token is verified when sent and required with `AUTH_REQUIRED`. With API
/// keys configured and no JWT key, the API key is required.
pub fn authorize(authorization: Option<&[u8]>, auth: &Authenticator) -> Result<(), AuthError> {
    let token = authorization.and_then(crate::edge::auth::bearer_token);
    if token.is_some() && auth.check_api_key(token).is_ok() {
        return Ok(());
    }
    if auth.is_jwt_configured() {
        return auth.check_bearer(authorization).map(|_| ());
    }
    if auth.has_api_keys() {
        return Err(AuthError::InvalidApiKey);
    }
    Ok(())
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `GET /v1/models`: the served agent, as the one model (`AGENT_ID`).
pub fn models(app: &App) -> Reply {
    let created = unix_now().saturating_sub(app.started.elapsed().as_secs());
    let mut out = BytesMut::new();
    out.put_slice(b"{\"object\":\"list\",\"data\":[{\"id\":");
    write_json_str(&mut out, &app.settings.agent_id);
    out.put_slice(b",\"object\":\"model\",\"created\":");
    out.put_slice(itoa::Buffer::new().format(created).as_bytes());
    out.put_slice(b",\"owned_by\":\"agentd\"}]}");
    Reply::json(StatusCode::OK, out.freeze())
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    req: Request<Incoming>,
    headers: &HeaderMap,
    app: &Arc<App>,
    request_id: &HeaderValue,
) -> Result<Reply, HttpError> {
    let body = super::agent::read_json_body(req, headers, app).await?;
    let s = &app.settings;
    let chat = request::parse_chat_request(&body.buf[..body.len], &app.settings.agent_id)?;
    drop(body);
    let id = format!("chatcmpl-{}", chat.query.id);
    let created = unix_now();
    let (run, events) = answer::begin(app, chat.session, chat.query, Framing::Lines, request_id);
    let run: AgentRun = Box::pin(run);
    if !chat.stream {
        return Ok(collect(run, events, s.chat_completion_max_bytes)
            .await
            .into_reply(&id, created, &app.settings.agent_id, chat.prompt_chars));
    }
    let (sink, source) = event_queue(s.queue, INITIAL_CHUNK_BUFFER);
    let writer = ChunkWriter::new(
        &id,
        created,
        &app.settings.agent_id,
        chat.prompt_chars,
        chat.include_usage,
    );
    let relay = answer::run_inline_then_spawn(Box::pin(relay(run, events, sink, writer)));
    Ok(Reply::sse(ResponseBody::sse(SseBody::new(
        source,
        relay,
        s.heartbeat,
    ))))
}

/// Polls the agent's run (until it returns), then takes what the answer's queue holds.
pub(crate) fn next_events<'a>(
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

/// Streams one answer as chunks into `sink`, until `done` or until the client is
/// gone (returning then drops, so cancels, the agent). A stream that ends any other
/// way is aborted, so the client sees a broken stream rather than a short answer.
async fn relay(run: AgentRun, mut events: EventSource, sink: EventSink, mut chunks: ChunkWriter) {
    let mut agent = Some(run);
    let mut reader = EventReader::default();
    let mut out = BytesMut::new();
    let mut ending = Ending::Done;
    loop {
        let data = match next_events(&mut agent, &mut events).await {
            Next::Data(data) => data,
            Next::End | Next::Aborted(_) => {
                sink.abort(Closed::Disconnected);
                return;
            }
        };
        let mut finished = false;
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match reader.read(line) {
                SentientEvent::Text(t) => chunks.text(&mut out, &t),
                SentientEvent::Extension(ev) => chunks.extension(&mut out, ev),
                SentientEvent::Error { message, code } => {
                    chunks.error(&mut out, &message);
                    ending = Ending::Error(code);
                }
                SentientEvent::Done => {
                    if ending == Ending::Done {
                        chunks.stop(&mut out);
                    }
                    finished = true;
                }
                SentientEvent::Skip => {}
            }
        }
        if out.is_empty() && !finished {
            continue;
        }
        if sink.ready().await.is_err() {
            return;
        }
        if finished {
            sink.set_ending(ending);
        }
        if sink.push(finished, |b| b.put_slice(&out)).is_err() || finished {
            return;
        }
        out.clear();
    }
}

/// A non-streaming answer, read to its end.
enum Collected {
    Answer {
        text: String,
        extensions: Vec<u8>,
    },
    AgentFailed {
        message: String,
        code: i64,
    },
    TooLarge,
    /// The answer's queue ended without `done` (cannot happen while the client waits).
    Broken,
}

/// Reads a whole answer, keeping at most `limit` bytes of text and extension events.
async fn collect(run: AgentRun, mut events: EventSource, limit: usize) -> Collected {
    let mut agent = Some(run);
    let mut reader = EventReader::default();
    let mut text = String::new();
    let mut extensions = Vec::new();
    let mut failure = None;
    loop {
        let data = match next_events(&mut agent, &mut events).await {
            Next::Data(data) => data,
            Next::End | Next::Aborted(_) => return Collected::Broken,
        };
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match reader.read(line) {
                SentientEvent::Text(t) => text.push_str(&t),
                SentientEvent::Extension(ev) => {
                    if !extensions.is_empty() {
                        extensions.push(b',');
                    }
                    extensions.extend_from_slice(ev);
                }
                SentientEvent::Error { message, code } => failure = Some((message, code)),
                SentientEvent::Done => {
                    return match failure {
                        Some((message, code)) => Collected::AgentFailed { message, code },
                        None => Collected::Answer { text, extensions },
                    };
                }
                SentientEvent::Skip => {}
            }
            if text.len() + extensions.len() > limit {
                // Returning drops the run: the agent is cancelled.
                return Collected::TooLarge;
            }
        }
    }
}

impl Collected {
    fn into_reply(self, id: &str, created: u64, model: &str, prompt_chars: usize) -> Reply {
        let (text, extensions) = match self {
            Collected::Answer { text, extensions } => (text, extensions),
            Collected::AgentFailed { message, code } => {
                return error::failure_reply(error::agent_error_status(code), &message, "agent_error")
            }
            Collected::TooLarge => {
                return error::failure_reply(
                    StatusCode::BAD_GATEWAY,
                    "The agent's answer is larger than this server returns without streaming; use stream: true",
                    "response_too_large",
                )
            }
            Collected::Broken => {
                return error::failure_reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The answer ended unexpectedly",
                    "agent_error",
                )
            }
        };
        let mut out = BytesMut::with_capacity(text.len() + extensions.len() + 256);
        out.put_slice(b"{\"id\":");
        write_json_str(&mut out, id);
        out.put_slice(b",\"object\":\"chat.completion\",\"created\":");
        out.put_slice(itoa::Buffer::new().format(created).as_bytes());
        out.put_slice(b",\"model\":");
        write_json_str(&mut out, model);
        out.put_slice(
            b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":",
        );
        write_json_str(&mut out, &text);
        out.put_slice(
            b",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":",
        );
        stream::write_usage(&mut out, prompt_chars, text.chars().count());
        out.put_slice(b",\"sentient_events\":[");
        out.put_slice(&extensions);
        out.put_slice(b"]}");
        Reply::json(StatusCode::OK, out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_paths() {
        assert!(is_openai_path("/v1/chat/completions"));
        assert!(is_openai_path("//v1"));
        assert!(is_openai_path("/v1/unknown/x"));
        assert!(!is_openai_path("/agent"));
        assert!(!is_openai_path("/v10/models"));
        assert!(!is_openai_path("/"));
    }
}
