//! `GET /ws` (PROTOCOL.md §7), driven by tokio-tungstenite as the client and by raw
//! sockets for the handshake: ping/pong, queries streamed to `done` then `metrics`,
//! errors that leave the socket open, the message-size and idle limits, the close
//! handshake and cancellation, a reader that stops reading, auth, and 1,000 sockets
//! at once.

// A test process, not a worker: it may block its own threads, and signal or limit the
// processes it starts.
#![allow(clippy::disallowed_methods, unsafe_code)]

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const STEP: Duration = Duration::from_secs(10);

async fn connect(server: &TestServer) -> Ws {
    let (ws, res) = timeout(STEP, connect_async(format!("ws://{}/ws", server.addr)))
        .await
        .expect("handshake in time")
        .expect("handshake");
    assert_eq!(res.status(), 101);
    ws
}

/// The next message; panics on a timeout, an error or the end of the stream.
async fn recv(ws: &mut Ws) -> Message {
    timeout(STEP, ws.next())
        .await
        .expect("message in time")
        .expect("socket open")
        .expect("valid message")
}

async fn recv_json(ws: &mut Ws) -> (String, Value) {
    match recv(ws).await {
        Message::Text(t) => {
            let v = serde_json::from_str(&t).expect("message is JSON");
            (t.to_string(), v)
        }
        other => panic!("expected a text message, got {other:?}"),
    }
}

async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Reads one answer: every event up to `done`, then the metrics message. Checks that
/// each event carries `request_id` as its last key (or none at all), then hands back
/// the events without it, in the shape `assert_well_formed` checks.
async fn read_answer(ws: &mut Ws, request_id: Option<&Value>) -> (Vec<Event>, Value) {
    let mut events = Vec::new();
    loop {
        let (raw, mut v) = recv_json(ws).await;
        if v.get("type").is_some() {
            assert_eq!(v["type"], "metrics", "unexpected message {raw}");
            assert!(!events.is_empty(), "metrics before any event");
            assert_eq!(v.get("requestId"), request_id, "{raw}");
            assert!(v["processingTime"].as_f64().unwrap() >= 0.0, "{raw}");
            return (events, v);
        }
        match request_id {
            Some(rid) => {
                let suffix = format!(",\"requestId\":{rid}}}");
                assert!(
                    raw.ends_with(&suffix),
                    "requestId is not the last key: {raw}"
                );
                assert_eq!(
                    v.as_object_mut().unwrap().remove("requestId").as_ref(),
                    Some(rid)
                );
            }
            None => assert!(v.get("requestId").is_none(), "{raw}"),
        }
        let done = v["content_type"] == "atomic.done";
        events.push(Event {
            event: v["event_name"].as_str().unwrap().to_string(),
            id: String::new(),
            data: v,
            raw,
        });
        if done {
            // Nothing but the metrics may follow.
            continue;
        }
    }
}

async fn expect_close(ws: &mut Ws, code: CloseCode) {
    match recv(ws).await {
        Message::Close(Some(f)) => assert_eq!(f.code, code, "{f:?}"),
        other => panic!("expected a close frame with {code:?}, got {other:?}"),
    }
    // The server then ends the connection.
    let end = timeout(STEP, ws.next()).await.expect("end in time");
    assert!(
        matches!(end, None | Some(Err(_))),
        "expected the end, got {end:?}"
    );
}

