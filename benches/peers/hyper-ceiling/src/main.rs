//! hyper-ceiling: the smallest honest hyper 1.x server, used as the upper bound in
//! `scripts/bench.sh`.
//!
//! * thread-per-core: one current-thread tokio runtime per core, each with its own
//!   `SO_REUSEPORT` listener (the kernel spreads connections), `TCP_NODELAY`, backlog 1024;
//! * mimalloc as the global allocator;
//! * `GET /health` and `GET /health/live`: a fixed small JSON body;
//! * `POST /agent` and `POST /assist`: reads the whole request body (no parsing, no
//!   validation) and answers a fixed Server-Sent Events body holding the echo agent's three
//!   events for the benchmark's prompt, as one chunk with chunked transfer encoding and the
//!   same headers agentd sends.
//!
//! Whatever agentd does beyond this (parsing, validation, ids, an agent behind a
//! channel) is the price of being a real server; this is the floor of the cost.
//!
//! Configuration: `PORT` (default 3000), `HOST` (default 127.0.0.1), `WORKERS` (default:
//! the number of CPUs this process may run on), `CEILING_HEADERS=agentd`: every response
//! also carries the headers agentd adds to each response (helmet's twelve security
//! headers, a fresh ULID `x-request-id`, `x-response-time`), so that what agentd costs
//! beyond them can be told apart from what they cost.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, Socket, Type};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The echo agent's answer to the benchmark request (prompt "Hello Fast Agent!",
/// processor_id "bench"), byte for byte the shape agentd emits.
const SSE_BODY: &[u8] = concat!(
    "event: RESPONSE\n",
    "data: {\"content_type\":\"chunked.text\",\"event_name\":\"RESPONSE\",\"schema_version\":\"1.0\",",
    "\"id\":\"01JDX3ABCDEFGHJKMNPQRSTVX0\",\"source\":\"bench\",\"metadata\":null,",
    "\"stream_id\":\"k3j5h2g8f1\",\"is_complete\":false,",
    "\"content\":\"\u{26a1} High-speed response to: Hello Fast Agent!\"}\n\n",
    "event: RESPONSE\n",
    "data: {\"content_type\":\"chunked.text\",\"event_name\":\"RESPONSE\",\"schema_version\":\"1.0\",",
    "\"id\":\"01JDX3ABCDEFGHJKMNPQRSTVX1\",\"source\":\"bench\",\"metadata\":null,",
    "\"stream_id\":\"k3j5h2g8f1\",\"is_complete\":true,\"content\":\" \"}\n\n",
    "event: done\n",
    "data: {\"content_type\":\"atomic.done\",\"event_name\":\"done\",\"schema_version\":\"1.0\",",
    "\"id\":\"01JDX3ABCDEFGHJKMNPQRSTVX2\",\"source\":\"bench\",\"metadata\":null}\n\n",
)
.as_bytes();

const HEALTH_BODY: &[u8] = br#"{"status":"healthy","agent":"hyper-ceiling"}"#;
const LIVE_BODY: &[u8] = br#"{"status":"ok"}"#;
const NOT_FOUND_BODY: &[u8] = br#"{"error":"Not Found","code":"not_found"}"#;
const BAD_REQUEST_BODY: &[u8] = br#"{"error":"Bad Request","code":"bad_request"}"#;

/// A body of one chunk and no length hint, so hyper frames it with
/// `transfer-encoding: chunked`, as a streaming SSE response is.
struct OneChunk(Option<Bytes>);

