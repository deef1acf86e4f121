//! The providers' wire formats: request bodies, and the events of their streams turned
//! into [`StreamItem`]s.
//!
//! Pure functions over bytes and JSON: no I/O, fuzzable, never panicking. Unknown
//! fields and event names are ignored.

use serde::Deserialize;
use serde_json::json;

use super::error::{ErrorKind, LlmError};
use super::ChatRequest;
use crate::backend::sse::SseEvent;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions, or any server speaking them (vLLM, llama.cpp, Ollama).
    Openai,
    /// Anthropic messages.
    Anthropic,
}

/// What one upstream event means.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    Text(String),
    /// Token counts, as far as known (either may come alone).
    Usage {
        input: Option<u64>,
        output: Option<u64>,
    },
    Finish(String),
    /// The end marker (`[DONE]`, `message_stop`).
    Done,
}

/// The JSON body of a streaming request.
pub fn request_body(kind: ProviderKind, model: &str, req: &ChatRequest) -> Vec<u8> {
    let body = match kind {
        ProviderKind::Openai => {
            let mut messages = Vec::with_capacity(2);
            if let Some(s) = &req.system {
                messages.push(json!({"role": "system", "content": s}));
            }
            messages.push(json!({"role": "user", "content": req.prompt}));
            let mut b = json!({
                "model": model,
                "messages": messages,
                "stream": true,
                "stream_options": {"include_usage": true},
                "max_tokens": req.max_tokens,
            });
            if let Some(t) = req.temperature {
                b["temperature"] = json!(t);
            }
            b
        }
        ProviderKind::Anthropic => {
            let mut b = json!({
                "model": model,
                "max_tokens": req.max_tokens,
                "messages": [{"role": "user", "content": req.prompt}],
                "stream": true,
            });
            if let Some(s) = &req.system {
                b["system"] = json!(s);
            }
            if let Some(t) = req.temperature {
                // Anthropic's range is 0 to 1; the protocol's is 0 to 2.
                b["temperature"] = json!((t / 2.0).clamp(0.0, 1.0));
            }
            b
        }
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[derive(Deserialize)]
struct OpenAiChunk {
    #[serde(default)]
    choices: Vec<OpenAiChoice>,
    usage: Option<OpenAiUsage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct OpenAiChoice {
    delta: Option<OpenAiDelta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct OpenAiDelta {
    content: Option<String>,
}

#[derive(Deserialize)]
struct OpenAiUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

fn protocol(provider: &str, what: &str) -> LlmError {
    LlmError::new(
        ErrorKind::Protocol,
        provider,
        format!("malformed stream: {what}"),
    )
}

fn mid_stream(kind: ErrorKind, provider: &str, e: &serde_json::Value) -> LlmError {
    LlmError::new(
        kind,
        provider,
        format!("the provider failed mid-stream ({})", kind.as_str()),
    )
    .with_detail(error_message(e))
}

/// The message of an error object, shortened and cleaned, for logs.
fn error_message(v: &serde_json::Value) -> String {
    let m = v
        .get("message")
        .and_then(|m| m.as_str())
        .or_else(|| {
            v.get("error")
                .and_then(|e| e.get("message"))
                .and_then(|m| m.as_str())
        })
        .unwrap_or("the provider reported an error");
    m.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Decodes one OpenAI stream event into `out`.
pub fn decode_openai(
    provider: &str,
    ev: &SseEvent,
    out: &mut Vec<StreamItem>,
) -> Result<(), LlmError> {
    let data = ev.data.trim();
    if data == "[DONE]" {
        out.push(StreamItem::Done);
        return Ok(());
    }
    let chunk: OpenAiChunk = serde_json::from_str(data)
        .map_err(|_| protocol(provider, "a chunk is not the expected JSON"))?;
    if let Some(e) = chunk.error {
        let ty = e.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let kind = if ty.contains("rate_limit") {
            ErrorKind::RateLimited
        } else if ty.contains("overloaded") {
            ErrorKind::Overloaded
        } else {
            ErrorKind::Upstream
        };
        return Err(mid_stream(kind, provider, &e));
    }
    if let Some(choice) = chunk.choices.into_iter().next() {
        if let Some(text) = choice.delta.and_then(|d| d.content) {
            if !text.is_empty() {
                out.push(StreamItem::Text(text));
            }
        }
        if let Some(r) = choice.finish_reason {
            out.push(StreamItem::Finish(r));
        }
    }
    if let Some(u) = chunk.usage {
        out.push(StreamItem::Usage {
            input: u.prompt_tokens,
            output: u.completion_tokens,
        });
    }
    Ok(())
}

#[derive(Deserialize)]
struct AnthropicEvent {
    #[serde(rename = "type")]
    ty: Option<String>,
    message: Option<AnthropicMessage>,
    delta: Option<AnthropicDelta>,
    usage: Option<AnthropicUsage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct AnthropicMessage {
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicDelta {
    #[serde(rename = "type")]
    ty: Option<String>,
    text: Option<String>,
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Anthropic leaves cached prompt tokens out of `input_tokens`: count them in.
    /// Saturating: the counts are the upstream's, and no count may overflow.
    fn input(&self) -> Option<u64> {
        match (
            self.input_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
        ) {
            (None, None, None) => None,
            (a, b, c) => Some(
                a.unwrap_or(0)
                    .saturating_add(b.unwrap_or(0))
                    .saturating_add(c.unwrap_or(0)),
            ),
        }
    }
}

/// Decodes one Anthropic stream event into `out`.
pub fn decode_anthropic(
    provider: &str,
    ev: &SseEvent,
    out: &mut Vec<StreamItem>,
) -> Result<(), LlmError> {
    let parsed: AnthropicEvent = serde_json::from_str(&ev.data)
        .map_err(|_| protocol(provider, "an event is not the expected JSON"))?;
    let ty = parsed.ty.as_deref().unwrap_or(ev.event.as_str());
    match ty {
        "message_start" => {
            if let Some(u) = parsed.message.and_then(|m| m.usage) {
                out.push(StreamItem::Usage {
                    input: u.input(),
                    output: None,
                });
            }
        }
        "content_block_delta" => {
            if let Some(d) = parsed.delta {
                if d.ty.as_deref() == Some("text_delta") {
                    if let Some(t) = d.text.filter(|t| !t.is_empty()) {
                        out.push(StreamItem::Text(t));
                    }
                }
            }
        }
        "message_delta" => {
            if let Some(r) = parsed.delta.and_then(|d| d.stop_reason) {
                out.push(StreamItem::Finish(r));
            }
            if let Some(u) = parsed.usage {
                out.push(StreamItem::Usage {
                    input: u.input(),
                    output: u.output_tokens,
                });
            }
        }
        "message_stop" => out.push(StreamItem::Done),
        "error" => {
            let e = parsed.error.unwrap_or_default();
            let kind = match e.get("type").and_then(|t| t.as_str()) {
                Some("overloaded_error") => ErrorKind::Overloaded,
                Some("rate_limit_error") => ErrorKind::RateLimited,
                _ => ErrorKind::Upstream,
            };
            return Err(mid_stream(kind, provider, &e));
        }
        _ => {}
    }
    Ok(())
}

/// Classifies a non-2xx answer; `body` is the (bounded) error body.
pub fn status_error(provider: &str, status: u16, body: &[u8]) -> LlmError {
    let kind = match status {
        429 => ErrorKind::RateLimited,
        529 | 503 => ErrorKind::Overloaded,
        408 => ErrorKind::Timeout,
        400..=499 => ErrorKind::Client,
        _ => ErrorKind::Upstream,
    };
    let detail = serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| error_message(v.get("error").unwrap_or(&v)))
        .unwrap_or_else(|_| "no details".to_owned());
    let mut e = LlmError::new(
        kind,
        provider,
        format!("the provider answered HTTP {status} ({})", kind.as_str()),
    )
    .with_detail(detail);
    e.status = Some(status);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn openai_chunks() {
        let mut out = Vec::new();
        decode_openai(
            "p",
            &ev(
                "",
                r#"{"choices":[{"delta":{"role":"assistant","content":null}}]}"#,
            ),
            &mut out,
        )
        .unwrap();
        decode_openai(
            "p",
            &ev(
                "",
                r#"{"x":1,"choices":[{"index":0,"delta":{"content":"Hé"},"finish_reason":null}]}"#,
            ),
            &mut out,
        )
        .unwrap();
        decode_openai(
            "p",
            &ev("", r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#),
            &mut out,
        )
        .unwrap();
        decode_openai("p", &ev("", r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#), &mut out).unwrap();
        decode_openai("p", &ev("", "[DONE]"), &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                StreamItem::Text("Hé".into()),
                StreamItem::Finish("stop".into()),
                StreamItem::Usage {
                    input: Some(3),
                    output: Some(2)
                },
                StreamItem::Done
            ]
        );
        let e = decode_openai(
            "p",
            &ev("", r#"{"error":{"message":"boom","type":"server_error"}}"#),
            &mut out,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Upstream);
        assert_eq!(e.detail, "boom");
        assert!(!e.message.contains("boom"));
        assert_eq!(
            decode_openai("p", &ev("", "{nope"), &mut out)
                .unwrap_err()
                .kind,
            ErrorKind::Protocol
        );
    }

    #[test]
    fn anthropic_events() {
        let mut out = Vec::new();
        for (e, d) in [
            (
                "message_start",
                r#"{"type":"message_start","message":{"usage":{"input_tokens":7,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            ("ping", r#"{"type": "ping"}"#),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ] {
            decode_anthropic("a", &ev(e, d), &mut out).unwrap();
        }
        assert_eq!(
            out,
            vec![
                StreamItem::Usage {
                    input: Some(7),
                    output: None
                },
                StreamItem::Text("hi".into()),
                StreamItem::Finish("end_turn".into()),
                StreamItem::Usage {
                    input: None,
                    output: Some(9)
                },
                StreamItem::Done
            ]
        );
        let e = decode_anthropic(
            "a",
            &ev(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ),
            &mut out,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Overloaded);
    }

    #[test]
    fn huge_token_counts_saturate() {
        let mut out = Vec::new();
        let data = format!(
            r#"{{"type":"message_start","message":{{"usage":{{"input_tokens":{},"cache_read_input_tokens":1}}}}}}"#,
            u64::MAX
        );
        decode_anthropic("a", &ev("message_start", &data), &mut out).unwrap();
        assert_eq!(
            out,
            vec![StreamItem::Usage {
                input: Some(u64::MAX),
                output: None
            }]
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(status_error("p", 429, b"{}").kind, ErrorKind::RateLimited);
        assert_eq!(status_error("p", 529, b"").kind, ErrorKind::Overloaded);
        let e = status_error("p", 401, br#"{"error":{"message":"bad key sk-123"}}"#);
        assert_eq!(e.kind, ErrorKind::Client);
        assert!(
            !e.message.contains("sk-123"),
            "upstream words stay out of client messages"
        );
        assert_eq!(status_error("p", 500, b"<html>").kind, ErrorKind::Upstream);
        assert!(!status_error("p", 400, b"").is_retryable());
        assert!(status_error("p", 502, b"").is_retryable());
    }
}
