//! The protocol over real sockets: framing bytes, events, ids, streams, `done`,
//! validation and error statuses, agent failures, disconnects and the bounded queue.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn echo_response_bytes_are_exact() {
    let server = start_echo();
    let body = body("Hello Fast Agent!");
    let req = raw_agent_request(&body, "");
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let (head, body) = read_response(&mut s).await;
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(lower.contains("content-type: text/event-stream; charset=utf-8\r\n"));
    assert!(lower.contains("cache-control: no-cache\r\n"));
    assert!(lower.contains("x-accel-buffering: no\r\n"));
    assert!(lower.contains("transfer-encoding: chunked\r\n"));
    assert!(lower.contains("x-request-id: "));
    assert!(lower.contains("x-response-time: "));
    assert!(
        !lower.contains("connection: keep-alive"),
        "no keep-alive header on SSE"
    );
    let text = String::from_utf8(body).unwrap();
    let frames: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(frames.len(), 3, "{text:?}");
    let ids: Vec<String> = frames
        .iter()
        .map(|f| {
            let p = f.find("\"id\":\"").unwrap() + 6;
            f[p..p + 26].to_string()
        })
        .collect();
    let sid = {
        let p = frames[0].find("\"stream_id\":\"").unwrap() + 13;
        frames[0][p..p + 10].to_string()
    };
    assert!(sid
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    let expected = format!(
        "event: RESPONSE\ndata: {{\"content_type\":\"chunked.text\",\"event_name\":\"RESPONSE\",\"schema_version\":\"1.0\",\"id\":\"{}\",\"source\":\"agentd\",\"metadata\":null,\"stream_id\":\"{sid}\",\"is_complete\":false,\"content\":\"⚡ High-speed response to: Hello Fast Agent!\"}}\n\n\
         event: RESPONSE\ndata: {{\"content_type\":\"chunked.text\",\"event_name\":\"RESPONSE\",\"schema_version\":\"1.0\",\"id\":\"{}\",\"source\":\"agentd\",\"metadata\":null,\"stream_id\":\"{sid}\",\"is_complete\":true,\"content\":\" \"}}\n\n\
         event: done\ndata: {{\"content_type\":\"atomic.done\",\"event_name\":\"done\",\"schema_version\":\"1.0\",\"id\":\"{}\",\"source\":\"agentd\",\"metadata\":null}}\n\n",
        ids[0], ids[1], ids[2]
    );
    assert_eq!(text, expected);
    assert!(ids[0] < ids[1] && ids[1] < ids[2]);
}

#[tokio::test]
async fn events_parse_with_an_independent_parser_and_follow_the_rules() {
    let server = start_echo();
    for path in ["/agent", "/assist", "/agent/", "//assist"] {
        let res = post_json(
            &server,
            path,
            body_with_session("hi 😀", "sentient-chat-client"),
        )
        .await;
        assert_eq!(res.status(), 200);
        let evs = events(res).await;
        assert_well_formed(&evs);
        assert_eq!(evs.len(), 3);
        for e in &evs {
            assert_eq!(e.data["source"], "sentient-chat-client");
        }
        assert_eq!(evs[0].event, "RESPONSE");
        assert_eq!(evs[0].data["content"], "⚡ High-speed response to: hi 😀");
        assert_eq!(evs[2].event, "done");
    }
}

#[tokio::test]
async fn separators_are_escaped_on_the_wire() {
    let server = start_echo();
    let res = post_json(&server, "/agent", body("a\u{2028}b\u{2029}c\u{85}d\u{1}")).await;
    let raw = res.text().await.unwrap();
    assert!(raw.contains(r"a\u2028b\u2029c\u0085d\u0001"), "{raw}");
    assert!(!raw.contains('\u{2028}') && !raw.contains('\u{2029}') && !raw.contains('\u{85}'));
}

#[tokio::test]
async fn prompt_length_is_counted_in_characters() {
    let server = start_echo();
    let ok = post_json(&server, "/agent", body(&"😀".repeat(10_000))).await;
    assert_eq!(ok.status(), 200);
    assert_well_formed(&events(ok).await);
    let too_long = post_json(&server, "/agent", body(&"a".repeat(10_001))).await;
    assert_eq!(too_long.status(), 400);
    let j: serde_json::Value = too_long.json().await.unwrap();
    assert_eq!(j["code"], "validation_failed");
    assert_eq!(j["details"][0]["path"], "/query/prompt");
}

