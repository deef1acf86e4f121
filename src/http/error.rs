//! [`HttpError`]: the one error type at the HTTP edge.
//!
//! Each variant knows its status, its stable `code`, and whose fault it is. Every error
//! leaves as JSON `{error, code, [details,] requestId}`; never HTML or plain text, and
//! never anything internal (stack traces, upstream secrets).

use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

use super::reply::Reply;
use crate::protocol::request::{Issue, RequestError};

/// Who caused a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Client,
    Upstream,
    Server,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("Route not found")]
    NotFound,
    #[error("Method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("Request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("Unsupported media type: send application/json")]
    UnsupportedMediaType,
    #[error("Request body is empty")]
    EmptyBody,
    #[error("Request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("Validation failed")]
    Validation(Vec<Issue>),
    #[error("Request body not received in time")]
    BodyTimeout,
    #[error("Could not read the request body")]
    BodyRead,
    #[error("Server is shutting down")]
    ShuttingDown,
    #[error("Under pressure!")]
    UnderPressure { retry_after: u64 },
    #[error("Invalid token")]
    InvalidToken,
    #[error("Forbidden")]
    Forbidden,
    #[error("Invalid API key")]
    InvalidApiKey,
    #[error("Rate limit exceeded")]
    RateLimited {
        ip: std::net::IpAddr,
        /// Until the window ends: `Retry-After` (whole seconds, rounded up).
        reset_secs: u64,
        /// The same in milliseconds: the body's `expiresIn`, as `@fastify/rate-limit`'s
        /// `ttl` that the guide's body reports.
        reset_ms: u64,
    },
    /// The rate limit's store (Redis) cannot answer and the policy is `closed`: the
    /// server's fault, not the client's, so not a 429.
    #[error("Rate limiting is unavailable")]
    RateLimitUnavailable { retry_after: u64 },
    /// A WebSocket upgrade from an origin `CORS_ORIGINS` does not allow (cross-site
    /// WebSocket hijacking: browsers apply no CORS to WebSockets).
    #[error("Origin not allowed")]
    OriginNotAllowed,
    /// `/agent/streams/{id}`: no such stream, or it expired.
    #[error("Stream not found")]
    StreamNotFound,
    /// A resume from a position the stream no longer keeps (`RESUME_BUFFER_BYTES`).
    #[error("The stream's events up to that position are no longer kept")]
    StreamTruncated,
    /// A resume position that is not an event of this stream.
    #[error("Last-Event-ID is not an event of this stream")]
    UnknownPosition,
    /// The shared resume store (Redis) cannot answer, or too many streams are being
    /// resumed from it at once (`RESUME_REMOTE_READERS`).
    #[error("Resuming this stream is unavailable")]
    ResumeUnavailable,
}

