//! End-to-end tests of the fake upstream through real clients: hyper-util's legacy client
//! (HTTP/1.1 pooling and h2c) and raw TCP sockets (exact chunk framing, RST, hangs).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fake_llm::{Behaviour, Chunking, FakeLlm, Fault, LineEnding, Options, Provider, Quirks};
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(5);
const MODEL: &str = "gpt-fake";

// ---------------------------------------------------------------- helpers

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn start(b: Behaviour) -> FakeLlm {
    FakeLlm::start(Options {
        addr: None,
        default: b,
    })
    .await
    .unwrap()
}

fn tokens(n: usize) -> Behaviour {
    Behaviour {
        tokens: n,
        ..Behaviour::default()
    }
}

fn oa_json(stream: bool, usage: bool, prompt: &str) -> Value {
    let mut v = json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": prompt}
        ],
        "stream": stream,
    });
    if usage {
        v["stream_options"] = json!({"include_usage": true});
    }
    v
}

fn an_json(stream: bool, prompt: &str, max_tokens: u64) -> Value {
    json!({
        "model": "claude-fake",
        "max_tokens": max_tokens,
        "system": "be terse",
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        "stream": stream,
    })
}

fn oa_req(llm: &FakeLlm, body: &Value) -> Request<Full<Bytes>> {
    Request::post(format!("{}/chat/completions", llm.openai_base_url()))
        .header("authorization", "Bearer sk-test")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn an_req(llm: &FakeLlm, body: &Value) -> Request<Full<Bytes>> {
    Request::post(format!("{}/v1/messages", llm.anthropic_base_url()))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Sends a request and reads the whole body (which must end cleanly).
async fn send(c: &HttpClient, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, String) {
    let resp = timeout(T, c.request(req)).await.unwrap().unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = timeout(T, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

async fn send_json(c: &HttpClient, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Value) {
    let (s, h, b) = send(c, req).await;
    (
        s,
        h,
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("{e}: {b}")),
    )
}

/// Reads data frames until the body ends or fails; returns the bytes and the error, if any.
async fn read_all(body: &mut Incoming) -> (Vec<u8>, Option<hyper::Error>) {
    let mut out = Vec::new();
    loop {
        match timeout(T, body.frame()).await.expect("frame timed out") {
            None => return (out, None),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d);
                }
            }
            Some(Err(e)) => return (out, Some(e)),
        }
    }
}

/// A minimal SSE parser (any line ending, comments and unknown fields ignored): (event, data).
fn parse_sse(bytes: &[u8]) -> Vec<(String, String)> {
    let text = std::str::from_utf8(bytes).unwrap();
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut events = Vec::new();
    let (mut event, mut data): (Option<String>, Option<String>) = (None, None);
    for line in text.split('\n') {
        if line.is_empty() {
            if let Some(d) = data.take() {
                events.push((event.take().unwrap_or_else(|| "message".into()), d));
            }
            event = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "data" => {
                let d = data.get_or_insert_with(String::new);
                if !d.is_empty() {
                    d.push('\n');
                }
                d.push_str(value);
            }
            _ => {}
        }
    }
    events
}

/// Replaces the per-request ids and timestamps so two streams can be compared byte for byte.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let hits = ["chatcmpl-fake", "msg_fake", "\"created\":"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, *p)))
            .min();
        let Some((i, p)) = hits else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i + p.len()]);
        out.push('N');
        rest = rest[i + p.len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
}

