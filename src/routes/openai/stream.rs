//! Sentient events read back, and OpenAI chunks written: the translation of one answer.
//!
//! [`EventReader`] classifies each Sentient event (one compact JSON line, as the
//! answer's queue writes them with `Framing::Lines`): chunks of the answer's first text
//! stream are its text; `done` and `atomic.error` end it; every other event (JSON
//! events, text blocks, other text streams) is an extension event, passed on whole.
//! [`ChunkWriter`] writes `chat.completion.chunk` SSE frames: text deltas in order (the
//! first chunk carries `role`), extension events under `sentient_events` with an empty
//! delta, `finish_reason: "stop"`, the usage chunk when asked, `data: [DONE]`; or an
//! in-stream `{"error":…}` and no `[DONE]`. Pure: it appends bytes to a caller's
//! buffer and must never do I/O or decide how an answer ends.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use serde::Deserialize;

use super::error::write_error_object;
use crate::protocol::events::write_json_str;

/// Token estimate used for `usage`: characters / 4, rounded up (about what OpenAI's
/// tokenizers average on English text; agentd has no tokenizer for the agent's model).
pub fn estimate_tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

/// One Sentient event, classified.
#[derive(Debug, PartialEq)]
pub enum SentientEvent<'a> {
    /// A chunk of the answer's text (the first text stream).
    Text(Cow<'a, str>),
    /// Any other event, its JSON as sent (a compact object).
    Extension(&'a [u8]),
    /// `atomic.error`.
    Error { message: String, code: i64 },
    /// `atomic.done`.
    Done,
    /// Nothing to send (the answer stream's closing marker).
    Skip,
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    content_type: Cow<'a, str>,
    #[serde(borrow, default)]
    stream_id: Option<Cow<'a, str>>,
    #[serde(default)]
    is_complete: bool,
    #[serde(default)]
    content: Option<serde_json::Value>,
}

/// Classifies an answer's events in order; remembers which text stream is the answer.
#[derive(Debug, Default)]
pub struct EventReader {
    answer_stream: Option<String>,
}

impl EventReader {
    /// Classifies one event line (without its newline).
    pub fn read<'a>(&mut self, line: &'a [u8]) -> SentientEvent<'a> {
        let Ok(ev) = serde_json::from_slice::<RawEvent<'_>>(line) else {
            // The handler writes only valid events; anything else is passed on whole.
            return SentientEvent::Extension(line);
        };
        match &*ev.content_type {
            "chunked.text" => {
                let id = ev.stream_id.unwrap_or_default();
                let answer = self.answer_stream.get_or_insert_with(|| id.to_string());
                if *answer != id {
                    return SentientEvent::Extension(line);
                }
                if ev.is_complete {
                    return SentientEvent::Skip;
                }
                match ev.content {
                    Some(serde_json::Value::String(s)) => SentientEvent::Text(Cow::Owned(s)),
                    _ => SentientEvent::Skip,
                }
            }
            "atomic.error" => {
                let c = ev.content.unwrap_or_default();
                SentientEvent::Error {
                    message: c["error_message"]
                        .as_str()
                        .unwrap_or("The agent failed")
                        .to_owned(),
                    code: c["error_code"].as_i64().unwrap_or(500),
                }
            }
            "atomic.done" => SentientEvent::Done,
            _ => SentientEvent::Extension(line),
        }
    }
}

/// Writes one answer's `chat.completion.chunk` frames.
#[derive(Debug)]
pub struct ChunkWriter {
    /// `{"id":…,"object":"chat.completion.chunk","created":…,"model":…,`
    head: Vec<u8>,
    role_sent: bool,
    completion_chars: usize,
    prompt_chars: usize,
    include_usage: bool,
}

impl ChunkWriter {
    pub fn new(
        id: &str,
        created: u64,
        model: &str,
        prompt_chars: usize,
        include_usage: bool,
    ) -> Self {
        let mut head = BytesMut::new();
        head.put_slice(b"{\"id\":");
        write_json_str(&mut head, id);
        head.put_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        head.put_slice(itoa::Buffer::new().format(created).as_bytes());
        head.put_slice(b",\"model\":");
        write_json_str(&mut head, model);
        head.put_u8(b',');
        ChunkWriter {
            head: head.to_vec(),
            role_sent: false,
            completion_chars: 0,
            prompt_chars,
            include_usage,
        }
    }

