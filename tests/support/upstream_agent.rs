//! A fake upstream agent for proxy tests: a real HTTP/1.1 server on 127.0.0.1:0,
//! written on raw sockets so it can misbehave exactly (no `done`, hang, reset, garbage
//! lines, raw U+2028, slow or flooding writes, 500s, non-SSE answers).
//!
//! Its well-behaved answer mimics the Python reference's DefaultServer: `event:` +
//! `data:` lines, the reference's key order, `source` = the session's `processor_id`,
//! and (unlike the reference) one id repeated on every event, so tests can see agentd
//! rewrite ids. It records what it was sent and whether the proxy went away mid-answer.
//! A prompt `hold:<ms>` holds a well-behaved answer open that long before `done`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The id the fake puts on every event (agentd must replace it).
pub const FAKE_EVENT_ID: &str = "01JDX3ABCDEFGHJKMNPQRSTVWX";
/// The fake's text stream id.
pub const FAKE_STREAM_ID: &str = "w70mg0tz5s";

/// How the fake answers `POST`s.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// A text block, a JSON block, a three-chunk text stream, `done`.
    WellBehaved,
    /// The well-behaved events without `done`, then the body ends cleanly.
    NoDone,
    /// `n` events of the well-behaved answer, then silence with the connection open.
    HangAfter(usize),
    /// `n` events, then a TCP reset.
    ResetAfter(usize),
    /// The well-behaved answer with garbage lines, comments and unknown fields between
    /// its events (all of which SSE says to ignore).
    GarbageLines,
    /// One text block, then an event whose data is not JSON.
    BadData,
    /// A text block and a chunk with raw U+2028, U+2029 and U+0085 in their JSON.
    LineSeparators,
    /// `events` chunks `delay` apart, then `done`.
    Slow { events: usize, delay: Duration },
    /// Chunks of `chunk` bytes as fast as the connection takes them, up to `max_bytes`.
    Flood { chunk: usize, max_bytes: u64 },
    /// This status with a JSON body.
    Status(u16),
    /// 200 with `application/json`.
    NotSse,
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub body: Value,
}

struct State {
    mode: Mutex<Mode>,
    down: AtomicBool,
    requests: Mutex<Vec<Received>>,
    health_probes: AtomicU64,
    client_gone: AtomicU64,
    bytes_written: AtomicU64,
    post_connections: AtomicU64,
}

/// A running fake upstream agent; stops when dropped.
pub struct UpstreamAgent {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for UpstreamAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UpstreamAgent {
    pub async fn start(mode: Mode) -> UpstreamAgent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            mode: Mutex::new(mode),
            down: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            health_probes: AtomicU64::new(0),
            client_gone: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            post_connections: AtomicU64::new(0),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = s.set_nodelay(true);
                    serve(s, st).await;
                });
            }
        });
        UpstreamAgent { addr, state, task }
    }

    /// The URL to list in `AGENT_UPSTREAMS`.
    pub fn url(&self) -> String {
        format!("http://{}/assist", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// While down, every request (health probes included) gets 503.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, SeqCst);
    }

    /// `POST`s received (health probes left out).
    pub fn posts(&self) -> Vec<Received> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "POST")
            .cloned()
            .collect()
    }

    pub fn post_count(&self) -> usize {
        self.posts().len()
    }

    /// Health probes (`GET`s) received, answered or not.
    pub fn health_probes(&self) -> u64 {
        self.state.health_probes.load(SeqCst)
    }

    /// Answers during which the proxy closed the connection.
    pub fn client_gone(&self) -> u64 {
        self.state.client_gone.load(SeqCst)
    }

    /// Connections that carried at least one `POST` (keep-alive reuse shows here).
    pub fn post_connections(&self) -> u64 {
        self.state.post_connections.load(SeqCst)
    }

    /// Bytes of event stream written so far (all answers).
    pub fn bytes_written(&self) -> u64 {
        self.state.bytes_written.load(SeqCst)
    }
}

/// One request head and body, or `None` when the connection ended.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, String, Vec<u8>)> {
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let len: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Some((method, path, body))
}

