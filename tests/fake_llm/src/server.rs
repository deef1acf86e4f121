//! The HTTP server: the accept loop, one task per connection (HTTP/1.1 with keep-alive or
//! h2c, via hyper-util's auto builder), RST on demand, request recording, and the routes
//! (`POST /v1/chat/completions`, `POST /v1/messages`, `GET /v1/models`) with their
//! validation, fault resolution and responses.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::TcpStream as StdTcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinSet;

use crate::answer::{last_user_text, prompt_tokens, Answer, StreamFault};
use crate::behaviour::{Behaviour, Fault};
use crate::body::ScriptBody;
use crate::directives::Directives;
use crate::sse::Step;
use crate::{anthropic, openai};

/// Largest request body read (bigger ones get a 413).
const MAX_BODY: usize = 32 << 20;

/// Which API a request was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// `/v1/chat/completions`
    OpenAi,
    /// `/v1/messages`
    Anthropic,
    /// `/v1/models`
    Models,
    /// Any other path (answered 404).
    Other,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `"POST"`, `"GET"`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// Every header by lower-case name; repeated headers are joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON; `Value::Null` when empty or not JSON (so `body["model"]`
    /// always works).
    pub body: Value,
    /// The raw body.
    pub raw_body: Bytes,
    /// Which route.
    pub provider: Provider,
    /// When the request (head and body) had been read.
    pub when: Instant,
    /// Number of the TCP connection it came on (1 for the first accepted).
    pub connection: u64,
    /// HTTP version (`HTTP_11`, or `HTTP_2` for h2c).
    pub version: Version,
}

impl Recorded {
    /// A header's value (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// State shared by the handle, the accept loop and every connection.
pub(crate) struct Shared {
    pub(crate) default: Mutex<Behaviour>,
    faults: Mutex<VecDeque<(Option<Provider>, Fault)>>,
    pub(crate) requests: Mutex<Vec<Recorded>>,
    pub(crate) recording: AtomicBool,
    pub(crate) connections: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) completed: AtomicU64,
    next_id: AtomicU64,
}

/// Locks, ignoring poisoning (a panicking test thread must not wedge the server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(default: Behaviour) -> Shared {
        Shared {
            default: Mutex::new(default),
            faults: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            recording: AtomicBool::new(true),
            connections: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
        }
    }

    pub(crate) fn push_fault(&self, route: Option<Provider>, fault: Fault) {
        lock(&self.faults).push_back((route, fault));
    }

    /// The oldest queued fault meant for any route or for this one.
    fn pop_fault(&self, provider: Provider) -> Option<Fault> {
        let mut q = lock(&self.faults);
        let i = q
            .iter()
            .position(|(route, _)| route.is_none_or(|r| r == provider))?;
        q.remove(i).map(|(_, f)| f)
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Per-connection state the service can reach.
pub(crate) struct ConnCtx {
    id: u64,
    /// Notified to abort the connection with an RST.
    pub(crate) reset: Notify,
}

/// Accepts until `shutdown` fires (or its sender is dropped), then drops every connection.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let id = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
                    conns.spawn(serve(stream, id, shared.clone(), builder.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fake-llm: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    drop(listener);
    conns.shutdown().await;
}

async fn serve(
    stream: TcpStream,
    id: u64,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
) {
    let _ = stream.set_nodelay(true);
    // A second descriptor for the socket, to set SO_LINGER 0 on a reset: the close of the
    // last descriptor then sends an RST instead of a FIN.
    let (stream, dup) = match split_handle(stream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "fake-llm: cannot duplicate socket");
            return;
        }
    };
    let ctx = Arc::new(ConnCtx {
        id,
        reset: Notify::new(),
    });
    let svc = {
        let ctx = ctx.clone();
        service_fn(move |req| handle(shared.clone(), ctx.clone(), req))
    };
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, connection = id, "fake-llm: connection ended");
            }
        }
        _ = ctx.reset.notified() => {
            let _ = socket2::SockRef::from(&dup).set_linger(Some(Duration::ZERO));
            tracing::debug!(connection = id, "fake-llm: resetting connection");
        }
    }
}

