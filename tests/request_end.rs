//! How a request ends: the request log line is written when the response ends (with its
//! duration, events, bytes and how it ended), in-flight counts come back however the
//! request ends (an HTTP/2 reset before any response included), and `/stats`' agent
//! figures count only the agent's requests.

mod support;

use std::sync::Arc;
use std::time::Duration;

use agentd::{Agent, AgentError, Query, ResponseHandler, Session};
use async_trait::async_trait;
use support::*;

/// The request log line carrying `request_id`, once written.
async fn log_line(request_id: &str) -> serde_json::Value {
    let mut found = None;
    eventually(Duration::from_secs(5), || {
        let text = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
        found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|j| j["message"] == "request" && j["request_id"] == request_id);
        found.is_some()
    })
    .await;
    found.unwrap_or_else(|| panic!("no request line for {request_id}"))
}

fn logging_config() -> agentd::Config {
    let _ = captured_logs();
    let mut c = config();
    c.request_logging = Some(true);
    c
}

/// Waits `delay`, sends a chunk, then fails with `code` (or succeeds when 0).
struct LateAgent {
    delay: Duration,
    code: i64,
}

#[async_trait]
impl Agent for LateAgent {
    fn name(&self) -> &str {
        "late"
    }
    async fn assist(
        &self,
        _s: &Session,
        _q: &Query,
        h: &mut ResponseHandler,
    ) -> Result<(), AgentError> {
        tokio::time::sleep(self.delay).await;
        h.emit_text_block("T", "hello").await?;
        if self.code != 0 {
            return Err(AgentError::new("upstream refused", self.code));
        }
        Ok(())
    }
}

async fn post_with_id(server: &TestServer, id: &str) -> Vec<Event> {
    let res = client()
        .post(server.url("/agent"))
        .header("content-type", "application/json")
        .header("x-request-id", id)
        .body(body("hi"))
        .send()
        .await
        .unwrap();
    events(res).await
}

#[tokio::test]
async fn a_stream_is_logged_when_it_ends_with_how_it_ended() {
    let server = start(
        logging_config(),
        Arc::new(LateAgent {
            delay: Duration::from_millis(300),
            code: 502,
        }),
    );
    let evs = post_with_id(&server, "end-error-1").await;
    assert_eq!(evs.last().unwrap().event, "done");
    let j = log_line("end-error-1").await;
    assert_eq!(j["status"], 200);
    assert!(j["response_time_ms"].as_f64().unwrap() >= 300.0, "{j}");
    assert_eq!(j["end"], "error", "{j}");
    assert_eq!(j["error_code"], 502, "{j}");
    assert_eq!(j["events"], 3, "{j}");
    assert!(j["bytes"].as_u64().unwrap() > 100, "{j}");
    server.stop().await;

    let server = start(
        logging_config(),
        Arc::new(LateAgent {
            delay: Duration::from_millis(10),
            code: 0,
        }),
    );
    post_with_id(&server, "end-done-1").await;
    let j = log_line("end-done-1").await;
    assert_eq!(j["end"], "done", "{j}");
    assert!(j["error_code"].is_null(), "{j}");
    server.stop().await;
}

#[tokio::test]
async fn timeouts_and_clients_that_leave_are_logged_as_such() {
    let mut c = logging_config();
    c.agent_timeout = 100;
    let server = start(
        c,
        Arc::new(LateAgent {
            delay: Duration::from_secs(5),
            code: 0,
        }),
    );
    post_with_id(&server, "end-timeout-1").await;
    let j = log_line("end-timeout-1").await;
    assert_eq!(j["end"], "timeout", "{j}");
    assert_eq!(j["error_code"], 504, "{j}");
    server.stop().await;

    let server = start(
        logging_config(),
        Arc::new(SlowStreamAgent::new(50, Duration::from_millis(50))),
    );
    let res = client()
        .post(server.url("/agent"))
        .header("content-type", "application/json")
        .header("x-request-id", "end-gone-1")
        .body(body("hi"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(res);
    let j = log_line("end-gone-1").await;
    assert_eq!(j["end"], "client_gone", "{j}");
    server.stop().await;
}

#[tokio::test]
async fn an_http2_reset_before_the_response_gives_back_the_in_flight_slot() {
    // A "Redis" that accepts and never answers: the rate-limit check waits on it.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis_url = format!("redis://{}", black_hole.local_addr().unwrap());
    let mut c = config();
    c.max_in_flight = 2;
    c.rate_limit_max = 1000;
    c.redis_url = Some(redis_url);
    c.rate_limit_redis_timeout = 60_000;
    let server = start_echo_with(c);
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2c = client.ready().await.unwrap();
    for _ in 0..5 {
        let req = http::Request::post(server.url("/agent"))
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let (res, mut send) = h2c.send_request(req, false).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        send.send_reset(h2::Reason::CANCEL);
        drop(res);
        h2c = h2c.ready().await.unwrap();
    }
    let back = status_becomes(&server, "/health", 200, Duration::from_secs(3)).await;
    assert!(
        back,
        "requests reset while waiting still count as in flight"
    );
    let stats: serde_json::Value = client_get_json(&server, "/stats").await;
    assert_eq!(
        stats["server"]["inFlight"], 1,
        "only the /stats call: {stats}"
    );
    drop(black_hole);
}

async fn client_get_json(server: &TestServer, path: &str) -> serde_json::Value {
    client()
        .get(server.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn stats_agent_figures_count_only_agent_requests() {
    let server = start_echo();
    for _ in 0..5 {
        assert_eq!(get_status(&server, "/health").await, 200);
    }
    let s = client_get_json(&server, "/stats").await;
    assert_eq!(s["agent"]["requestCount"], 0, "{s}");
    let evs = events(post_json(&server, "/agent", body("hi")).await).await;
    assert_eq!(evs.last().unwrap().event, "done");
    let s = client_get_json(&server, "/stats").await;
    assert_eq!(s["agent"]["requestCount"], 1, "{s}");
}

#[test]
fn the_worker_count_is_resolved_once_at_start() {
    let mut c = config();
    c.workers = None;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server = start_echo_with(c);
    assert_eq!(server.handle().workers(), cores);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shedding_logs_at_most_a_line_per_second_per_worker() {
    let _ = captured_logs();
    let mut c = config();
    c.max_in_flight = 1;
    let agent = std::sync::Arc::new(SlowStreamAgent::new(20, Duration::from_millis(100)));
    let server = start(c, agent.clone());
    let held = tokio::spawn({
        let url = server.url("/agent");
        async move {
            let res = client()
                .post(url)
                .header("content-type", "application/json")
                .body(body("hold"))
                .send()
                .await
                .unwrap();
            events(res).await
        }
    });
    assert!(agent.has_started(1).await);
    let started = std::time::Instant::now();
    for _ in 0..30 {
        let res = post_json(&server, "/agent", body("shed me")).await;
        assert_eq!(res.status(), 503);
    }
    let seconds = started.elapsed().as_secs() + 1;
    let text = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    let lines = text.lines().filter(|l| l.contains("requests shed")).count() as u64;
    assert!(lines >= 1, "shedding is logged");
    assert!(
        lines <= 2 * seconds,
        "{lines} lines for 30 shed requests in under {seconds} s on 2 workers"
    );
    held.abort();
}
