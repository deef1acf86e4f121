//! Process lifecycle: worker respawn, graceful shutdown with streams in flight, the
//! shutdown deadline, configuration errors and signals on the real binary.

// A test process, not a worker: it may block its own threads, and signal or limit the
// processes it starts.
#![allow(clippy::disallowed_methods, unsafe_code)]

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

#[tokio::test]
async fn a_crashed_worker_is_replaced_and_the_others_keep_serving() {
    let server = start_echo();
    assert_eq!(get_status(&server, "/health/live").await, 200);
    server.handle().crash_worker(0);
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || server.handle().worker_restarts()
            == 1)
        .await,
        "the worker is back within 1 s"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // Every request after the restart succeeds, on fresh connections spread over workers.
    for _ in 0..50 {
        let fresh = client();
        let res = fresh
            .post(server.url("/agent"))
            .header("content-type", "application/json")
            .body(body("after"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_well_formed(&events(res).await);
    }
}

#[tokio::test]
async fn graceful_shutdown_lets_streams_finish() {
    let agent = Arc::new(SlowStreamAgent::new(10, Duration::from_millis(50)));
    let server = start(config(), agent.clone());
    let mut tasks = Vec::new();
    for _ in 0..40 {
        tasks.push(spawn_agent(&server, "x"));
    }
    assert!(agent.has_started(40).await);
    let handle = server.handle.as_ref().unwrap();
    handle.shutdown();
    assert!(eventually(Duration::from_secs(1), || !handle.is_ready()).await);
    for t in tasks {
        let evs = t.await.unwrap();
        assert_well_formed(&evs);
        assert_eq!(evs.len(), 12, "every chunk, the stream's close, done");
        assert!(evs.iter().all(|e| e.event != "error"));
    }
    let took = server.stop().await;
    assert!(took < Duration::from_secs(3), "stopped in {took:?}");
}

#[tokio::test]
async fn the_shutdown_deadline_ends_stragglers_with_error_and_done() {
    let mut cfg = config();
    cfg.shutdown_timeout = 300;
    let agent = Arc::new(SlowStreamAgent::new(1000, Duration::from_millis(100)));
    let server = start(cfg, agent.clone());
    let mut tasks = Vec::new();
    for _ in 0..10 {
        tasks.push(spawn_agent(&server, "x"));
    }
    assert!(agent.has_started(10).await);
    let stopping = tokio::spawn(server.stop());
    for t in tasks {
        let evs = t.await.unwrap();
        assert_well_formed(&evs);
        let err = evs
            .iter()
            .find(|e| e.event == "error")
            .expect("error before done");
        assert_eq!(err.data["content"]["error_code"], 503);
    }
    let took = stopping.await.unwrap();
    assert!(
        took < Duration::from_millis(300 + 1500),
        "stopped in {took:?}"
    );
}

#[test]
fn bad_configuration_exits_2_naming_the_variable() {
    for (var, val) in [
        ("PORT", "abc"),
        ("BODY_LIMIT", "-1"),
        ("WORKERS", "0"),
        ("LOG_LEVEL", "loud"),
        ("KEEP_ALIVE_TIMEOUT", "x"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_agentd"))
            .env(var, val)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={val}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var}: {err}");
    }
}

#[test]
fn help_lists_every_variable_with_its_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_agentd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "PORT",
        "HOST",
        "WORKERS",
        "KEEP_ALIVE_TIMEOUT",
        "BODY_LIMIT",
        "CONNECTION_TIMEOUT",
        "LOG_LEVEL",
        "NODE_ENV",
        "AGENT_TIMEOUT",
        "SHUTDOWN_TIMEOUT",
        "SSE_QUEUE_BYTES",
    ] {
        assert!(
            help.contains(&format!("env: {var}=")),
            "{var} missing from --help"
        );
    }
    assert!(help.contains("[default: 3000]"));
}

#[test]
fn the_binary_serves_and_exits_0_on_sigterm() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentd"))
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("WORKERS", "2")
        .env("NODE_ENV", "production")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let ok = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            break out.starts_with("HTTP/1.1 200");
        }
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(ok, "the binary answers /health/live");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "exits promptly");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.lines().all(|l| l.starts_with('{')),
        "production logs are JSON lines: {err}"
    );
}

#[test]
fn request_log_lines_in_json() {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_agentd"))
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("WORKERS", "1")
        .env("NODE_ENV", "development")
        .env("LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.write_all(b"GET /health/live?x=1 HTTP/1.1\r\nHost: x\r\nx-request-id: log-test-1\r\nConnection: close\r\n\r\n").unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("log-test-1"))
        .unwrap_or_else(|| panic!("no request line in {err}"));
    let j: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(j["method"], "GET");
    assert_eq!(j["url"], "/health/live?x=1");
    assert_eq!(j["status"], 200);
    assert!(j["response_time_ms"].is_number());
    assert_eq!(j["request_id"], "log-test-1");
}

/// `SHUTDOWN_DELAY`: readiness fails at once while new connections are still accepted
/// and served, so a load balancer can stop sending before the listeners close; then
/// the drain as usual, and a second request to stop skips what is left of the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delay_keeps_serving_while_readiness_fails() {
    let mut c = config();
    c.shutdown_delay = 60_000;
    let server = start_echo_with(c);
    assert_eq!(get_status(&server, "/health/ready").await, 200);
    let handle = server.handle.as_ref().unwrap();
    handle.shutdown();
    assert!(
        status_becomes(&server, "/health/ready", 503, Duration::from_secs(2)).await,
        "readiness fails at once"
    );
    // New connections are still served (a fresh client: no pooled connection).
    for _ in 0..5 {
        let res = reqwest::Client::new()
            .post(server.url("/agent"))
            .header("content-type", "application/json")
            .body(body("still here"))
            .send()
            .await
            .expect("accepted while leaving");
        assert_eq!(res.status(), 200);
        assert_well_formed(&events(res).await);
    }
    // A second request to stop drains at once, long before the 60 s delay.
    handle.shutdown();
    let took = server.stop().await;
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
}