async fn expect_error(res: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(res.status().as_u16(), status);
    let rid = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let j: serde_json::Value = res.json().await.unwrap();
    assert_eq!(j["code"], code, "{j}");
    assert!(j["error"].is_string());
    assert_eq!(j["requestId"], rid.as_str());
    j
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let server = start_echo();
    let cases: &[(&str, &str)] = &[
        (r#"[]"#, ""),
        (r#"{}"#, ""),
        (r#"{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX"}}"#, "/query"),
        (r#"{"query":{"id":42,"prompt":"x"}}"#, "/query/id"),
        (r#"{"query":{"id":null,"prompt":"x"}}"#, "/query/id"),
        (
            r#"{"query":{"id":"01jdx3abcdefghjkmnpqrstvwx","prompt":"x"}}"#,
            "/query/id",
        ),
        (
            r#"{"query":{"id":"81JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"x"}}"#,
            "/query/id",
        ),
        (
            r#"{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":""}}"#,
            "/query/prompt",
        ),
        (
            r#"{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"x","context":{"preferences":{"maxTokens":"5"}}}}"#,
            "/query/context/preferences/maxTokens",
        ),
        (
            r#"{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"x"},"session":{"processor_id":"p","activity_id":"01JDX3ABCDEFGHJKMNPQRSTVWX","request_id":"bad","interactions":[]}}"#,
            "/session/request_id",
        ),
        (
            r#"{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"x"},"session":{"processor_id":"p","activity_id":"01JDX3ABCDEFGHJKMNPQRSTVWX","request_id":"01JDX3ABCDEFGHJKMNPQRSTVWX"}}"#,
            "/session",
        ),
    ];
    for (body, path) in cases {
        let j = expect_error(
            post_json(&server, "/agent", body.to_string()).await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(j["error"], "Validation failed");
        assert_eq!(j["details"][0]["path"], *path, "{body} -> {j}");
        assert!(j["details"][0]["message"].is_string());
    }
    // Unknown keys are ignored everywhere.
    let ok = r#"{"zz":1,"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"x","qq":[]},"session":{"processor_id":"p","activity_id":"01JDX3ABCDEFGHJKMNPQRSTVWX","request_id":"01JDX3ABCDEFGHJKMNPQRSTVWX","interactions":[{"request":{}}],"ss":{}}}"#;
    let res = post_json(&server, "/agent", ok.to_string()).await;
    assert_eq!(res.status(), 200);
    assert_well_formed(&events(res).await);
}

#[tokio::test]
async fn malformed_bodies_are_400_json() {
    let server = start_echo();
    let c = client();
    let send = |b: Vec<u8>| {
        c.post(server.url("/agent"))
            .header("content-type", "application/json")
            .body(b)
            .send()
    };
    expect_error(send(b"{".to_vec()).await.unwrap(), 400, "invalid_json").await;
    expect_error(send(b"".to_vec()).await.unwrap(), 400, "empty_body").await;
    expect_error(
        send(br#"{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"\ud800"}}"#.to_vec())
            .await
            .unwrap(),
        400,
        "invalid_json",
    )
    .await;
    let mut bad_utf8 = br#"{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":""#.to_vec();
    bad_utf8.extend_from_slice(b"\xc3\x28\"}}");
    expect_error(send(bad_utf8).await.unwrap(), 400, "invalid_json").await;
    // Server still healthy afterwards.
    assert_eq!(get_status(&server, "/health/live").await, 200);
}

#[tokio::test]
async fn content_types() {
    let server = start_echo();
    let c = client();
    for ct in [
        "application/json; charset=utf-8",
        "application/vnd.sentient+json",
    ] {
        let res = c
            .post(server.url("/agent"))
            .header("content-type", ct)
            .body(body("x"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{ct}");
    }
    // No content type at all is parsed as JSON.
    let res = c
        .post(server.url("/agent"))
        .body(body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let res = c
            .post(server.url("/agent"))
            .header("content-type", ct)
            .body(body("x"))
            .send()
            .await
            .unwrap();
        expect_error(res, 415, "unsupported_media_type").await;
    }
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let server = start_echo();
    let c = client();
    expect_error(
        c.get(server.url("/nope")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    let res = c.get(server.url("/agent")).send().await.unwrap();
    assert_eq!(res.headers()["allow"], "POST");
    expect_error(res, 405, "method_not_allowed").await;
    let res = c.post(server.url("/health")).send().await.unwrap();
    assert_eq!(res.headers()["allow"], "GET, HEAD");
    expect_error(res, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn body_limit_refuses_without_reading_the_rest() {
    let mut cfg = config();
    cfg.body_limit = 1000;
    let server = start_echo_with(cfg);
    // Declared too large: answered at once, although not one body byte is sent.
    let head = "POST /agent HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let (h, b) = read_response(&mut s).await;
    assert!(h.starts_with("HTTP/1.1 413"), "{h}");
    assert!(h.to_ascii_lowercase().contains("connection: close"));
    let j: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(j["code"], "payload_too_large");
    // Chunked past the limit: refused once the limit is crossed.
    let res = client()
        .post(server.url("/agent"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            (0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 500])),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    // Exactly at the limit is fine.
    let mut b = body("x");
    b.push_str(&" ".repeat(1000 - b.len()));
    assert_eq!(post_json(&server, "/agent", b).await.status(), 200);
}

#[tokio::test]
async fn stream_route_is_data_only() {
    let server = start_echo();
    let res = client()
        .get(server.url("/stream?prompt=hello%20there"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let text = res.text().await.unwrap();
    assert!(!text.contains("event:"), "{text}");
    let frames: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(frames.len(), 3);
    for f in &frames {
        // `id: <the event's id>` then one data line: EventSource's Last-Event-ID.
        let (id, data) = f.split_once('\n').expect("an id line and a data line");
        let id = id.strip_prefix("id: ").expect("id first");
        assert!(data.starts_with("data: {") && !data.contains('\n'), "{f}");
        assert!(data.contains(&format!("\"id\":\"{id}\"")), "{f}");
    }
    assert!(frames[0].contains("⚡ High-speed response to: hello there"));
    assert!(frames[2].contains("\"atomic.done\""));
    let res = client().get(server.url("/stream")).send().await.unwrap();
    expect_error(res, 400, "validation_failed").await;
    let res = client()
        .get(server.url(&format!("/stream?prompt={}", "a".repeat(10_001))))
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "validation_failed").await;
}

#[tokio::test]
async fn server_closes_streams_the_agent_left_open() {
    let server = start(config(), Arc::new(ScriptAgent));
    let evs = events(post_json(&server, "/agent", body("p")).await).await;
    assert_well_formed(&evs);
    let kinds: Vec<(String, String)> = evs
        .iter()
        .map(|e| {
            (
                e.event.clone(),
                e.data["content_type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let k = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        kinds,
        vec![
            k("ANALYSIS", "atomic.json"),
            k("NOTE", "atomic.textblock"),
            k("A", "chunked.text"),
            k("B", "chunked.text"),
            k("A", "chunked.text"),
            k("A", "chunked.text"),
            k("B", "chunked.text"),
            k("B", "chunked.text"),
            k("done", "atomic.done"),
        ]
    );
    assert_eq!(
        evs[0].data["content"],
        serde_json::json!({"prompt": "p", "n": 1})
    );
    assert_eq!(evs[1].data["content"], "a\nb\u{2028}");
    assert_ne!(evs[2].data["stream_id"], evs[3].data["stream_id"]);
    assert_eq!(evs[7].data["is_complete"], true);
}

#[tokio::test]
async fn agent_errors_become_error_then_done() {
    let server = start(config(), Arc::new(FailAgent));
    let evs = events(post_json(&server, "/agent", body("p")).await).await;
    assert_well_formed(&evs);
    let err = evs
        .iter()
        .find(|e| e.event == "error")
        .expect("an error event");
    assert_eq!(err.data["content_type"], "atomic.error");
    assert_eq!(
        err.data["content"],
        serde_json::json!({"error_message": "upstream refused", "error_code": 418, "details": {"why": "test"}})
    );
    assert_eq!(evs.len(), 4, "chunk, error, stream close, done");
}

#[tokio::test]
async fn agent_panics_are_contained() {
    let server = start(config(), Arc::new(PanicAgent));
    for prompt in ["sync", "async"] {
        let evs = events(post_json(&server, "/agent", body(prompt)).await).await;
        assert_well_formed(&evs);
        let err = evs.iter().find(|e| e.event == "error").unwrap();
        assert_eq!(err.data["content"]["error_code"], 500);
        assert!(!err.raw.contains("secret"), "no panic details leak");
    }
    assert_eq!(get_status(&server, "/health/live").await, 200);
    assert_eq!(
        server.handle().worker_restarts(),
        0,
        "a panicking agent does not kill its worker"
    );
}

#[tokio::test]
async fn agent_timeout_ends_with_error_and_done() {
    let mut cfg = config();
    cfg.agent_timeout = 200;
    let agent = Arc::new(SlowStreamAgent::new(1000, Duration::from_millis(50)));
    let server = start(cfg, agent.clone());
    let started = std::time::Instant::now();
    let evs = events(post_json(&server, "/agent", body("p")).await).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_well_formed(&evs);
    let err = evs.iter().find(|e| e.event == "error").unwrap();
    assert_eq!(err.data["content"]["error_code"], 504);
    assert!(
        eventually(Duration::from_secs(2), || agent
            .dropped
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
}

/// Waits for the agent to start, closes the client's socket, and expects the agent's
/// work to be dropped.
async fn leave_and_expect_cancel(s: tokio::net::TcpStream, agent: &SlowStreamAgent) {
    assert!(agent.has_started(1).await);
    drop(s);
    assert!(
        agent.has_dropped(1).await,
        "the agent's work is dropped when the client leaves"
    );
}

#[tokio::test]
async fn client_disconnect_cancels_the_agent() {
    let agent = Arc::new(SlowStreamAgent::new(1_000_000, Duration::from_millis(20)));
    let server = start(config(), agent.clone());
    let b = body("p");
    let req = raw_agent_request(&b, "");
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut first = [0u8; 256];
    let _ = tokio::io::AsyncReadExt::read(&mut s, &mut first)
        .await
        .unwrap();
    leave_and_expect_cancel(s, &agent).await;
}

#[tokio::test]
async fn slow_reader_is_cut_off_and_its_agent_stops() {
    let mut cfg = config();
    cfg.sse_queue_bytes = 64 * 1024;
    cfg.sse_slow_reader_timeout = 300;
    let agent = Arc::new(FloodAgent::new(16 * 1024));
    let server = start(cfg, agent.clone());
    let b = body("p");
    let req = raw_agent_request(&b, "");
    // Tiny receive buffer, then never read.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(server.addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || agent
            .finished
            .load(Ordering::SeqCst))
        .await,
        "the flooding agent must be stopped"
    );
    let why = agent.ended_with.lock().unwrap().clone().unwrap();
    assert!(why.contains("slowly"), "{why}");
    let emitted = agent.emitted.load(Ordering::SeqCst);
    assert!(
        emitted < 32 * 1024 * 1024,
        "bounded: emitted {emitted} bytes"
    );
    // The connection is cut: reading drains what was buffered, then ends.
    let rest = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert!(!String::from_utf8_lossy(&rest).contains("atomic.done"));
    assert_eq!(get_status(&server, "/health/live").await, 200);
}

#[tokio::test]
async fn client_disconnect_cancels_a_silent_agent() {
    // The agent sends nothing for a minute: the disconnect must be seen without a write.
    let agent = Arc::new(SlowStreamAgent::new(1, Duration::from_secs(60)));
    let server = start(config(), agent.clone());
    let b = body("p");
    let req = raw_agent_request(&b, "");
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    leave_and_expect_cancel(s, &agent).await;
}

#[tokio::test]
async fn heartbeats_keep_a_silent_stream_alive() {
    let mut cfg = config();
    cfg.sse_heartbeat = 50;
    let agent = Arc::new(SlowStreamAgent::new(1, Duration::from_millis(400)));
    let server = start(cfg, agent);
    let raw = post_json(&server, "/agent", body("p"))
        .await
        .text()
        .await
        .unwrap();
    let beats = raw.matches(":\n\n").count();
    assert!(beats >= 3, "{beats} heartbeats in {raw:?}");
    // Comments are ignored by SSE parsers: the events are intact.
    assert!(raw.starts_with(":\n\n"));
    assert!(raw.ends_with("\"metadata\":null}\n\n"));
    // Off by default.
    let server = start(
        config(),
        Arc::new(SlowStreamAgent::new(1, Duration::from_millis(200))),
    );
    let raw = post_json(&server, "/agent", body("p"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!raw.contains(":\n\n"));
}
