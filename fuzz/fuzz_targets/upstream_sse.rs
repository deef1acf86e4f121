//! Arbitrary bytes as an upstream LLM provider's SSE stream, fed to agentd's incremental
//! parser whole and cut at arbitrary points, then every event through the OpenAI or
//! the Anthropic wire decoder.
//!
//! Input layout (see `sse_harness::split_input`): byte 0 holds flags (bit 0: Anthropic
//! rather than OpenAI; bits 2-4: largest piece), bytes 1-4 seed the piece sizes, the
//! rest is the stream. The size limits have their own target, `upstream_sse_limits`.
//!
//! Checks: no panic; whole and cut feeding give the same events and the same error;
//! events and UTF-8 errors agree with the reference SSE parser; decoders never panic,
//! turn well-formed chunks into exactly the items the provider's format says, and never
//! put upstream text in client-facing messages.

#![no_main]

use agentd::backend::sse::SseEvent;
use agentd::llm::wire::{decode_anthropic, decode_openai, StreamItem};
use agentd::llm::{ErrorKind, LlmError};
use agentd_fuzz::json_tree::{self, ParseError};
use agentd_fuzz::sse_harness::{
    check_against_reference, check_cut_feeding, check_event_size, feed_whole, split_input,
};
use agentd_fuzz::wire_oracle::{self, Item};
use libfuzzer_sys::fuzz_target;

fn item(i: &StreamItem) -> Item {
    match i {
        StreamItem::Text(t) => Item::Text(t.clone()),
        StreamItem::Usage { input, output } => Item::Usage {
            input: *input,
            output: *output,
        },
        StreamItem::Finish(r) => Item::Finish(r.clone()),
        StreamItem::Done => Item::Done,
    }
}

/// What every decoder error must look like: a fixed message, the upstream's words only
/// in the (bounded, control-free) detail.
fn check_error(e: &LlmError) {
    assert_eq!(e.backend, "fuzz");
    let fixed = e.message.starts_with("malformed stream: ")
        || e.message == format!("the provider failed mid-stream ({})", e.kind.as_str());
    assert!(
        fixed,
        "a client message with upstream text: {:?}",
        e.message
    );
    assert!(matches!(
        e.kind,
        ErrorKind::Protocol | ErrorKind::Upstream | ErrorKind::RateLimited | ErrorKind::Overloaded
    ));
    assert!(e.detail.chars().count() <= 200);
    assert!(!e.detail.chars().any(char::is_control));
}

fn check_decoders(anthropic: bool, ev: &SseEvent) {
    let mut items = Vec::new();
    let got = if anthropic {
        decode_anthropic("fuzz", ev, &mut items)
    } else {
        decode_openai("fuzz", ev, &mut items)
    };
    if let Err(e) = &got {
        check_error(e);
    }
    for item in &items {
        if let StreamItem::Text(t) = item {
            assert!(!t.is_empty(), "an empty text item");
        }
    }
    let text = if anthropic {
        ev.data.as_str()
    } else {
        ev.data.trim()
    };
    if !anthropic && text == "[DONE]" {
        assert_eq!(got, Ok(()));
        assert_eq!(items, [StreamItem::Done]);
        return;
    }
    match json_tree::parse(text.as_bytes()) {
        Err(ParseError::TooDeep | ParseError::NumberOutOfRange) => {}
        Err(ParseError::Invalid(_)) => {
            assert_eq!(
                got.map_err(|e| e.kind),
                Err(ErrorKind::Protocol),
                "{text:?} is not JSON"
            );
        }
        Ok(json) => {
            let want = if anthropic {
                wire_oracle::anthropic_expected(&ev.event, &json)
            } else {
                wire_oracle::openai_expected(&json)
            };
            if let Some(want) = want {
                assert_eq!(
                    got.map_err(|e| e.message),
                    Ok(()),
                    "a well-formed event was refused"
                );
                assert_eq!(items.iter().map(item).collect::<Vec<_>>(), want);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((flags, mut pieces, stream)) = split_input(data) else {
        return;
    };
    let (events, error) = feed_whole(stream);
    check_cut_feeding(stream, &mut pieces, &events, &error);
    check_event_size(&events);
    check_against_reference(stream, &events, &error);
    for ev in &events {
        check_decoders(flags & 1 == 1, ev);
    }
});