async fn serve(mut s: TcpStream, st: Arc<State>) {
    let mut buf = Vec::new();
    let mut posted = false;
    while let Some((method, path, body)) = read_request(&mut s, &mut buf).await {
        if method == "POST" && !posted {
            posted = true;
            st.post_connections.fetch_add(1, SeqCst);
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        st.requests.lock().unwrap().push(Received {
            method: method.clone(),
            path,
            body: body.clone(),
        });
        if method != "POST" {
            st.health_probes.fetch_add(1, SeqCst);
        }
        if st.down.load(SeqCst) {
            if !fixed(&mut s, 503, "application/json", r#"{"detail":"down"}"#).await {
                return;
            }
            continue;
        }
        if method != "POST" {
            let detail = r#"{"detail":"Method Not Allowed"}"#;
            if !fixed(&mut s, 405, "application/json", detail).await {
                return;
            }
            continue;
        }
        let mode = st.mode.lock().unwrap().clone();
        if !answer(&mut s, &st, mode, &body).await {
            return;
        }
    }
}

/// A complete fixed-length answer; false when the connection broke.
async fn fixed(s: &mut TcpStream, status: u16, ctype: &str, body: &str) -> bool {
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.is_ok()
}

const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n";

/// One SSE event as the reference frames it.
pub fn frame(event: &Value) -> String {
    format!(
        "event: {}\ndata: {}\n\n",
        event["event_name"].as_str().unwrap_or("x"),
        serde_json::to_string(event).unwrap()
    )
}

fn common(content_type: &str, name: &str, source: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("content_type".into(), json!(content_type));
    m.insert("event_name".into(), json!(name));
    m.insert("schema_version".into(), json!("1.0"));
    m.insert("id".into(), json!(FAKE_EVENT_ID));
    m.insert("source".into(), json!(source));
    m.insert("metadata".into(), Value::Null);
    m
}

pub fn text_block(source: &str, name: &str, content: &str) -> Value {
    let mut m = common("atomic.textblock", name, source);
    m.insert("content".into(), json!(content));
    Value::Object(m)
}

/// An `atomic.json` event; its content is written with keys out of sorted order.
pub fn json_block(source: &str, name: &str, prompt: &str) -> String {
    let data = format!(
        r#"{{"content_type":"atomic.json","event_name":"{name}","schema_version":"1.0","id":"{FAKE_EVENT_ID}","source":{},"metadata":null,"content":{{"zeta":1,"alpha":{{"b":[1,2.5],"a":"x"}},"prompt":{}}}}}"#,
        json!(source),
        json!(prompt)
    );
    format!("event: {name}\ndata: {data}\n\n")
}

pub fn chunk(source: &str, stream_id: &str, is_complete: bool, content: &str) -> Value {
    let mut m = common("chunked.text", "RESPONSE", source);
    m.insert("stream_id".into(), json!(stream_id));
    m.insert("is_complete".into(), json!(is_complete));
    m.insert("content".into(), json!(content));
    Value::Object(m)
}

pub fn done(source: &str) -> Value {
    Value::Object(common("atomic.done", "done", source))
}

/// The well-behaved answer, one SSE frame per event.
pub fn well_behaved_frames(source: &str, prompt: &str) -> Vec<String> {
    vec![
        frame(&text_block(source, "GREETING", "Hello from the fake")),
        json_block(source, "DATA", prompt),
        frame(&chunk(source, FAKE_STREAM_ID, false, "one ")),
        frame(&chunk(source, FAKE_STREAM_ID, false, "two ")),
        frame(&chunk(source, FAKE_STREAM_ID, false, "three")),
        frame(&chunk(source, FAKE_STREAM_ID, true, " ")),
        frame(&done(source)),
    ]
}

async fn write_chunk(s: &mut TcpStream, st: &State, data: &[u8]) -> bool {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    let ok = s.write_all(&out).await.is_ok();
    if ok {
        st.bytes_written.fetch_add(data.len() as u64, SeqCst);
    } else {
        st.client_gone.fetch_add(1, SeqCst);
    }
    ok
}

/// Waits `d`, or less if the peer closes (then records it and returns false).
async fn pause(s: &mut TcpStream, st: &State, d: Duration) -> bool {
    let mut b = [0u8; 1];
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        r = s.read(&mut b) => {
            if matches!(r, Ok(0) | Err(_)) {
                st.client_gone.fetch_add(1, SeqCst);
            }
            false
        }
    }
}

async fn end_body(s: &mut TcpStream) -> bool {
    s.write_all(b"0\r\n\r\n").await.is_ok()
}

