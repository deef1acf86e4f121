//! Errors on `/a2a` in JSON-RPC 2.0's shape:
//! `{"jsonrpc":"2.0","id":…,"error":{"code","message","data":{"code"}}}`.
//!
//! A refusal at the edge (shedding, auth, rate limit, body limits, bad JSON) is still
//! an [`HttpError`] with its status and headers (`Retry-After`, `WWW-Authenticate`);
//! only its body is rendered here, with the JSON-RPC code that fits (-32700 for a body
//! that is not JSON, -32602 for invalid params, -32603 for a server error, -32600
//! otherwise) and `data.code` the stable code `/agent` reports. A method's own error
//! (unknown method, task not found) is a JSON-RPC error with HTTP 200. This module
//! only renders; it must never decide whether a request fails, and never reveal
//! anything internal.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::http::{HttpError, Reply, ResponseBody};

/// JSON-RPC: the body is not JSON.
pub(crate) const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request object.
pub(crate) const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: no such method.
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: invalid method parameters.
pub(crate) const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: internal error.
pub(crate) const INTERNAL_ERROR: i64 = -32603;
/// A2A: the task is not (or no longer) known.
pub(crate) const TASK_NOT_FOUND: i64 = -32001;
/// A2A: the task has ended and cannot be canceled.
pub(crate) const TASK_NOT_CANCELABLE: i64 = -32002;
/// A2A: the operation is not supported.
pub(crate) const UNSUPPORTED_OPERATION: i64 = -32004;

/// A JSON-RPC error response object.
pub(crate) fn error_object(id: &Value, code: i64, message: &str, data_code: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message, "data": {"code": data_code}},
    })
}

/// A method's error: HTTP 200 with a JSON-RPC error body.
pub(crate) fn rpc_error(id: &Value, code: i64, message: &str, data_code: &str) -> Reply {
    error_reply(&error_object(id, code, message, data_code))
}

/// A JSON-RPC error object as a reply: HTTP 200 with it as the body.
pub(crate) fn error_reply(body: &Value) -> Reply {
    let body = serde_json::to_vec(body).unwrap_or_default();
    Reply::json(StatusCode::OK, Bytes::from(body))
}

/// The JSON-RPC code of an edge refusal.
pub(crate) fn rpc_code(e: &HttpError) -> i64 {
    match e {
        HttpError::InvalidJson(_) | HttpError::EmptyBody => PARSE_ERROR,
        HttpError::Validation(_) => INVALID_PARAMS,
        _ if e.status().is_server_error() => INTERNAL_ERROR,
        _ => INVALID_REQUEST,
    }
}

/// The edge's refusal, with a JSON-RPC body (status and headers as [`HttpError`] sets
/// them; the request's id is not known here, so it is `null`).
pub(crate) fn http_error_reply(e: HttpError, request_id: &HeaderValue) -> Reply {
    let code = rpc_code(&e);
    let message = match &e {
        HttpError::Validation(issues) => match issues.first() {
            Some(i) if i.path.is_empty() => format!("Invalid params: {}", i.message),
            Some(i) => format!("Invalid params: {}: {}", i.path, i.message),
            None => e.to_string(),
        },
        _ => e.to_string(),
    };
    let body = error_object(&Value::Null, code, &message, e.code());
    let mut reply = e.into_reply(request_id);
    reply.body = ResponseBody::full(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::Issue;
    use http_body_util::BodyExt;

    async fn body_of(r: Reply) -> Value {
        let b = r.body.collect().await.unwrap().to_bytes();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn edge_errors_keep_status_with_json_rpc_bodies() {
        let rid = HeaderValue::from_static("r1");
        let r = http_error_reply(HttpError::InvalidJson("x".into()), &rid);
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let v = body_of(r).await;
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["error"]["code"], PARSE_ERROR);
        let r = http_error_reply(
            HttpError::Validation(vec![Issue {
                path: "/message/parts".into(),
                message: "must hold text".into(),
            }]),
            &rid,
        );
        assert_eq!(body_of(r).await["error"]["code"], INVALID_PARAMS);
        let r = http_error_reply(HttpError::UnderPressure { retry_after: 2 }, &rid);
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_of(r).await["error"]["code"], INTERNAL_ERROR);
        let r = http_error_reply(HttpError::InvalidApiKey, &rid);
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(body_of(r).await["error"]["code"], INVALID_REQUEST);
    }
}