impl HttpError {
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::NotFound | HttpError::StreamNotFound => StatusCode::NOT_FOUND,
            HttpError::StreamTruncated => StatusCode::GONE,
            HttpError::UnknownPosition => StatusCode::BAD_REQUEST,
            HttpError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::EmptyBody | HttpError::InvalidJson(_) | HttpError::Validation(_) => {
                StatusCode::BAD_REQUEST
            }
            HttpError::BodyRead => StatusCode::BAD_REQUEST,
            HttpError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            HttpError::ShuttingDown
            | HttpError::UnderPressure { .. }
            | HttpError::RateLimitUnavailable { .. }
            | HttpError::ResumeUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            HttpError::InvalidToken | HttpError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden | HttpError::OriginNotAllowed => StatusCode::FORBIDDEN,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::NotFound => "not_found",
            HttpError::StreamNotFound => "stream_not_found",
            HttpError::StreamTruncated => "stream_truncated",
            HttpError::UnknownPosition => "unknown_position",
            HttpError::ResumeUnavailable => "resume_unavailable",
            HttpError::MethodNotAllowed { .. } => "method_not_allowed",
            HttpError::PayloadTooLarge { .. } => "payload_too_large",
            HttpError::UnsupportedMediaType => "unsupported_media_type",
            HttpError::EmptyBody => "empty_body",
            HttpError::InvalidJson(_) => "invalid_json",
            HttpError::Validation(_) => "validation_failed",
            HttpError::BodyTimeout => "body_timeout",
            HttpError::BodyRead => "body_read_failed",
            HttpError::ShuttingDown => "shutting_down",
            HttpError::UnderPressure { .. } => "under_pressure",
            HttpError::RateLimited { .. } => "rate_limited",
            HttpError::RateLimitUnavailable { .. } => "rate_limit_unavailable",
            HttpError::OriginNotAllowed => "origin_not_allowed",
            HttpError::InvalidToken => "invalid_token",
            HttpError::Forbidden => "forbidden",
            HttpError::InvalidApiKey => "invalid_api_key",
        }
    }

    /// Whether each occurrence deserves an error log line. Not a refusal for a
    /// failing Redis: the limiter logs that once per cool-down per worker, and a line
    /// per refused request would flood the log during an outage.
    pub fn logged(&self) -> bool {
        self.fault() != Fault::Client && !matches!(self, HttpError::RateLimitUnavailable { .. })
    }

    pub fn fault(&self) -> Fault {
        match self {
            HttpError::ShuttingDown | HttpError::UnderPressure { .. } => Fault::Server,
            HttpError::RateLimitUnavailable { .. } | HttpError::ResumeUnavailable => {
                Fault::Upstream
            }
            _ => Fault::Client,
        }
    }

    /// Whether the connection must close after this response (the rest of the
    /// request was not read, so the next bytes cannot be trusted as a new request).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            HttpError::PayloadTooLarge { .. } | HttpError::BodyTimeout | HttpError::BodyRead
        )
    }

    /// The JSON reply for this error.
    pub fn into_reply(self, request_id: &HeaderValue) -> Reply {
        #[derive(Serialize)]
        struct Detail<'a> {
            path: &'a str,
            message: &'a str,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            error: String,
            code: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<Vec<Detail<'a>>>,
            request_id: &'a str,
        }
        let details = match &self {
            HttpError::Validation(issues) => Some(
                issues
                    .iter()
                    .map(|i| Detail {
                        path: &i.path,
                        message: &i.message,
                    })
                    .collect(),
            ),
            _ => None,
        };
        let body = Body {
            error: self.to_string(),
            code: self.code(),
            details,
            request_id: request_id.to_str().unwrap_or(""),
        };
        let json = match &self {
            // The guide's rate-limit body (`expiresIn` is `@fastify/rate-limit`'s `ttl`:
            // milliseconds), plus the code and request id every error has.
            HttpError::RateLimited { ip, reset_ms, .. } => serde_json::to_vec(&serde_json::json!({
                "error": body.error,
                "code": body.code,
                "statusCode": 429,
                "message": format!("Too many requests from {ip}"),
                "date": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                "expiresIn": reset_ms,
                "requestId": body.request_id,
            })),
            _ => serde_json::to_vec(&body),
        }
        .unwrap_or_default();
        let reply = Reply::json(self.status(), json.into());
        match self {
            HttpError::MethodNotAllowed { allow } => {
                reply.with_header(header::ALLOW, HeaderValue::from_static(allow))
            }
            HttpError::ShuttingDown | HttpError::ResumeUnavailable => {
                reply.with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            HttpError::InvalidToken => {
                reply.with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
            }
            HttpError::RateLimited { reset_secs, .. } => {
                reply.with_header(header::RETRY_AFTER, HeaderValue::from(reset_secs))
            }
            HttpError::UnderPressure { retry_after }
            | HttpError::RateLimitUnavailable { retry_after } => {
                reply.with_header(header::RETRY_AFTER, HeaderValue::from(retry_after))
            }
            e if e.closes_connection() => {
                reply.with_header(header::CONNECTION, HeaderValue::from_static("close"))
            }
            _ => reply,
        }
    }
}

impl From<RequestError> for HttpError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Empty => HttpError::EmptyBody,
            RequestError::Malformed(m) => HttpError::InvalidJson(m),
            RequestError::Invalid(issues) => HttpError::Validation(issues),
        }
    }
}
