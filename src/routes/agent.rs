//! `POST /agent`, `POST /assist` and `GET /stream`: validate, then run the agent into
//! an SSE response.
//!
//! The agent is polled once inline: an agent that finishes without waiting (the echo
//! agent) costs no task and its events leave in one write. Otherwise it continues as a
//! task on this worker that the response body aborts if the client leaves. Whatever
//! the agent does (returns, fails, panics, overruns `AGENT_TIMEOUT`, or is cut by the
//! shutdown deadline) the response ends with `done`, after an `atomic.error` when it
//! did not succeed.

use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_util::FutureExt;
use http::{header, HeaderMap, HeaderValue, Request};
use hyper::body::Incoming;

use crate::agent::AgentError;
use crate::http::body::{read_body, SseBody};
use crate::http::{HttpError, Reply, ResponseBody};
use crate::protocol::events::Framing;
use crate::protocol::queue::{event_queue, Ending, QueueLimits};
use crate::protocol::request::{parse_agent_request, prompt_from_query};
use crate::protocol::{ids, ProtocolError, Query, ResponseHandler, Session};
use crate::server::shutdown::Phase;
use crate::server::App;

/// Initial size of a response's event buffer; it grows up to `SSE_QUEUE_BYTES`.
const INITIAL_EVENT_BUFFER: usize = 1024;

/// True for JSON content types: absent, `application/json` (any parameters) or
/// `application/*+json`.
fn is_json_content_type(v: Option<&HeaderValue>) -> bool {
    let Some(v) = v else { return true };
    let Ok(s) = v.to_str() else { return false };
    let essence = s.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || (sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json")))
}

/// `POST /agent`, `POST /assist`.
pub async fn assist(
    req: Request<Incoming>,
    headers: &HeaderMap,
    app: &Arc<App>,
    request_id: &HeaderValue,
) -> Result<Reply, HttpError> {
    if !is_json_content_type(headers.get(header::CONTENT_TYPE)) {
        return Err(HttpError::UnsupportedMediaType);
    }
    let c = &app.config;
    let mut body = read_body(
        req.into_body(),
        headers,
        c.body_limit,
        c.body_read_timeout(),
    )
    .await?;
    let (session, query) = parse_agent_request(&mut body.buf, body.len, &app.agent_id)?;
    drop(body);
    Ok(start(app, session, query, Framing::Named, request_id))
}

/// `GET /stream?prompt=…`: the same agent, framed for `EventSource`. `HEAD` answers
/// the same head and never runs the agent (uptime checkers and link previews must not
/// cost an answer). A reconnect whose `Last-Event-ID` is the `done` of an answer this
/// process finished gets 204, which tells `EventSource` to stop.
pub fn stream(
    req: Request<Incoming>,
    headers: &HeaderMap,
    app: &Arc<App>,
    request_id: &HeaderValue,
) -> Result<Reply, HttpError> {
    let prompt =
        prompt_from_query(req.uri().query()).map_err(|i| HttpError::Validation(vec![i]))?;
    if req.method() == http::Method::HEAD {
        return Ok(Reply::sse(ResponseBody::empty()));
    }
    let finished = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| ids::parse_canonical_ulid(s.trim()))
        .is_some_and(|id| app.finished_streams.contains(id));
    if finished {
        return Ok(Reply::empty(http::StatusCode::NO_CONTENT));
    }
    let query = Query {
        id: ids::next_ulid(),
        prompt,
        context: None,
    };
    let session = Session::synthesized(&app.agent_id);
    Ok(start(app, session, query, Framing::DataOnly, request_id))
}

fn start(
    app: &Arc<App>,
    session: Session,
    query: Query,
    framing: Framing,
    request_id: &HeaderValue,
) -> Reply {
    let c = &app.config;
    let limits = QueueLimits {
        capacity: c.sse_queue_bytes as usize,
        slow_reader_timeout: c.slow_reader_timeout(),
    };
    let (sink, source) = event_queue(limits, INITIAL_EVENT_BUFFER);
    let handler = ResponseHandler::new(sink, framing, session.processor_id.clone());
    let mut run = Box::pin(run_agent(
        app.clone(),
        session,
        query,
        handler,
        request_id.clone(),
    ));
    let agent = match run.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(()) => None,
        // Spawning polls it again with a real waker.
        Poll::Pending => Some(tokio::spawn(run).abort_handle()),
    };
    Reply::sse(ResponseBody::sse(SseBody::new(
        source,
        agent,
        c.heartbeat(),
    )))
}

