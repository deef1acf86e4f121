//! The A2A front door (`/.well-known/agent-card.json`, `POST /a2a`) end to end: the
//! card, SendMessage and SendStreamingMessage against echo, an error mid-stream as a
//! failed task, GetTask and CancelTask (which cancels the agent), JSON-RPC errors, the
//! task limit, an API key as the bearer token, and a client that leaves cancelling the
//! agent.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn call(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
}

fn message(text: &str) -> Value {
    json!({"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": text}]}})
}

async fn post(server: &TestServer, body: &str, auth: Option<&str>) -> reqwest::Response {
    let mut r = client()
        .post(server.url("/a2a"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(a) = auth {
        r = r.header("authorization", format!("Bearer {a}"));
    }
    r.send().await.expect("request")
}

async fn rpc(server: &TestServer, body: &Value) -> Value {
    let res = post(server, &body.to_string(), None).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// The JSON-RPC responses of a stream, in order.
async fn stream_results(res: reqwest::Response) -> Vec<Value> {
    sse_frames(res, "data: ")
        .await
        .iter()
        .map(|f| {
            let v: Value = serde_json::from_str(f).expect("JSON");
            assert_eq!(v["jsonrpc"], "2.0");
            assert_eq!(v["id"], 7);
            v["result"].clone()
        })
        .collect()
}

fn answer_text(results: &[Value]) -> String {
    results
        .iter()
        .filter(|r| r["artifactUpdate"]["artifact"]["artifactId"] == "answer")
        .filter_map(|r| r["artifactUpdate"]["artifact"]["parts"][0]["text"].as_str())
        .collect()
}

#[tokio::test]
async fn the_card_describes_the_agent_and_its_interface() {
    let server = start_echo();
    for path in ["/.well-known/agent-card.json", "/.well-known/agent.json"] {
        let v: Value = client()
            .get(server.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["capabilities"]["streaming"], true);
        let iface = &v["supportedInterfaces"][0];
        assert_eq!(iface["protocolBinding"], "JSONRPC");
        assert_eq!(iface["protocolVersion"], "1.0");
        assert!(iface["url"].as_str().unwrap().ends_with("/a2a"));
        assert_eq!(v["skills"].as_array().unwrap().len(), 1);
        assert_eq!(v["defaultInputModes"], json!(["text/plain"]));
        assert!(v.get("securitySchemes").is_none(), "no auth, no schemes");
    }
    let mut c = config();
    c.api_key_secret = Some("k".into());
    let server = start_echo_with(c);
    let v: Value = client()
        .get(server.url("/.well-known/agent-card.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["securitySchemes"]["apiKey"]["httpAuthSecurityScheme"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn send_message_returns_a_completed_task_that_get_task_finds() {
    let server = start_echo();
    let v = rpc(&server, &call("SendMessage", message("héllo"))).await;
    let task = &v["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED");
    let text = format!("{}héllo", agentd::agent::echo::ECHO_PREFIX);
    assert_eq!(task["artifacts"][0]["parts"][0]["text"], text.as_str());
    let id = task["id"].as_str().unwrap();
    let got = rpc(&server, &call("GetTask", json!({"id": id}))).await;
    assert_eq!(got["result"]["status"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(got["result"]["contextId"], task["contextId"]);
    let e = rpc(&server, &call("CancelTask", json!({"id": id}))).await;
    assert_eq!(e["error"]["code"], -32002);
    let e = rpc(&server, &call("GetTask", json!({"id": "nope"}))).await;
    assert_eq!(e["error"]["code"], -32001);
}

#[tokio::test]
async fn streaming_sends_the_task_text_chunks_then_a_final_status() {
    let server = start_echo();
    let body = call("SendStreamingMessage", message("abc")).to_string();
    let results = stream_results(post(&server, &body, None).await).await;
    assert_eq!(results[0]["task"]["status"]["state"], "TASK_STATE_WORKING");
    assert_eq!(
        answer_text(&results),
        format!("{}abc", agentd::agent::echo::ECHO_PREFIX)
    );
    let last = results.last().unwrap();
    assert_eq!(
        last["statusUpdate"]["status"]["state"],
        "TASK_STATE_COMPLETED"
    );
    let marked = &results[results.len() - 2]["artifactUpdate"];
    assert_eq!(marked["lastChunk"], true);
}

#[tokio::test]
async fn an_error_mid_stream_fails_the_task_with_its_message() {
    let server = start(config(), Arc::new(FailAgent));
    let body = call("SendStreamingMessage", message("x")).to_string();
    let results = stream_results(post(&server, &body, None).await).await;
    assert_eq!(answer_text(&results), "partial");
    let status = &results.last().unwrap()["statusUpdate"]["status"];
    assert_eq!(status["state"], "TASK_STATE_FAILED");
    assert_eq!(status["message"]["parts"][0]["text"], "upstream refused");
    let v = rpc(&server, &call("SendMessage", message("x"))).await;
    let status = &v["result"]["task"]["status"];
    assert_eq!(status["state"], "TASK_STATE_FAILED");
    assert_eq!(status["message"]["parts"][0]["text"], "upstream refused");
}

#[tokio::test]
async fn json_rpc_errors_have_their_codes() {
    let server = start_echo();
    let res = post(&server, "{not json", None).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32700);
    assert_eq!(v["id"], Value::Null);
    let v = rpc(&server, &call("NoSuchMethod", json!({}))).await;
    assert_eq!(v["error"]["code"], -32601);
    assert_eq!(v["id"], 7);
    let v = rpc(&server, &json!({"id": 1, "method": "GetTask"})).await;
    assert_eq!(v["error"]["code"], -32600);
    let v = rpc(
        &server,
        &call("SendMessage", json!({"message": {"parts": [{"data": {}}]}})),
    )
    .await;
    assert_eq!(v["error"]["code"], -32602);
    let v = rpc(&server, &call("SendMessage", message(""))).await;
    assert_eq!(v["error"]["code"], -32602);
    let v = rpc(&server, &call("GetTask", json!({}))).await;
    assert_eq!(v["error"]["code"], -32602);
    // Not routed for GET; the edge's refusals keep their status, in JSON-RPC shape.
    let res = client().get(server.url("/a2a")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["jsonrpc"], "2.0");
}

#[tokio::test]
async fn an_api_key_is_accepted_as_the_bearer_token() {
    let mut c = config();
    c.api_key_secret = Some("key-one".into());
    let server = start_echo_with(c);
    let body = call("SendMessage", message("x")).to_string();
    assert_eq!(post(&server, &body, Some("key-one")).await.status(), 200);
    let res = post(&server, &body, Some("nope")).await;
    assert_eq!(res.status(), 401);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32600);
}

#[tokio::test]
async fn cancel_task_cancels_the_running_agent() {
    let agent = Arc::new(SlowStreamAgent::new(1000, Duration::from_millis(20)));
    let server = start(config(), agent.clone());
    let body = call("SendStreamingMessage", message("x")).to_string();
    let res = post(&server, &body, None).await;
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    use futures_util::StreamExt;
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first: Value =
        serde_json::from_slice(first.split(|&b| b == b'\n').next().unwrap()[6..].as_ref()).unwrap();
    let id = first["result"]["task"]["id"].as_str().unwrap().to_owned();
    let v = rpc(&server, &call("CancelTask", json!({"id": id}))).await;
    assert_eq!(v["result"]["status"]["state"], "TASK_STATE_CANCELED");
    let mut rest = Vec::new();
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout(Duration::from_secs(5), stream.next()).await
    {
        rest.extend_from_slice(&chunk);
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(rest.contains("TASK_STATE_CANCELED"), "{rest}");
    assert!(agent.has_dropped(1).await, "the agent is cancelled");
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_agent_and_the_task() {
    let agent = Arc::new(SlowStreamAgent::new(1000, Duration::from_millis(20)));
    let server = start(config(), agent.clone());
    let body = call("SendStreamingMessage", message("x")).to_string();
    let res = post(&server, &body, None).await;
    let mut stream = res.bytes_stream();
    use futures_util::StreamExt;
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first: Value =
        serde_json::from_slice(first.split(|&b| b == b'\n').next().unwrap()[6..].as_ref()).unwrap();
    let id = first["result"]["task"]["id"].as_str().unwrap().to_owned();
    drop(stream);
    assert!(agent.has_dropped(1).await, "the agent is cancelled");
    let v = rpc(&server, &call("GetTask", json!({"id": id}))).await;
    assert_eq!(v["result"]["status"]["state"], "TASK_STATE_CANCELED");
}

#[tokio::test]
async fn only_the_newest_tasks_are_remembered() {
    let mut c = config();
    c.a2a_tasks_max = 2;
    let server = start_echo_with(c);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let v = rpc(&server, &call("SendMessage", message("x"))).await;
        ids.push(v["result"]["task"]["id"].as_str().unwrap().to_owned());
    }
    let v = rpc(&server, &call("GetTask", json!({"id": ids[0]}))).await;
    assert_eq!(v["error"]["code"], -32001);
    let v = rpc(&server, &call("GetTask", json!({"id": ids[2]}))).await;
    assert_eq!(v["result"]["status"]["state"], "TASK_STATE_COMPLETED");
}

#[tokio::test]
async fn a_send_message_answer_over_the_limit_fails_and_cancels_the_agent() {
    let mut c = config();
    c.a2a_task_max_bytes = 1024;
    let agent = Arc::new(SlowStreamAgent::new(1000, Duration::from_millis(1)));
    let server = start(c, agent.clone());
    let v = rpc(&server, &call("SendMessage", message("x"))).await;
    assert_eq!(v["result"]["task"]["status"]["state"], "TASK_STATE_FAILED");
    assert!(agent.has_dropped(1).await, "the agent is cancelled");
}
