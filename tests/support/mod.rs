//! Test support: an in-process server on 127.0.0.1:0, raw-socket helpers, an
//! independent SSE parser (eventsource-stream), and agents that misbehave on purpose.
#![allow(dead_code)]

pub mod a2a;
pub mod redis;
pub mod upstream_agent;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentd::{Agent, AgentError, Config, Query, ResponseHandler, Server, ServerHandle, Session};
use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const ID: &str = "01JDX3ABCDEFGHJKMNPQRSTVWX";

/// A config for tests: loopback, a free port, two workers, quiet logs.
pub fn config() -> Config {
    let mut c = Config::defaults();
    c.host = "127.0.0.1".parse().unwrap();
    c.port = 0;
    c.workers = Some(2);
    c.node_env = "production".into();
    c.request_logging = Some(false);
    c
}

pub struct TestServer {
    pub handle: Option<ServerHandle>,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().unwrap()
    }
    /// Shuts down and waits (off the async runtime).
    pub async fn stop(mut self) -> Duration {
        let h = self.handle.take().unwrap();
        let started = std::time::Instant::now();
        h.shutdown();
        tokio::task::spawn_blocking(move || h.wait()).await.unwrap();
        started.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}

pub fn start(config: Config, agent: Arc<dyn Agent>) -> TestServer {
    let handle = Server::start(config, agent).expect("server starts");
    let addr = handle.local_addr();
    TestServer {
        handle: Some(handle),
        addr,
    }
}

pub fn start_echo() -> TestServer {
    start_echo_with(config())
}

pub fn start_echo_with(config: Config) -> TestServer {
    let agent = agentd::configured_agent(&config).expect("agent");
    start(config, agent)
}

pub fn body(prompt: &str) -> String {
    serde_json::json!({"query": {"id": ID, "prompt": prompt}}).to_string()
}

pub fn body_with_session(prompt: &str, processor: &str) -> String {
    serde_json::json!({
        "query": {"id": ID, "prompt": prompt},
        "session": {"processor_id": processor, "activity_id": ID, "request_id": ID, "interactions": []}
    })
    .to_string()
}

/// A raw HTTP/1.1 `POST /agent` carrying `body`; `extra_headers` are whole lines
/// (`"Name: value\r\n"`).
pub fn raw_agent_request(body: &str, extra_headers: &str) -> String {
    format!(
        "POST /agent HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra_headers}Content-Length: {}\r\n\r\n{}",
        body.len(),
        body
    )
}

/// Starts `POST /agent` with `prompt` in the background; resolves to its events.
pub fn spawn_agent(server: &TestServer, prompt: &str) -> tokio::task::JoinHandle<Vec<Event>> {
    let url = server.url("/agent");
    let b = body(prompt);
    tokio::spawn(async move {
        let res = client()
            .post(url)
            .header("content-type", "application/json")
            .body(b)
            .send()
            .await
            .unwrap();
        events(res).await
    })
}

