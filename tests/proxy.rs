//! Proxy mode (`AGENT=proxy`) against fake upstream agents that are real HTTP servers
//! (tests/support/upstream_agent.rs): relaying intact, repairs of what upstreams break,
//! balancing, failover, the breaker, health checks, disconnects and backpressure, and
//! the edge's gates still in front.

mod support;

use std::time::{Duration, Instant};

use agentd::config::AgentKind;
use agentd::Config;
use serde_json::{json, Value};
use support::upstream_agent::{Mode, UpstreamAgent, FAKE_EVENT_ID, FAKE_STREAM_ID};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn proxy_config(upstreams: &[&UpstreamAgent]) -> Config {
    let urls: Vec<String> = upstreams.iter().map(|u| u.url()).collect();
    proxy_config_urls(&urls)
}

fn proxy_config_urls(urls: &[String]) -> Config {
    let mut c = config();
    c.workers = Some(1);
    c.agent = Some(AgentKind::Proxy);
    c.agent_upstreams = Some(urls.join(","));
    c.proxy_health_check_interval = 60_000;
    c
}

fn start_proxy(c: Config) -> TestServer {
    let agent = agentd::configured_agent(&c).expect("proxy agent");
    start(c, agent)
}

async fn ask(server: &TestServer, body: String) -> Vec<Event> {
    let res = post_json(server, "/agent", body).await;
    assert_eq!(res.status(), 200);
    let evs = events(res).await;
    assert_well_formed(&evs);
    evs
}

fn names(evs: &[Event]) -> Vec<&str> {
    evs.iter().map(|e| e.event.as_str()).collect()
}

fn error_of(evs: &[Event]) -> Option<&Value> {
    evs.iter()
        .find(|e| e.event == "error")
        .map(|e| &e.data["content"])
}

fn chunks(evs: &[Event]) -> Vec<&str> {
    evs.iter()
        .filter(|e| e.data["content_type"] == "chunked.text" && e.data["is_complete"] == false)
        .map(|e| e.data["content"].as_str().unwrap())
        .collect()
}

/// The well-behaved fake's answer, as the client must see it.
fn assert_well_behaved_answer(evs: &[Event], source: &str, prompt: &str) {
    assert_eq!(
        names(evs),
        ["GREETING", "DATA", "RESPONSE", "RESPONSE", "RESPONSE", "RESPONSE", "done"]
    );
    assert_eq!(evs[0].data["content_type"], "atomic.textblock");
    assert_eq!(evs[0].data["content"], "Hello from the fake");
    assert_eq!(evs[1].data["content_type"], "atomic.json");
    let prompt_json = serde_json::to_string(prompt).unwrap();
    assert!(
        evs[1].raw.ends_with(&format!(
            r#""content":{{"zeta":1,"alpha":{{"b":[1,2.5],"a":"x"}},"prompt":{prompt_json}}}}}"#
        )),
        "JSON content intact, keys in the upstream's order: {}",
        evs[1].raw
    );
    assert_eq!(chunks(evs), ["one ", "two ", "three"]);
    let sid = evs[2].data["stream_id"].as_str().unwrap();
    assert!(evs[2..6].iter().all(|e| e.data["stream_id"] == sid));
    assert_ne!(sid, FAKE_STREAM_ID, "stream ids are agentd's own");
    for e in evs {
        assert_eq!(e.data["source"], source);
        assert_ne!(e.data["id"], FAKE_EVENT_ID, "ids are agentd's own");
    }
}

#[tokio::test]
async fn relays_an_answer_intact_with_agentds_ids() {
    let up = UpstreamAgent::start(Mode::WellBehaved).await;
    let server = start_proxy(proxy_config(&[&up]));
    let body = json!({
        "query": {"id": ID, "prompt": "Hi there"},
        "session": {"processor_id": "chat-client", "activity_id": ID, "request_id": ID,
                    "interactions": [{"request": {"id": ID}}]}
    });
    let evs = ask(&server, body.to_string()).await;
    assert_well_behaved_answer(&evs, "chat-client", "Hi there");
    let posts = up.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].path, "/assist");
    assert_eq!(
        posts[0].body, body,
        "the request reaches the upstream as sent"
    );
    // `/assist` is proxied the same way, and /health names the proxy.
    let res = post_json(&server, "/assist", support::body("again")).await;
    assert_well_formed(&events(res).await);
    let health: Value = client()
        .get(server.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["agent"], "agentd proxy");
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = UpstreamAgent::start(Mode::WellBehaved).await;
    let server = start_proxy(proxy_config(&[&up]));
    for i in 0..5 {
        ask(&server, body(&format!("k{i}"))).await;
        // The fake ends its body 10 ms after `done`: the proxy reads on to that end
        // (after the client got `done`) and pools the connection by the next request.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up.post_count(), 5);
    assert_eq!(
        up.post_connections(),
        1,
        "one pooled connection for all five"
    );
}

