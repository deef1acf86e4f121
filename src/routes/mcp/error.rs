//! Errors on `/mcp` in JSON-RPC's shape: `{"jsonrpc":"2.0","id":null,"error":{"code",
//! "message","data":{"code","requestId"}}}`.
//!
//! A refusal at the edge (origin, auth, rate limit, shedding, body limits, method) is
//! still an [`HttpError`] with its status and headers (`Allow`, `Retry-After`,
//! `WWW-Authenticate`); only its body is rendered here, its JSON-RPC code chosen from
//! the error (`-32700` for a body that is not JSON, `-32602` for invalid params,
//! `-32600` for any other refusal of the client's request, `-32603` for the server's
//! own) and `data.code` the same stable code `/agent` reports. This module only
//! renders; it must never decide whether a request fails, and never reveal anything
//! internal.

use bytes::BytesMut;
use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::rpc::{self, RpcError};
use crate::http::error::Fault;
use crate::http::{HttpError, Reply, ResponseBody};

/// The JSON-RPC code of an edge refusal.
fn rpc_code(e: &HttpError) -> i64 {
    match e {
        HttpError::InvalidJson(_) | HttpError::EmptyBody => rpc::PARSE_ERROR,
        HttpError::Validation(_) => rpc::INVALID_PARAMS,
        e if e.fault() == Fault::Client => rpc::INVALID_REQUEST,
        _ => rpc::INTERNAL_ERROR,
    }
}

/// The edge's refusal, with a JSON-RPC body (status and headers as [`HttpError`] sets
/// them).
pub(crate) fn http_error_reply(e: HttpError, request_id: &HeaderValue) -> Reply {
    let error = RpcError {
        code: rpc_code(&e),
        message: e.to_string(),
        data: Some(json!({
            "code": e.code(),
            "requestId": request_id.to_str().unwrap_or(""),
        })),
    };
    let mut body = BytesMut::new();
    rpc::write_error(&mut body, &Value::Null, &error);
    let mut reply = e.into_reply(request_id);
    reply.body = ResponseBody::full(body.freeze());
    reply
}

/// A JSON-RPC error as the whole response, with `status`.
pub(crate) fn rpc_error_reply(status: StatusCode, id: &Value, e: &RpcError) -> Reply {
    let mut body = BytesMut::new();
    rpc::write_error(&mut body, id, e);
    Reply::json(status, body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(r: Reply) -> Value {
        let b = r.body.collect().await.unwrap().to_bytes();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn edge_errors_keep_status_and_headers_with_json_rpc_bodies() {
        let rid = HeaderValue::from_static("r1");
        let r = http_error_reply(HttpError::MethodNotAllowed { allow: "POST" }, &rid);
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.extra.as_ref().unwrap().0, http::header::ALLOW);
        let v = body_of(r).await;
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["error"]["code"], rpc::INVALID_REQUEST);
        assert_eq!(v["error"]["data"]["code"], "method_not_allowed");
        assert_eq!(v["error"]["data"]["requestId"], "r1");
        let r = http_error_reply(HttpError::UnderPressure { retry_after: 2 }, &rid);
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_of(r).await["error"]["code"], rpc::INTERNAL_ERROR);
        let r = http_error_reply(HttpError::OriginNotAllowed, &rid);
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = http_error_reply(HttpError::InvalidJson("x".into()), &rid);
        assert_eq!(body_of(r).await["error"]["code"], rpc::PARSE_ERROR);
    }
}
