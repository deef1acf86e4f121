//! [`Reply`]: what a handler answers, before it becomes an HTTP response.
//!
//! Handlers say status, kind and body; the service writes the headers into the
//! request's own header map (cleared), which hyper then keeps for parsing the next
//! request on the connection, so steady-state responses allocate no header storage.

use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::body::ResponseBody;
use super::headers::{EVENT_STREAM, JSON, NO, NO_CACHE, X_ACCEL_BUFFERING};

static PROMETHEUS: HeaderValue =
    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
static UPGRADE: HeaderValue = HeaderValue::from_static("upgrade");
static WEBSOCKET: HeaderValue = HeaderValue::from_static("websocket");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentKind {
    Json,
    EventStream,
    /// No body, no content type (204).
    Empty,
    /// `text/plain; version=0.0.4`
    Prometheus,
    /// A static file with this content type.
    File(&'static str),
}

pub struct Reply {
    pub status: StatusCode,
    pub kind: ContentKind,
    pub body: ResponseBody,
    /// One more header (`Allow`, `Retry-After`, `Connection: close`).
    pub extra: Option<(HeaderName, HeaderValue)>,
}

impl Reply {
    pub fn json(status: StatusCode, body: bytes::Bytes) -> Reply {
        Reply {
            status,
            kind: ContentKind::Json,
            body: ResponseBody::full(body),
            extra: None,
        }
    }

    pub fn sse(body: ResponseBody) -> Reply {
        Reply {
            status: StatusCode::OK,
            kind: ContentKind::EventStream,
            body,
            extra: None,
        }
    }

    /// Prometheus text exposition.
    pub fn prometheus(text: String) -> Reply {
        Reply {
            status: StatusCode::OK,
            kind: ContentKind::Prometheus,
            body: ResponseBody::full(text.into()),
            extra: None,
        }
    }

    /// `101 Switching Protocols` to WebSocket (`Connection: upgrade`, `Upgrade:
    /// websocket`); `accept` is the `Sec-WebSocket-Accept` value.
    pub fn websocket_upgrade(accept: HeaderValue) -> Reply {
        Reply {
            status: StatusCode::SWITCHING_PROTOCOLS,
            kind: ContentKind::Empty,
            body: ResponseBody::empty(),
            extra: Some((header::SEC_WEBSOCKET_ACCEPT, accept)),
        }
    }

    pub fn empty(status: StatusCode) -> Reply {
        Reply {
            status,
            kind: ContentKind::Empty,
            body: ResponseBody::empty(),
            extra: None,
        }
    }

    /// A static file (a page, its script) with its content type.
    pub fn file(content_type: &'static str, body: &'static [u8]) -> Reply {
        Reply {
            status: StatusCode::OK,
            kind: ContentKind::File(content_type),
            body: ResponseBody::full(bytes::Bytes::from_static(body)),
            extra: None,
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.extra = Some((name, value));
        self
    }

    /// Builds the response into `headers` (expected empty).
    pub fn into_response(self, mut headers: HeaderMap) -> Response<ResponseBody> {
        match self.kind {
            ContentKind::Json => {
                headers.insert(header::CONTENT_TYPE, JSON.clone());
            }
            ContentKind::Empty => {
                if self.status == StatusCode::SWITCHING_PROTOCOLS {
                    headers.insert(header::CONNECTION, UPGRADE.clone());
                    headers.insert(header::UPGRADE, WEBSOCKET.clone());
                }
            }
            ContentKind::Prometheus => {
                headers.insert(header::CONTENT_TYPE, PROMETHEUS.clone());
            }
            ContentKind::File(content_type) => {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            }
            ContentKind::EventStream => {
                headers.insert(header::CONTENT_TYPE, EVENT_STREAM.clone());
                headers.insert(header::CACHE_CONTROL, NO_CACHE.clone());
                headers.insert(X_ACCEL_BUFFERING.clone(), NO.clone());
            }
        }
        if let Some((n, v)) = self.extra {
            headers.insert(n, v);
        }
        let mut res = Response::new(self.body);
        *res.status_mut() = self.status;
        *res.headers_mut() = headers;
        res
    }
}
