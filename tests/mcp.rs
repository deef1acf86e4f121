//! The MCP front door (`POST /mcp`) end to end: initialize and version negotiation,
//! notifications, ping, the agent as one tool, `tools/call` as one JSON response and
//! as an SSE stream of progress notifications, an agent's failure as `isError`,
//! JSON-RPC errors, the methods refused, the Origin check, the shared gates (auth,
//! rate limit) in JSON-RPC's shape, a client that leaves cancelling the agent, the
//! proxy agent behind it, and the route's metrics label.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const MCP: &str = "/mcp";
const ACCEPT: &str = "application/json, text/event-stream";

fn call(id: u64, prompt: &str, progress: bool) -> Value {
    let mut params = json!({"name": "ask_agent", "arguments": {"prompt": prompt}});
    if progress {
        params["_meta"] = json!({"progressToken": format!("p{id}")});
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

async fn post_raw(server: &TestServer, body: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = client()
        .post(server.url(MCP))
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(body.to_owned());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.expect("request")
}

async fn post(server: &TestServer, body: &Value) -> reqwest::Response {
    post_raw(server, &body.to_string(), &[]).await
}

/// A JSON response's body, checking the status and content type.
async fn json_of(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    res.json().await.expect("JSON body")
}

/// An SSE response's messages, in order.
async fn messages(res: reqwest::Response) -> Vec<Value> {
    sse_frames(res, "event: message\ndata: ")
        .await
        .iter()
        .map(|f| serde_json::from_str(f).expect("JSON message"))
        .collect()
}

fn echoed(prompt: &str) -> String {
    format!("{}{prompt}", agentd::agent::echo::ECHO_PREFIX)
}

#[tokio::test]
async fn initialize_negotiates_the_version_and_lists_the_tool() {
    let server = start_echo();
    for (asked, answered) in [
        ("2025-06-18", "2025-06-18"),
        ("2025-03-26", "2025-03-26"),
        ("2099-01-01", "2025-06-18"),
    ] {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": asked, "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}});
        let v = json_of(post(&server, &body).await, 200).await;
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], 1);
        assert_eq!(v["result"]["protocolVersion"], answered);
        assert_eq!(v["result"]["capabilities"], json!({"tools": {}}));
        assert_eq!(v["result"]["serverInfo"]["name"], "agentd");
    }
    let res = post(
        &server,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(res.status(), 202);
    assert!(res.bytes().await.unwrap().is_empty());
    let v = json_of(
        post(
            &server,
            &json!({"jsonrpc": "2.0", "id": "p", "method": "ping"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(v, json!({"jsonrpc": "2.0", "id": "p", "result": {}}));
    let v = json_of(
        post(
            &server,
            &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        )
        .await,
        200,
    )
    .await;
    let tools = v["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0]["name"], "ask_agent");
    let schema = &tools[0]["inputSchema"];
    assert_eq!(schema["required"], json!(["prompt"]));
    assert_eq!(schema["properties"]["prompt"]["maxLength"], 10000);
    assert_eq!(schema["properties"]["context"]["type"], "object");
}

#[tokio::test]
async fn tools_call_answers_one_json_response_without_a_progress_token() {
    let server = start_echo();
    let v = json_of(post(&server, &call(3, "héllo", false)).await, 200).await;
    assert_eq!(v["id"], 3);
    assert_eq!(
        v["result"],
        json!({"content": [{"type": "text", "text": echoed("héllo")}], "isError": false})
    );
    // A progress token from a client that does not take SSE: one JSON response.
    let res = client()
        .post(server.url(MCP))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(call(4, "x", true).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(res, 200).await["result"]["isError"], false);
}

#[tokio::test]
async fn tools_call_streams_progress_with_the_text_so_far_then_the_result() {
    let agent = Arc::new(SlowStreamAgent::new(4, Duration::from_millis(30)));
    let server = start(config(), agent);
    let msgs = messages(post(&server, &call(5, "x", true)).await).await;
    let (last, progress) = msgs.split_last().unwrap();
    let text = "chunk 0chunk 1chunk 2chunk 3";
    assert_eq!(last["id"], 5);
    assert_eq!(last["result"]["content"][0]["text"], text);
    assert_eq!(last["result"]["isError"], false);
    assert!(progress.len() >= 2, "{msgs:?}");
    let mut previous = 0;
    for p in progress {
        assert_eq!(p["method"], "notifications/progress");
        assert_eq!(p["params"]["progressToken"], "p5");
        let n = p["params"]["progress"].as_u64().unwrap();
        assert!(n > previous, "progress increases: {msgs:?}");
        previous = n;
        assert!(text.starts_with(p["params"]["message"].as_str().unwrap()));
    }
    assert_eq!(progress.last().unwrap()["params"]["message"], text);
}

#[tokio::test]
async fn an_agent_failure_is_a_tool_error_streaming_or_not() {
    let server = start(config(), Arc::new(FailAgent));
    let msgs = messages(post(&server, &call(6, "x", true)).await).await;
    let last = msgs.last().unwrap();
    assert_eq!(
        last["result"],
        json!({"content": [{"type": "text", "text": "upstream refused"}], "isError": true})
    );
    assert!(msgs[..msgs.len() - 1]
        .iter()
        .all(|m| m["method"] == "notifications/progress"));
    let v = json_of(post(&server, &call(7, "x", false)).await, 200).await;
    assert_eq!(v["result"]["isError"], true);
    assert_eq!(v["result"]["content"][0]["text"], "upstream refused");
}

#[tokio::test]
async fn json_rpc_errors() {
    let server = start_echo();
    let v = json_of(post_raw(&server, "{", &[]).await, 400).await;
    assert_eq!(v["error"]["code"], -32700);
    assert_eq!(v["id"], Value::Null);
    let v = json_of(post_raw(&server, "[]", &[]).await, 400).await;
    assert_eq!(v["error"]["code"], -32600);
    assert!(v["error"]["message"].as_str().unwrap().contains("batches"));
    let v = json_of(
        post(
            &server,
            &json!({"jsonrpc": "2.0", "id": 8, "method": "nope/x"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        (v["id"].as_u64(), v["error"]["code"].as_i64()),
        (Some(8), Some(-32601))
    );
    let v = json_of(post(&server, &call(9, "", false)).await, 200).await;
    assert_eq!(v["error"]["code"], -32602);
    assert_eq!(v["error"]["data"]["issues"][0]["path"], "/arguments/prompt");
    let mut bad = call(10, "x", false);
    bad["params"]["name"] = json!("other");
    let v = json_of(post(&server, &bad).await, 200).await;
    assert_eq!(v["error"]["code"], -32602);
    let res = post_raw(
        &server,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string(),
        &[("mcp-protocol-version", "1999-01-01")],
    )
    .await;
    assert_eq!(json_of(res, 400).await["error"]["code"], -32600);
    let res = client()
        .post(server.url(MCP))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(res, 415).await["error"]["data"]["code"],
        "unsupported_media_type"
    );
}

#[tokio::test]
async fn get_and_delete_are_405_with_allow_post() {
    let server = start_echo();
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let res = client()
            .request(method, server.url(MCP))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["allow"], "POST");
        let v = json_of(res, 405).await;
        assert_eq!(v["error"]["data"]["code"], "method_not_allowed");
    }
}

#[tokio::test]
async fn a_disallowed_origin_is_403() {
    let mut c = config();
    c.cors_origins = "https://app.example".into();
    let server = start_echo_with(c);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let res = post_raw(&server, &ping, &[("origin", "https://evil.example")]).await;
    assert_eq!(
        json_of(res, 403).await["error"]["data"]["code"],
        "origin_not_allowed"
    );
    let res = post_raw(&server, &ping, &[("origin", "https://app.example")]).await;
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(res.status(), 200);
    assert_eq!(post_raw(&server, &ping, &[]).await.status(), 200);
}

#[tokio::test]
async fn auth_and_rate_limit_answer_in_json_rpc_shape() {
    let mut c = config();
    c.api_key_secret = Some("key-one".into());
    let server = start_echo_with(c);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let v = json_of(post_raw(&server, &ping, &[]).await, 401).await;
    assert_eq!(v["error"]["data"]["code"], "invalid_api_key");
    let res = post_raw(&server, &ping, &[("authorization", "Bearer key-one")]).await;
    assert_eq!(res.status(), 200);

    let mut c = config();
    c.rate_limit_max = 1;
    let server = start_echo_with(c);
    assert_eq!(post_raw(&server, &ping, &[]).await.status(), 200);
    let res = post_raw(&server, &ping, &[]).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(
        json_of(res, 429).await["error"]["data"]["code"],
        "rate_limited"
    );
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_agent() {
    use futures_util::StreamExt;
    for progress in [true, false] {
        let agent = Arc::new(SlowStreamAgent::new(1000, Duration::from_millis(20)));
        let server = start(config(), agent.clone());
        let res = post(&server, &call(11, "x", progress)).await;
        assert_eq!(res.status(), 200);
        let mut stream = res.bytes_stream();
        if progress {
            let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .unwrap();
            assert!(first.is_some());
        } else {
            assert!(agent.has_started(1).await);
        }
        drop(stream);
        assert!(
            agent.has_dropped(1).await,
            "the agent is cancelled (progress: {progress})"
        );
    }
}

#[tokio::test]
async fn the_proxy_agent_answers_through_the_tool() {
    use support::upstream_agent::{Mode, UpstreamAgent};
    let up = UpstreamAgent::start(Mode::WellBehaved).await;
    let mut c = config();
    c.workers = Some(1);
    c.agent = Some(agentd::config::AgentKind::Proxy);
    c.agent_upstreams = Some(up.url());
    c.proxy_health_check_interval = 60_000;
    let agent = agentd::configured_agent(&c).expect("proxy agent");
    let server = start(c, agent);
    let mut body = call(12, "Hi there", true);
    body["params"]["arguments"]["context"] =
        json!({"userId": "u-9", "preferences": {"temperature": 1.5}});
    let msgs = messages(post(&server, &body).await).await;
    let last = msgs.last().unwrap();
    assert_eq!(last["result"]["content"][0]["text"], "one two three");
    let sent = &up.posts()[0].body;
    assert_eq!(sent["query"]["prompt"], "Hi there");
    assert_eq!(
        sent["query"]["context"],
        json!({"userId": "u-9", "preferences": {"temperature": 1.5}})
    );
}

#[tokio::test]
async fn requests_are_counted_under_the_mcp_route() {
    let mut c = config();
    c.enable_metrics = true;
    let server = start_echo_with(c);
    let _ = json_of(post(&server, &call(13, "x", false)).await, 200).await;
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("agentd_http_requests_total{route=\"mcp\",status=\"2xx\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn an_answer_over_the_limit_is_a_tool_error() {
    let mut c = config();
    c.mcp_result_max_bytes = 1024;
    let server = start_echo_with(c);
    let v = json_of(post(&server, &call(14, &"x".repeat(900), false)).await, 200).await;
    assert_eq!(v["result"]["isError"], false);
    for progress in [false, true] {
        let res = post(&server, &call(15, &"x".repeat(2000), progress)).await;
        let last = if progress {
            let msgs = messages(res).await;
            assert_eq!(
                msgs.len(),
                1,
                "no progress repeats an answer over the limit"
            );
            msgs.into_iter().last().unwrap()
        } else {
            json_of(res, 200).await
        };
        assert_eq!(last["result"]["isError"], true);
        let text = last["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("MCP_RESULT_MAX_BYTES"), "{text}");
    }
}