#[tokio::test]
async fn a_missing_session_is_filled_in_before_forwarding() {
    let up = UpstreamAgent::start(Mode::WellBehaved).await;
    let server = start_proxy(proxy_config(&[&up]));
    let evs = ask(&server, body("no session")).await;
    assert_well_behaved_answer(&evs, "agentd", "no session");
    let sent = &up.posts()[0].body;
    assert_eq!(sent["query"], json!({"id": ID, "prompt": "no session"}));
    let session = &sent["session"];
    assert_eq!(session["processor_id"], "agentd");
    assert_eq!(session["interactions"], json!([]));
    for k in ["activity_id", "request_id"] {
        let id = session[k].as_str().unwrap();
        assert!(
            id.len() == 26
                && id
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()),
            "{k}: {id}"
        );
    }
}

#[tokio::test]
async fn an_upstream_that_ends_without_done_gets_error_and_done() {
    let up = UpstreamAgent::start(Mode::NoDone).await;
    let server = start_proxy(proxy_config(&[&up]));
    let evs = ask(&server, body("x")).await;
    let n = names(&evs);
    assert_eq!(
        &n[..6],
        ["GREETING", "DATA", "RESPONSE", "RESPONSE", "RESPONSE", "RESPONSE"]
    );
    assert_eq!(&n[6..], ["error", "done"]);
    let e = error_of(&evs).unwrap();
    assert_eq!(e["error_code"], 502);
    assert_eq!(e["details"], json!({"kind": "truncated"}));
    assert_eq!(up.post_count(), 1, "no failover after the first event");
}

#[tokio::test]
async fn an_upstream_that_hangs_past_the_idle_timeout_gets_error_and_done() {
    let up = UpstreamAgent::start(Mode::HangAfter(3)).await;
    let mut c = proxy_config(&[&up]);
    c.proxy_idle_timeout = 300;
    let server = start_proxy(c);
    let started = Instant::now();
    let evs = ask(&server, body("x")).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        names(&evs),
        ["GREETING", "DATA", "RESPONSE", "error", "RESPONSE", "done"],
        "the open stream is closed before done"
    );
    let e = error_of(&evs).unwrap();
    assert_eq!(e["error_code"], 504);
    assert_eq!(e["details"], json!({"kind": "timeout"}));
    assert!(
        eventually(Duration::from_secs(5), || up.client_gone() == 1).await,
        "the hung upstream's connection is closed"
    );
}

#[tokio::test]
async fn an_upstream_reset_mid_stream_gets_error_and_done() {
    let up = UpstreamAgent::start(Mode::ResetAfter(4)).await;
    let other = UpstreamAgent::start(Mode::WellBehaved).await;
    let server = start_proxy(proxy_config(&[&up, &other]));
    let evs = ask(&server, body("x")).await;
    assert_eq!(
        names(&evs),
        ["GREETING", "DATA", "RESPONSE", "RESPONSE", "error", "RESPONSE", "done"]
    );
    let e = error_of(&evs).unwrap();
    assert_eq!(e["error_code"], 502);
    assert_eq!(e["details"], json!({"kind": "network"}));
    assert!(
        !e.to_string().contains("127.0.0.1"),
        "no upstream address in the client's error: {e}"
    );
    assert_eq!(other.post_count(), 0, "no failover after the first event");
}

#[tokio::test]
async fn garbage_lines_are_ignored_as_sse_says() {
    let up = UpstreamAgent::start(Mode::GarbageLines).await;
    let server = start_proxy(proxy_config(&[&up]));
    let evs = ask(&server, body_with_session("g", "p")).await;
    assert_well_behaved_answer(&evs, "p", "g");
}

