//! Errors on `/v1/*` in OpenAI's shape: `{"error":{"message","type","param","code"}}`.
//!
//! A refusal at the edge (shedding, auth, rate limit, body limits, validation, routing)
//! is still an [`HttpError`] with its status and headers (`Retry-After`, `Allow`,
//! `WWW-Authenticate`); only its body is rendered here, with `code` the same stable
//! code `/agent` reports and `param` the invalid field in OpenAI's notation
//! (`messages[1].content[0]`). An agent's failure becomes a server error with the
//! agent's message. This module only renders; it must never decide whether a request
//! fails, and never reveal anything internal.

use bytes::{BufMut, BytesMut};
use http::{HeaderValue, StatusCode};

use crate::http::{HttpError, Reply, ResponseBody};
use crate::protocol::events::write_json_str;

/// Appends `{"error":{"message":…,"type":…,"param":…,"code":…}}`.
pub fn write_error_object(
    out: &mut BytesMut,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: &str,
) {
    out.put_slice(b"{\"error\":{\"message\":");
    write_json_str(out, message);
    out.put_slice(b",\"type\":");
    write_json_str(out, kind);
    out.put_slice(b",\"param\":");
    match param {
        Some(p) => write_json_str(out, p),
        None => out.put_slice(b"null"),
    }
    out.put_slice(b",\"code\":");
    write_json_str(out, code);
    out.put_slice(b"}}");
}

/// OpenAI's error `type` for a status.
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

/// A JSON pointer (`/messages/1/content/0`) in OpenAI's notation
/// (`messages[1].content[0]`).
pub fn param_of(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for seg in pointer.split('/').filter(|s| !s.is_empty()) {
        if seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// The edge's refusal, with OpenAI's body (status and headers as [`HttpError`] sets
/// them).
pub fn http_error_reply(e: HttpError, request_id: &HeaderValue) -> Reply {
    let status = e.status();
    let code = e.code();
    let (message, param) = match &e {
        HttpError::Validation(issues) => {
            let first = issues.first();
            let param = first.map(|i| param_of(&i.path)).filter(|p| !p.is_empty());
            let mut message = match (first, &param) {
                (Some(i), Some(p)) => format!("Invalid request: {p}: {}", i.message),
                (Some(i), None) => format!("Invalid request: the body {}", i.message),
                (None, _) => e.to_string(),
            };
            if issues.len() > 1 {
                message.push_str(&format!(" (and {} more)", issues.len() - 1));
            }
            (message, param)
        }
        HttpError::RateLimited { reset_secs, .. } => (
            format!("Rate limit exceeded: retry in {reset_secs} s"),
            None,
        ),
        HttpError::InvalidApiKey | HttpError::InvalidToken => (
            format!("{e}: send a valid API key or token as `Authorization: Bearer <key>`"),
            None,
        ),
        _ => (e.to_string(), None),
    };
    let mut body = BytesMut::new();
    write_error_object(
        &mut body,
        &message,
        error_type(status),
        param.as_deref(),
        code,
    );
    let mut reply = e.into_reply(request_id);
    reply.body = ResponseBody::full(body.freeze());
    reply
}

/// A failure after the request was accepted (the agent's error, a response too
/// large), with `status`.
pub fn failure_reply(status: StatusCode, message: &str, code: &str) -> Reply {
    let mut body = BytesMut::new();
    write_error_object(&mut body, message, error_type(status), None, code);
    Reply::json(status, body.freeze())
}

/// The status of a non-streaming answer that ended with `atomic.error` `code`: the
/// code itself when it is a 4xx or 5xx status, else 500.
pub fn agent_error_status(code: i64) -> StatusCode {
    u16::try_from(code)
        .ok()
        .filter(|c| (400..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::Issue;
    use http_body_util::BodyExt;
    use serde_json::{json, Value};

    async fn body_of(r: Reply) -> Value {
        let b = r.body.collect().await.unwrap().to_bytes();
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn params_in_openai_notation() {
        assert_eq!(param_of("/messages/1/content/0"), "messages[1].content[0]");
        assert_eq!(param_of("/max_tokens"), "max_tokens");
        assert_eq!(
            param_of("/stream_options/include_usage"),
            "stream_options.include_usage"
        );
        assert_eq!(param_of(""), "");
    }

    #[tokio::test]
    async fn edge_errors_keep_status_and_headers_with_openai_bodies() {
        let rid = HeaderValue::from_static("r1");
        let r = http_error_reply(
            HttpError::Validation(vec![Issue {
                path: "/messages/0/content/1".into(),
                message: "only text".into(),
            }]),
            &rid,
        );
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body_of(r).await,
            json!({"error": {"message": "Invalid request: messages[0].content[1]: only text",
                "type": "invalid_request_error", "param": "messages[0].content[1]",
                "code": "validation_failed"}})
        );
        let r = http_error_reply(HttpError::UnderPressure { retry_after: 3 }, &rid);
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.extra.as_ref().unwrap().0, http::header::RETRY_AFTER);
        let v = body_of(r).await;
        assert_eq!(v["error"]["type"], "server_error");
        assert_eq!(v["error"]["code"], "under_pressure");
        let r = http_error_reply(HttpError::InvalidApiKey, &rid);
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(body_of(r).await["error"]["type"], "authentication_error");
    }

    #[test]
    fn agent_error_codes_become_statuses() {
        assert_eq!(agent_error_status(504), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(agent_error_status(418).as_u16(), 418);
        assert_eq!(agent_error_status(0), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(agent_error_status(1000), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