#[tokio::test]
async fn ping_pong() {
    let server = start_echo();
    let mut ws = connect(&server).await;
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv_json(&mut ws).await.0, r#"{"type":"pong"}"#);
    send_json(&mut ws, json!({"type": "ping", "requestId": [1, "a"]})).await;
    assert_eq!(
        recv_json(&mut ws).await.0,
        r#"{"type":"pong","requestId":[1,"a"]}"#
    );
    // WebSocket-level pings are answered too.
    ws.send(Message::Ping(b"hi"[..].into())).await.unwrap();
    assert_eq!(recv(&mut ws).await, Message::Pong(b"hi"[..].into()));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn a_query_streams_every_event_then_metrics() {
    let server = start_echo();
    let mut ws = connect(&server).await;
    let prompt = "hello ⚡ \u{2028} \"quoted\"\n";
    let rid = json!("req-1");
    send_json(
        &mut ws,
        json!({"type": "agent-query", "prompt": prompt, "id": ID, "requestId": rid}),
    )
    .await;
    let (events, metrics) = read_answer(&mut ws, Some(&rid)).await;
    assert_well_formed(&events);
    assert!(events.len() >= 3, "{events:?}");
    assert!(events.iter().all(|e| e.data["source"] == "agentd"));
    let text: String = events
        .iter()
        .filter(|e| e.data["content_type"] == "chunked.text")
        .map(|e| e.data["content"].as_str().unwrap())
        .collect();
    assert!(text.contains(prompt), "{text:?}");
    assert!(metrics["processingTime"].is_number());

    // Several queries on one socket, each id range increasing; objects as requestId,
    // no requestId at all.
    let rid = json!({"n": 2, "tags": ["x"]});
    send_json(
        &mut ws,
        json!({"type": "agent-query", "prompt": "two", "requestId": rid}),
    )
    .await;
    let (second, _) = read_answer(&mut ws, Some(&rid)).await;
    assert_well_formed(&second);
    assert!(second[0].data["id"].as_str() > events.last().unwrap().data["id"].as_str());
    send_json(&mut ws, json!({"type": "agent-query", "prompt": "three"})).await;
    let (third, metrics) = read_answer(&mut ws, None).await;
    assert_well_formed(&third);
    assert!(metrics.get("requestId").is_none());
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn queries_sent_together_are_answered_in_order() {
    let server = start_echo();
    let mut ws = connect(&server).await;
    for i in 0..5 {
        send_json(
            &mut ws,
            json!({"type": "agent-query", "prompt": format!("q{i}"), "requestId": i}),
        )
        .await;
    }
    for i in 0..5 {
        let (events, _) = read_answer(&mut ws, Some(&json!(i))).await;
        assert_well_formed(&events);
    }
}

#[tokio::test]
async fn agent_failures_end_with_error_then_done() {
    let server = start(config(), Arc::new(FailAgent));
    let mut ws = connect(&server).await;
    send_json(
        &mut ws,
        json!({"type": "agent-query", "prompt": "x", "requestId": 1}),
    )
    .await;
    let (events, _) = read_answer(&mut ws, Some(&json!(1))).await;
    assert_well_formed(&events);
    let err = events
        .iter()
        .find(|e| e.data["content_type"] == "atomic.error")
        .expect("an error event");
    assert_eq!(err.data["content"]["error_code"], 418);

    let server = start(config(), Arc::new(PanicAgent));
    let mut ws = connect(&server).await;
    send_json(&mut ws, json!({"type": "agent-query", "prompt": "async"})).await;
    let (events, _) = read_answer(&mut ws, None).await;
    assert_well_formed(&events);
    assert!(!events.iter().any(|e| e.raw.contains("secret")));
    // The socket survives.
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv_json(&mut ws).await.1["type"], "pong");
}

#[tokio::test]
async fn bad_messages_get_errors_and_the_socket_stays_open() {
    let server = start_echo();
    let mut ws = connect(&server).await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("{not json"), "invalid JSON"),
        (Message::text("[1,2]"), "must be a JSON object"),
        (Message::text(r#"{"type":"dance"}"#), "unknown type"),
        (Message::text(r#"{"prompt":"x"}"#), "type"),
        (Message::text(r#"{"type":"agent-query"}"#), "prompt"),
        (
            Message::text(r#"{"type":"agent-query","prompt":""}"#),
            "fewer than 1",
        ),
        (
            Message::text(json!({"type":"agent-query","prompt":"a".repeat(10_001)}).to_string()),
            "more than 10000",
        ),
        (
            Message::text(r#"{"type":"agent-query","prompt":"x","id":"nope"}"#),
            "ULID",
        ),
        (Message::Binary(b"{\"type\":\"ping\"}"[..].into()), "binary"),
    ];
    for (msg, needle) in cases {
        ws.send(msg).await.unwrap();
        let (raw, v) = recv_json(&mut ws).await;
        assert_eq!(v["type"], "error", "{raw}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{needle:?} not in {raw}"
        );
    }
    // An error for a message with a requestId carries it.
    send_json(&mut ws, json!({"type": "agent-query", "requestId": "r9"})).await;
    let (_, v) = recv_json(&mut ws).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["requestId"], "r9");
    // Still usable.
    send_json(
        &mut ws,
        json!({"type": "agent-query", "prompt": "ok", "requestId": 3}),
    )
    .await;
    let (events, _) = read_answer(&mut ws, Some(&json!(3))).await;
    assert_well_formed(&events);
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let mut cfg = config();
    cfg.ws_max_message = 1024;
    let server = start_echo_with(cfg);
    // Exactly the limit is fine.
    let mut ws = connect(&server).await;
    let fill = 1024 - r#"{"type":"ping","pad":""}"#.len();
    let exact = json!({"type": "ping", "pad": "p".repeat(fill)}).to_string();
    assert_eq!(exact.len(), 1024);
    ws.send(Message::text(exact)).await.unwrap();
    assert_eq!(recv_json(&mut ws).await.1["type"], "pong");
    // One byte more in one frame.
    let over = json!({"type": "ping", "pad": "p".repeat(fill + 1)}).to_string();
    ws.send(Message::text(over)).await.unwrap();
    expect_close(&mut ws, CloseCode::Size).await;

    // A large frame: refused from its header, the client's unread bytes drained.
    let mut ws = connect(&server).await;
    let _ = ws.send(Message::text("x".repeat(4 << 20))).await;
    expect_close(&mut ws, CloseCode::Size).await;

    // Fragments each under the limit, together over it.
    let mut ws = connect(&server).await;
    let part = "y".repeat(600);
    ws.send(Message::Frame(Frame::message(
        part.clone(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        part,
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    expect_close(&mut ws, CloseCode::Size).await;
}

#[tokio::test]
async fn an_idle_socket_is_closed() {
    let mut cfg = config();
    cfg.ws_idle_timeout = 300;
    let agent = Arc::new(SlowStreamAgent::new(4, Duration::from_millis(150)));
    let server = start(cfg, agent);
    let mut ws = connect(&server).await;
    // A running answer is not idle: 600 ms of chunks outlive the 300 ms timeout.
    send_json(
        &mut ws,
        json!({"type": "agent-query", "prompt": "x", "requestId": 1}),
    )
    .await;
    let (events, _) = read_answer(&mut ws, Some(&json!(1))).await;
    assert_well_formed(&events);
    // Messages keep it open.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        send_json(&mut ws, json!({"type": "ping"})).await;
        assert_eq!(recv_json(&mut ws).await.1["type"], "pong");
    }
    let quiet = Instant::now();
    expect_close(&mut ws, CloseCode::Normal).await;
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test]
async fn the_close_handshake_is_answered_and_cancels_the_agent() {
    let agent = Arc::new(SlowStreamAgent::new(100, Duration::from_millis(100)));
    let server = start(config(), agent.clone());
    let mut ws = connect(&server).await;
    send_json(&mut ws, json!({"type": "agent-query", "prompt": "x"})).await;
    // The first chunk arrives, then the client closes mid-answer.
    let (_, first) = recv_json(&mut ws).await;
    assert_eq!(first["content_type"], "chunked.text");
    assert!(eventually(STEP, || agent.started.load(Ordering::SeqCst) == 1).await);
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    // Events already in flight may come first; then the server's close frame (the
    // echo of ours), then the end.
    let echoed = loop {
        match timeout(STEP, ws.next()).await.expect("in time") {
            Some(Ok(Message::Text(_))) => continue,
            Some(Ok(Message::Close(f))) => break f,
            other => panic!("expected the close reply, got {other:?}"),
        }
    };
    assert_eq!(echoed.map(|f| f.code), Some(CloseCode::Normal));
    assert!(timeout(STEP, ws.next())
        .await
        .expect("end in time")
        .is_none());
    // The agent was dropped, not left running.
    assert!(eventually(STEP, || agent.dropped.load(Ordering::SeqCst) == 1).await);

    // A client that just drops the TCP connection cancels it too.
    let mut ws = connect(&server).await;
    send_json(&mut ws, json!({"type": "agent-query", "prompt": "x"})).await;
    let _ = recv_json(&mut ws).await;
    drop(ws);
    assert!(eventually(STEP, || agent.dropped.load(Ordering::SeqCst) == 2).await);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_memory_stays_bounded() {
    let mut cfg = config();
    cfg.sse_queue_bytes = 64 * 1024;
    cfg.sse_slow_reader_timeout = 300;
    let agent = Arc::new(FloodAgent::new(64 * 1024));
    let server = start(cfg, agent.clone());
    let mut ws = connect(&server).await;
    send_json(&mut ws, json!({"type": "agent-query", "prompt": "x"})).await;
    // Never read: the agent fills the queue and the socket buffers, then stops.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let emitted = agent.emitted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        agent.emitted.load(Ordering::SeqCst),
        emitted,
        "the agent still runs"
    );
    assert!(emitted < 64 << 20, "{emitted} bytes emitted");
    eprintln!("slow reader: {emitted} bytes emitted before the cut");
    // What reached the socket can be read, then the connection ends without metrics.
    let read_all = async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                assert!(!t.contains("\"metrics\""));
            }
        }
    };
    timeout(Duration::from_secs(20), read_all)
        .await
        .expect("the server ends the connection");
}

#[tokio::test]
async fn the_handshake_is_checked() {
    let server = start_echo();
    let handshake = |extra: &str| format!("GET /ws HTTP/1.1\r\nHost: x\r\n{extra}\r\n",);
    let good = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    // RFC 6455's own example.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(handshake(good).as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut s).await;
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 101 "), "{head}");
    assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    assert!(lower.contains("\r\nx-request-id: "), "{head}");

    for (extra, field) in [
        ("", "/headers/upgrade"),
        (
            "Connection: keep-alive\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "/headers/connection",
        ),
        (
            "Connection: Upgrade\r\nUpgrade: h2c\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "/headers/upgrade",
        ),
        (
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "/headers/sec-websocket-version",
        ),
        (
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: abc\r\n",
            "/headers/sec-websocket-key",
        ),
    ] {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(handshake(extra).as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("content-type: application/json"), "{head}");
        let j: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["code"], "validation_failed");
        assert!(j["requestId"].is_string());
        assert!(
            j["details"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["path"] == field),
            "{field} in {j}"
        );
        if field == "/headers/sec-websocket-version" {
            assert!(lower.contains("\r\nsec-websocket-version: 13\r\n"), "{head}");
        }
    }
    // Other methods get the usual 405.
    let res = client().post(server.url("/ws")).send().await.unwrap();
    assert_eq!(res.status(), 405);
}

#[tokio::test]
async fn the_upgrade_needs_the_bearer_token_when_required() {
    let mut cfg = config();
    cfg.jwt_secret = Some("s3cret".into());
    cfg.auth_required = true;
    let server = start_echo_with(cfg);
    let url = format!("ws://{}/ws", server.addr);
    match connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|(_, r)| r.status())),
    }
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "u1", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(b"s3cret"),
    )
    .unwrap();
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = connect_async(req).await.unwrap();
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv_json(&mut ws).await.1["type"], "pong");
}

