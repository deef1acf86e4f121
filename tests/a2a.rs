//! The A2A front door (`/.well-known/agent-card.json`, `POST /a2a`) end to end: the
//! card, SendMessage and SendStreamingMessage against echo, an error mid-stream as a
//! failed task, GetTask and CancelTask (which cancels the agent), JSON-RPC errors, the
//! task limit, an API key as the bearer token, a client that leaves cancelling the
//! agent, SubscribeToTask (a snapshot, then every update once; a subscriber that leaves
//! cancels nothing), and the same methods under their A2A 0.3 names and shapes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::a2a::*;
use support::*;

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
        assert_eq!(v["supportedInterfaces"][1]["protocolVersion"], "0.3.0");
        // What a 0.3 client reads.
        assert_eq!(v["url"], iface["url"]);
        assert_eq!(v["protocolVersion"], "0.3.0");
        assert_eq!(v["preferredTransport"], "JSONRPC");
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
    assert_eq!(v["securitySchemes"]["apiKey"]["type"], "http");
    assert_eq!(v["security"], json!([{"apiKey": []}]));
    assert_eq!(
        v["securityRequirements"],
        json!([{"schemes": {"apiKey": {"list": []}}}])
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

#[tokio::test]
async fn a_subscriber_gets_the_task_so_far_then_every_update_once() {
    let agent = Arc::new(SlowStreamAgent::new(40, Duration::from_millis(20)));
    let server = start(config(), agent.clone());
    let (id, original) = start_stream(&server, &call("SendStreamingMessage", message("x"))).await;
    has_text(&server, &id).await;
    let (sub, so_far) = subscribe_whole(&server, &id).await;
    assert!(
        !so_far.is_empty(),
        "GetTask showed text before the subscription"
    );
    let original = original.await.unwrap();
    assert_eq!(
        format!("{so_far}{}", answer_text(&sub[1..])),
        answer_text(&original),
        "the snapshot and the updates after it are the whole answer, nothing twice"
    );
    assert!(sub[1..]
        .iter()
        .all(|r| r["artifactUpdate"]["append"] != false || r["artifactUpdate"].is_null()));
    for results in [&sub, &original] {
        assert_eq!(
            results.last().unwrap()["statusUpdate"]["status"]["state"],
            "TASK_STATE_COMPLETED"
        );
    }
    let v = rpc(&server, &call("SubscribeToTask", json!({"id": id}))).await;
    assert_eq!(v["error"]["code"], -32004, "an ended task: {v}");
    let v = rpc(&server, &call("SubscribeToTask", json!({"id": "nope"}))).await;
    assert_eq!(v["error"]["code"], -32001);
    let v = rpc(&server, &call("SubscribeToTask", json!({}))).await;
    assert_eq!(v["error"]["code"], -32602);
}

#[tokio::test]
async fn a_subscriber_that_leaves_cancels_nothing() {
    let agent = Arc::new(SlowStreamAgent::new(30, Duration::from_millis(20)));
    let server = start(config(), agent.clone());
    let (id, original) = start_stream(&server, &call("SendStreamingMessage", message("x"))).await;
    let (sub_id, sub) = start_stream(&server, &call("SubscribeToTask", json!({"id": id}))).await;
    assert_eq!(sub_id, id);
    sub.abort();
    let original = original.await.unwrap();
    assert_eq!(
        original.last().unwrap()["statusUpdate"]["status"]["state"],
        "TASK_STATE_COMPLETED"
    );
    assert_eq!(answer_text(&original).matches("chunk").count(), 30);
}

#[tokio::test]
async fn the_a2a_0_3_names_answer_in_0_3_shapes() {
    let server = start_echo();
    let text = format!("{}abc", agentd::agent::echo::ECHO_PREFIX);
    let v = rpc(&server, &call("message/send", message_v03("abc"))).await;
    let task = &v["result"];
    assert_eq!(task["kind"], "task");
    assert_eq!(task["status"]["state"], "completed");
    assert_eq!(
        task["artifacts"][0]["parts"][0],
        json!({"kind": "text", "text": text})
    );
    let id = task["id"].as_str().unwrap();
    let got = rpc(&server, &call("tasks/get", json!({"id": id}))).await;
    assert_eq!(got["result"]["kind"], "task");
    assert_eq!(got["result"]["status"]["state"], "completed");
    let e = rpc(&server, &call("tasks/cancel", json!({"id": id}))).await;
    assert_eq!(e["error"]["code"], -32002);
    // A streaming method's refusal is one SSE event, as a 0.3 client reads it.
    let e = streamed_error(&server, &call("tasks/resubscribe", json!({"id": id}))).await;
    assert_eq!(e["code"], -32004);
    let e = streamed_error(&server, &call("tasks/resubscribe", json!({"id": "nope"}))).await;
    assert_eq!(e["code"], -32001);
    let e = streamed_error(&server, &call("message/stream", message_v03(""))).await;
    assert_eq!(e["code"], -32602);
    let body = call("message/stream", message_v03("abc")).to_string();
    let results = stream_results(post(&server, &body, None).await).await;
    assert_eq!(results[0]["kind"], "task");
    assert_eq!(results[0]["status"]["state"], "working");
    let streamed: String = results
        .iter()
        .filter(|r| r["kind"] == "artifact-update")
        .filter_map(|r| r["artifact"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(streamed, text);
    let last = results.last().unwrap();
    assert_eq!(last["kind"], "status-update");
    assert_eq!(last["status"]["state"], "completed");
    assert_eq!(last["final"], true);
    assert!(results[..results.len() - 1]
        .iter()
        .all(|r| r.get("final").is_none()));
}

#[tokio::test]
async fn a_0_3_subscriber_follows_a_task_to_its_cancel() {
    let agent = Arc::new(SlowStreamAgent::new(1000, Duration::from_millis(20)));
    let server = start(config(), agent.clone());
    let (id, original) = start_stream(&server, &call("message/stream", message_v03("x"))).await;
    let (_, sub) = start_stream(&server, &call("tasks/resubscribe", json!({"id": id}))).await;
    let v = rpc(&server, &call("tasks/cancel", json!({"id": id}))).await;
    assert_eq!(v["result"]["status"]["state"], "canceled");
    for results in [sub.await.unwrap(), original.await.unwrap()] {
        let last = results.last().unwrap();
        assert_eq!(last["kind"], "status-update");
        assert_eq!(last["status"]["state"], "canceled");
        assert_eq!(last["final"], true);
    }
    assert!(agent.has_dropped(1).await, "the agent is cancelled");
}

#[tokio::test]
async fn a_send_that_returns_immediately_runs_on_and_can_be_followed() {
    let agent = Arc::new(SlowStreamAgent::new(20, Duration::from_millis(20)));
    let server = start(config(), agent.clone());
    let mut params = message("x");
    params["configuration"] = json!({"returnImmediately": true});
    let v = rpc(&server, &call("SendMessage", params)).await;
    let task = &v["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_WORKING");
    let id = task["id"].as_str().unwrap().to_owned();
    let (_, sub) = start_stream(&server, &call("SubscribeToTask", json!({"id": id}))).await;
    let sub = sub.await.unwrap();
    assert_eq!(
        sub.last().unwrap()["statusUpdate"]["status"]["state"],
        "TASK_STATE_COMPLETED"
    );
    let got = rpc(&server, &call("GetTask", json!({"id": id}))).await;
    assert_eq!(got["result"]["status"]["state"], "TASK_STATE_COMPLETED");
    let text = got["result"]["artifacts"][0]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert_eq!(text.matches("chunk").count(), 20);
    // 0.3: `blocking: false`, then canceled while it runs.
    let mut params = message_v03("x");
    params["configuration"] = json!({"blocking": false});
    let v = rpc(&server, &call("message/send", params)).await;
    assert_eq!(v["result"]["status"]["state"], "working");
    let id = v["result"]["id"].as_str().unwrap();
    let c = rpc(&server, &call("tasks/cancel", json!({"id": id}))).await;
    assert_eq!(c["result"]["status"]["state"], "canceled");
    assert!(
        agent.has_dropped(2).await,
        "the detached agent is cancelled"
    );
}

#[tokio::test]
async fn detached_tasks_are_bounded_by_a2a_tasks_max() {
    let agent = Arc::new(SlowStreamAgent::new(1000, Duration::from_millis(20)));
    let mut c = config();
    c.a2a_tasks_max = 1;
    let server = start(c, agent.clone());
    let mut params = message("x");
    params["configuration"] = json!({"returnImmediately": true});
    let v = rpc(&server, &call("SendMessage", params.clone())).await;
    let id = v["result"]["task"]["id"].as_str().unwrap().to_owned();
    let refused = rpc(&server, &call("SendMessage", params.clone())).await;
    assert_eq!(refused["error"]["code"], -32603, "{refused}");
    assert_eq!(refused["error"]["data"]["code"], "saturated");
    rpc(&server, &call("CancelTask", json!({"id": id}))).await;
    assert!(agent.has_dropped(1).await);
    let mut accepted = Value::Null;
    for _ in 0..100 {
        accepted = rpc(&server, &call("SendMessage", params.clone())).await;
        if accepted.get("result").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        accepted["result"]["task"]["status"]["state"],
        "TASK_STATE_WORKING"
    );
}