/// Content tokens of an OpenAI stream's data events.
fn oa_tokens(events: &[(String, String)]) -> Vec<String> {
    events
        .iter()
        .filter(|(e, d)| e == "message" && d != "[DONE]")
        .filter_map(|(_, d)| {
            let v: Value = serde_json::from_str(d).unwrap();
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .collect()
}

/// Text deltas of an Anthropic stream.
fn an_tokens(events: &[(String, String)]) -> Vec<String> {
    events
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .map(|(_, d)| {
            let v: Value = serde_json::from_str(d).unwrap();
            v["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// A raw HTTP/1.1 exchange (`connection: close`): everything the server sent, and how the
/// read ended (`None`: EOF).
async fn raw(
    addr: SocketAddr,
    head: &str,
    body: &str,
    read_timeout: Duration,
) -> (Vec<u8>, Option<std::io::Error>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{head}host: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match timeout(read_timeout, s.read(&mut buf)).await {
            Err(_) => return (out, Some(ErrorKind::TimedOut.into())),
            Ok(Ok(0)) => return (out, None),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (out, Some(e)),
        }
    }
}

const RAW_OA: &str = "POST /v1/chat/completions HTTP/1.1\r\nauthorization: Bearer k\r\n";
const RAW_AN: &str =
    "POST /v1/messages HTTP/1.1\r\nx-api-key: k\r\nanthropic-version: 2023-06-01\r\n";

/// Splits a raw response into its head and its chunked body's chunks; `true` if the
/// terminating zero chunk arrived.
fn dechunk(raw: &[u8]) -> (String, Vec<Vec<u8>>, bool) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut rest = &raw[split + 4..];
    let mut chunks = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (head, chunks, false);
        };
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap(), 16).unwrap();
        if size == 0 {
            return (head, chunks, true);
        }
        let start = eol + 2;
        if rest.len() < start + size + 2 {
            return (head, chunks, false);
        }
        chunks.push(rest[start..start + size].to_vec());
        rest = &rest[start + size + 2..];
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------- OpenAI

#[tokio::test]
async fn openai_stream_exact_framing() {
    let llm = start(tokens(3)).await;
    let c = client();
    let (status, headers, body) =
        send(&c, oa_req(&llm, &oa_json(true, true, "hello there world"))).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(headers.contains_key("x-request-id"));

    let first: Value = serde_json::from_str(
        body.strip_prefix("data: ")
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap(),
    )
    .unwrap();
    let id = first["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    let created = first["created"].as_u64().unwrap();
    let head = format!(
        r#"{{"id":"{id}","object":"chat.completion.chunk","created":{created},"model":"gpt-fake","system_fingerprint":null,"choices":["#
    );
    let mut want = String::new();
    want += &format!("data: {head}{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n");
    for i in 0..3 {
        want += &format!("data: {head}{{\"index\":0,\"delta\":{{\"content\":\"tok {i}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n");
    }
    want += &format!("data: {head}{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n");
    // P = words of all messages: "be terse" + "hello there world".
    want += &format!("data: {head}],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}}}\n\n");
    want += "data: [DONE]\n\n";
    assert_eq!(body, want);
    assert_eq!(llm.completed(), 1);
    assert_eq!(llm.in_flight(), 0);
    assert_eq!(llm.cancelled(), 0);
}

#[tokio::test]
async fn openai_without_usage_and_truncated() {
    let llm = start(tokens(4)).await;
    let c = client();
    let mut body = oa_json(true, false, "hi");
    body["max_tokens"] = json!(2);
    let (_, _, text) = send(&c, oa_req(&llm, &body)).await;
    assert!(!text.contains("usage"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    let events = parse_sse(text.as_bytes());
    assert_eq!(oa_tokens(&events), ["tok 0", "tok 1"]);
    let finish: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
}

#[tokio::test]
async fn openai_non_streaming() {
    let llm = start(tokens(2)).await;
    let c = client();
    let (status, headers, v) = send_json(&c, oa_req(&llm, &oa_json(false, false, "one two"))).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.contains_key("content-length"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], MODEL);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "tok 0tok 1");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6})
    );
}

#[tokio::test]
async fn openai_request_errors_do_not_take_faults() {
    let llm = start(tokens(1)).await;
    let c = client();
    llm.push_fault(Fault::status(503));

    let no_auth = Request::post(format!("{}/chat/completions", llm.openai_base_url()))
        .body(Full::new(Bytes::from(
            oa_json(true, false, "x").to_string(),
        )))
        .unwrap();
    let (s, _, v) = send_json(&c, no_auth).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert!(v["error"]["message"].is_string());
    assert!(v["error"]["param"].is_null());

    let empty_bearer = Request::post(format!("{}/chat/completions", llm.openai_base_url()))
        .header("authorization", "Bearer  ")
        .body(Full::new(Bytes::from(
            oa_json(true, false, "x").to_string(),
        )))
        .unwrap();
    assert_eq!(send(&c, empty_bearer).await.0, 401);

    let mut bad = oa_req(&llm, &json!({}));
    *bad.body_mut() = Full::new(Bytes::from_static(b"{not json"));
    let (s, h, v) = send_json(&c, bad).await;
    assert_eq!(
        (s, h["content-type"].to_str().unwrap()),
        (StatusCode::BAD_REQUEST, "application/json")
    );
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "invalid_json");

    let (s, _, v) = send_json(
        &c,
        oa_req(
            &llm,
            &json!({"messages": [{"role": "user", "content": "x"}]}),
        ),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["param"], "model");
    let (s, _, v) = send_json(&c, oa_req(&llm, &json!({"model": "m", "messages": []}))).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["param"], "messages");

    // The queued fault is still there for the first valid request.
    assert_eq!(
        send(&c, oa_req(&llm, &oa_json(true, false, "x"))).await.0,
        503
    );
    assert_eq!(
        send(&c, oa_req(&llm, &oa_json(true, false, "x"))).await.0,
        200
    );
}

