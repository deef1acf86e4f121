//! relay-ceiling: the smallest honest hyper 1.x LLM relay, the ceiling agentd's LLM agent
//! is measured against in `scripts/bench/llm.sh`.
//!
//! * the layout of `hyper-ceiling`: one current-thread tokio runtime per core, each with
//!   its own `SO_REUSEPORT` listener (`TCP_NODELAY`, backlog 1024), mimalloc;
//! * `POST /agent` and `POST /assist`: reads the whole request body (no parsing, no
//!   validation), sends one fixed streaming chat-completion request to the upstream
//!   (`UPSTREAM_URL`, OpenAI format) through the worker's pooled keep-alive client, and
//!   relays the upstream's stream as it arrives: each upstream SSE event's
//!   `"content":"…"` (copied as it is, already JSON-escaped) becomes one Sentient
//!   `AI_RESPONSE` `chunked.text` event, one response chunk per upstream chunk;
//!   `data: [DONE]` becomes the stream's closing event and `done`. Fixed ids, no
//!   `ANALYSIS`/`PERFORMANCE` events, no timeouts, retries or limits;
//! * `GET /health` and `GET /health/live`: a fixed small JSON body.
//!
//! Whatever agentd does beyond this (validation, ids, events of its own, timeouts,
//! retries, failover, metrics) is the price of being a real server; this is the floor.
//!
//! Configuration: `PORT` (default 3000), `HOST` (default 127.0.0.1), `WORKERS` (default:
//! the number of CPUs this process may run on), `UPSTREAM_URL` (default
//! `http://127.0.0.1:8080/v1/chat/completions`), `UPSTREAM_KEY` (bearer token, default
//! `bench`).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use socket2::{Domain, Protocol, Socket, Type};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const UPSTREAM_BODY: &[u8] = br#"{"model":"fake-model","messages":[{"role":"user","content":"Hello Fast Agent!"}],"stream":true}"#;

const TOKEN_HEAD: &[u8] = concat!(
    "event: AI_RESPONSE\n",
    "data: {\"content_type\":\"chunked.text\",\"event_name\":\"AI_RESPONSE\",\"schema_version\":\"1.0\",",
    "\"id\":\"01JDX3ABCDEFGHJKMNPQRSTVX0\",\"source\":\"bench\",\"metadata\":null,",
    "\"stream_id\":\"k3j5h2g8f1\",\"is_complete\":false,\"content\":\"",
)
.as_bytes();
const TOKEN_TAIL: &[u8] = b"\"}\n\n";
const END: &[u8] = concat!(
    "event: AI_RESPONSE\n",
    "data: {\"content_type\":\"chunked.text\",\"event_name\":\"AI_RESPONSE\",\"schema_version\":\"1.0\",",
    "\"id\":\"01JDX3ABCDEFGHJKMNPQRSTVX1\",\"source\":\"bench\",\"metadata\":null,",
    "\"stream_id\":\"k3j5h2g8f1\",\"is_complete\":true,\"content\":\" \"}\n\n",
    "event: done\n",
    "data: {\"content_type\":\"atomic.done\",\"event_name\":\"done\",\"schema_version\":\"1.0\",",
    "\"id\":\"01JDX3ABCDEFGHJKMNPQRSTVX2\",\"source\":\"bench\",\"metadata\":null}\n\n",
)
.as_bytes();

const HEALTH_BODY: &[u8] = br#"{"status":"healthy","agent":"relay-ceiling"}"#;
const LIVE_BODY: &[u8] = br#"{"status":"ok"}"#;
const NOT_FOUND_BODY: &[u8] = br#"{"error":"Not Found","code":"not_found"}"#;
const BAD_GATEWAY_BODY: &[u8] = br#"{"error":"Bad Gateway","code":"upstream"}"#;
const BAD_REQUEST_BODY: &[u8] = br#"{"error":"Bad Request","code":"bad_request"}"#;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The upstream's SSE stream, re-framed as Sentient events chunk by chunk.
struct Relay {
    upstream: Incoming,
    pending: BytesMut,
    finished: bool,
}

/// The `"content":"…"` value of one upstream event (still JSON-escaped), if any.
fn content(event: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"content\":\"";
    let start = memchr::memmem::find(event, KEY)? + KEY.len();
    let rest = &event[start..];
    let mut i = 0;
    while let Some(q) = memchr::memchr(b'"', &rest[i..]) {
        let at = i + q;
        let backslashes = rest[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(&rest[..at]);
        }
        i = at + 1;
    }
    None
}

