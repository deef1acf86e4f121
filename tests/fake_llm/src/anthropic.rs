//! The Anthropic Messages wire format: the named-event SSE stream (`message_start` …
//! `message_stop`), the non-streaming `message` object, and Anthropic's error JSON.

use std::collections::VecDeque;
use std::time::Duration;

use crate::answer::{extra, js, Answer, StreamFault};
use crate::sse::{Control, SseWriter, Step};

/// The SSE body for a streaming request.
pub(crate) fn stream(a: &Answer) -> VecDeque<Step> {
    let q = a.behaviour.quirks;
    let x = extra(q.unknown_fields);
    let mut w = SseWriter::new(q);
    let now = Duration::ZERO;

    w.event(
        Some("message_start"),
        &format!(
            r#"{{"type":"message_start","message":{{"id":{},"type":"message","role":"assistant","content":[],"model":{},"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":{},"output_tokens":1}}}}{x}}}"#,
            js(&a.id),
            js(&a.model),
            a.prompt_tokens
        ),
        now,
    );
    w.event(
        Some("content_block_start"),
        &format!(
            r#"{{"type":"content_block_start","index":0,"content_block":{{"type":"text","text":""}}{x}}}"#
        ),
        now,
    );
    if !q.llama_cpp {
        w.event(Some("ping"), &format!(r#"{{"type": "ping"{x}}}"#), now);
    }
    let sent = a.sent();
    for i in 0..sent {
        w.event(
            Some("content_block_delta"),
            &format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{}}}{x}}}"#,
                js(&a.behaviour.token(i))
            ),
            a.delay(i),
        );
    }
    match a.fault {
        None => {
            let tail = if sent == 0 { a.delay(0) } else { now };
            w.event(
                Some("content_block_stop"),
                &format!(r#"{{"type":"content_block_stop","index":0{x}}}"#),
                tail,
            );
            w.event(
                Some("message_delta"),
                &format!(
                    r#"{{"type":"message_delta","delta":{{"stop_reason":"{}","stop_sequence":null}},"usage":{{"output_tokens":{}}}{x}}}"#,
                    stop_reason(a),
                    a.n
                ),
                now,
            );
            w.event(
                Some("message_stop"),
                &format!(r#"{{"type":"message_stop"{x}}}"#),
                now,
            );
        }
        Some(StreamFault::MidStreamError(_)) => {
            w.event(
                Some("error"),
                &format!(
                    r#"{{"type":"error","error":{{"type":"overloaded_error","message":"Overloaded"}}{x}}}"#
                ),
                a.delay(sent),
            );
        }
        Some(StreamFault::Eof(_)) => {}
        Some(StreamFault::Reset(_)) => w.control(Control::Reset),
        Some(StreamFault::Stall(_)) => w.control(Control::Stall),
    }
    w.finish(a.behaviour.chunking)
}

fn stop_reason(a: &Answer) -> &'static str {
    if a.truncated {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// The `message` object for a non-streaming request.
pub(crate) fn message(a: &Answer) -> String {
    format!(
        r#"{{"id":{},"type":"message","role":"assistant","model":{},"content":[{{"type":"text","text":{}}}],"stop_reason":"{}","stop_sequence":null,"usage":{{"input_tokens":{},"output_tokens":{}}}{}}}"#,
        js(&a.id),
        js(&a.model),
        js(&a.behaviour.text(a.n)),
        stop_reason(a),
        a.prompt_tokens,
        a.n,
        extra(a.behaviour.quirks.unknown_fields)
    )
}

/// Anthropic's error JSON: `{"type":"error","error":{"type":…,"message":…}}`.
pub(crate) fn error(kind: &str, message: &str) -> String {
    format!(
        r#"{{"type":"error","error":{{"type":{},"message":{}}}}}"#,
        js(kind),
        js(message)
    )
}

/// The error body Anthropic sends with an HTTP status.
pub(crate) fn status_error(status: u16) -> String {
    let (kind, message) = match status {
        400 => ("invalid_request_error", "Invalid request."),
        401 => ("authentication_error", "invalid x-api-key"),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => (
            "not_found_error",
            "The requested resource could not be found.",
        ),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        429 => (
            "rate_limit_error",
            "Number of requests has exceeded your rate limit. Please try again later.",
        ),
        529 => ("overloaded_error", "Overloaded"),
        s if s >= 500 => ("api_error", "Internal server error"),
        _ => ("invalid_request_error", "Request failed."),
    };
    error(kind, message)
}