// ---------------------------------------------------------------- Anthropic

#[tokio::test]
async fn anthropic_stream_exact_framing() {
    let llm = start(tokens(2)).await;
    let c = client();
    let (status, headers, body) = send(&c, an_req(&llm, &an_json(true, "hello there", 1024))).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(headers.contains_key("request-id"));
    let events = parse_sse(body.as_bytes());
    let start: Value = serde_json::from_str(&events[0].1).unwrap();
    let id = start["message"]["id"].as_str().unwrap();
    assert!(id.starts_with("msg_"));

    let mut want = String::new();
    let mut ev = |name: &str, data: &str| want += &format!("event: {name}\ndata: {data}\n\n");
    ev(
        "message_start",
        &format!(
            r#"{{"type":"message_start","message":{{"id":"{id}","type":"message","role":"assistant","content":[],"model":"claude-fake","stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":4,"output_tokens":1}}}}}}"#
        ),
    );
    ev(
        "content_block_start",
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    );
    ev("ping", r#"{"type": "ping"}"#);
    ev(
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"tok 0"}}"#,
    );
    ev(
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"tok 1"}}"#,
    );
    ev(
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#,
    );
    ev(
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":2}}"#,
    );
    ev("message_stop", r#"{"type":"message_stop"}"#);
    assert_eq!(body, want);
}

#[tokio::test]
async fn anthropic_request_errors_and_non_streaming() {
    let llm = start(tokens(3)).await;
    let c = client();
    let url = format!("{}/v1/messages", llm.anthropic_base_url());
    let body = Bytes::from(an_json(true, "x", 10).to_string());

    let req = Request::post(&url)
        .header("anthropic-version", "2023-06-01")
        .body(Full::new(body.clone()))
        .unwrap();
    let (s, _, v) = send_json(&c, req).await;
    assert_eq!(s, 401);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");

    for version in [None, Some("2020-01-01")] {
        let mut req = Request::post(&url).header("x-api-key", "k");
        if let Some(v) = version {
            req = req.header("anthropic-version", v);
        }
        let (s, _, v) = send_json(&c, req.body(Full::new(body.clone())).unwrap()).await;
        assert_eq!(s, 400);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic-version"));
    }

    let mut bad = an_req(&llm, &json!({}));
    *bad.body_mut() = Full::new(Bytes::from_static(b"[1,"));
    let (s, _, v) = send_json(&c, bad).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let mut no_max = an_json(true, "x", 1);
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let (s, _, v) = send_json(&c, an_req(&llm, &no_max)).await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_tokens"));

    let (s, _, v) = send_json(&c, an_req(&llm, &an_json(false, "a b c", 1024))).await;
    assert_eq!(s, 200);
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "tok 0tok 1tok 2"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"], json!({"input_tokens": 5, "output_tokens": 3}));

    // max_tokens truncation, streaming.
    let (_, _, text) = send(&c, an_req(&llm, &an_json(true, "x", 1))).await;
    let events = parse_sse(text.as_bytes());
    assert_eq!(an_tokens(&events), ["tok 0"]);
    let delta: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta["usage"]["output_tokens"], 1);
}

// ---------------------------------------------------------------- models, faults

