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
use crate::server::App;

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

/// Begins the answer and hands its events to an SSE body, which aborts the agent's task
/// if the client leaves.
fn start(
    app: &Arc<App>,
    session: Session,
    query: Query,
    framing: Framing,
    request_id: &HeaderValue,
) -> Reply {
    let (run, events) = answer::begin(app, session, query, framing, request_id);
    let agent = answer::run_inline_then_spawn(Box::pin(run));
    Reply::sse(ResponseBody::sse(SseBody::new(
        events,
        agent,
        app.config.heartbeat(),
    )))
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