#[tokio::test]
async fn an_event_that_is_not_json_gets_error_and_done() {
    let up = UpstreamAgent::start(Mode::BadData).await;
    let server = start_proxy(proxy_config(&[&up]));
    let evs = ask(&server, body("x")).await;
    assert_eq!(names(&evs), ["GREETING", "error", "done"]);
    let e = error_of(&evs).unwrap();
    assert_eq!(e["error_code"], 502);
    assert_eq!(e["details"], json!({"kind": "protocol"}));
    assert!(!e.to_string().contains("not json"), "{e}");
}

#[tokio::test]
async fn raw_line_separators_from_the_upstream_are_escaped() {
    let up = UpstreamAgent::start(Mode::LineSeparators).await;
    let server = start_proxy(proxy_config(&[&up]));
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(raw_agent_request(&body("x"), "").as_bytes())
        .await
        .unwrap();
    let (head, raw) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let text = String::from_utf8(raw).unwrap();
    for ch in ['\u{2028}', '\u{2029}', '\u{85}'] {
        assert!(!text.contains(ch), "raw U+{:04X} relayed", ch as u32);
    }
    assert_eq!(text.matches(r"a\u2028b\u2029c\u0085d").count(), 2, "{text}");
    let res = post_json(&server, "/agent", body("x")).await;
    let evs = events(res).await;
    assert_well_formed(&evs);
    assert_eq!(evs[0].data["content"], "a\u{2028}b\u{2029}c\u{85}d");
    assert_eq!(chunks(&evs), ["a\u{2028}b\u{2029}c\u{85}d"]);
}

#[tokio::test]
async fn events_are_relayed_as_they_arrive() {
    let up = UpstreamAgent::start(Mode::Slow {
        events: 5,
        delay: Duration::from_millis(200),
    })
    .await;
    let server = start_proxy(proxy_config(&[&up]));
    let started = Instant::now();
    let res = post_json(&server, "/agent", body("x")).await;
    let mut stream = res.bytes_stream();
    use futures_util::StreamExt;
    let first = stream.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("slow 0"));
    while stream.next().await.is_some() {}
    let total = started.elapsed();
    assert!(
        first_at < Duration::from_millis(700) && total >= Duration::from_millis(1000),
        "first event after {first_at:?}, whole answer {total:?}"
    );
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly() {
    let a = UpstreamAgent::start(Mode::WellBehaved).await;
    let b = UpstreamAgent::start(Mode::WellBehaved).await;
    let server = start_proxy(proxy_config(&[&a, &b]));
    for i in 0..10 {
        ask(&server, body(&format!("r{i}"))).await;
    }
    assert_eq!((a.post_count(), b.post_count()), (5, 5));
}

/// One request held open on one upstream, then four quick ones: least-inflight sends
/// them all to the idle upstream, round-robin alternates.
async fn spread_with_one_held(balance: agentd::agent::proxy::Balance) -> (usize, usize) {
    let a = UpstreamAgent::start(Mode::WellBehaved).await;
    let b = UpstreamAgent::start(Mode::WellBehaved).await;
    let mut c = proxy_config(&[&a, &b]);
    c.proxy_balance = balance;
    let server = start_proxy(c);
    let held = spawn_agent(&server, "hold:1500");
    assert!(
        eventually(Duration::from_secs(5), || a.post_count() + b.post_count()
            == 1)
        .await,
        "the held request reached an upstream"
    );
    let (busy, idle) = if a.post_count() == 1 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    for i in 0..4 {
        ask(&server, body(&format!("q{i}"))).await;
    }
    let counts = (busy.post_count(), idle.post_count());
    let evs = held.await.unwrap();
    assert_well_formed(&evs);
    counts
}

#[tokio::test]
async fn least_inflight_avoids_the_busy_upstream() {
    use agentd::agent::proxy::Balance;
    assert_eq!(spread_with_one_held(Balance::LeastInflight).await, (1, 4));
    assert_eq!(spread_with_one_held(Balance::RoundRobin).await, (3, 2));
}