/// Answers one POST; false when the connection must not be reused.
async fn answer(s: &mut TcpStream, st: &State, mode: Mode, body: &Value) -> bool {
    let source = body["session"]["processor_id"]
        .as_str()
        .unwrap_or("no-session")
        .to_string();
    let prompt = body["query"]["prompt"].as_str().unwrap_or("").to_string();
    match mode {
        Mode::Status(code) => {
            return fixed(
                s,
                code,
                "application/json",
                r#"{"detail":"upstream says no"}"#,
            )
            .await
        }
        Mode::NotSse => return fixed(s, 200, "application/json", r#"{"ok":true}"#).await,
        _ => {}
    }
    if s.write_all(SSE_HEAD.as_bytes()).await.is_err() {
        return false;
    }
    let frames = well_behaved_frames(&source, &prompt);
    match mode {
        Mode::WellBehaved => {
            let hold = prompt
                .strip_prefix("hold:")
                .and_then(|ms| ms.parse::<u64>().ok());
            for (i, f) in frames.iter().enumerate() {
                if i == frames.len() - 1 {
                    if let Some(ms) = hold {
                        if !pause(s, st, Duration::from_millis(ms)).await {
                            return false;
                        }
                    }
                }
                if !write_chunk(s, st, f.as_bytes()).await {
                    return false;
                }
            }
            // The body's end comes a little after `done`, as from a real server: the
            // proxy must read on to it for the connection to be reusable.
            tokio::time::sleep(Duration::from_millis(10)).await;
            end_body(s).await
        }
        Mode::NoDone => {
            for f in &frames[..frames.len() - 1] {
                if !write_chunk(s, st, f.as_bytes()).await {
                    return false;
                }
            }
            end_body(s).await
        }
        Mode::HangAfter(n) => {
            for f in frames.iter().take(n) {
                if !write_chunk(s, st, f.as_bytes()).await {
                    return false;
                }
            }
            pause(s, st, Duration::from_secs(60)).await;
            false
        }
        Mode::ResetAfter(n) => {
            for f in frames.iter().take(n) {
                if !write_chunk(s, st, f.as_bytes()).await {
                    return false;
                }
            }
            let _ = socket2::SockRef::from(&*s).set_linger(Some(Duration::ZERO));
            false
        }
        Mode::GarbageLines => {
            let noise = [
                "this line is garbage\n",
                ": a comment\n",
                "id: 7\nretry: 1000\n",
                "unknown-field: value\n\n",
                "\n",
            ];
            for (i, f) in frames.iter().enumerate() {
                let mixed = format!("{}{f}", noise[i % noise.len()]);
                if !write_chunk(s, st, mixed.as_bytes()).await {
                    return false;
                }
            }
            end_body(s).await
        }
        Mode::BadData => {
            let bad = format!("{}event: RESPONSE\ndata: {{not json\n\n", frames[0]);
            if !write_chunk(s, st, bad.as_bytes()).await {
                return false;
            }
            end_body(s).await
        }
        Mode::LineSeparators => {
            let special = "a\u{2028}b\u{2029}c\u{85}d";
            let evs = [
                frame(&text_block(&source, "NOTE", special)),
                frame(&chunk(&source, FAKE_STREAM_ID, false, special)),
                frame(&chunk(&source, FAKE_STREAM_ID, true, " ")),
                frame(&done(&source)),
            ];
            assert!(evs[0].contains('\u{2028}'), "serde_json writes it raw");
            for f in &evs {
                if !write_chunk(s, st, f.as_bytes()).await {
                    return false;
                }
            }
            end_body(s).await
        }
        Mode::Slow { events, delay } => {
            for i in 0..events {
                if !pause(s, st, delay).await {
                    return false;
                }
                let f = frame(&chunk(
                    &source,
                    FAKE_STREAM_ID,
                    false,
                    &format!("slow {i} "),
                ));
                if !write_chunk(s, st, f.as_bytes()).await {
                    return false;
                }
            }
            write_chunk(s, st, frame(&done(&source)).as_bytes()).await && end_body(s).await
        }
        Mode::Flood {
            chunk: size,
            max_bytes,
        } => {
            let f = frame(&chunk(&source, FAKE_STREAM_ID, false, &"x".repeat(size)));
            let mut sent = 0u64;
            while sent < max_bytes {
                if !write_chunk(s, st, f.as_bytes()).await {
                    return false;
                }
                sent += f.len() as u64;
            }
            write_chunk(s, st, frame(&done(&source)).as_bytes()).await && end_body(s).await
        }
        Mode::Status(_) | Mode::NotSse => unreachable!("answered above"),
    }
}