    fn open(&mut self, out: &mut BytesMut) {
        out.put_slice(b"data: ");
        out.put_slice(&self.head);
        out.put_slice(b"\"choices\":[{\"index\":0,\"delta\":{");
        if !std::mem::replace(&mut self.role_sent, true) {
            out.put_slice(b"\"role\":\"assistant\",\"content\":\"\"");
        }
    }

    /// A delta of the answer's text.
    pub fn text(&mut self, out: &mut BytesMut, text: &str) {
        if text.is_empty() {
            return;
        }
        self.completion_chars += text.chars().count();
        let first = !self.role_sent;
        self.open(out);
        if first {
            // Replace the role's empty content with the text.
            out.truncate(out.len() - b"\"\"".len());
        } else {
            out.put_slice(b"\"content\":");
        }
        write_json_str(out, text);
        out.put_slice(b"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    }

    /// An extension event, under `sentient_events`, with an empty delta.
    pub fn extension(&mut self, out: &mut BytesMut, event: &[u8]) {
        self.open(out);
        out.put_slice(b"},\"logprobs\":null,\"finish_reason\":null}],\"sentient_events\":[");
        out.put_slice(event);
        out.put_slice(b"]}\n\n");
    }

    /// The end of a successful answer: `finish_reason: "stop"`, the usage chunk when
    /// asked, `[DONE]`.
    pub fn stop(&mut self, out: &mut BytesMut) {
        self.open(out);
        out.put_slice(b"},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n");
        if self.include_usage {
            out.put_slice(b"data: ");
            out.put_slice(&self.head);
            out.put_slice(b"\"choices\":[],\"usage\":");
            write_usage(out, self.prompt_chars, self.completion_chars);
            out.put_slice(b"}\n\n");
        }
        out.put_slice(b"data: [DONE]\n\n");
    }

    /// A failed answer: an in-stream error object (and no `[DONE]` after it).
    pub fn error(&mut self, out: &mut BytesMut, message: &str) {
        out.put_slice(b"data: ");
        write_error_object(out, message, "server_error", None, "agent_error");
        out.put_slice(b"\n\n");
    }
}

/// `{"prompt_tokens":…,"completion_tokens":…,"total_tokens":…}` (see
/// [`estimate_tokens`]).
pub fn write_usage(out: &mut BytesMut, prompt_chars: usize, completion_chars: usize) {
    let (p, c) = (
        estimate_tokens(prompt_chars),
        estimate_tokens(completion_chars),
    );
    let mut n = itoa::Buffer::new();
    out.put_slice(b"{\"prompt_tokens\":");
    out.put_slice(n.format(p).as_bytes());
    out.put_slice(b",\"completion_tokens\":");
    out.put_slice(n.format(c).as_bytes());
    out.put_slice(b",\"total_tokens\":");
    out.put_slice(n.format(p + c).as_bytes());
    out.put_u8(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::events::{write_event, EventBody, Framing};
    use serde_json::{json, Value};

    fn line(body: EventBody<'_>, name: &str) -> Vec<u8> {
        let mut b = BytesMut::new();
        write_event(
            &mut b,
            Framing::Lines,
            name,
            ulid::Ulid::nil(),
            "src",
            &body,
        );
        b.truncate(b.len() - 1);
        b.to_vec()
    }

    fn chunk(stream: &str, content: &str, is_complete: bool) -> Vec<u8> {
        line(
            EventBody::Chunk {
                stream_id: stream,
                is_complete,
                content,
            },
            "S",
        )
    }

    /// The `data:` payloads of SSE frames.
    fn frames(out: &[u8]) -> Vec<String> {
        let s = std::str::from_utf8(out).unwrap();
        assert!(s.ends_with("\n\n"));
        s.split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| f.strip_prefix("data: ").unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_first_text_stream_is_the_answer_and_everything_else_is_an_extension() {
        let mut r = EventReader::default();
        let a = chunk("aaaaaaaaaa", "hi \u{2028}", false);
        assert_eq!(r.read(&a), SentientEvent::Text("hi \u{2028}".into()));
        let b = chunk("bbbbbbbbbb", "other", false);
        assert_eq!(r.read(&b), SentientEvent::Extension(&b));
        assert_eq!(r.read(&chunk("aaaaaaaaaa", " ", true)), SentientEvent::Skip);
        let j = line(EventBody::Json(br#"{"k":1}"#), "ANALYSIS");
        assert_eq!(r.read(&j), SentientEvent::Extension(&j));
        let t = line(EventBody::TextBlock("note"), "NOTE");
        assert_eq!(r.read(&t), SentientEvent::Extension(&t));
        let e = line(
            EventBody::Error {
                message: "upstream said no",
                code: 502,
                details: None,
            },
            "error",
        );
        assert_eq!(
            r.read(&e),
            SentientEvent::Error {
                message: "upstream said no".into(),
                code: 502
            }
        );
        assert_eq!(r.read(&line(EventBody::Done, "done")), SentientEvent::Done);
    }

    #[test]
    fn chunks_carry_the_role_first_then_deltas_then_stop_usage_and_done() {
        let mut w = ChunkWriter::new("chatcmpl-1", 7, "agentd", 10, true);
        let mut out = BytesMut::new();
        w.extension(&mut out, br#"{"content_type":"atomic.json"}"#);
        w.text(&mut out, "Hello \"w\"");
        w.text(&mut out, "");
        w.text(&mut out, "!");
        w.stop(&mut out);
        let f = frames(&out);
        assert_eq!(f.len(), 6);
        let v: Vec<Value> = f[..5]
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        assert_eq!(v[0]["object"], "chat.completion.chunk");
        assert_eq!(v[0]["id"], "chatcmpl-1");
        assert_eq!(v[0]["created"], 7);
        assert_eq!(v[0]["model"], "agentd");
        assert_eq!(
            v[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(
            v[0]["sentient_events"],
            json!([{"content_type": "atomic.json"}])
        );
        assert_eq!(
            v[1]["choices"][0]["delta"],
            json!({"content": "Hello \"w\""})
        );
        assert_eq!(v[2]["choices"][0]["delta"], json!({"content": "!"}));
        assert_eq!(v[3]["choices"][0]["delta"], json!({}));
        assert_eq!(v[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(v[4]["choices"], json!([]));
        // 10 prompt characters: 3 tokens; 10 answer characters: 3 tokens.
        assert_eq!(
            v[4]["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})
        );
        assert_eq!(f[5], "[DONE]");
    }

    #[test]
    fn the_first_text_chunk_carries_the_role_and_no_usage_unless_asked() {
        let mut w = ChunkWriter::new("c", 1, "m", 1, false);
        let mut out = BytesMut::new();
        w.text(&mut out, "x");
        w.stop(&mut out);
        let f = frames(&out);
        let first: Value = serde_json::from_str(&f[0]).unwrap();
        assert_eq!(
            first["choices"][0]["delta"],
            json!({"role": "assistant", "content": "x"})
        );
        assert_eq!(f.len(), 3);
        assert_eq!(f[2], "[DONE]");
    }

    #[test]
    fn an_error_is_an_in_stream_error_object() {
        let mut w = ChunkWriter::new("c", 1, "m", 1, true);
        let mut out = BytesMut::new();
        w.text(&mut out, "partial");
        w.error(&mut out, "The agent did not answer in time");
        let f = frames(&out);
        assert_eq!(f.len(), 2);
        let e: Value = serde_json::from_str(&f[1]).unwrap();
        assert_eq!(
            e,
            json!({"error": {"message": "The agent did not answer in time", "type": "server_error",
                   "param": null, "code": "agent_error"}})
        );
    }

    #[test]
    fn token_estimate_rounds_up() {
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(1), 1);
        assert_eq!(estimate_tokens(8), 2);
        assert_eq!(estimate_tokens(9), 3);
    }
}