#[tokio::test]
async fn failover_before_the_first_event() {
    let failing = UpstreamAgent::start(Mode::Status(500)).await;
    let not_sse = UpstreamAgent::start(Mode::NotSse).await;
    let hangs = UpstreamAgent::start(Mode::HangAfter(0)).await;
    let good = UpstreamAgent::start(Mode::WellBehaved).await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/assist", l.local_addr().unwrap())
    };
    let mut c = proxy_config_urls(&[
        failing.url(),
        refused,
        not_sse.url(),
        hangs.url(),
        good.url(),
    ]);
    c.proxy_max_attempts = 5;
    c.proxy_first_event_timeout = 300;
    c.proxy_breaker_threshold = 100;
    let server = start_proxy(c);
    for i in 0..5 {
        let evs = ask(&server, body(&format!("f{i}"))).await;
        assert_well_behaved_answer(&evs, "agentd", &format!("f{i}"));
    }
    assert_eq!(good.post_count(), 5);
    assert!(failing.post_count() >= 1 && not_sse.post_count() >= 1 && hangs.post_count() >= 1);
    assert!(
        eventually(Duration::from_secs(5), || hangs.client_gone() >= 1).await,
        "the attempt that timed out was closed"
    );
}

#[tokio::test]
async fn a_refused_request_is_not_failed_over() {
    let refuses = UpstreamAgent::start(Mode::Status(422)).await;
    let good = UpstreamAgent::start(Mode::WellBehaved).await;
    let server = start_proxy(proxy_config(&[&refuses, &good]));
    let evs = ask(&server, body("x")).await;
    assert_eq!(names(&evs), ["error", "done"]);
    assert_eq!(
        error_of(&evs).unwrap()["details"],
        json!({"kind": "refused"})
    );
    assert_eq!(good.post_count(), 0);
}

#[tokio::test]
async fn the_breaker_opens_and_fails_fast() {
    let up = UpstreamAgent::start(Mode::Status(500)).await;
    let mut c = proxy_config(&[&up]);
    c.proxy_breaker_threshold = 2;
    c.proxy_breaker_reset = 60_000;
    c.proxy_max_attempts = 1;
    let server = start_proxy(c);
    for _ in 0..2 {
        let evs = ask(&server, body("x")).await;
        assert_eq!(error_of(&evs).unwrap()["error_code"], 502);
    }
    assert_eq!(up.post_count(), 2);
    let started = Instant::now();
    let evs = ask(&server, body("x")).await;
    assert!(started.elapsed() < Duration::from_millis(500));
    let e = error_of(&evs).unwrap();
    assert_eq!(e["error_code"], 503);
    assert_eq!(e["details"], json!({"kind": "breaker_open"}));
    assert_eq!(up.post_count(), 2, "not tried while open");
    assert_eq!(get_status(&server, "/health/ready").await, 503);
}

