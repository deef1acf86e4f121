//! The pooled HTTP client to LLM providers: hyper-util's client over rustls (webpki
//! roots; plain HTTP for local servers), keep-alive, HTTP/2 when the upstream offers it
//! by ALPN, a connect timeout, and an idle-pool timeout that really fires (the pool has
//! a timer). One per worker thread: connections never cross threads.

use std::cell::RefCell;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

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