impl Body for OneChunk {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// Either a fixed body with a known length, or the chunked SSE body.
enum Out {
    Fixed(Option<Bytes>),
    Chunked(OneChunk),
}

impl Body for Out {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Out::Fixed(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Out::Chunked(c) => Pin::new(c).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Out::Fixed(b) => b.is_none(),
            Out::Chunked(c) => c.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Out::Fixed(b) => {
                hyper::body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            Out::Chunked(_) => hyper::body::SizeHint::default(),
        }
    }
}

fn json(status: StatusCode, body: &'static [u8]) -> Response<Out> {
    let mut res = Response::new(Out::Fixed(Some(Bytes::from_static(body))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

/// helmet's defaults, as agentd sends them.
const SECURITY_HEADERS: [(&str, &str); 12] = [
    ("content-security-policy", "default-src 'self';script-src 'self';style-src 'self' 'unsafe-inline';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src-attr 'none';upgrade-insecure-requests"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("origin-agent-cluster", "?1"),
    ("referrer-policy", "no-referrer"),
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("x-dns-prefetch-control", "off"),
    ("x-download-options", "noopen"),
    ("x-frame-options", "SAMEORIGIN"),
    ("x-permitted-cross-domain-policies", "none"),
    ("x-xss-protection", "0"),
];

static AGENTD_HEADERS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

fn agentd_headers() -> bool {
    *AGENTD_HEADERS.get_or_init(|| std::env::var("CEILING_HEADERS").is_ok_and(|v| v == "agentd"))
}

thread_local! {
    static RNG: std::cell::Cell<u64> = std::cell::Cell::new(
        0x9e37_79b9_7f4a_7c15 ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    );
}

/// A ULID (48-bit ms timestamp, 80 random bits) in Crockford base32.
fn ulid() -> HeaderValue {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random = RNG.with(|r| {
        let next = || {
            let mut x = r.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            r.set(x);
            x
        };
        (u128::from(next()) << 64 | u128::from(next())) & ((1u128 << 80) - 1)
    });
    let mut v = (u128::from(ms) << 80) | random;
    let mut out = [0u8; 26];
    for c in out.iter_mut().rev() {
        *c = ALPHABET[(v & 31) as usize];
        v >>= 5;
    }
    HeaderValue::from_bytes(&out).expect("base32 is a valid header value")
}

/// agentd's per-response headers, when `CEILING_HEADERS=agentd`.
fn decorate(res: &mut Response<Out>, start: std::time::Instant) {
    if !agentd_headers() {
        return;
    }
    let h = res.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        h.insert(name, HeaderValue::from_static(value));
    }
    let took = format!("{:.3}ms", start.elapsed().as_secs_f64() * 1e3);
    h.insert(
        "x-response-time",
        HeaderValue::from_str(&took).expect("ascii"),
    );
    h.insert("x-request-id", ulid());
}

async fn handle(req: Request<Incoming>) -> Result<Response<Out>, Infallible> {
    let start = std::time::Instant::now();
    let mut res = route(req).await;
    decorate(&mut res, start);
    Ok(res)
}

async fn route(req: Request<Incoming>) -> Response<Out> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => json(StatusCode::OK, HEALTH_BODY),
        (&Method::GET, "/health/live") => json(StatusCode::OK, LIVE_BODY),
        (&Method::POST, "/agent") | (&Method::POST, "/assist") => {
            // Read (and drop) the whole request body, as any real handler must.
            if req.into_body().collect().await.is_err() {
                return json(StatusCode::BAD_REQUEST, BAD_REQUEST_BODY);
            }
            let mut res = Response::new(Out::Chunked(OneChunk(Some(Bytes::from_static(SSE_BODY)))));
            let h = res.headers_mut();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            res
        }
        _ => json(StatusCode::NOT_FOUND, NOT_FOUND_BODY),
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

fn serve(std_listener: std::net::TcpListener) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(_) => continue, // EMFILE and friends: keep serving the others
            };
            let _ = stream.set_nodelay(true);
            tokio::task::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    });
}

fn main() {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let host: IpAddr = std::env::var("HOST")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let workers: usize = std::env::var("WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .filter(|&w| w > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let addr = SocketAddr::new(host, port);

    // Bind every listener before serving, so a bad address fails at once.
    let listeners: Vec<_> = (0..workers)
        .map(|_| listener(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")))
        .collect();
    eprintln!("hyper-ceiling listening on http://{addr} with {workers} thread(s)");
    let threads: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            std::thread::Builder::new()
                .name(format!("ceiling-{i}"))
                .spawn(move || serve(l))
                .expect("spawn")
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
