//! The OpenAI Chat Completions wire format: the `chat.completion.chunk` SSE stream
//! (`data:` lines only, ending in `data: [DONE]`), the non-streaming `chat.completion`
//! object, and OpenAI's error JSON.

use std::collections::VecDeque;
use std::time::Duration;

use crate::answer::{extra, js, Answer, StreamFault};
use crate::sse::{Control, SseWriter, Step};

/// The SSE body for a streaming request.
pub(crate) fn stream(a: &Answer, include_usage: bool) -> VecDeque<Step> {
    let q = a.behaviour.quirks;
    let x = extra(q.unknown_fields);
    let usage_null = if include_usage && !q.llama_cpp {
        r#","usage":null"#
    } else {
        ""
    };
    let head = format!(
        r#"{{"id":{},"object":"chat.completion.chunk","created":{},"model":{},"system_fingerprint":null,"choices":["#,
        js(&a.id),
        a.created,
        js(&a.model)
    );
    let chunk = |choice: &str| format!("{head}{choice}]{usage_null}{x}}}");
    let mut w = SseWriter::new(q);

    let first_content = if q.llama_cpp { "null" } else { r#""""# };
    w.event(
        None,
        &chunk(&format!(
            r#"{{"index":0,"delta":{{"role":"assistant","content":{first_content}}},"logprobs":null,"finish_reason":null}}"#
        )),
        Duration::ZERO,
    );
    let sent = a.sent();
    for i in 0..sent {
        let choice = format!(
            r#"{{"index":0,"delta":{{"content":{}}},"logprobs":null,"finish_reason":null}}"#,
            js(&a.behaviour.token(i))
        );
        w.event(None, &chunk(&choice), a.delay(i));
    }
    match a.fault {
        None => {
            let finish = if a.truncated { "length" } else { "stop" };
            let tail = if sent == 0 {
                a.delay(0)
            } else {
                Duration::ZERO
            };
            w.event(
                None,
                &chunk(&format!(
                    r#"{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"{finish}"}}"#
                )),
                tail,
            );
            if include_usage {
                let usage = format!(
                    r#"{{"id":{},"object":"chat.completion.chunk","created":{},"model":{},"system_fingerprint":null,"choices":[],"usage":{}{x}}}"#,
                    js(&a.id),
                    a.created,
                    js(&a.model),
                    usage_json(a.prompt_tokens, a.n as u64)
                );
                w.event(None, &usage, Duration::ZERO);
            }
            w.event(None, "[DONE]", Duration::ZERO);
        }
        Some(StreamFault::MidStreamError(_)) => {
            let err = format!(
                r#"{{"error":{{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}{x}}}"#
            );
            w.event(None, &err, a.delay(sent));
        }
        Some(StreamFault::Eof(_)) => {}
        Some(StreamFault::Reset(_)) => w.control(Control::Reset),
        Some(StreamFault::Stall(_)) => w.control(Control::Stall),
    }
    w.finish(a.behaviour.chunking)
}

fn usage_json(prompt: u64, completion: u64) -> String {
    format!(
        r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}"#,
        prompt + completion
    )
}

/// The `chat.completion` object for a non-streaming request.
pub(crate) fn completion(a: &Answer) -> String {
    let finish = if a.truncated { "length" } else { "stop" };
    format!(
        r#"{{"id":{},"object":"chat.completion","created":{},"model":{},"system_fingerprint":null,"choices":[{{"index":0,"message":{{"role":"assistant","content":{},"refusal":null}},"logprobs":null,"finish_reason":"{finish}"}}],"usage":{}{}}}"#,
        js(&a.id),
        a.created,
        js(&a.model),
        js(&a.behaviour.text(a.n)),
        usage_json(a.prompt_tokens, a.n as u64),
        extra(a.behaviour.quirks.unknown_fields)
    )
}

/// OpenAI's error JSON: `{"error":{"message":…,"type":…,"param":…,"code":…}}`.
pub(crate) fn error(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> String {
    let opt = |v: Option<&str>| v.map_or_else(|| "null".to_owned(), js);
    format!(
        r#"{{"error":{{"message":{},"type":{},"param":{},"code":{}}}}}"#,
        js(message),
        js(kind),
        opt(param),
        opt(code)
    )
}

/// The error body OpenAI sends with an HTTP status.
pub(crate) fn status_error(status: u16) -> String {
    let (message, kind, code) = match status {
        400 => (
            "Invalid request.",
            "invalid_request_error",
            "invalid_request",
        ),
        401 => (
            "Incorrect API key provided.",
            "invalid_request_error",
            "invalid_api_key",
        ),
        403 => (
            "You are not allowed to access this resource.",
            "invalid_request_error",
            "unsupported_country_region_territory",
        ),
        404 => (
            "The model does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        ),
        429 => (
            "Rate limit reached for requests. Please try again later.",
            "requests",
            "rate_limit_exceeded",
        ),
        500 => (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            "internal_error",
        ),
        502 => ("Bad gateway.", "server_error", "bad_gateway"),
        503 => (
            "The server is overloaded or not ready yet.",
            "server_error",
            "service_unavailable",
        ),
        529 => ("The server is overloaded.", "server_error", "overloaded"),
        s if s >= 500 => ("Server error.", "server_error", "server_error"),
        _ => ("Request failed.", "invalid_request_error", "request_failed"),
    };
    error(message, kind, None, Some(code))
}
