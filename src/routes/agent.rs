//! `POST /agent`, `POST /assist` and `GET /stream`: validate the request, then serve
//! the answer (see `routes::answer`: the agent polled once inline, then a task; one
//! `done` whatever it does) as an SSE response.
//!
//! Only the HTTP side is here (content type, body, query string, `Last-Event-ID`,
//! `HEAD`); this module must never run the agent or end an answer itself.

use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Request};
use hyper::body::Incoming;

use super::answer;
use crate::http::body::{read_body, SseBody};
use crate::http::{HttpError, Reply, ResponseBody};
use crate::protocol::events::Framing;
use crate::protocol::request::{parse_agent_request, prompt_from_query};
use crate::protocol::{ids, Query, Session};
use crate::routes::{App, Caller};

/// True for JSON content types: absent, `application/json` (any parameters) or
/// `application/*+json`.
pub(crate) fn is_json_content_type(v: Option<&HeaderValue>) -> bool {
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

/// A JSON request's body: refused with 415 unless its content type is JSON, then read
/// under `BODY_LIMIT` and the body read timeout.
pub(crate) async fn read_json_body(
    req: Request<Incoming>,
    headers: &HeaderMap,
    app: &App,
) -> Result<crate::http::body::ReadBody, HttpError> {
    if !is_json_content_type(headers.get(header::CONTENT_TYPE)) {
        return Err(HttpError::UnsupportedMediaType);
    }
    let s = &app.settings;
    read_body(req.into_body(), headers, s.body_limit, s.body_read_timeout).await
}

/// `POST /agent`, `POST /assist`.
pub async fn assist(
    req: Request<Incoming>,
    headers: &HeaderMap,
    app: &Arc<App>,
    request_id: &HeaderValue,
    caller: Caller,
) -> Result<Reply, HttpError> {
    let mut body = read_json_body(req, headers, app).await?;
    let (session, query) = parse_agent_request(&mut body.buf, body.len, &app.settings.agent_id)?;
    drop(body);
    Ok(start(
        app,
        session,
        query,
        Framing::Named,
        request_id,
        caller,
    ))
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
    caller: Caller,
) -> Result<Reply, HttpError> {
    let prompt =
        prompt_from_query(req.uri().query()).map_err(|i| HttpError::Validation(vec![i]))?;
    if req.method() == http::Method::HEAD {
        return Ok(Reply::sse(ResponseBody::empty()));
    }
    let last_event = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| ids::parse_canonical_ulid(s.trim()));
    if let Some(last) = last_event {
        if app.finished_streams.contains(last) {
            return Ok(Reply::empty(http::StatusCode::NO_CONTENT));
        }
        // Resumable: the answer the browser was reading, not a second run.
        if let Some(reply) =
            super::resume::resume_stream_reconnect(app, last, caller.principal.as_deref())
        {
            return Ok(reply);
        }
    }
    let query = Query {
        id: ids::next_ulid(),
        prompt,
        context: None,
    };
    let session = Session::synthesized(&app.settings.agent_id);
    Ok(start(
        app,
        session,
        query,
        Framing::DataOnly,
        request_id,
        caller,
    ))
}

/// Begins the answer and hands its events to an SSE body, which aborts the agent's task
/// if the client leaves, unless the answer is resumable (its run then waits
/// `RESUME_GRACE` for a resume) and named by `x-stream-id`.
fn start(
    app: &Arc<App>,
    session: Session,
    query: Query,
    framing: Framing,
    request_id: &HeaderValue,
    caller: Caller,
) -> Reply {
    let (run, events, stream) =
        answer::begin_resumable(app, session, query, framing, request_id, caller, None);
    let agent = answer::run_inline_then_spawn(Box::pin(run));
    let agent = if stream.is_some() { None } else { agent };
    let reply = Reply::sse(ResponseBody::sse(SseBody::new(
        events,
        agent,
        app.settings.heartbeat,
    )));
    match stream {
        Some(id) => reply.with_header(super::resume::X_STREAM_ID.clone(), id),
        None => reply,
    }
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