#[tokio::test]
async fn models_probe_and_unknown_paths() {
    let llm = start(tokens(1)).await;
    let c = client();
    let get = |path: &str, anthropic: bool| {
        let mut r = Request::get(format!("http://{}{path}", llm.addr()));
        if anthropic {
            r = r
                .header("x-api-key", "k")
                .header("anthropic-version", "2023-06-01");
        }
        r.body(Full::new(Bytes::new())).unwrap()
    };
    let (s, _, v) = send_json(&c, get("/v1/models", false)).await;
    assert_eq!(s, 200);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "fake-model");
    assert_eq!(v["data"][0]["object"], "model");

    llm.push_fault(Fault::Status {
        status: 503,
        retry_after: Some("2".into()),
        retry_after_ms: None,
    });
    let (s, h, v) = send_json(&c, get("/v1/models", false)).await;
    assert_eq!(s, 503);
    assert_eq!(h["retry-after"], "2");
    assert_eq!(v["error"]["type"], "server_error");

    llm.push_fault(Fault::status(529));
    let (s, _, v) = send_json(&c, get("/v1/models", true)).await;
    assert_eq!(s, 529);
    assert_eq!(v["error"]["type"], "overloaded_error");
    assert_eq!(send(&c, get("/v1/models", false)).await.0, 200);

    let (s, _, v) = send_json(&c, get("/v2/nothing", false)).await;
    assert_eq!(s, 404);
    assert!(v["error"]["message"].is_string());
}

#[tokio::test]
async fn status_faults_fifo_with_retry_headers() {
    let llm = start(tokens(1)).await;
    let c = client();
    llm.push_fault(Fault::Status {
        status: 429,
        retry_after: Some("1".into()),
        retry_after_ms: Some("1500".into()),
    });
    llm.push_fault(Fault::status(500));
    llm.push_fault_for(Provider::Anthropic, Fault::status_retry_after(529, 3));

    let (s, h, v) = send_json(&c, oa_req(&llm, &oa_json(true, true, "x"))).await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "1");
    assert_eq!(h["retry-after-ms"], "1500");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["message"].is_string());
    assert!(v["error"].get("type").is_some());

    // The next general fault (500) goes to an Anthropic request before its own 529.
    let (s, _, v) = send_json(&c, an_req(&llm, &an_json(true, "x", 9))).await;
    assert_eq!(s, 500);
    assert_eq!(v["error"]["type"], "api_error");

    // The Anthropic-only fault is skipped by OpenAI requests.
    assert_eq!(
        send(&c, oa_req(&llm, &oa_json(true, true, "x"))).await.0,
        200
    );
    let (s, h, v) = send_json(&c, an_req(&llm, &an_json(true, "x", 9))).await;
    assert_eq!(s, 529);
    assert_eq!(h["retry-after"], "3");
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    assert_eq!(send(&c, an_req(&llm, &an_json(true, "x", 9))).await.0, 200);
}