/// Raises the soft open-files limit to what `n` sockets on both ends need.
fn ensure_fds(n: u64) {
    // SAFETY: plain getrlimit/setrlimit calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < n {
            lim.rlim_cur = n.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sockets_at_once() {
    const N: usize = 1000;
    ensure_fds(2 * N as u64 + 512);
    let server = Arc::new(start_echo());
    let started = Instant::now();
    let all_open = Arc::new(tokio::sync::Barrier::new(N));
    let all_answered = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::with_capacity(N);
    for i in 0..N {
        let (server, all_open, all_answered) =
            (server.clone(), all_open.clone(), all_answered.clone());
        tasks.push(tokio::spawn(async move {
            let mut ws = connect(&server).await;
            // Every socket is open before any query is sent.
            all_open.wait().await;
            send_json(
                &mut ws,
                json!({"type": "agent-query", "prompt": format!("p{i}"), "requestId": i}),
            )
            .await;
            let (events, _) = read_answer(&mut ws, Some(&json!(i))).await;
            assert_well_formed(&events);
            // ... and stays open until every answer is in.
            all_answered.wait().await;
            ws.close(None).await.unwrap();
        }));
    }
    timeout(Duration::from_secs(60), async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("1,000 sockets answered within 60 s");
    eprintln!("1,000 sockets: {:?}", started.elapsed());
}

#[tokio::test]
async fn shutdown_closes_open_sockets_with_going_away_and_caps_count_them() {
    let server = start_echo();
    let mut ws = connect(&server).await;
    send_json(&mut ws, json!({"type": "ping"})).await;
    let (_, pong) = recv_json(&mut ws).await;
    assert_eq!(pong["type"], "pong");
    let stopping = tokio::spawn(server.stop());
    let mut closed = None;
    while let Ok(Some(msg)) = timeout(Duration::from_secs(5), ws.next()).await {
        if let Ok(Message::Close(frame)) = msg {
            closed = frame;
            break;
        }
    }
    let frame = closed.expect("a close frame, not a reset");
    assert_eq!(frame.code, CloseCode::Away);
    assert!(stopping.await.unwrap() < Duration::from_secs(5));

    // An upgraded socket still holds its connection slot.
    let mut cfg = config();
    cfg.workers = Some(1);
    cfg.max_connections = 1;
    let server = start_echo_with(cfg);
    let _ws = connect(&server).await;
    let mut other = TcpStream::connect(server.addr).await.unwrap();
    other
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    use tokio::io::AsyncReadExt;
    assert!(
        timeout(Duration::from_millis(300), other.read(&mut buf))
            .await
            .is_err(),
        "no slot while the socket is open"
    );
}
