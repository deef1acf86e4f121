//! A2A calls for tests: JSON-RPC requests to `/a2a`, a stream's results, the answer's
//! text, and a stream started and read in the background.

use std::time::Duration;

use serde_json::{json, Value};

use super::{client, sse_frames, TestServer};

pub fn call(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
}

pub fn message(text: &str) -> Value {
    json!({"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": text}]}})
}

pub async fn post(server: &TestServer, body: &str, auth: Option<&str>) -> reqwest::Response {
    let mut r = client()
        .post(server.url("/a2a"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(a) = auth {
        r = r.header("authorization", format!("Bearer {a}"));
    }
    r.send().await.expect("request")
}

pub async fn rpc(server: &TestServer, body: &Value) -> Value {
    let res = post(server, &body.to_string(), None).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// The JSON-RPC responses of a stream, in order.
pub async fn stream_results(res: reqwest::Response) -> Vec<Value> {
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

pub fn answer_text(results: &[Value]) -> String {
    results
        .iter()
        .filter(|r| r["artifactUpdate"]["artifact"]["artifactId"] == "answer")
        .filter_map(|r| r["artifactUpdate"]["artifact"]["parts"][0]["text"].as_str())
        .collect()
}

/// Posts a streaming call, reads its first frame (the task) and returns the task's id
/// and the whole stream's JSON-RPC results, read in the background.
pub async fn start_stream(
    server: &TestServer,
    body: &Value,
) -> (String, tokio::task::JoinHandle<Vec<Value>>) {
    use futures_util::StreamExt;
    let res = post(server, &body.to_string(), None).await;
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let mut seen = Vec::new();
    while !seen.windows(2).any(|w| w == b"\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the first frame in time")
            .expect("a first frame")
            .unwrap();
        seen.extend_from_slice(&chunk);
    }
    let results = |bytes: &[u8]| -> Vec<Value> {
        std::str::from_utf8(bytes)
            .unwrap()
            .split("\n\n")
            .filter_map(|f| f.strip_prefix("data: "))
            .map(|f| serde_json::from_str::<Value>(f).unwrap()["result"].clone())
            .collect()
    };
    let first = &results(&seen)[0];
    let task = if first["task"].is_object() {
        &first["task"]
    } else {
        first
    };
    let id = task["id"].as_str().expect("the task's id").to_owned();
    let rest = tokio::spawn(async move {
        while let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(Duration::from_secs(20), stream.next()).await
        {
            seen.extend_from_slice(&chunk);
        }
        results(&seen)
    });
    (id, rest)
}

/// Waits until GetTask shows some of the task's text.
pub async fn has_text(server: &TestServer, id: &str) {
    for _ in 0..250 {
        let v = rpc(server, &call("GetTask", json!({"id": id}))).await;
        if v["result"]["artifacts"][0]["parts"][0]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the task never had text");
}

pub fn message_v03(text: &str) -> Value {
    json!({"message": {"kind": "message", "messageId": "m1", "role": "user",
        "parts": [{"kind": "text", "text": text}]}})
}

/// Subscribes to the working task `id` (`SubscribeToTask`) on `server` and reads the
/// stream to its end: its results, and the text the first one (the working task as it
/// was) held ("" when none yet).
pub async fn subscribe_whole(server: &TestServer, id: &str) -> (Vec<Value>, String) {
    let body = call("SubscribeToTask", json!({"id": id})).to_string();
    let sub = stream_results(post(server, &body, None).await).await;
    let snapshot = &sub[0]["task"];
    assert_eq!(snapshot["id"], id);
    assert_eq!(snapshot["status"]["state"], "TASK_STATE_WORKING");
    let so_far = snapshot["artifacts"][0]["parts"][0]["text"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    (sub, so_far)
}

/// A streaming call refused in A2A 0.3's way: one SSE event holding the JSON-RPC
/// error. Returns the error object.
pub async fn streamed_error(server: &TestServer, body: &Value) -> Value {
    let frames = sse_frames(post(server, &body.to_string(), None).await, "data: ").await;
    assert_eq!(frames.len(), 1, "one event: {frames:?}");
    let v: Value = serde_json::from_str(&frames[0]).unwrap();
    assert_eq!(v["jsonrpc"], "2.0");
    assert!(v.get("result").is_none(), "{v}");
    v["error"].clone()
}