#[tokio::test]
async fn mid_stream_error_both_providers() {
    let llm = start(tokens(5)).await;
    let c = client();
    llm.push_fault(Fault::MidStreamError { after_tokens: 2 });
    let (s, _, text) = send(&c, oa_req(&llm, &oa_json(true, true, "x"))).await;
    assert_eq!(s, 200);
    assert!(!text.contains("[DONE]"));
    let events = parse_sse(text.as_bytes());
    assert_eq!(oa_tokens(&events), ["tok 0", "tok 1"]);
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert!(last["error"]["message"].is_string());
    assert!(text.ends_with("\n\n"));

    llm.push_fault(Fault::MidStreamError { after_tokens: 1 });
    let (_, _, text) = send(&c, an_req(&llm, &an_json(true, "x", 100))).await;
    let events = parse_sse(text.as_bytes());
    assert_eq!(an_tokens(&events), ["tok 0"]);
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(
        serde_json::from_str::<Value>(data).unwrap(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    assert!(!events.iter().any(|(n, _)| n == "message_stop"));

    // Non-streaming: an error status instead.
    llm.push_fault(Fault::MidStreamError { after_tokens: 1 });
    assert_eq!(
        send(&c, an_req(&llm, &an_json(false, "x", 100))).await.0,
        529
    );
}

#[tokio::test]
async fn eof_without_end_marker() {
    let llm = start(tokens(5)).await;
    let c = client();
    llm.push_fault(Fault::EofWithoutDone { after_tokens: 2 });
    let (_, _, text) = send(&c, oa_req(&llm, &oa_json(true, true, "x"))).await;
    let events = parse_sse(text.as_bytes());
    assert_eq!(oa_tokens(&events), ["tok 0", "tok 1"]);
    assert!(
        !text.contains("[DONE]")
            && !text.contains("finish_reason\":\"stop")
            && !text.contains("\"usage\":{")
    );

    llm.push_fault(Fault::EofWithoutDone { after_tokens: 9 }); // clamped to 5
    let (_, _, text) = send(&c, an_req(&llm, &an_json(true, "x", 100))).await;
    let events = parse_sse(text.as_bytes());
    assert_eq!(an_tokens(&events).len(), 5);
    let names: Vec<_> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert!(!names.contains(&"content_block_stop") && !names.contains(&"message_stop"));
    assert_eq!(llm.completed(), 2);
    assert_eq!(llm.cancelled(), 0);

    // Non-streaming: half a body, then the connection is dropped.
    llm.push_fault(Fault::EofWithoutDone { after_tokens: 1 });
    let resp = c
        .request(oa_req(&llm, &oa_json(false, false, "x")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (bytes, err) = read_all(&mut resp.into_body()).await;
    assert!(err.is_some());
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());
}

#[tokio::test]
async fn reset_sends_rst_after_tokens() {
    let llm = start(tokens(5)).await;
    llm.push_fault(Fault::Reset { after_tokens: 1 });
    let body = oa_json(true, false, "x").to_string();
    let (bytes, err) = raw(llm.addr(), RAW_OA, &body, T).await;
    let err = err.expect("the read must fail");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"));
    assert!(
        text.contains("\"tok 0\"") && !text.contains("tok 1"),
        "{text}"
    );
    assert_eq!(llm.completed(), 1);
    assert_eq!(llm.cancelled(), 0);

    // Through hyper, Anthropic: the body fails.
    let c = client();
    llm.push_fault(Fault::Reset { after_tokens: 2 });
    let resp = c
        .request(an_req(&llm, &an_json(true, "x", 100)))
        .await
        .unwrap();
    let (bytes, err) = read_all(&mut resp.into_body()).await;
    assert!(err.is_some());
    assert_eq!(an_tokens(&parse_sse(&bytes)), ["tok 0", "tok 1"]);

    // Non-streaming: reset before the headers.
    llm.push_fault(Fault::Reset { after_tokens: 0 });
    let body = an_json(false, "x", 100).to_string();
    let (bytes, err) = raw(llm.addr(), RAW_AN, &body, T).await;
    assert!(bytes.is_empty());
    assert_eq!(err.unwrap().kind(), ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn hang_before_headers_detected_by_client_timeout() {
    let llm = start(tokens(1)).await;
    llm.push_fault(Fault::HangBeforeHeaders);
    let body = oa_json(true, false, "x").to_string();
    let started = Instant::now();
    let (bytes, err) = raw(llm.addr(), RAW_OA, &body, Duration::from_millis(300)).await;
    assert!(bytes.is_empty());
    assert_eq!(err.unwrap().kind(), ErrorKind::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(llm.requests().len(), 1, "the request was read");
    // The client went away (socket dropped): counted as cancelled.
    eventually("hang cancelled", || llm.cancelled() == 1).await;

    // Through hyper with a prompt directive.
    let c = client();
    let req = an_req(&llm, &an_json(true, "please [[fault:hang]]", 10));
    assert!(timeout(Duration::from_millis(200), c.request(req))
        .await
        .is_err());
}

#[tokio::test]
async fn stall_then_cancel() {
    let llm = start(tokens(5)).await;
    let c = client();
    llm.push_fault(Fault::Stall { after_tokens: 1 });
    let resp = c
        .request(oa_req(&llm, &oa_json(true, true, "x")))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("tok 0") {
        let f = timeout(T, body.frame()).await.unwrap().unwrap().unwrap();
        got.extend_from_slice(&f.into_data().unwrap());
    }
    assert!(
        timeout(Duration::from_millis(300), body.frame())
            .await
            .is_err(),
        "stalled"
    );
    assert_eq!(llm.in_flight(), 1);
    drop(body);
    eventually("stall cancelled", || {
        llm.cancelled() == 1 && llm.in_flight() == 0
    })
    .await;
    assert_eq!(llm.completed(), 0);
}

#[tokio::test]
async fn client_drop_mid_stream_is_counted() {
    let llm = start(Behaviour {
        tokens: 1000,
        token_delay: Duration::from_millis(10),
        ..Behaviour::default()
    })
    .await;
    let c = client();
    let resp = c
        .request(an_req(&llm, &an_json(true, "x", 5000)))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("tok 1\"") {
        let f = timeout(T, body.frame()).await.unwrap().unwrap().unwrap();
        got.extend_from_slice(&f.into_data().unwrap());
    }
    assert_eq!(llm.in_flight(), 1);
    drop(body);
    eventually("cancelled", || llm.cancelled() == 1 && llm.in_flight() == 0).await;
}

// ---------------------------------------------------------------- wire variations

fn chunked_behaviour(chunking: Chunking) -> Behaviour {
    Behaviour {
        tokens: 4,
        token_text: "é€😀 ".into(),
        chunking,
        ..Behaviour::default()
    }
}

#[tokio::test]
async fn chunking_changes_writes_not_bytes() {
    let llm = start(tokens(1)).await;
    for (head, body) in [
        (RAW_OA, oa_json(true, true, "x").to_string()),
        (RAW_AN, an_json(true, "x", 100).to_string()),
    ] {
        let mut seen = Vec::new();
        for chunking in [
            Chunking::PerEvent,
            Chunking::SplitEvery(1),
            Chunking::SplitEvery(7),
            Chunking::Coalesced,
        ] {
            llm.push_fault(Fault::Tokens(chunked_behaviour(chunking)));
            let (bytes, err) = raw(llm.addr(), head, &body, T).await;
            assert!(err.is_none());
            let (_, chunks, done) = dechunk(&bytes);
            assert!(done);
            let all: Vec<u8> = chunks.concat();
            match chunking {
                Chunking::SplitEvery(n) => {
                    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.len() == n));
                }
                Chunking::Coalesced => assert_eq!(chunks.len(), 1),
                Chunking::PerEvent => {
                    assert_eq!(chunks.len(), parse_sse(&all).len());
                    assert!(chunks.iter().all(|c| c.ends_with(b"\n\n")));
                }
            }
            seen.push(normalize(&String::from_utf8(all).unwrap()));
        }
        assert!(seen.iter().all(|s| *s == seen[0]), "{seen:#?}");
        assert!(seen[0].contains("é€😀 3"));
    }
}

#[tokio::test]
async fn split_every_one_through_hyper_reassembles() {
    let llm = start(chunked_behaviour(Chunking::PerEvent)).await;
    let c = client();
    let (_, _, whole) = send(&c, oa_req(&llm, &oa_json(true, true, "x"))).await;
    llm.set_default(chunked_behaviour(Chunking::SplitEvery(1)));
    let (_, _, split) = send(&c, oa_req(&llm, &oa_json(true, true, "x"))).await;
    assert_eq!(normalize(&whole), normalize(&split));
    assert_eq!(
        oa_tokens(&parse_sse(split.as_bytes())),
        ["é€😀 0", "é€😀 1", "é€😀 2", "é€😀 3"]
    );
}

#[tokio::test]
async fn line_endings() {
    let llm = start(tokens(2)).await;
    let c = client();
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        let mut texts = Vec::new();
        for le in [LineEnding::Lf, LineEnding::CrLf, LineEnding::Cr] {
            llm.push_fault(Fault::Tokens(Behaviour {
                tokens: 2,
                quirks: Quirks {
                    line_ending: le,
                    ..Quirks::default()
                },
                ..Behaviour::default()
            }));
            let req = match provider {
                Provider::OpenAi => oa_req(&llm, &oa_json(true, true, "x")),
                _ => an_req(&llm, &an_json(true, "x", 100)),
            };
            let (_, _, text) = send(&c, req).await;
            match le {
                LineEnding::Lf => assert!(!text.contains('\r')),
                LineEnding::CrLf => {
                    assert!(text.ends_with("\r\n\r\n"));
                    assert_eq!(text.matches('\n').count(), text.matches("\r\n").count());
                }
                LineEnding::Cr => {
                    assert!(!text.contains('\n') && text.ends_with("\r\r"));
                }
            }
            texts.push(normalize(&text));
        }
        let lf = parse_sse(texts[0].as_bytes());
        assert!(lf.len() >= 6);
        assert_eq!(parse_sse(texts[1].as_bytes()), lf);
        assert_eq!(parse_sse(texts[2].as_bytes()), lf);
    }
}

#[tokio::test]
async fn comments_and_unknown_fields() {
    let llm = start(tokens(2)).await;
    let c = client();
    // Same word count (prompt tokens) as the prompt with the two directives below.
    let plain = send(&c, an_req(&llm, &an_json(true, "x [[a]] [[b]]", 100)))
        .await
        .2;
    let (_, _, odd) = send(
        &c,
        an_req(
            &llm,
            &an_json(true, "x [[comments]] [[unknown_fields]]", 100),
        ),
    )
    .await;
    assert!(odd.starts_with(": keep-alive\n\n"));
    assert!(odd.contains("x-fake-field: ignored\n") && odd.contains("event: x_fake_unknown\n"));
    let plain_ev = parse_sse(plain.as_bytes());
    let odd_ev: Vec<_> = parse_sse(odd.as_bytes())
        .into_iter()
        .filter(|(n, _)| n != "x_fake_unknown")
        .collect();
    assert_eq!(odd_ev.len(), plain_ev.len());
    for ((n1, d1), (n2, d2)) in plain_ev.iter().zip(&odd_ev) {
        assert_eq!(n1, n2);
        let mut v2: Value = serde_json::from_str(d2).unwrap();
        assert!(v2.as_object_mut().unwrap().remove("x_fake_extra").is_some());
        let mut v1: Value = serde_json::from_str(d1).unwrap();
        for v in [&mut v1, &mut v2] {
            if let Some(m) = v.pointer_mut("/message/id") {
                *m = json!("id");
            }
        }
        assert_eq!(v1, v2);
    }

    let (_, _, odd) = send(
        &c,
        oa_req(
            &llm,
            &oa_json(
                true,
                true,
                "[[comments,unknown_fields]] [[line_ending=crlf]]",
            ),
        ),
    )
    .await;
    assert!(odd.starts_with(": keep-alive\r\n\r\n"));
    let events = parse_sse(odd.as_bytes());
    assert!(events.iter().any(|(n, _)| n == "x_fake_unknown"));
    let messages: Vec<_> = events.into_iter().filter(|(n, _)| n == "message").collect();
    assert_eq!(oa_tokens(&messages), ["tok 0", "tok 1"]);
    assert_eq!(messages.last().unwrap().1, "[DONE]");
}

#[tokio::test]
async fn llama_cpp_quirk() {
    let llm = start(Behaviour {
        tokens: 2,
        quirks: Quirks {
            llama_cpp: true,
            ..Quirks::default()
        },
        ..Behaviour::default()
    })
    .await;
    let c = client();
    let (_, _, text) = send(&c, oa_req(&llm, &oa_json(true, true, "x"))).await;
    let events = parse_sse(text.as_bytes());
    let first: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": null})
    );
    let n = events.len();
    for (_, d) in &events[..n - 2] {
        assert!(
            serde_json::from_str::<Value>(d)
                .unwrap()
                .get("usage")
                .is_none(),
            "{d}"
        );
    }
    let usage: Value = serde_json::from_str(&events[n - 2].1).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 2);
    assert_eq!(events[n - 1].1, "[DONE]");

    let (_, _, text) = send(&c, an_req(&llm, &an_json(true, "x", 100))).await;
    let names: Vec<_> = parse_sse(text.as_bytes())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(!names.iter().any(|n| n == "ping"));
    assert_eq!(names.last().unwrap(), "message_stop");
}

// ---------------------------------------------------------------- connections, timing

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let llm = start(tokens(3)).await;
    let c = client();
    send(&c, oa_req(&llm, &oa_json(true, true, "x"))).await;
    send(&c, an_req(&llm, &an_json(true, "x", 100))).await;
    send(&c, oa_req(&llm, &oa_json(false, false, "x"))).await;
    assert_eq!(llm.connections_accepted(), 1);
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs
        .iter()
        .all(|r| r.connection == 1 && r.version == Version::HTTP_11));
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let llm = start(tokens(3)).await;
    let c: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let (s, _, text) = send(&c, an_req(&llm, &an_json(true, "x", 100))).await;
    assert_eq!(s, 200);
    assert_eq!(an_tokens(&parse_sse(text.as_bytes())).len(), 3);
    let (_, _, text) = send(&c, oa_req(&llm, &oa_json(true, true, "x"))).await;
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(llm.connections_accepted(), 1);
    assert!(llm.requests().iter().all(|r| r.version == Version::HTTP_2));

    // A stream the client abandons (RST_STREAM) is counted as cancelled.
    llm.push_fault(Fault::Stall { after_tokens: 1 });
    let resp = c
        .request(oa_req(&llm, &oa_json(true, true, "x")))
        .await
        .unwrap();
    let mut body = resp.into_body();
    timeout(T, body.frame()).await.unwrap().unwrap().unwrap();
    assert_eq!(llm.in_flight(), 1);
    drop(body);
    eventually("h2 stream cancelled", || {
        llm.cancelled() == 1 && llm.in_flight() == 0
    })
    .await;
}