enum Outcome {
    Done,
    Failed(AgentError),
    Panicked,
    TimedOut,
    ShutdownDeadline,
}

type Caught = Result<Result<(), AgentError>, Box<dyn std::any::Any + Send>>;

impl From<Caught> for Outcome {
    fn from(r: Caught) -> Self {
        match r {
            Ok(Ok(())) => Outcome::Done,
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => Outcome::Panicked,
        }
    }
}

pub(crate) async fn run_agent(
    app: Arc<App>,
    session: Session,
    query: Query,
    mut handler: ResponseHandler,
    request_id: HeaderValue,
) {
    let deadline = tokio::time::Instant::now() + app.config.agent_timeout();
    let outcome = {
        let assist =
            AssertUnwindSafe(app.agent.assist(&session, &query, &mut handler)).catch_unwind();
        let mut assist = std::pin::pin!(assist);
        // An agent that finishes without waiting needs neither the timeout's timer nor
        // the shutdown watch: poll it once before arming them.
        let first = poll_fn(|cx| Poll::Ready(assist.as_mut().poll(cx))).await;
        match first {
            Poll::Ready(r) => Outcome::from(r),
            Poll::Pending => {
                let mut phase = app.phase.clone();
                tokio::select! {
                    biased;
                    r = tokio::time::timeout_at(deadline, assist) => match r {
                        Ok(r) => Outcome::from(r),
                        Err(_) => Outcome::TimedOut,
                    },
                    _ = phase.wait_for(|p| *p == Phase::Deadline) => Outcome::ShutdownDeadline,
                }
            }
        }
    };
    finish(&mut handler, outcome, &request_id).await;
    if handler.framing() == Framing::DataOnly {
        if let Some(id) = handler.done_id() {
            app.finished_streams.insert(id);
        }
    }
}

/// Ends the response whatever the agent did: error (if any), open streams, `done`.
async fn finish(handler: &mut ResponseHandler, outcome: Outcome, request_id: &HeaderValue) {
    if handler.is_disconnected() {
        return;
    }
    let (failure, ending) = match outcome {
        Outcome::Done => (None, Ending::Done),
        Outcome::Failed(e) => {
            tracing::warn!(request_id = ?request_id, error = %e, "agent failed");
            let code = e.code;
            (Some(e), Ending::Error(code))
        }
        Outcome::Panicked => {
            tracing::error!(request_id = ?request_id, "agent panicked");
            (
                Some(AgentError::new("The agent failed while answering", 500)),
                Ending::Error(500),
            )
        }
        Outcome::TimedOut => {
            tracing::warn!(request_id = ?request_id, "agent timed out");
            (
                Some(AgentError::new("The agent did not answer in time", 504)),
                Ending::TimedOut,
            )
        }
        Outcome::ShutdownDeadline => (
            Some(AgentError::new("The server is shutting down", 503)),
            Ending::Shutdown,
        ),
    };
    if handler.is_complete() {
        return;
    }
    if let Some(e) = failure {
        let sent = handler
            .emit_error(&e.message, e.code, e.details.as_ref())
            .await;
        if let Err(ProtocolError::InvalidContent(_)) = sent {
            // Details that are not a JSON object are dropped, the error still goes out.
            let _ = handler.emit_error(&e.message, e.code, None).await;
        }
    }
    // An error the agent emitted itself was recorded by `emit_error`.
    if ending != Ending::Done {
        handler.set_ending(ending);
    }
    let _ = handler.complete().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let ok = |s: &'static str| is_json_content_type(Some(&HeaderValue::from_static(s)));
        assert!(is_json_content_type(None));
        assert!(ok("application/json"));
        assert!(ok("Application/JSON; charset=utf-8"));
        assert!(ok("application/vnd.api+json"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/x-www-form-urlencoded"));
        assert!(!ok("application/+json"));
        assert!(!ok("json"));
    }
}
