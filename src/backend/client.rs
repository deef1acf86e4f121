//! The pooled HTTP client to backends (LLM providers and upstream agents): hyper-util's
//! client over rustls (webpki roots; plain HTTP for local servers), keep-alive, HTTP/2
//! when the backend offers it by ALPN, a connect timeout, and an idle-pool timeout that
//! really fires (the pool has a timer). One per worker thread: connections never cross
//! threads. [`send`] waits for a response head, [`read_bounded`] and [`discard`] read a
//! body's end; none of them ever waits past the caller's deadline.

use std::cell::RefCell;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Pool settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_host: usize,
}

/// Builds a client.
pub fn build(cfg: PoolConfig) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(30)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(cfg.idle_timeout)
        .pool_max_idle_per_host(cfg.max_idle_per_host)
        .build(https)
}

thread_local! {
    static CLIENT: RefCell<Option<(PoolConfig, HttpClient)>> = const { RefCell::new(None) };
}

/// This thread's client for `cfg` (built on first use).
pub fn for_this_thread(cfg: PoolConfig) -> HttpClient {
    CLIENT.with(|c| {
        let mut c = c.borrow_mut();
        match &*c {
            Some((have, client)) if *have == cfg => client.clone(),
            _ => {
                let client = build(cfg);
                *c = Some((cfg, client.clone()));
                client
            }
        }
    })
}

/// Why no response head came back.
#[derive(Debug)]
pub enum SendError {
    /// None before the deadline.
    Timeout,
    /// Connecting failed or the connection broke (`is_connect` tells which).
    Failed(hyper_util::client::legacy::Error),
}

/// Sends `request`; returns once the response head arrived, or fails at `deadline`.
pub async fn send(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
    deadline: Instant,
) -> Result<Response<Incoming>, SendError> {
    match tokio::time::timeout_at(deadline, client.request(request)).await {
        Err(_) => Err(SendError::Timeout),
        Ok(Err(e)) => Err(SendError::Failed(e)),
        Ok(Ok(res)) => Ok(res),
    }
}

/// Reads at most `max` bytes of `body` before `deadline` and returns them (an error
/// answer's body).
pub async fn read_bounded(mut body: Incoming, max: usize, deadline: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < max {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    let room = max - out.len();
                    out.extend_from_slice(&d[..d.len().min(room)]);
                }
            }
            _ => break,
        }
    }
    out
}

/// Reads `body` to its end, dropping what it reads, so its connection can go back to
/// the pool; gives up quietly past `max` bytes or `deadline` (the connection is then
/// closed when the body is dropped).
pub async fn discard(mut body: Incoming, max: usize, deadline: Instant) {
    let mut read = 0usize;
    while read <= max {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => read += f.data_ref().map_or(0, |d| d.len()),
            _ => return,
        }
    }
}