/// The status of `GET path` on a fresh client.
pub async fn get_status(server: &TestServer, path: &str) -> u16 {
    client()
        .get(server.url(path))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// Polls `GET path` until it answers `want` or `timeout` passes.
pub async fn status_becomes(server: &TestServer, path: &str, want: u16, timeout: Duration) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        if get_status(server, path).await == want {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub async fn post_json(server: &TestServer, path: &str, body: String) -> reqwest::Response {
    client()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request")
}

/// One parsed SSE event.
#[derive(Debug, Clone)]
pub struct Event {
    pub event: String,
    /// The SSE `id:` field (empty when none was sent).
    pub id: String,
    pub data: serde_json::Value,
    pub raw: String,
}

/// Parses an SSE body with an independent parser (eventsource-stream).
pub async fn events(res: reqwest::Response) -> Vec<Event> {
    let mut out = Vec::new();
    let mut stream = res.bytes_stream().eventsource();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("event within 20 s")
    {
        let ev = ev.expect("valid SSE");
        out.push(Event {
            event: ev.event,
            id: ev.id,
            data: serde_json::from_str(&ev.data).expect("event data is JSON"),
            raw: ev.data,
        });
    }
    out
}

/// The frames of a whole SSE body, each with `prefix` (its first line or lines) taken
/// off, in order; comments skipped. The response must be a 200 `text/event-stream`
/// that ends within 20 s.
pub async fn sse_frames(res: reqwest::Response, prefix: &str) -> Vec<String> {
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = tokio::time::timeout(Duration::from_secs(20), res.text())
        .await
        .expect("stream ends in time")
        .expect("body");
    text.split("\n\n")
        .filter(|f| !f.is_empty() && !f.starts_with(':'))
        .map(|f| {
            f.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("a frame starting {prefix:?}: {f:?}"))
                .to_owned()
        })
        .collect()
}

/// Checks the response-level rules: ids strictly increasing, every stream closed with
/// `" "`, exactly one `done` and it is last, every event fully keyed.
pub fn assert_well_formed(evs: &[Event]) {
    assert!(!evs.is_empty());
    let mut last_id = String::new();
    let mut open: Vec<String> = Vec::new();
    for (i, e) in evs.iter().enumerate() {
        let d = &e.data;
        let id = d["id"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 26);
        assert!(id > last_id, "ids must increase: {id} after {last_id}");
        last_id = id;
        assert_eq!(d["schema_version"], "1.0");
        assert!(d["metadata"].is_null());
        assert!(d.get("source").is_some());
        let ct = d["content_type"].as_str().unwrap();
        if ct == "atomic.done" {
            assert_eq!(i, evs.len() - 1, "done must be last");
            assert!(d.get("content").is_none());
        } else {
            assert_ne!(e.event, "done");
        }
        if ct == "chunked.text" {
            let sid = d["stream_id"].as_str().unwrap().to_string();
            if d["is_complete"].as_bool().unwrap() {
                assert_eq!(d["content"], " ");
                let pos = open
                    .iter()
                    .position(|s| *s == sid)
                    .expect("completing an open stream");
                open.remove(pos);
            } else if !open.contains(&sid) {
                open.push(sid);
            }
        }
        assert!(
            !e.raw.contains('\u{2028}') && !e.raw.contains('\u{2029}') && !e.raw.contains('\u{85}')
        );
    }
    assert!(open.is_empty(), "streams left open: {open:?}");
    assert_eq!(evs.last().unwrap().data["content_type"], "atomic.done");
}

/// Writes `request` on a new connection and reads until the server closes it or
/// `timeout` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_until_close(&mut s, timeout).await
}

pub async fn read_until_close(s: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut out)).await;
    out
}

