//! The OpenAI-compatible front door (`/v1/models`, `/v1/chat/completions`) end to end:
//! streaming and not, extension events, an error mid-stream, bad input, the shared
//! gates answering in OpenAI's error shape, an API key sent as the bearer token, a
//! client that leaves cancelling the agent, and the LLM agent behind it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use agentd::Config;
use fake_llm::{Behaviour, FakeLlm, Options};
use serde_json::{json, Value};
use support::*;

const CHAT: &str = "/v1/chat/completions";

fn chat(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "agentd",
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
        "stream_options": {"include_usage": true}
    })
}

async fn post(server: &TestServer, body: &Value, auth: Option<&str>) -> reqwest::Response {
    let mut r = client()
        .post(server.url(CHAT))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(a) = auth {
        r = r.header("authorization", format!("Bearer {a}"));
    }
    r.send().await.expect("request")
}

/// The `data:` payloads of an SSE body, in order (`[DONE]` kept as text).
async fn data_frames(res: reqwest::Response) -> Vec<String> {
    sse_frames(res, "data: ").await
}

fn chunks(frames: &[String]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| *f != "[DONE]")
        .map(|f| serde_json::from_str(f).expect("JSON chunk"))
        .collect()
}

fn content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// Checks a successful stream: role on the first chunk only, one `stop` then the
/// usage chunk (when asked), then `[DONE]` last.
fn assert_complete_stream(frames: &[String], usage: bool) -> Vec<Value> {
    assert_eq!(frames.last().unwrap(), "[DONE]");
    assert_eq!(frames.iter().filter(|f| *f == "[DONE]").count(), 1);
    let cs = chunks(frames);
    assert_eq!(cs[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(cs[1..]
        .iter()
        .all(|c| c["choices"][0]["delta"].get("role").is_none()));
    let id = &cs[0]["id"];
    assert!(id.as_str().unwrap().starts_with("chatcmpl-"));
    assert!(cs
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && &c["id"] == id));
    let stops: Vec<usize> = cs
        .iter()
        .enumerate()
        .filter(|(_, c)| c["choices"][0]["finish_reason"] == "stop")
        .map(|(i, _)| i)
        .collect();
    let last = cs.len() - 1;
    if usage {
        assert_eq!(stops, [last - 1]);
        assert_eq!(cs[last]["choices"], json!([]));
        let u = &cs[last]["usage"];
        assert_eq!(
            u["total_tokens"].as_u64().unwrap(),
            u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
        );
    } else {
        assert_eq!(stops, [last]);
    }
    cs
}

fn openai_error(v: &Value) -> &Value {
    let e = &v["error"];
    for k in ["message", "type", "param", "code"] {
        assert!(e.get(k).is_some(), "error has {k}: {v}");
    }
    e
}

async fn error_of(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = res.json().await.unwrap();
    openai_error(&v).clone()
}

#[tokio::test]
async fn models_lists_the_served_agent() {
    let mut c = config();
    c.agent_id = "my-agent".into();
    let server = start_echo_with(c);
    let res = client().get(server.url("/v1/models")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "my-agent");
    assert_eq!(v["data"][0]["object"], "model");
    assert!(v["data"][0]["created"].as_u64().unwrap() > 1_600_000_000);
}

#[tokio::test]
async fn echo_streams_deltas_then_stop_usage_and_done() {
    let server = start_echo();
    let frames = data_frames(post(&server, &chat("héllo", true), None).await).await;
    let cs = assert_complete_stream(&frames, true);
    assert_eq!(
        content(&cs),
        format!("{}héllo", agentd::agent::echo::ECHO_PREFIX)
    );
    assert_eq!(cs[0]["model"], "agentd");
    // Without include_usage: no usage chunk.
    let mut b = chat("x", true);
    b["stream_options"] = Value::Null;
    let frames = data_frames(post(&server, &b, None).await).await;
    let cs = assert_complete_stream(&frames, false);
    assert!(cs.iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn echo_answers_one_completion_without_stream() {
    let server = start_echo();
    let res = post(&server, &chat("abc", false), None).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let text = format!("{}abc", agentd::agent::echo::ECHO_PREFIX);
    assert_eq!(v["choices"][0]["message"]["content"], text.as_str());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // characters / 4, rounded up.
    assert_eq!(v["usage"]["prompt_tokens"], 1);
    assert_eq!(
        v["usage"]["completion_tokens"],
        text.chars().count().div_ceil(4) as u64
    );
    assert_eq!(v["sentient_events"], json!([]));
}

#[tokio::test]
async fn other_events_are_extension_events_and_not_content() {
    let server = start(config(), Arc::new(ScriptAgent));
    let frames = data_frames(post(&server, &chat("p", true), None).await).await;
    let cs = assert_complete_stream(&frames, true);
    // The first text stream (A) is the answer; B, the JSON event and the text block
    // are extension events.
    assert_eq!(content(&cs), "a1a2");
    let ext: Vec<&Value> = cs
        .iter()
        .filter_map(|c| c.get("sentient_events"))
        .flat_map(|e| e.as_array().unwrap())
        .collect();
    let kinds: Vec<(&str, &str)> = ext
        .iter()
        .map(|e| {
            (
                e["content_type"].as_str().unwrap(),
                e["event_name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("atomic.json", "ANALYSIS"),
            ("atomic.textblock", "NOTE"),
            ("chunked.text", "B"),
            ("chunked.text", "B"),
            ("chunked.text", "B"),
        ]
    );
    assert_eq!(ext[0]["content"], json!({"prompt": "p", "n": 1}));
    // The same without streaming: one extension array.
    let v: Value = post(&server, &chat("p", false), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "a1a2");
    assert_eq!(v["sentient_events"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn an_error_mid_stream_is_an_error_object_and_no_done() {
    let server = start(config(), Arc::new(FailAgent));
    let frames = data_frames(post(&server, &chat("x", true), None).await).await;
    assert!(!frames.iter().any(|f| f == "[DONE]"), "{frames:?}");
    let cs = chunks(&frames);
    assert_eq!(content(&cs), "partial");
    assert!(cs
        .iter()
        .all(|c| c["choices"][0]["finish_reason"].is_null()));
    let last = cs.last().unwrap();
    let e = openai_error(last);
    assert_eq!(e["message"], "upstream refused");
    assert_eq!(e["type"], "server_error");
    assert_eq!(e["code"], "agent_error");
    // Without streaming: the agent's code as the status.
    let e = error_of(post(&server, &chat("x", false), None).await, 418).await;
    assert_eq!(e["message"], "upstream refused");
}

#[tokio::test]
async fn bad_input_is_refused_in_openai_shape() {
    let server = start_echo();
    let image = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]});
    let e = error_of(post(&server, &image, None).await, 400).await;
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["param"], "messages[0].content[1]");
    assert_eq!(e["code"], "validation_failed");
    let mut tools = chat("x", false);
    tools["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    let e = error_of(post(&server, &tools, None).await, 400).await;
    assert_eq!(e["param"], "tools");
    let e = error_of(post(&server, &chat("", false), None).await, 400).await;
    assert_eq!(e["param"], "messages[0].content");
    let e = error_of(
        post(&server, &chat(&"x".repeat(10_001), true), None).await,
        400,
    )
    .await;
    assert_eq!(e["param"], "messages[0].content");
    let res = client()
        .post(server.url(CHAT))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res, 400).await["code"], "invalid_json");
    let res = client()
        .post(server.url(CHAT))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res, 415).await["code"], "unsupported_media_type");
    let res = client().get(server.url(CHAT)).send().await.unwrap();
    assert_eq!(res.headers()["allow"], "POST");
    assert_eq!(error_of(res, 405).await["code"], "method_not_allowed");
    let res = client()
        .get(server.url("/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res, 404).await["type"], "not_found_error");
    // Unknown fields are ignored.
    let mut extra = chat("ok", false);
    extra["frequency_penalty"] = json!(0.5);
    extra["metadata"] = json!({"a": "b"});
    assert_eq!(post(&server, &extra, None).await.status(), 200);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_in_openai_shape() {
    let mut c = config();
    c.body_limit = 1024;
    let server = start_echo_with(c);
    let e = error_of(
        post(&server, &chat(&"x".repeat(2000), false), None).await,
        413,
    )
    .await;
    assert_eq!(e["code"], "payload_too_large");
}

#[tokio::test]
async fn an_api_key_is_accepted_as_the_bearer_token() {
    let mut c = config();
    c.api_key_secret = Some("key-one,key-two".into());
    let server = start_echo_with(c);
    assert_eq!(
        post(&server, &chat("x", false), Some("key-two"))
            .await
            .status(),
        200
    );
    let e = error_of(post(&server, &chat("x", false), Some("nope")).await, 401).await;
    assert_eq!(e["type"], "authentication_error");
    assert_eq!(e["code"], "invalid_api_key");
    error_of(post(&server, &chat("x", false), None).await, 401).await;
    let res = client()
        .get(server.url("/v1/models"))
        .header("authorization", "Bearer key-one")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client().get(server.url("/v1/models")).send().await.unwrap();
    error_of(res, 401).await;
}

fn hs256(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_jwt_or_an_api_key_when_auth_is_required() {
    let mut c = config();
    c.jwt_secret = Some("s3cret".into());
    c.auth_required = true;
    c.api_key_secret = Some("key-one".into());
    let server = start_echo_with(c);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let user = hs256("s3cret", json!({"sub": "u", "exp": exp}));
    let guest = hs256("s3cret", json!({"sub": "u", "exp": exp, "role": "guest"}));
    assert_eq!(
        post(&server, &chat("x", false), Some(&user)).await.status(),
        200
    );
    assert_eq!(
        post(&server, &chat("x", false), Some("key-one"))
            .await
            .status(),
        200
    );
    let e = error_of(post(&server, &chat("x", false), None).await, 401).await;
    assert_eq!(e["code"], "invalid_token");
    let e = error_of(post(&server, &chat("x", false), Some(&guest)).await, 403).await;
    assert_eq!(e["type"], "permission_error");
}

#[tokio::test]
async fn rate_limit_and_shedding_answer_in_openai_shape() {
    let mut c = config();
    c.rate_limit_max = 1;
    let server = start_echo_with(c);
    assert_eq!(post(&server, &chat("x", false), None).await.status(), 200);
    let res = post(&server, &chat("x", false), None).await;
    assert!(res.headers().contains_key("retry-after"));
    let e = error_of(res, 429).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("rate_limit_error"), Some("rate_limited"))
    );

    let mut c = config();
    c.max_in_flight = 1;
    let agent = Arc::new(SlowStreamAgent::new(3, Duration::from_millis(200)));
    let server = start(c, agent.clone());
    let first = {
        let res = post(&server, &chat("x", true), None).await;
        tokio::spawn(data_frames(res))
    };
    assert!(agent.has_started(1).await);
    let e = error_of(post(&server, &chat("y", false), None).await, 503).await;
    assert_eq!(e["code"], "under_pressure");
    assert_complete_stream(&first.await.unwrap(), true);
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_agent() {
    let agent = Arc::new(SlowStreamAgent::new(1000, Duration::from_millis(20)));
    let server = start(config(), agent.clone());
    let res = post(&server, &chat("x", true), None).await;
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    use futures_util::StreamExt;
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(first.is_some());
    drop(stream);
    assert!(agent.has_dropped(1).await, "the agent is cancelled");
}

#[tokio::test]
async fn requests_are_counted_per_route() {
    let mut c = config();
    c.enable_metrics = true;
    let server = start_echo_with(c);
    let _ = data_frames(post(&server, &chat("x", true), None).await).await;
    let _ = client().get(server.url("/v1/models")).send().await.unwrap();
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("agentd_http_requests_total{route=\"openai_chat\",status=\"2xx\"} 1"),
        "{text}"
    );
    assert!(text.contains("agentd_http_requests_total{route=\"openai_models\",status=\"2xx\"} 1"));
}

fn llm_config(fake: &FakeLlm) -> Config {
    let mut c = config();
    c.workers = Some(1);
    c.health_check_interval = 60_000;
    c.openai_api_key = Some("sk-test-key".into());
    c.openai_base_url = fake.openai_base_url();
    c.openai_model = "fake-gpt".into();
    c
}

#[tokio::test]
async fn the_llm_agent_streams_through_with_preferences_and_history() {
    let fake = FakeLlm::start(Options {
        default: Behaviour {
            tokens: 6,
            ..Behaviour::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    let c = llm_config(&fake);
    let agent = agentd::configured_agent(&c).expect("llm agent");
    let server = start(c, agent);
    let body = json!({
        "model": "agentd",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]}
        ],
        "temperature": 0.25, "max_tokens": 33, "user": "u-7",
        "stream": true, "stream_options": {"include_usage": true}
    });
    let frames = data_frames(post(&server, &body, None).await).await;
    let cs = assert_complete_stream(&frames, true);
    assert!(!content(&cs).is_empty());
    // The LLM agent's ANALYSIS and PERFORMANCE events ride along as extension events.
    let names: Vec<&str> = cs
        .iter()
        .filter_map(|c| c.get("sentient_events"))
        .flat_map(|e| e.as_array().unwrap())
        .map(|e| e["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ANALYSIS", "PERFORMANCE"]);
    let sent: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    let up = &sent.last().unwrap().body;
    assert_eq!(up["temperature"], 0.25);
    assert_eq!(up["max_tokens"], 33);
    let messages = up["messages"].to_string();
    assert!(messages.contains("second"), "{messages}");
    // Without streaming: the same text.
    let mut b = body.clone();
    b["stream"] = json!(false);
    let v: Value = post(&server, &b, None).await.json().await.unwrap();
    assert!(!v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_proxy_agent_receives_the_mapped_sentient_request() {
    use support::upstream_agent::{Mode, UpstreamAgent};
    let up = UpstreamAgent::start(Mode::WellBehaved).await;
    let mut c = config();
    c.workers = Some(1);
    c.agent = Some(agentd::config::AgentKind::Proxy);
    c.agent_upstreams = Some(up.url());
    c.proxy_health_check_interval = 60_000;
    let agent = agentd::configured_agent(&c).expect("proxy agent");
    let server = start(c, agent);
    let body = json!({
        "model": "agentd",
        "messages": [
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": "Hi there"}
        ],
        "temperature": 1.5, "max_completion_tokens": 100, "user": "u-9", "stream": true
    });
    let frames = data_frames(post(&server, &body, None).await).await;
    let cs = assert_complete_stream(&frames, false);
    assert_eq!(content(&cs), "one two three");
    let sent = &up.posts()[0].body;
    assert_eq!(sent["query"]["prompt"], "Hi there");
    assert_eq!(
        sent["query"]["context"],
        json!({"userId": "u-9", "preferences": {"temperature": 1.5, "maxTokens": 100}})
    );
    let interactions = &sent["session"]["interactions"];
    assert_eq!(
        interactions[0],
        json!({"request": {"sender": "developer", "content": "rules"}, "responses": []})
    );
    assert_eq!(
        interactions[1]["request"],
        json!({"sender": "user", "content": "first"})
    );
    let answer = &interactions[1]["responses"][0];
    assert_eq!(answer["sender"], "assistant");
    assert_eq!(answer["event"]["content_type"], "atomic.textblock");
    assert_eq!(answer["event"]["content"], "answer");
    assert_eq!(interactions.as_array().unwrap().len(), 2);
    assert_eq!(sent["session"]["processor_id"], "agentd");
}

#[tokio::test]
async fn a_client_that_leaves_a_non_streaming_request_cancels_the_agent() {
    use tokio::io::AsyncWriteExt;
    let agent = Arc::new(SlowStreamAgent::new(1000, Duration::from_millis(20)));
    let server = start(config(), agent.clone());
    let body = chat("x", false).to_string();
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        format!(
            "POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert!(agent.has_started(1).await);
    drop(s);
    assert!(agent.has_dropped(1).await, "the agent is cancelled");
}

#[tokio::test]
async fn a_timed_out_agent_is_an_error_not_a_short_answer() {
    let mut c = config();
    c.agent_timeout = 300;
    let server = start(
        c,
        Arc::new(SlowStreamAgent::new(1000, Duration::from_millis(20))),
    );
    let frames = data_frames(post(&server, &chat("x", true), None).await).await;
    assert!(!frames.iter().any(|f| f == "[DONE]"));
    let cs = chunks(&frames);
    assert!(content(&cs).starts_with("chunk 0"));
    assert_eq!(
        openai_error(cs.last().unwrap())["message"],
        "The agent did not answer in time"
    );
    let e = error_of(post(&server, &chat("x", false), None).await, 504).await;
    assert_eq!(e["type"], "server_error");
}

#[tokio::test]
async fn a_non_streaming_answer_over_the_limit_is_refused() {
    let mut c = config();
    c.chat_completion_max_bytes = 1024;
    let server = start_echo_with(c);
    assert_eq!(
        post(&server, &chat(&"x".repeat(900), false), None)
            .await
            .status(),
        200
    );
    let e = error_of(
        post(&server, &chat(&"x".repeat(2000), false), None).await,
        502,
    )
    .await;
    assert_eq!(e["code"], "response_too_large");
    // Streaming is not bound by it.
    let frames = data_frames(post(&server, &chat(&"x".repeat(2000), true), None).await).await;
    assert_complete_stream(&frames, true);
}
