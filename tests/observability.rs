//! /metrics, /stats and /health/detailed over real sockets.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::*;

/// Parses the exposition into `name{labels}` → value, checking each family is typed.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut out = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split_whitespace().next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("sample line");
        let name = key.split('{').next().unwrap();
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            typed.contains(family) || typed.contains(name),
            "untyped sample {name}"
        );
        assert!(name.starts_with("agentd_"));
        out.insert(
            key.to_string(),
            value.parse::<f64>().expect("numeric value"),
        );
    }
    out
}

#[tokio::test]
async fn metrics_move_with_requests_across_workers() {
    let mut cfg = config();
    cfg.enable_metrics = true;
    let server = start_echo_with(cfg);
    for _ in 0..20 {
        // Fresh connections spread over both workers.
        let c = client();
        let res = c
            .post(server.url("/agent"))
            .header("content-type", "application/json")
            .body(body("x"))
            .send()
            .await
            .unwrap();
        assert_well_formed(&events(res).await);
        c.get(server.url("/nope")).send().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let res = client().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = parse(&res.text().await.unwrap());
    assert_eq!(
        m["agentd_http_requests_total{route=\"agent\",status=\"2xx\"}"],
        20.0
    );
    assert_eq!(
        m["agentd_http_requests_total{route=\"other\",status=\"4xx\"}"],
        20.0
    );
    assert_eq!(
        m["agentd_http_request_duration_seconds_count{route=\"agent\"}"],
        20.0
    );
    assert_eq!(
        m["agentd_http_request_duration_seconds_bucket{route=\"agent\",le=\"+Inf\"}"],
        20.0
    );
    assert_eq!(
        m["agentd_sse_events_total"], 60.0,
        "3 events per echo response"
    );
    assert!(m["agentd_sse_bytes_total"] > 60.0 * 100.0);
    assert_eq!(m["agentd_open_sse_streams"], 0.0);
    assert!(
        m["agentd_open_connections"] >= 1.0,
        "the scrape's own connection"
    );
    assert_eq!(m["agentd_worker_restarts_total"], 0.0);
    // Disabled by default.
    let server = start_echo();
    assert_eq!(get_status(&server, "/metrics").await, 404);
}

#[tokio::test]
async fn stats_has_the_guides_shape() {
    let server = start_echo();
    for _ in 0..5 {
        post_json(&server, "/agent", body("x"))
            .await
            .text()
            .await
            .unwrap();
    }
    let j: serde_json::Value = client()
        .get(server.url("/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(j["agent"]["requestCount"].as_u64().unwrap() >= 5);
    for k in ["averageResponseTime", "p95ResponseTime", "p99ResponseTime"] {
        assert!(j["agent"][k].is_number(), "{k}");
    }
    assert!(j["server"]["uptime"].as_f64().unwrap() > 0.0);
    assert!(j["server"]["memory"]["rss"].as_u64().unwrap() > 0);
    assert!(j["server"]["cpu"]["user"].is_number());
    assert!(j["llm"].is_null(), "no LLM configured");
}

#[tokio::test]
async fn detailed_health_reports_its_checks() {
    let server = start_echo();
    let res = client()
        .get(server.url("/health/detailed"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let j: serde_json::Value = res.json().await.unwrap();
    assert_eq!(j["status"], "healthy");
    assert_eq!(j["checks"]["memory"]["status"], "up");
    assert_eq!(j["checks"]["runtime"]["status"], "up");
    // Redis configured but down, policy open: degraded, still 200.
    let mut cfg = config();
    cfg.rate_limit_max = 100;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cfg.redis_url = Some(format!("redis://127.0.0.1:{dead}/"));
    let server = start_echo_with(cfg.clone());
    let res = client()
        .get(server.url("/health/detailed"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let j: serde_json::Value = res.json().await.unwrap();
    assert_eq!(j["status"], "degraded");
    assert_eq!(j["checks"]["redis"]["status"], "down");
    // Policy closed: Redis is required.
    cfg.rate_limit_redis_failure = agentd::edge::rate::FailurePolicy::Closed;
    let server = start_echo_with(cfg);
    let res = client()
        .get(server.url("/health/detailed"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
}

#[tokio::test]
async fn websockets_are_counted_while_open() {
    let mut cfg = config();
    cfg.enable_metrics = true;
    let server = start_echo_with(cfg);
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let scrape = || async {
        parse(
            &client()
                .get(server.url("/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
    };
    assert_eq!(scrape().await["agentd_open_websockets"], 1.0);
    drop(ws);
    let mut closed = false;
    for _ in 0..50 {
        if scrape().await["agentd_open_websockets"] == 0.0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed);
}
