//! Sends one request to one upstream agent and checks its response head: the body it
//! forwards is `{query, session}` (the session always present: agentd synthesizes one
//! when the client sent none, because the Python reference crashes without it).
//!
//! It counts the request in the upstream's figures and waits (on the shared pooled
//! client) only until the head arrives, never past the caller's deadline; it does not
//! read the event stream (see `reader`).

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;
use tokio::time::Instant;

use std::sync::atomic::Ordering::Relaxed;

use super::error::{upstream_error, UpstreamError};
use super::upstream::Upstream;
use crate::backend::client::{self, HttpClient, SendError};
use crate::backend::ErrorKind as Kind;
use crate::protocol::{Query, Session};

#[derive(Serialize)]
struct Forwarded<'a> {
    query: &'a Query,
    session: &'a Session,
}

/// The JSON body sent upstream.
pub fn request_body(session: &Session, query: &Query) -> Bytes {
    // Serializing owned, validated values cannot fail.
    Bytes::from(serde_json::to_vec(&Forwarded { query, session }).unwrap_or_default())
}

/// True for `text/event-stream` with any parameters.
fn is_event_stream(v: Option<&HeaderValue>) -> bool {
    v.and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim())
        .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
}

/// POSTs `body` to `upstream`; returns the event stream's body once a 200
/// `text/event-stream` head arrived before `deadline`.
pub async fn send(
    client: &HttpClient,
    upstream: &Upstream,
    body: Bytes,
    deadline: Instant,
) -> Result<Incoming, UpstreamError> {
    upstream.endpoint.stats.requests.fetch_add(1, Relaxed);
    let request = Request::post(upstream.url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "text/event-stream")
        .body(Full::new(body))
        .map_err(|e| upstream_error(Kind::Connect, e.to_string()))?;
    let res = match client::send(client, request, deadline).await {
        Err(SendError::Timeout) => {
            return Err(upstream_error(Kind::Timeout, "no response head in time"))
        }
        Err(SendError::Failed(e)) => {
            let kind = if e.is_connect() {
                Kind::Connect
            } else {
                Kind::Network
            };
            return Err(upstream_error(kind, format!("{e:?}")));
        }
        Ok(res) => res,
    };
    let status = res.status();
    if status != StatusCode::OK {
        let kind = if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Kind::Status
        } else if status.is_client_error() {
            Kind::Refused
        } else {
            Kind::Status
        };
        return Err(upstream_error(kind, format!("status {status}")));
    }
    if !is_event_stream(res.headers().get(header::CONTENT_TYPE)) {
        return Err(upstream_error(
            Kind::NotSse,
            format!("content-type {:?}", res.headers().get(header::CONTENT_TYPE)),
        ));
    }
    Ok(res.into_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_body_carries_query_and_session_with_upper_case_ulids() {
        let id = ulid::Ulid::from_string("01JDX3ABCDEFGHJKMNPQRSTVWX").unwrap();
        let q = Query {
            id,
            prompt: "a\u{2028}b".into(),
            context: None,
        };
        let s = Session {
            processor_id: Arc::from("p"),
            activity_id: id,
            request_id: id,
            interactions: serde_json::json!([{"x": 1}]),
        };
        let v: serde_json::Value = serde_json::from_slice(&request_body(&s, &q)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "query": {"id": "01JDX3ABCDEFGHJKMNPQRSTVWX", "prompt": "a\u{2028}b"},
                "session": {"processor_id": "p", "activity_id": "01JDX3ABCDEFGHJKMNPQRSTVWX",
                            "request_id": "01JDX3ABCDEFGHJKMNPQRSTVWX", "interactions": [{"x": 1}]}
            })
        );
    }

    #[test]
    fn event_stream_content_types() {
        let ok = |s: &'static str| is_event_stream(Some(&HeaderValue::from_static(s)));
        assert!(ok("text/event-stream"));
        assert!(ok("Text/Event-Stream; charset=utf-8"));
        assert!(!ok("application/json"));
        assert!(!is_event_stream(None));
    }
}
