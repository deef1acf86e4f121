//! Connection behaviour over real sockets: keep-alive, h2c, request ids, the header,
//! keep-alive and body timeouts, header limits and the connection cap.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn agent_request(extra_headers: &str) -> String {
    let b = body("keep");
    raw_agent_request(&b, extra_headers)
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let server = start_echo();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..3 {
        s.write_all(agent_request("").as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"));
        assert!(String::from_utf8(body)
            .unwrap()
            .ends_with("\"metadata\":null}\n\n"));
        s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"));
        assert_eq!(body, br#"{"status":"ok"}"#);
    }
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let server = start_echo();
    let out = raw(
        server.addr,
        agent_request("Connection: close\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"));
    assert!(text.contains("atomic.done"));
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let server = start_echo();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = http::Request::post(server.url("/agent"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body("h2"))))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert_eq!(text.matches("event: ").count(), 3);
    assert!(text.ends_with("\"metadata\":null}\n\n"));
    // Many concurrent streams on the one connection.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = client.clone();
        let url = server.url("/health");
        tasks.push(tokio::spawn(async move {
            let res = client
                .request(http::Request::get(url).body(Full::default()).unwrap())
                .await
                .unwrap();
            res.status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn request_ids_and_response_time() {
    let server = start_echo();
    let c = client();
    let res = c
        .get(server.url("/health"))
        .header("x-request-id", "trace-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-abc.123");
    let rt = res.headers()["x-response-time"].to_str().unwrap();
    assert!(
        rt.ends_with("ms") && rt[..rt.len() - 2].parse::<f64>().is_ok(),
        "{rt}"
    );
    let res = c
        .get(server.url("/nope"))
        .header("x-request-id", "has spaces")
        .send()
        .await
        .unwrap();
    let rid = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(rid.len(), 26, "an insane id is replaced by a ULID");
    let j: serde_json::Value = res.json().await.unwrap();
    assert_eq!(j["requestId"], rid.as_str());
}

#[tokio::test]
async fn health_endpoints() {
    let server = start_echo();
    let c = client();
    for _ in 0..5 {
        c.get(server.url("/health/live")).send().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // /health is refreshed every 250 ms
    let j: serde_json::Value = c
        .get(server.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(j["status"], "healthy");
    assert_eq!(j["agent"], "agentd echo agent");
    assert!(j["uptime"].as_f64().unwrap() > 0.0);
    assert!(j["memory"]["rss"].as_u64().unwrap() > 0);
    assert!(j["requests"].as_u64().unwrap() >= 5);
    assert!(j["latency"]["p99"].as_f64().unwrap() >= j["latency"]["p50"].as_f64().unwrap());
    let res = c.get(server.url("/health/ready")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), r#"{"status":"ready"}"#);
    let res = c.head(server.url("/health/live")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn slow_headers_are_cut_at_the_header_timeout() {
    let mut cfg = config();
    cfg.header_read_timeout = 300;
    let server = start_echo_with(cfg);
    // Never sends a byte.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    // Sends half a head, then trickles.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = async {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow.write_all(b"X-A: b\r\n").await.is_err() {
                break;
            }
        }
    };
    let (_, a) = tokio::join!(trickle, read_until_close(&mut idle, Duration::from_secs(5)));
    assert!(a.is_empty());
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1300),
        "idle socket closed after {elapsed:?}"
    );
    let b = read_until_close(&mut slow, Duration::from_secs(5)).await;
    assert!(!String::from_utf8_lossy(&b).contains("200 OK"));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn idle_keep_alive_connections_close_at_the_keep_alive_timeout() {
    let mut cfg = config();
    cfg.keep_alive_timeout = 300;
    cfg.header_read_timeout = 5_000;
    let server = start_echo_with(cfg);
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let _ = read_response(&mut s).await;
    let started = Instant::now();
    let rest = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(rest.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(2500),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn slow_bodies_get_408() {
    let mut cfg = config();
    cfg.connection_timeout = 300;
    let server = start_echo_with(cfg);
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"POST /agent HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\"")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["code"], "body_timeout");
}

#[tokio::test]
async fn too_many_headers_are_refused() {
    let mut cfg = config();
    cfg.max_headers = 10;
    let server = start_echo_with(cfg);
    let mut req = String::from("GET /health/live HTTP/1.1\r\nHost: x\r\n");
    for i in 0..20 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let out = raw(server.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // A huge head is refused too.
    let big = format!(
        "GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let out = raw(server.addr, big.as_bytes(), Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 431"));
}

#[tokio::test]
async fn the_connection_cap_pauses_accepting() {
    let mut cfg = config();
    cfg.workers = Some(1);
    cfg.max_connections = 2;
    let server = start_echo_with(cfg);
    let mut a = TcpStream::connect(server.addr).await.unwrap();
    let mut b = TcpStream::connect(server.addr).await.unwrap();
    for s in [&mut a, &mut b] {
        s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (h, _) = read_response(s).await;
        assert!(h.starts_with("HTTP/1.1 200"));
    }
    // The third connection waits in the backlog, unanswered.
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf))
            .await
            .is_err()
    );
    // Freeing a slot lets it in.
    drop(a);
    let (h, _) = read_response(&mut c).await;
    assert!(h.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn h2_settings_follow_the_configuration() {
    let mut c = config();
    c.h2_max_concurrent_streams = 7;
    let server = start_echo_with(c);
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    // The server's SETTINGS arrive with its first frames; a request makes sure of them.
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(server.url("/health")).body(()).unwrap();
    let (res, _) = client.send_request(req, true).unwrap();
    assert_eq!(res.await.unwrap().status(), 200);
    assert_eq!(client.current_max_send_streams(), 7);
}

#[test]
fn h2_reset_limits_are_configurable() {
    use clap::Parser;
    let c = agentd::Config::try_parse_from([
        "agentd",
        "--h2-max-pending-resets",
        "5",
        "--h2-max-local-error-resets",
        "9",
    ])
    .unwrap();
    assert_eq!(
        (c.h2_max_pending_resets, c.h2_max_local_error_resets),
        (5, 9)
    );
    assert_eq!(
        (
            config().h2_max_pending_resets,
            config().h2_max_local_error_resets
        ),
        (20, 256)
    );
}

#[tokio::test]
async fn the_protocol_is_told_apart_when_the_first_bytes_come_in_pieces() {
    let server = start_echo();
    // An HTTP/2 preface in two packets, then an empty SETTINGS frame: the server
    // answers with its own SETTINGS frame.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    s.write_all(&preface[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(&preface[5..]).await.unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[3], 4, "expected a SETTINGS frame, got {head:?}");

    // An HTTP/1 request whose first byte matches the preface's, sent byte by byte at
    // first, is still HTTP/1.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let req = agent_request("Connection: close\r\n");
    for b in req.as_bytes()[..3].chunks(1) {
        s.write_all(b).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.write_all(&req.as_bytes()[3..]).await.unwrap();
    let got = read_until_close(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("event: done"), "{text}");
}

#[test]
fn every_worker_listens_with_the_configured_backlog() {
    // `ss` reports a listening socket's backlog in its Send-Q column.
    let mut cfg = config();
    cfg.listen_backlog = 77;
    let server = start_echo_with(cfg);
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", server.addr.port())])
        .output()
        .expect("the ss tool (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let backlogs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(backlogs, ["77", "77"], "{text}");
}