/// Reads one HTTP/1.1 response (head + body, chunked or sized) from `s`.
pub async fn read_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("head in time")
            .unwrap();
        assert!(
            n > 0,
            "connection closed before the head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut rest = buf[head_end..].to_vec();
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if lower.contains("transfer-encoding: chunked") {
        loop {
            // size line
            let line_end = loop {
                if let Some(p) = find(&rest, b"\r\n") {
                    break p;
                }
                fill(s, &mut rest).await;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                    .unwrap();
            rest.drain(..line_end + 2);
            while rest.len() < size + 2 {
                fill(s, &mut rest).await;
            }
            body.extend_from_slice(&rest[..size]);
            rest.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(cl) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        let cl: usize = cl.trim().parse().unwrap();
        while rest.len() < cl {
            fill(s, &mut rest).await;
        }
        body = rest[..cl].to_vec();
    }
    (head, body)
}

async fn fill(s: &mut TcpStream, rest: &mut Vec<u8>) {
    let mut chunk = [0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
        .await
        .expect("data in time")
        .unwrap();
    assert!(n > 0, "connection closed mid-response");
    rest.extend_from_slice(&chunk[..n]);
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Polls `cond` until true or the timeout passes.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

// ---- agents that do specific things ----

/// Emits a JSON event, a text block, two interleaved streams, and returns without
/// completing (the server must close the streams and send done).
pub struct ScriptAgent;

#[async_trait]
impl Agent for ScriptAgent {
    fn name(&self) -> &str {
        "script"
    }
    async fn assist(
        &self,
        _s: &Session,
        q: &Query,
        h: &mut ResponseHandler,
    ) -> Result<(), AgentError> {
        h.emit_json("ANALYSIS", &serde_json::json!({"prompt": q.prompt, "n": 1}))
            .await?;
        h.emit_text_block("NOTE", "a\nb\u{2028}").await?;
        let a = h.create_text_stream("A")?;
        let b = h.create_text_stream("B")?;
        h.emit_chunk(&a, "a1").await?;
        h.emit_chunk(&b, "b1").await?;
        h.emit_chunk(&a, "a2").await?;
        h.complete_stream(a).await?;
        h.emit_chunk(&b, "b2").await?;
        assert!(
            h.emit_json("X", &serde_json::json!([1])).await.is_err(),
            "arrays are refused"
        );
        assert!(
            h.emit_text_block("bad\nname", "x").await.is_err(),
            "newlines in names are refused"
        );
        Ok(())
    }
}

/// Fails with a chosen error after emitting one chunk on an open stream.
pub struct FailAgent;

#[async_trait]
impl Agent for FailAgent {
    fn name(&self) -> &str {
        "fail"
    }
    async fn assist(
        &self,
        _s: &Session,
        _q: &Query,
        h: &mut ResponseHandler,
    ) -> Result<(), AgentError> {
        let s = h.create_text_stream("OUT")?;
        h.emit_chunk(&s, "partial").await?;
        Err(AgentError::new("upstream refused", 418)
            .with_details(serde_json::json!({"why": "test"})))
    }
}

pub struct PanicAgent;

#[async_trait]
impl Agent for PanicAgent {
    fn name(&self) -> &str {
        "panic"
    }
    async fn assist(
        &self,
        _s: &Session,
        q: &Query,
        h: &mut ResponseHandler,
    ) -> Result<(), AgentError> {
        if q.prompt == "async" {
            tokio::task::yield_now().await;
            h.emit_text_block("T", "before").await?;
        }
        panic!("secret stack detail");
    }
}

/// Emits `chunks` chunks `delay` apart, then completes. Counts completions.
pub struct SlowStreamAgent {
    pub chunks: usize,
    pub delay: Duration,
    pub started: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
    /// Answers that ran to their end.
    pub finished: Arc<AtomicU64>,
}

impl SlowStreamAgent {
    pub fn new(chunks: usize, delay: Duration) -> Self {
        SlowStreamAgent {
            chunks,
            delay,
            started: Arc::default(),
            dropped: Arc::default(),
            finished: Arc::default(),
        }
    }

    /// Waits (up to 5 s) until `n` answers have started.
    pub async fn has_started(&self, n: u64) -> bool {
        eventually(Duration::from_secs(5), || {
            self.started.load(Ordering::SeqCst) == n
        })
        .await
    }

    /// Waits (up to 5 s) until `n` answers' work has been dropped (finished or cancelled).
    pub async fn has_dropped(&self, n: u64) -> bool {
        eventually(Duration::from_secs(5), || {
            self.dropped.load(Ordering::SeqCst) == n
        })
        .await
    }
}

struct DropCount(Arc<AtomicU64>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Agent for SlowStreamAgent {
    fn name(&self) -> &str {
        "slow"
    }
    async fn assist(
        &self,
        _s: &Session,
        _q: &Query,
        h: &mut ResponseHandler,
    ) -> Result<(), AgentError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let _guard = DropCount(self.dropped.clone());
        let s = h.create_text_stream("SLOW")?;
        for i in 0..self.chunks {
            tokio::time::sleep(self.delay).await;
            h.emit_chunk(&s, &format!("chunk {i}")).await?;
        }
        h.complete_stream(s).await?;
        h.complete().await?;
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Emits big chunks as fast as the queue allows; records how it ended.
pub struct FloodAgent {
    pub chunk: usize,
    pub emitted: Arc<AtomicU64>,
    pub ended_with: Arc<std::sync::Mutex<Option<String>>>,
    pub finished: Arc<AtomicBool>,
}

impl FloodAgent {
    pub fn new(chunk: usize) -> Self {
        FloodAgent {
            chunk,
            emitted: Arc::default(),
            ended_with: Arc::default(),
            finished: Arc::default(),
        }
    }
}

#[async_trait]
impl Agent for FloodAgent {
    fn name(&self) -> &str {
        "flood"
    }
    async fn assist(
        &self,
        _s: &Session,
        _q: &Query,
        h: &mut ResponseHandler,
    ) -> Result<(), AgentError> {
        let s = h.create_text_stream("FLOOD")?;
        let text = "x".repeat(self.chunk);
        let r = loop {
            if let Err(e) = h.emit_chunk(&s, &text).await {
                break e;
            }
            self.emitted.fetch_add(self.chunk as u64, Ordering::SeqCst);
            if self.emitted.load(Ordering::SeqCst) > 1 << 30 {
                panic!("never blocked");
            }
        };
        *self.ended_with.lock().unwrap() = Some(r.to_string());
        self.finished.store(true, Ordering::SeqCst);
        Err(r.into())
    }
}

/// Every log line of this test binary, as JSON lines, from the first call on (one global
/// subscriber per test binary, at TRACE so that nothing at any level escapes a check).
pub fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
    static INIT: std::sync::Once = std::sync::Once::new();
    struct Sink;
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            LOGS.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(|| Sink)
            .init();
    });
    &LOGS
}

/// A port free on 127.0.0.1 when asked (for a server started as a separate process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads `res` until `n` whole events arrived; returns their bytes and the last id.
pub async fn first_events(res: reqwest::Response, n: usize) -> (Vec<u8>, String) {
    let mut body = Vec::new();
    let mut stream = res.bytes_stream();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a chunk within 10 s")
            .expect("the stream goes on")
            .expect("a chunk");
        body.extend_from_slice(&chunk);
        let whole = body.windows(2).filter(|w| w == b"\n\n").count();
        if whole >= n {
            // Keep exactly the first n events (a chunk may carry more).
            let mut seen = 0;
            let mut end = 0;
            for i in 0..body.len() - 1 {
                if &body[i..i + 2] == b"\n\n" {
                    seen += 1;
                    if seen == n {
                        end = i + 2;
                        break;
                    }
                }
            }
            body.truncate(end);
            let text = String::from_utf8(body.clone()).unwrap();
            let last = text
                .split("\n\n")
                .filter(|e| !e.is_empty())
                .last()
                .unwrap()
                .to_owned();
            let data = last
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("a data line");
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            return (body, v["id"].as_str().unwrap().to_owned());
        }
    }
}

pub async fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(server.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// `DELETE path` with these headers.
pub async fn delete(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client().delete(server.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// `POST /agent-api` with the API key `key`.
pub async fn post_agent_api(server: &TestServer, key: &str, body: String) -> reqwest::Response {
    client()
        .post(server.url("/agent-api"))
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Starts a slow answer on `a`, reads its first `n` events and leaves; returns the
/// stream id, the bytes seen and the last event id.
pub async fn start_and_leave(a: &TestServer, n: usize) -> (String, Vec<u8>, String) {
    let res = post_json(a, "/agent", body("hello")).await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let (seen, last) = first_events(res, n).await;
    (id, seen, last)
}

/// Starts an answer on `a`, leaves after `n` events, resumes on `b` (live), and
/// checks seen + resumed equals the whole answer on both replicas, well formed and
/// without an error. Returns the stream's id and its events.
pub async fn resumes_whole_across(
    a: &TestServer,
    b: &TestServer,
    n: usize,
) -> (String, Vec<Event>) {
    let (id, seen, last) = start_and_leave(a, n).await;
    let res = get(
        b,
        &format!("/agent/streams/{id}"),
        &[("last-event-id", &last)],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-stream-id"], id.as_str());
    let rest = tokio::time::timeout(Duration::from_secs(20), res.bytes())
        .await
        .expect("the remote resume ends")
        .unwrap();
    let mut joined = seen;
    joined.extend_from_slice(&rest);
    let whole = get(a, &format!("/agent/streams/{id}"), &[]).await;
    assert_eq!(joined, whole.bytes().await.unwrap().to_vec());
    let remote = get(b, &format!("/agent/streams/{id}"), &[]).await;
    assert_eq!(joined, remote.bytes().await.unwrap().to_vec());
    let evs = events(get(b, &format!("/agent/streams/{id}"), &[]).await).await;
    assert_well_formed(&evs);
    assert!(evs.iter().all(|e| e.event != "error"), "{evs:?}");
    (id, evs)
}