#[tokio::test]
async fn health_checks_drive_readiness() {
    let up = UpstreamAgent::start(Mode::WellBehaved).await;
    let mut c = proxy_config(&[&up]);
    c.proxy_health_check_interval = 100;
    let server = start_proxy(c);
    assert!(status_becomes(&server, "/health/ready", 200, Duration::from_secs(5)).await);
    let detailed = |server: &TestServer| {
        let url = server.url("/health/detailed");
        async move {
            let res = client().get(url).send().await.unwrap();
            let code = res.status().as_u16();
            (code, res.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (code, body) = detailed(&server).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["checks"]["upstreams"],
        json!({"status": "up", "usable": 1, "total": 1})
    );
    up.set_down(true);
    assert!(status_becomes(&server, "/health/ready", 503, Duration::from_secs(5)).await);
    let (code, body) = detailed(&server).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["checks"]["upstreams"]["status"], "down");
    up.set_down(false);
    assert!(status_becomes(&server, "/health/ready", 200, Duration::from_secs(5)).await);
    assert!(up.health_probes() >= 2);
    assert_eq!(up.post_count(), 0, "probes never run the agent");
}

#[tokio::test]
async fn a_client_that_leaves_closes_the_upstream_request() {
    let up = UpstreamAgent::start(Mode::Slow {
        events: 200,
        delay: Duration::from_millis(50),
    })
    .await;
    let server = start_proxy(proxy_config(&[&up]));
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(raw_agent_request(&body("x"), "").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    while find(&got, b"slow 0").is_none() {
        let mut b = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("first event in time")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&b[..n]);
    }
    drop(s);
    assert!(
        eventually(Duration::from_secs(5), || up.client_gone() == 1).await,
        "the upstream saw its request closed"
    );
}

#[tokio::test]
async fn a_slow_client_slows_the_upstream() {
    const CHUNK: usize = 64 * 1024;
    let up = UpstreamAgent::start(Mode::Flood {
        chunk: CHUNK,
        max_bytes: 256 << 20,
    })
    .await;
    let mut c = proxy_config(&[&up]);
    c.sse_queue_bytes = 64 * 1024;
    c.sse_slow_reader_timeout = 3_000;
    let server = start_proxy(c);
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(raw_agent_request(&body("x"), "").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let _ = s.read(&mut head).await.unwrap();
    // The client reads nothing more: the upstream must stall once the buffers between
    // them (two pairs of socket buffers, hyper's read buffer, the event queue) are full.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let first = up.bytes_written();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = up.bytes_written();
    assert!(
        second < 32 << 20,
        "the upstream wrote {second} bytes to a client that reads nothing"
    );
    assert!(
        second - first <= 2 * CHUNK as u64,
        "the upstream is still writing: {first} then {second}"
    );
    // Past the slow-reader deadline the client is cut off and the upstream closed.
    assert!(
        eventually(Duration::from_secs(10), || up.client_gone() == 1).await,
        "the upstream saw its request closed"
    );
    drop(s);
}

#[tokio::test]
async fn auth_and_rate_limits_still_apply() {
    let up = UpstreamAgent::start(Mode::WellBehaved).await;
    let mut c = proxy_config(&[&up]);
    c.rate_limit_max = 1;
    c.jwt_secret = Some("proxy-test-secret".into());
    c.auth_required = true;
    let server = start_proxy(c);
    let res = post_json(&server, "/agent", body("x")).await;
    assert_eq!(res.status(), 401);
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "u", "exp": 4_102_444_800u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"proxy-test-secret"),
    )
    .unwrap();
    let send = || {
        client()
            .post(server.url("/agent"))
            .header("content-type", "application/json")
            .bearer_auth(&token)
            .body(body("x"))
            .send()
    };
    let ok = send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_well_formed(&events(ok).await);
    assert_eq!(send().await.unwrap().status(), 429);
    assert_eq!(
        up.post_count(),
        1,
        "refused requests never reach the upstream"
    );
}

#[test]
fn agent_proxy_needs_valid_upstreams_at_startup() {
    let run = |upstreams: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_agentd"));
        cmd.env("AGENT", "proxy")
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env_remove("AGENT_UPSTREAMS");
        if let Some(u) = upstreams {
            cmd.env("AGENT_UPSTREAMS", u);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("AGENT_UPSTREAMS"), "{err}");
    let (code, err) = run(Some("http://127.0.0.1:8000/assist,ftp://x/"));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("\"ftp://x/\" must start with http:// or https://"),
        "{err}"
    );
}