#[tokio::test]
async fn recorded_requests() {
    let llm = start(tokens(1)).await;
    let c = client();
    send(&c, oa_req(&llm, &oa_json(true, true, "x"))).await;
    send(&c, an_req(&llm, &an_json(true, "y", 7))).await;
    let reqs = llm.requests();
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    assert_eq!(reqs[0].provider, Provider::OpenAi);
    assert_eq!(reqs[0].header("Authorization"), Some("Bearer sk-test"));
    assert!(reqs[0].headers.keys().all(|n| *n == n.to_ascii_lowercase()));
    assert_eq!(
        reqs[0].headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(reqs[0].body["model"], MODEL);
    assert_eq!(reqs[1].provider, Provider::Anthropic);
    assert_eq!(reqs[1].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(reqs[1].body["max_tokens"], 7);
    assert!(reqs[0].when <= reqs[1].when);
    llm.clear_requests();
    assert!(llm.requests().is_empty());
}

#[tokio::test]
async fn directives_in_prompt() {
    let llm = start(tokens(5)).await;
    let c = client();
    let (s, h, _) = send(
        &c,
        oa_req(
            &llm,
            &oa_json(true, true, "hi [[fault:status=429,retry_after=1]]"),
        ),
    )
    .await;
    assert_eq!(
        (s, h["retry-after"].to_str().unwrap()),
        (StatusCode::TOO_MANY_REQUESTS, "1")
    );
    let (_, _, text) = send(&c, oa_req(&llm, &oa_json(true, true, "[[tokens=2]]"))).await;
    assert_eq!(oa_tokens(&parse_sse(text.as_bytes())), ["tok 0", "tok 1"]);
    let (_, _, text) = send(
        &c,
        an_req(&llm, &an_json(true, "[[fault:eof,after=2]]", 100)),
    )
    .await;
    assert!(!text.contains("message_stop"));
    assert_eq!(an_tokens(&parse_sse(text.as_bytes())).len(), 2);
    let (_, _, text) = send(
        &c,
        an_req(
            &llm,
            &an_json(true, "[[fault:mid_stream_error,after=0]]", 100),
        ),
    )
    .await;
    assert!(text.contains("event: error"));
    // A queued fault wins over a directive.
    llm.push_fault(Fault::status(503));
    assert_eq!(
        send(
            &c,
            oa_req(&llm, &oa_json(true, true, "[[fault:status=429]]"))
        )
        .await
        .0,
        503
    );
}

#[tokio::test]
async fn ttft_and_token_delay() {
    let llm = start(tokens(3)).await;
    let c = client();
    let started = Instant::now();
    let resp = c
        .request(oa_req(
            &llm,
            &oa_json(true, false, "[[ttft_ms=250,token_delay_ms=40]]"),
        ))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "headers come at once"
    );
    let mut body = resp.into_body();
    let mut seen = String::new();
    let mut first_token = None;
    while let Some(f) = timeout(T, body.frame()).await.unwrap() {
        seen.push_str(std::str::from_utf8(&f.unwrap().into_data().unwrap()).unwrap());
        if first_token.is_none() && seen.contains("tok 0") {
            first_token = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    assert!(first_token.unwrap() >= Duration::from_millis(250));
    assert!(total >= Duration::from_millis(330), "{total:?}");
    assert!(seen.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn stop_drops_connections() {
    let llm = start(tokens(3)).await;
    let addr = llm.addr();
    let c = client();
    llm.push_fault(Fault::Stall { after_tokens: 1 });
    let resp = c
        .request(oa_req(&llm, &oa_json(true, false, "x")))
        .await
        .unwrap();
    let mut body = resp.into_body();
    llm.stop().await;
    let (bytes, err) = read_all(&mut body).await;
    assert!(String::from_utf8_lossy(&bytes).contains("tok 0"));
    assert!(err.is_some(), "the body must not end cleanly");
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn binary_serves_until_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fake-llm"))
        .args([
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--tokens",
            "2",
            "--token-delay-ms",
            "1",
            "--ttft-ms",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = timeout(T, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr: SocketAddr = line
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    let body = an_json(true, "x", 100).to_string();
    let (bytes, err) = raw(addr, RAW_AN, &body, T).await;
    assert!(err.is_none());
    let (_, chunks, done) = dechunk(&bytes);
    assert!(done);
    assert_eq!(an_tokens(&parse_sse(&chunks.concat())), ["tok 0", "tok 1"]);

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}