fn split_handle(stream: TcpStream) -> std::io::Result<(TcpStream, StdTcpStream)> {
    let std = stream.into_std()?;
    let dup = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, dup))
}

/// What a route decided.
enum Outcome {
    Respond(Response<ScriptBody>),
    /// Never answer.
    Hang,
    /// Reset the connection before answering.
    Reset,
}

/// Counts a hung request as cancelled when its client goes away.
struct HangGuard(Arc<Shared>);

impl Drop for HangGuard {
    fn drop(&mut self) {
        self.0.cancelled.fetch_add(1, Ordering::Relaxed);
    }
}

async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<ScriptBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let provider = match parts.uri.path() {
        "/v1/chat/completions" => Provider::OpenAi,
        "/v1/messages" => Provider::Anthropic,
        "/v1/models" => Provider::Models,
        _ => Provider::Other,
    };
    let raw = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            tracing::debug!(error = %e, "fake-llm: reading request body failed");
            let body = match provider {
                Provider::Anthropic => anthropic::status_error(413),
                _ => openai::error(
                    "Request body too large or unreadable.",
                    "invalid_request_error",
                    None,
                    Some("request_too_large"),
                ),
            };
            return Ok(json_response(StatusCode::PAYLOAD_TOO_LARGE, body));
        }
    };
    let json: Option<Value> = serde_json::from_slice(&raw).ok();
    if shared.recording.load(Ordering::Relaxed) {
        let rec = Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            headers: record_headers(&parts.headers),
            body: json.clone().unwrap_or(Value::Null),
            raw_body: raw.clone(),
            provider,
            when: Instant::now(),
            connection: conn.id,
            version: parts.version,
        };
        lock(&shared.requests).push(rec);
    }
    let outcome = match provider {
        Provider::OpenAi => openai_route(&shared, &conn, &parts, json),
        Provider::Anthropic => anthropic_route(&shared, &conn, &parts, json),
        Provider::Models => models_route(&shared, &parts),
        Provider::Other => Outcome::Respond(json_response(
            StatusCode::NOT_FOUND,
            openai::error(
                &format!("Invalid URL ({} {})", parts.method, parts.uri.path()),
                "invalid_request_error",
                None,
                Some("unknown_url"),
            ),
        )),
    };
    match outcome {
        Outcome::Respond(r) => Ok(r),
        Outcome::Hang => {
            let _guard = HangGuard(shared);
            std::future::pending::<()>().await;
            unreachable!()
        }
        Outcome::Reset => {
            conn.reset.notify_one();
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

fn record_headers(headers: &http::HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

fn json_response(status: StatusCode, body: String) -> Response<ScriptBody> {
    let mut r = Response::new(ScriptBody::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn status_response(
    status: u16,
    retry_after: &Option<String>,
    retry_after_ms: &Option<String>,
    body: String,
) -> Response<ScriptBody> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(code, body);
    for (name, value) in [
        ("retry-after", retry_after),
        ("retry-after-ms", retry_after_ms),
    ] {
        if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            r.headers_mut().insert(name, v);
        }
    }
    r
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether `messages` is a non-empty array.
fn has_messages(body: &Value) -> bool {
    body.get("messages")
        .and_then(Value::as_array)
        .is_some_and(|m| !m.is_empty())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The behaviour and fault for a valid chat request: the queued fault (or the default),
/// then the prompt's directives.
fn resolve(shared: &Shared, provider: Provider, body: &Value) -> (Behaviour, Option<Fault>) {
    let (mut behaviour, mut fault) = match shared.pop_fault(provider) {
        Some(Fault::Tokens(b)) => (b, None),
        other => (lock(&shared.default).clone(), other),
    };
    let d = Directives::parse(&last_user_text(body));
    d.apply(&mut behaviour);
    if fault.is_none() {
        fault = d.fault;
    }
    (behaviour, fault)
}

/// The part of the decision common to both chat routes.
enum Plan {
    Outcome(Outcome),
    Answer(Answer),
}

fn plan(
    shared: &Shared,
    provider: Provider,
    body: &Value,
    model: &str,
    max_tokens: Option<u64>,
    stream: bool,
    status_body: fn(u16) -> String,
) -> Plan {
    let (behaviour, fault) = resolve(shared, provider, body);
    let stream_fault = match fault {
        None | Some(Fault::Tokens(_)) => None,
        Some(Fault::Status {
            status,
            retry_after,
            retry_after_ms,
        }) => {
            let r = status_response(status, &retry_after, &retry_after_ms, status_body(status));
            return Plan::Outcome(Outcome::Respond(r));
        }
        Some(Fault::HangBeforeHeaders) => return Plan::Outcome(Outcome::Hang),
        Some(Fault::Stall { .. }) if !stream => return Plan::Outcome(Outcome::Hang),
        Some(Fault::Reset { .. }) if !stream => return Plan::Outcome(Outcome::Reset),
        Some(Fault::MidStreamError { .. }) if !stream => {
            let status = if provider == Provider::Anthropic {
                529
            } else {
                500
            };
            let r = status_response(status, &None, &None, status_body(status));
            return Plan::Outcome(Outcome::Respond(r));
        }
        Some(Fault::MidStreamError { after_tokens }) => {
            Some(StreamFault::MidStreamError(after_tokens))
        }
        Some(Fault::EofWithoutDone { after_tokens }) => Some(StreamFault::Eof(after_tokens)),
        Some(Fault::Reset { after_tokens }) => Some(StreamFault::Reset(after_tokens)),
        Some(Fault::Stall { after_tokens }) => Some(StreamFault::Stall(after_tokens)),
    };
    let (n, truncated) = match max_tokens {
        Some(m) if (m as usize) < behaviour.tokens => (m as usize, true),
        _ => (behaviour.tokens, false),
    };
    let n_id = shared.next_id();
    let id = match provider {
        Provider::Anthropic => format!("msg_fake{n_id:016}"),
        _ => format!("chatcmpl-fake{n_id:016}"),
    };
    Plan::Answer(Answer {
        id,
        created: unix_now(),
        model: model.to_owned(),
        prompt_tokens: prompt_tokens(body),
        n,
        truncated,
        behaviour,
        fault: stream_fault,
    })
}

fn sse_response(
    steps: VecDeque<Step>,
    conn: &Arc<ConnCtx>,
    shared: &Arc<Shared>,
    request_id: (&'static str, String),
) -> Response<ScriptBody> {
    let mut r = Response::new(ScriptBody::script(steps, conn.clone(), shared.clone()));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&request_id.1) {
        h.insert(request_id.0, v);
    }
    r
}

/// A non-streaming answer: wait as long as the tokens would have taken, then send the JSON
/// (or, for an EOF fault, half of it and abort).
fn full_answer_response(
    a: &Answer,
    json: String,
    conn: &Arc<ConnCtx>,
    shared: &Arc<Shared>,
) -> Response<ScriptBody> {
    let mut steps = VecDeque::new();
    let wait = a.behaviour.duration(a.sent());
    if !wait.is_zero() {
        steps.push_back(Step::Sleep(wait));
    }
    let len = json.len() as u64;
    let bytes = Bytes::from(json);
    if matches!(a.fault, Some(StreamFault::Eof(_))) {
        steps.push_back(Step::Data(bytes.slice(..bytes.len() / 2)));
        steps.push_back(Step::Abort);
    } else {
        steps.push_back(Step::Data(bytes));
    }
    let mut r =
        Response::new(ScriptBody::script(steps, conn.clone(), shared.clone()).with_exact(len));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn openai_route(
    shared: &Arc<Shared>,
    conn: &Arc<ConnCtx>,
    parts: &Parts,
    json: Option<Value>,
) -> Outcome {
    let bad = |status: StatusCode, message: &str, param: Option<&str>, code: &str| {
        Outcome::Respond(json_response(
            status,
            openai::error(message, "invalid_request_error", param, Some(code)),
        ))
    };
    if parts.method != Method::POST {
        return bad(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed; use POST.",
            None,
            "method_not_allowed",
        );
    }
    let key = header(parts, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if key.is_empty() {
        return bad(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            None,
            "invalid_api_key",
        );
    }
    let Some(body) = json.filter(Value::is_object) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            None,
            "invalid_json",
        );
    };
    let Some(model) = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    else {
        return bad(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            Some("model"),
            "missing_required_parameter",
        );
    };
    if !has_messages(&body) {
        return bad(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'messages'.",
            Some("messages"),
            "missing_required_parameter",
        );
    }
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let max_tokens = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64);
    match plan(
        shared,
        Provider::OpenAi,
        &body,
        model,
        max_tokens,
        stream,
        openai::status_error,
    ) {
        Plan::Outcome(o) => o,
        Plan::Answer(a) => {
            let request_id = (
                "x-request-id",
                format!("req_fake{}", a.id.trim_start_matches("chatcmpl-fake")),
            );
            let r = if stream {
                sse_response(openai::stream(&a, include_usage), conn, shared, request_id)
            } else {
                full_answer_response(&a, openai::completion(&a), conn, shared)
            };
            Outcome::Respond(r)
        }
    }
}

fn anthropic_route(
    shared: &Arc<Shared>,
    conn: &Arc<ConnCtx>,
    parts: &Parts,
    json: Option<Value>,
) -> Outcome {
    let bad = |status: StatusCode, kind: &str, message: &str| {
        Outcome::Respond(json_response(status, anthropic::error(kind, message)))
    };
    if parts.method != Method::POST {
        return bad(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "Method not allowed; use POST.",
        );
    }
    if header(parts, "x-api-key").is_none_or(|k| k.trim().is_empty()) {
        return bad(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        );
    }
    match header(parts, "anthropic-version") {
        None => {
            return bad(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "anthropic-version: header is required",
            )
        }
        Some("2023-06-01") => {}
        Some(v) => {
            return bad(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("anthropic-version: invalid version {v:?}; expected 2023-06-01"),
            )
        }
    }
    let Some(body) = json.filter(Value::is_object) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "There was an error parsing the body of your request: invalid JSON",
        );
    };
    let Some(model) = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model: Field required",
        );
    };
    if !has_messages(&body) {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "messages: Field required",
        );
    }
    let Some(max_tokens) = body.get("max_tokens").and_then(Value::as_u64) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "max_tokens: Field required",
        );
    };
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    match plan(
        shared,
        Provider::Anthropic,
        &body,
        model,
        Some(max_tokens),
        stream,
        anthropic::status_error,
    ) {
        Plan::Outcome(o) => o,
        Plan::Answer(a) => {
            let request_id = (
                "request-id",
                format!("req_fake{}", a.id.trim_start_matches("msg_fake")),
            );
            let r = if stream {
                sse_response(anthropic::stream(&a), conn, shared, request_id)
            } else {
                full_answer_response(&a, anthropic::message(&a), conn, shared)
            };
            Outcome::Respond(r)
        }
    }
}

