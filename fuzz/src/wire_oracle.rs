//! The providers' stream formats (OpenAI chat-completion chunks, Anthropic message
//! events), restated over a [`Json`](crate::json_tree::Json) tree: for a well-formed
//! event, the items a decoder must produce.
//!
//! Written from the providers' documented formats, not from agentd's decoders, so the
//! fuzz target can hold them to it. It answers only for events whose known fields have
//! the documented types (and appear once); for anything else it has no verdict, and
//! the target then checks only that decoding neither panics nor leaks upstream text.

use crate::json_tree::{Json, Num};

/// What one upstream event means, as the formats say.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Text(String),
    Usage {
        input: Option<u64>,
        output: Option<u64>,
    },
    Finish(String),
    Done,
}

fn field<'a>(obj: &'a Json, key: &str) -> Option<&'a Json> {
    obj.get(key).filter(|v| **v != Json::Null)
}

/// `null`, absent, or what `ok` accepts.
fn optional(obj: &Json, key: &str, ok: impl Fn(&Json) -> bool) -> bool {
    field(obj, key).is_none_or(ok)
}

fn is_str(v: &Json) -> bool {
    matches!(v, Json::Str(_))
}

fn is_u64(v: &Json) -> bool {
    matches!(v, Json::Num(Num::U(_)))
}

fn u64_of(obj: &Json, key: &str) -> Option<u64> {
    match field(obj, key) {
        Some(Json::Num(Num::U(u))) => Some(*u),
        _ => None,
    }
}

fn str_of(obj: &Json, key: &str) -> Option<String> {
    field(obj, key).and_then(Json::as_str).map(str::to_owned)
}

/// Objects whose known keys appear once: the shape serde's derived readers accept.
fn object_with(v: &Json, known: &[&str]) -> bool {
    v.is_object() && known.iter().all(|k| v.count(k) <= 1)
}

/// The items an OpenAI chunk must give, when it is a well-formed chunk without an error.
pub fn openai_expected(data: &Json) -> Option<Vec<Item>> {
    let delta_ok = |d: &Json| object_with(d, &["content"]) && optional(d, "content", is_str);
    let choice_ok = |c: &Json| {
        object_with(c, &["delta", "finish_reason"])
            && optional(c, "delta", delta_ok)
            && optional(c, "finish_reason", is_str)
    };
    let usage_ok = |u: &Json| {
        object_with(u, &["prompt_tokens", "completion_tokens"])
            && optional(u, "prompt_tokens", is_u64)
            && optional(u, "completion_tokens", is_u64)
    };
    let well_formed = object_with(data, &["choices", "usage", "error"])
        && data
            .get("choices")
            .is_none_or(|c| matches!(c, Json::Arr(a) if a.iter().all(choice_ok)))
        && optional(data, "usage", usage_ok)
        && field(data, "error").is_none();
    if !well_formed {
        return None;
    }
    let mut items = Vec::new();
    if let Some(Json::Arr(choices)) = data.get("choices") {
        if let Some(c) = choices.first() {
            if let Some(t) = field(c, "delta").and_then(|d| str_of(d, "content")) {
                if !t.is_empty() {
                    items.push(Item::Text(t));
                }
            }
            if let Some(r) = str_of(c, "finish_reason") {
                items.push(Item::Finish(r));
            }
        }
    }
    if let Some(u) = field(data, "usage") {
        items.push(Item::Usage {
            input: u64_of(u, "prompt_tokens"),
            output: u64_of(u, "completion_tokens"),
        });
    }
    Some(items)
}

const USAGE_KEYS: [&str; 4] = [
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
];

/// Prompt tokens: Anthropic counts cached ones apart; the total never wraps.
fn anthropic_input(u: &Json) -> Option<u64> {
    let parts = [USAGE_KEYS[0], USAGE_KEYS[2], USAGE_KEYS[3]].map(|k| u64_of(u, k));
    if parts.iter().all(Option::is_none) {
        return None;
    }
    Some(
        parts
            .iter()
            .flatten()
            .fold(0u64, |a, b| a.saturating_add(*b)),
    )
}

/// The items an Anthropic event must give, when it is well formed and not an error.
pub fn anthropic_expected(event: &str, data: &Json) -> Option<Vec<Item>> {
    let usage_ok =
        |u: &Json| object_with(u, &USAGE_KEYS) && USAGE_KEYS.iter().all(|k| optional(u, k, is_u64));
    let message_ok = |m: &Json| object_with(m, &["usage"]) && optional(m, "usage", usage_ok);
    let delta_ok = |d: &Json| {
        object_with(d, &["type", "text", "stop_reason"])
            && ["type", "text", "stop_reason"]
                .iter()
                .all(|k| optional(d, k, is_str))
    };
    let well_formed = object_with(data, &["type", "message", "delta", "usage", "error"])
        && optional(data, "type", is_str)
        && optional(data, "message", message_ok)
        && optional(data, "delta", delta_ok)
        && optional(data, "usage", usage_ok);
    if !well_formed {
        return None;
    }
    let ty = str_of(data, "type").unwrap_or_else(|| event.to_owned());
    let mut items = Vec::new();
    match ty.as_str() {
        "message_start" => {
            if let Some(u) = field(data, "message").and_then(|m| field(m, "usage")) {
                items.push(Item::Usage {
                    input: anthropic_input(u),
                    output: None,
                });
            }
        }
        "content_block_delta" => {
            if let Some(d) = field(data, "delta") {
                if str_of(d, "type").as_deref() == Some("text_delta") {
                    if let Some(t) = str_of(d, "text").filter(|t| !t.is_empty()) {
                        items.push(Item::Text(t));
                    }
                }
            }
        }
        "message_delta" => {
            if let Some(r) = field(data, "delta").and_then(|d| str_of(d, "stop_reason")) {
                items.push(Item::Finish(r));
            }
            if let Some(u) = field(data, "usage") {
                items.push(Item::Usage {
                    input: anthropic_input(u),
                    output: u64_of(u, "output_tokens"),
                });
            }
        }
        "message_stop" => items.push(Item::Done),
        "error" => return None,
        _ => {}
    }
    Some(items)
}
