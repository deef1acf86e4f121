//! What one chat request is answered with, independent of the provider: the resolved
//! [`Behaviour`], the streaming fault if any, token counts, and small JSON helpers shared by
//! the provider modules.

use std::time::Duration;

use serde_json::Value;

use crate::behaviour::Behaviour;

/// A fault that happens inside a (streaming or not) answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamFault {
    MidStreamError(usize),
    Eof(usize),
    Reset(usize),
    Stall(usize),
}

impl StreamFault {
    pub(crate) fn after(self) -> usize {
        match self {
            StreamFault::MidStreamError(n)
            | StreamFault::Eof(n)
            | StreamFault::Reset(n)
            | StreamFault::Stall(n) => n,
        }
    }
}

/// Everything a provider module needs to render one answer.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub prompt_tokens: u64,
    /// Content tokens of the full answer (after `max_tokens` truncation).
    pub n: usize,
    /// Whether `max_tokens` cut the answer short.
    pub truncated: bool,
    pub behaviour: Behaviour,
    pub fault: Option<StreamFault>,
}

impl Answer {
    /// Tokens actually sent before the answer ends or the fault strikes.
    pub(crate) fn sent(&self) -> usize {
        match self.fault {
            Some(f) => f.after().min(self.n),
            None => self.n,
        }
    }

    /// Delay before the event at content position `i` (token `i`, or whatever comes after
    /// the last token when `i` is past it): ttft for the first, token_delay after that.
    pub(crate) fn delay(&self, i: usize) -> Duration {
        if i == 0 {
            self.behaviour.ttft
        } else {
            self.behaviour.token_delay
        }
    }
}

/// A JSON string literal.
pub(crate) fn js(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// The extra top-level key of the `unknown_fields` quirk (empty when off).
pub(crate) fn extra(on: bool) -> &'static str {
    if on {
        r#","x_fake_extra":{"ignored":[1,"two",null],"nested":{"deep":true}}"#
    } else {
        ""
    }
}

/// The deterministic prompt-token count reported in usage: the number of
/// whitespace-separated words in all message texts (string contents and `text` fields of
/// content blocks), plus Anthropic's top-level `system`.
pub fn prompt_tokens(body: &Value) -> u64 {
    let mut words = 0u64;
    if let Some(system) = body.get("system") {
        words += content_words(system);
    }
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for m in messages {
            if let Some(c) = m.get("content") {
                words += content_words(c);
            }
        }
    }
    words
}

fn content_words(c: &Value) -> u64 {
    match c {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .map(|s| s.split_whitespace().count() as u64)
            .sum(),
        _ => 0,
    }
}

/// The text of the last `"role":"user"` message (string content or its text blocks
/// joined), where prompt directives are looked for.
pub(crate) fn last_user_text(body: &Value) -> String {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return String::new();
    };
    let Some(last) = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return String::new();
    };
    match last.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_words() {
        let body = json!({
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": "hello there  world"},
                {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
                {"role": "user", "content": [{"type": "text", "text": "a b"}, {"type": "image"}]}
            ]
        });
        assert_eq!(prompt_tokens(&body), 2 + 3 + 1 + 2);
        assert_eq!(last_user_text(&body), "a b");
        assert_eq!(prompt_tokens(&json!({})), 0);
    }
}