#[tokio::test]
async fn readiness_says_starting_until_the_first_health_check_answers() {
    // An upstream that accepts connections and never answers: its first check waits
    // out the probe timeout (2 s at most).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/assist", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let server = start_proxy(proxy_config_urls(&[url]));
    let res = client()
        .get(server.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "not ready on a guess");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "starting", "{body}");
    let res = client()
        .get(server.url("/health/detailed"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "starting", "{body}");
    assert_eq!(
        body["checks"]["upstreams"],
        json!({"status": "starting", "usable": 0, "total": 1})
    );
    // Once the check times out the upstream is down, and readiness says why.
    let t = Instant::now();
    loop {
        let res = client()
            .get(server.url("/health/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 503);
        let body: Value = res.json().await.unwrap();
        if body["status"] == "not ready" {
            assert_eq!(body["reason"], "no upstream agent is usable");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(4), "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    held.abort();
}

async fn metrics_text(server: &TestServer) -> String {
    let res = client().get(server.url("/metrics")).send().await.unwrap();
    res.text().await.unwrap()
}

/// `name{labels} value` from the exposition; 0 when absent.
fn sample(m: &str, key: &str) -> f64 {
    m.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn upstreams_get_the_providers_figures_in_metrics_and_stats() {
    let failing = UpstreamAgent::start(Mode::Status(500)).await;
    let good = UpstreamAgent::start(Mode::WellBehaved).await;
    let mut c = proxy_config(&[&failing, &good]);
    c.proxy_max_attempts = 2;
    c.proxy_breaker_threshold = 100;
    c.enable_metrics = true;
    let server = start_proxy(c);
    assert!(status_becomes(&server, "/health/ready", 200, Duration::from_secs(5)).await);
    let (f, g) = (failing.url(), good.url());
    let m = metrics_text(&server).await;
    for family in [
        "agentd_upstream_requests_total",
        "agentd_upstream_completed_total",
        "agentd_upstream_failovers_total",
        "agentd_upstream_healthy",
        "agentd_upstream_in_flight",
        "agentd_upstream_errors_total",
        "agentd_upstream_breaker_state",
        "agentd_upstream_time_to_first_event_seconds",
        "agentd_upstream_stream_duration_seconds",
    ] {
        assert!(
            m.contains(&format!("# TYPE {family} ")),
            "{family} missing\n{m}"
        );
    }
    assert_eq!(
        sample(
            &m,
            &format!("agentd_upstream_requests_total{{upstream=\"{g}\"}}")
        ),
        0.0
    );
    assert_eq!(
        sample(&m, &format!("agentd_upstream_healthy{{upstream=\"{g}\"}}")),
        1.0
    );
    // Round-robin: the first request starts at the failing upstream and fails over.
    for i in 0..2 {
        let evs = ask(&server, body(&format!("m{i}"))).await;
        assert_well_behaved_answer(&evs, "agentd", &format!("m{i}"));
    }
    let m = metrics_text(&server).await;
    let up = |name: &str, url: &str| sample(&m, &format!("{name}{{upstream=\"{url}\"}}"));
    assert_eq!(up("agentd_upstream_requests_total", &f), 1.0, "{m}");
    assert_eq!(up("agentd_upstream_requests_total", &g), 2.0);
    assert_eq!(up("agentd_upstream_completed_total", &g), 2.0);
    assert_eq!(up("agentd_upstream_completed_total", &f), 0.0);
    assert_eq!(up("agentd_upstream_failovers_total", &g), 1.0);
    assert_eq!(up("agentd_upstream_in_flight", &g), 0.0);
    assert_eq!(
        up("agentd_upstream_time_to_first_event_seconds_count", &g),
        2.0
    );
    assert_eq!(up("agentd_upstream_stream_duration_seconds_count", &g), 2.0);
    let errors = |url: &str, kind: &str| {
        sample(
            &m,
            &format!("agentd_upstream_errors_total{{upstream=\"{url}\",kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(errors(&f, "status"), 1.0);
    assert_eq!(errors(&g, "status"), 0.0);
    assert!(m.contains(&format!(
        "agentd_upstream_breaker_state{{upstream=\"{f}\",state=\"closed\"}} 1"
    )));
    let stats: Value = client()
        .get(server.url("/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = &stats["upstreams"];
    assert_eq!(s[&g]["requests"], 2, "{stats}");
    assert_eq!(s[&g]["completed"], 2);
    assert_eq!(s[&g]["failovers"], 1);
    assert_eq!(s[&g]["healthy"], true);
    assert_eq!(s[&g]["breaker"], "closed");
    assert_eq!(s[&f]["errors"]["status"], 1);
    assert!(stats["llm"].is_null());
}

#[tokio::test]
async fn an_upstream_request_held_open_counts_in_flight_until_it_ends() {
    let hangs = UpstreamAgent::start(Mode::HangAfter(1)).await;
    let mut c = proxy_config(&[&hangs]);
    c.proxy_idle_timeout = 500;
    c.enable_metrics = true;
    let server = start_proxy(c);
    let url = hangs.url();
    let key = format!("agentd_upstream_in_flight{{upstream=\"{url}\"}}");
    let held = spawn_agent(&server, "held");
    let t = Instant::now();
    while sample(&metrics_text(&server).await, &key) != 1.0 {
        assert!(t.elapsed() < Duration::from_secs(3), "never in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let evs = held.await.unwrap();
    assert_eq!(
        error_of(&evs).unwrap()["details"],
        json!({"kind": "timeout"})
    );
    let m = metrics_text(&server).await;
    assert_eq!(sample(&m, &key), 0.0);
    let timeouts = format!("agentd_upstream_errors_total{{upstream=\"{url}\",kind=\"timeout\"}}");
    assert_eq!(sample(&m, &timeouts), 1.0);
}