/// The health probe. It takes the next queued fault like any request: `Status` answers
/// that error (Anthropic-style when the request has `x-api-key` or `anthropic-version`),
/// `HangBeforeHeaders`/`Stall` hang, `Reset` resets; the others are used up and ignored.
fn models_route(shared: &Arc<Shared>, parts: &Parts) -> Outcome {
    let anthropic_style =
        parts.headers.contains_key("x-api-key") || parts.headers.contains_key("anthropic-version");
    if parts.method != Method::GET {
        return Outcome::Respond(json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            openai::error(
                "Method not allowed; use GET.",
                "invalid_request_error",
                None,
                Some("method_not_allowed"),
            ),
        ));
    }
    match shared.pop_fault(Provider::Models) {
        Some(Fault::Status {
            status,
            retry_after,
            retry_after_ms,
        }) => {
            let body = if anthropic_style {
                anthropic::status_error(status)
            } else {
                openai::status_error(status)
            };
            Outcome::Respond(status_response(status, &retry_after, &retry_after_ms, body))
        }
        Some(Fault::HangBeforeHeaders | Fault::Stall { .. }) => Outcome::Hang,
        Some(Fault::Reset { .. }) => Outcome::Reset,
        _ => Outcome::Respond(json_response(
            StatusCode::OK,
            r#"{"object":"list","data":[{"id":"fake-model","object":"model","created":0,"owned_by":"fake-llm","type":"model","display_name":"Fake Model","created_at":"1970-01-01T00:00:00Z"}],"has_more":false,"first_id":"fake-model","last_id":"fake-model"}"#.to_owned(),
        )),
    }
}