impl Relay {
    /// Turns every complete upstream event in `pending` into Sentient bytes.
    fn reframe(&mut self) -> BytesMut {
        let mut out = BytesMut::new();
        while let Some(end) = memchr::memmem::find(&self.pending, b"\n\n") {
            let event = self.pending.split_to(end + 2);
            if memchr::memmem::find(&event, b"data: [DONE]").is_some() {
                out.extend_from_slice(END);
                self.finished = true;
            } else if let Some(text) = content(&event).filter(|t| !t.is_empty()) {
                out.reserve(TOKEN_HEAD.len() + text.len() + TOKEN_TAIL.len());
                out.extend_from_slice(TOKEN_HEAD);
                out.extend_from_slice(text);
                out.extend_from_slice(TOKEN_TAIL);
            }
        }
        out
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.upstream).poll_frame(cx)) {
                None => {
                    this.finished = true;
                    return Poll::Ready(None);
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    this.pending.extend_from_slice(&data);
                    let out = this.reframe();
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                    }
                }
            }
        }
    }
}

type Out = Either<Full<Bytes>, Relay>;

fn json(status: StatusCode, body: &'static [u8]) -> Response<Out> {
    let mut res = Response::new(Either::Left(Full::new(Bytes::from_static(body))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

async fn handle(
    req: Request<Incoming>,
    client: HttpClient,
    upstream: Uri,
    auth: HeaderValue,
) -> Result<Response<Out>, Infallible> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => Ok(json(StatusCode::OK, HEALTH_BODY)),
        (&Method::GET, "/health/live") => Ok(json(StatusCode::OK, LIVE_BODY)),
        (&Method::POST, "/agent") | (&Method::POST, "/assist") => {
            // Read (and drop) the whole request body, as any real handler must.
            if req.into_body().collect().await.is_err() {
                return Ok(json(StatusCode::BAD_REQUEST, BAD_REQUEST_BODY));
            }
            let mut up = Request::new(Full::new(Bytes::from_static(UPSTREAM_BODY)));
            *up.method_mut() = Method::POST;
            *up.uri_mut() = upstream;
            let h = up.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(AUTHORIZATION, auth);
            let res = match client.request(up).await {
                Ok(r) if r.status() == StatusCode::OK => r,
                _ => return Ok(json(StatusCode::BAD_GATEWAY, BAD_GATEWAY_BODY)),
            };
            let mut out = Response::new(Either::Right(Relay {
                upstream: res.into_body(),
                pending: BytesMut::new(),
                finished: false,
            }));
            let h = out.headers_mut();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            Ok(out)
        }
        _ => Ok(json(StatusCode::NOT_FOUND, NOT_FOUND_BODY)),
    }
}

fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn serve(std_listener: std::net::TcpListener, upstream: Uri, auth: HeaderValue) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        // One pooled keep-alive client per worker, as agentd keeps one per worker.
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .build(conn);
        let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(_) => continue, // EMFILE and friends: keep serving the others
            };
            let _ = stream.set_nodelay(true);
            let (client, upstream, auth) = (client.clone(), upstream.clone(), auth.clone());
            tokio::task::spawn(async move {
                let svc = service_fn(move |req| {
                    handle(req, client.clone(), upstream.clone(), auth.clone())
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

fn main() {
    let env = |k: &str| std::env::var(k).ok();
    let port: u16 = env("PORT").and_then(|p| p.parse().ok()).unwrap_or(3000);
    let host: IpAddr = env("HOST")
        .and_then(|h| h.parse().ok())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let workers: usize = env("WORKERS")
        .and_then(|w| w.parse().ok())
        .filter(|&w| w > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let upstream: Uri = env("UPSTREAM_URL")
        .unwrap_or_else(|| "http://127.0.0.1:8080/v1/chat/completions".into())
        .parse()
        .expect("UPSTREAM_URL");
    let auth = HeaderValue::try_from(format!(
        "Bearer {}",
        env("UPSTREAM_KEY").unwrap_or_else(|| "bench".into())
    ))
    .expect("UPSTREAM_KEY");
    let addr = SocketAddr::new(host, port);

    // Bind every listener before serving, so a bad address fails at once.
    let listeners: Vec<_> = (0..workers)
        .map(|_| listener(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")))
        .collect();
    eprintln!(
        "relay-ceiling listening on http://{addr} with {workers} thread(s), upstream {upstream}"
    );
    let threads: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let (upstream, auth) = (upstream.clone(), auth.clone());
            std::thread::Builder::new()
                .name(format!("relay-{i}"))
                .spawn(move || serve(l, upstream, auth))
                .expect("spawn")
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
