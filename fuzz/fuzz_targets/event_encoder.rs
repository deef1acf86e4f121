//! A script of agent calls (text blocks, JSON objects, errors, text streams and their
//! chunks, completion) through agentd's `ResponseHandler` and event encoder, with every
//! framing; the bytes that come out of the event queue are judged by a strict framing
//! check, the reference SSE parser and serde_json.
//!
//! Checks: every call succeeds or fails exactly as the protocol says; the output is
//! UTF-8 with no CR and none of the characters Python's `splitlines` breaks on besides
//! the framing LFs (so no raw U+2028/U+2029/U+0085); each event is exactly
//! `event: <name>\ndata: <json>\n\n` (or the `/stream` and WebSocket framings), parses
//! the same with the reference SSE parser, and its JSON has the protocol's keys in the
//! protocol's order with the original strings and values back; ids strictly increase;
//! streams are closed in creation order before exactly one `done`, last.

#![no_main]

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use agentd::protocol::events::Framing;
use agentd::protocol::queue::{event_queue, EventSource, Next, QueueLimits};
use agentd::protocol::{ProtocolError, ResponseHandler, TextStream};
use agentd_fuzz::json_tree::{self, Json, Num};
use agentd_fuzz::sse_reference::{self, Outcome};
use agentd_fuzz::{is_python_line_break, ready_now};
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Fragments that have broken SSE encoders: line breaks of every kind, characters
/// sharing lead bytes with the escaped ones, quotes, controls, surrogate-range text.
const NASTY: &[&str] = &[
    "\u{2028}",
    "\u{2029}",
    "\u{85}",
    "\r\n",
    "\r",
    "\n",
    "\n\n",
    "\"",
    "\\",
    "\0",
    "\u{7f}",
    "\u{1b}",
    "\u{0b}",
    "\u{0c}",
    "\u{1c}",
    "\u{1e}",
    "\u{2026}",
    "\u{a9}",
    "\u{c2}",
    "\u{e2}\u{80}",
    "data: x",
    "event: done",
    ": comment",
    "😀",
    "\u{feff}",
    "\u{fffd}",
    "\u{10ffff}",
    "\\u2028",
    "</script>",
];

const NAMES: &[&str] = &[
    "RESPONSE",
    "FINAL_RESPONSE",
    "SOURCES",
    "error",
    "done",
    " x ",
    "a:b",
];

/// A string that is often made of [`NASTY`] fragments.
#[derive(Debug)]
struct Text(String);

impl<'a> Arbitrary<'a> for Text {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut s = String::new();
        for _ in 0..u.int_in_range(0..=6)? {
            if u.ratio(1, 3)? {
                s.push_str(u.choose(NASTY)?);
            } else {
                s.push_str(<&str>::arbitrary(u)?);
            }
        }
        Ok(Text(s))
    }
}

/// An event name: usually a usual one, sometimes anything.
#[derive(Debug)]
struct Name(String);

impl<'a> Arbitrary<'a> for Name {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Name(match u.int_in_range(0..=3)? {
            0 => Text::arbitrary(u)?.0,
            1 => "x".repeat(u.int_in_range(250..=260)?),
            _ => (*u.choose(NAMES)?).to_owned(),
        }))
    }
}

/// A JSON value (finite numbers only), nested at most a few levels.
#[derive(Debug)]
struct Value(serde_json::Value);

fn json_value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<serde_json::Value> {
    use serde_json::Value as V;
    let kinds = if depth == 0 { 5 } else { 7 };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => V::Null,
        1 => V::Bool(u.arbitrary()?),
        2 => match u.int_in_range(0..=2)? {
            0 => V::from(u.arbitrary::<u64>()?),
            1 => V::from(u.arbitrary::<i64>()?),
            _ => serde_json::Number::from_f64(u.arbitrary()?).map_or(V::Null, V::Number),
        },
        3 | 4 => V::String(Text::arbitrary(u)?.0),
        5 => {
            let n = u.int_in_range(0..=4)?;
            V::Array(
                (0..n)
                    .map(|_| json_value(u, depth - 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => V::Object(json_object(u, depth - 1)?),
    })
}

fn json_object(
    u: &mut Unstructured<'_>,
    depth: u32,
) -> arbitrary::Result<serde_json::Map<String, serde_json::Value>> {
    let mut map = serde_json::Map::new();
    for _ in 0..u.int_in_range(0..=4)? {
        map.insert(Text::arbitrary(u)?.0, json_value(u, depth)?);
    }
    Ok(map)
}

impl<'a> Arbitrary<'a> for Value {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // Mostly objects (what `atomic.json` takes), sometimes anything.
        Ok(Value(if u.ratio(3, 4)? {
            serde_json::Value::Object(json_object(u, 3)?)
        } else {
            json_value(u, 3)?
        }))
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    TextBlock {
        name: Name,
        content: Text,
    },
    Json {
        name: Name,
        content: Value,
    },
    Error {
        message: Text,
        code: i64,
        details: Option<Value>,
    },
    OpenStream {
        name: Name,
    },
    Chunk {
        stream: u8,
        content: Text,
    },
    CompleteStream {
        stream: u8,
    },
    Complete,
    RespondText {
        name: Name,
        content: Text,
    },
}

#[derive(Arbitrary, Debug)]
struct Script {
    framing: u8,
    source: Text,
    ops: Vec<Op>,
}

/// An event as the protocol says it must arrive.
#[derive(Debug, PartialEq)]
enum Body {
    TextBlock(String),
    Json(serde_json::Value),
    Chunk {
        stream_id: String,
        is_complete: bool,
        content: String,
    },
    Error {
        message: String,
        code: i64,
        details: serde_json::Value,
    },
    Done,
}

#[derive(Debug)]
struct Expected {
    name: String,
    body: Body,
}

/// What the harness knows about one created stream.
struct StreamModel {
    name: String,
    id: String,
    open: bool,
}

fn valid_name(name: &str) -> bool {
    (1..=256).contains(&name.len())
        && !name.chars().any(|c| {
            let c = c as u32;
            c < 0x20 || (0x7f..=0x9f).contains(&c) || c == 0x2028 || c == 0x2029
        })
}

struct Harness {
    handler: ResponseHandler,
    source: EventSource,
    out: Vec<u8>,
    expected: Vec<Expected>,
    streams: Vec<StreamModel>,
    handles: Vec<(TextStream, usize)>,
    complete: bool,
}

impl Harness {
    fn drain(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            match self.source.poll_next(&mut cx) {
                Poll::Ready(Next::Data(b)) => self.out.extend_from_slice(&b),
                Poll::Ready(Next::End) | Poll::Pending => return,
                Poll::Ready(Next::Aborted(why)) => panic!("queue aborted: {why:?}"),
            }
        }
    }

    fn expect_complete(&mut self) {
        for s in self.streams.iter_mut().filter(|s| s.open) {
            s.open = false;
            self.expected.push(Expected {
                name: s.name.clone(),
                body: Body::Chunk {
                    stream_id: s.id.clone(),
                    is_complete: true,
                    content: " ".into(),
                },
            });
        }
        self.expected.push(Expected {
            name: "done".into(),
            body: Body::Done,
        });
        self.complete = true;
    }

    fn text_block(&mut self, name: &str, content: &str) {
        let got = ready_now(self.handler.emit_text_block(name, content));
        if self.complete {
            assert_eq!(got, Err(ProtocolError::Completed));
        } else if !valid_name(name) {
            assert_eq!(got, Err(ProtocolError::InvalidEventName), "{name:?}");
        } else {
            assert_eq!(got, Ok(()));
            self.expected.push(Expected {
                name: name.into(),
                body: Body::TextBlock(content.into()),
            });
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::TextBlock { name, content } => self.text_block(&name.0, &content.0),
            Op::Json { name, content } => {
                let got = ready_now(self.handler.emit_json(&name.0, &content.0));
                if self.complete {
                    assert_eq!(got, Err(ProtocolError::Completed));
                } else if !valid_name(&name.0) {
                    assert_eq!(got, Err(ProtocolError::InvalidEventName));
                } else if !content.0.is_object() {
                    assert!(
                        matches!(got, Err(ProtocolError::InvalidContent(_))),
                        "{got:?}"
                    );
                } else {
                    assert_eq!(got, Ok(()));
                    self.expected.push(Expected {
                        name: name.0,
                        body: Body::Json(content.0),
                    });
                }
            }
            Op::Error {
                message,
                code,
                details,
            } => {
                let details = details.map(|d| d.0);
                let got = ready_now(self.handler.emit_error(&message.0, code, details.as_ref()));
                if self.complete {
                    assert_eq!(got, Err(ProtocolError::Completed));
                } else if details.as_ref().is_some_and(|d| !d.is_object()) {
                    assert!(
                        matches!(got, Err(ProtocolError::InvalidContent(_))),
                        "{got:?}"
                    );
                } else {
                    assert_eq!(got, Ok(()));
                    self.expected.push(Expected {
                        name: "error".into(),
                        body: Body::Error {
                            message: message.0,
                            code,
                            details: details.unwrap_or(serde_json::Value::Null),
                        },
                    });
                }
            }
            Op::OpenStream { name } => {
                let got = self.handler.create_text_stream(name.0.clone());
                if self.complete {
                    assert!(matches!(got, Err(ProtocolError::Completed)));
                } else if !valid_name(&name.0) {
                    assert!(matches!(got, Err(ProtocolError::InvalidEventName)));
                } else if self.streams.len() >= 1024 {
                    assert!(matches!(got, Err(ProtocolError::TooManyStreams)));
                } else {
                    let handle = got.expect("a valid stream");
                    let id = self.handler.stream_id(&handle).to_owned();
                    assert!(
                        id.len() == 10
                            && id
                                .bytes()
                                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()),
                        "stream id {id:?}"
                    );
                    assert!(
                        self.streams.iter().all(|s| s.id != id),
                        "stream id {id} reused"
                    );
                    self.handles.push((handle, self.streams.len()));
                    self.streams.push(StreamModel {
                        name: name.0,
                        id,
                        open: true,
                    });
                }
            }
            Op::Chunk { stream, content } => {
                if self.handles.is_empty() {
                    return;
                }
                let (handle, index) = &self.handles[stream as usize % self.handles.len()];
                let got = ready_now(self.handler.emit_chunk(handle, &content.0));
                if self.complete {
                    assert_eq!(got, Err(ProtocolError::Completed));
                } else {
                    assert_eq!(got, Ok(()));
                    let s = &self.streams[*index];
                    self.expected.push(Expected {
                        name: s.name.clone(),
                        body: Body::Chunk {
                            stream_id: s.id.clone(),
                            is_complete: false,
                            content: content.0,
                        },
                    });
                }
            }
            Op::CompleteStream { stream } => {
                if self.handles.is_empty() {
                    return;
                }
                let (handle, index) = self.handles.remove(stream as usize % self.handles.len());
                let got = ready_now(self.handler.complete_stream(handle));
                if self.complete {
                    assert_eq!(got, Err(ProtocolError::Completed));
                } else {
                    assert_eq!(got, Ok(()));
                    let s = &mut self.streams[index];
                    s.open = false;
                    self.expected.push(Expected {
                        name: s.name.clone(),
                        body: Body::Chunk {
                            stream_id: s.id.clone(),
                            is_complete: true,
                            content: " ".into(),
                        },
                    });
                }
            }
            Op::Complete => {
                let got = ready_now(self.handler.complete());
                if self.complete {
                    assert_eq!(got, Err(ProtocolError::Completed));
                } else {
                    assert_eq!(got, Ok(()));
                    self.expect_complete();
                }
            }
            Op::RespondText { name, content } => {
                let was_complete = self.complete;
                let valid = valid_name(&name.0);
                let got = ready_now(self.handler.respond_text(&name.0, &content.0));
                if was_complete {
                    assert_eq!(got, Err(ProtocolError::Completed));
                } else if !valid {
                    assert_eq!(got, Err(ProtocolError::InvalidEventName));
                } else {
                    assert_eq!(got, Ok(()));
                    self.expected.push(Expected {
                        name: name.0,
                        body: Body::TextBlock(content.0),
                    });
                    self.expect_complete();
                }
            }
        }
        assert_eq!(self.handler.is_complete(), self.complete);
        self.drain();
    }
}

/// Splits the output into (event line value, data line value) per event, demanding the
/// exact framing.
fn strict_frames(out: &str, framing: Framing) -> Vec<(Option<&str>, &str)> {
    let mut frames = Vec::new();
    if framing == Framing::Lines {
        assert!(out.is_empty() || out.ends_with('\n'));
        for line in out.split_terminator('\n') {
            frames.push((None, line));
        }
        return frames;
    }
    let mut rest = out;
    while !rest.is_empty() {
        let end = rest
            .find("\n\n")
            .expect("an event not ended by a blank line");
        let frame = &rest[..end];
        rest = &rest[end + 2..];
        let mut lines = frame.split('\n');
        let name = match framing {
            Framing::Named => Some(
                lines
                    .next()
                    .and_then(|l| l.strip_prefix("event: "))
                    .expect("an `event: ` line first"),
            ),
            _ => None,
        };
        // `/stream`: the SSE id (EventSource's Last-Event-ID) is the event's own id.
        let sse_id = (framing == Framing::DataOnly).then(|| {
            lines
                .next()
                .and_then(|l| l.strip_prefix("id: "))
                .expect("an `id: ` line first")
        });
        let data = lines
            .next()
            .and_then(|l| l.strip_prefix("data: "))
            .expect("a `data: ` line");
        if let Some(id) = sse_id {
            assert!(
                data.contains(&format!("\"id\":\"{id}\"")),
                "the SSE id is not the event's: {frame:?}"
            );
        }
        assert_eq!(lines.next(), None, "more than one data line in {frame:?}");
        frames.push((name, data));
    }
    frames
}

fn keys_for(body: &Body) -> &'static [&'static str] {
    const COMMON: [&str; 6] = [
        "content_type",
        "event_name",
        "schema_version",
        "id",
        "source",
        "metadata",
    ];
    match body {
        Body::Done => &COMMON,
        Body::Chunk { .. } => &[
            "content_type",
            "event_name",
            "schema_version",
            "id",
            "source",
            "metadata",
            "stream_id",
            "is_complete",
            "content",
        ],
        _ => &[
            "content_type",
            "event_name",
            "schema_version",
            "id",
            "source",
            "metadata",
            "content",
        ],
    }
}

fn check_event(json: &Json, want: &Expected, source: &str, last_id: &mut u128) {
    assert!(!json.has_duplicate_keys(), "{json:?}");
    assert_eq!(json.keys(), keys_for(&want.body), "key order");
    let content_type = match want.body {
        Body::TextBlock(_) => "atomic.textblock",
        Body::Json(_) => "atomic.json",
        Body::Chunk { .. } => "chunked.text",
        Body::Error { .. } => "atomic.error",
        Body::Done => "atomic.done",
    };
    let s = |k: &str| {
        json.get(k)
            .and_then(Json::as_str)
            .unwrap_or_else(|| panic!("{k} not a string"))
    };
    assert_eq!(s("content_type"), content_type);
    assert_eq!(s("event_name"), want.name);
    assert_eq!(s("schema_version"), "1.0");
    assert_eq!(s("source"), source);
    assert_eq!(json.get("metadata"), Some(&Json::Null));
    let id = agentd_fuzz::request_oracle::ulid(s("id")).expect("a canonical ULID id");
    assert!(id > *last_id, "ids must strictly increase");
    *last_id = id;
    let content = json.get("content");
    match &want.body {
        Body::TextBlock(t) => assert_eq!(content.and_then(Json::as_str), Some(t.as_str())),
        Body::Json(v) => {
            let c = content.expect("content");
            assert!(!c.has_duplicate_keys());
            assert_eq!(&c.to_value(), v);
        }
        Body::Chunk {
            stream_id,
            is_complete,
            content: text,
        } => {
            assert_eq!(s("stream_id"), stream_id);
            assert_eq!(json.get("is_complete"), Some(&Json::Bool(*is_complete)));
            assert_eq!(content.and_then(Json::as_str), Some(text.as_str()));
        }
        Body::Error {
            message,
            code,
            details,
        } => {
            let c = content.expect("content");
            assert_eq!(c.keys(), ["error_message", "error_code", "details"]);
            assert_eq!(
                c.get("error_message").and_then(Json::as_str),
                Some(message.as_str())
            );
            let got_code = match c.get("error_code") {
                Some(Json::Num(Num::U(u))) => i64::try_from(*u).ok(),
                Some(Json::Num(Num::I(i))) => Some(*i),
                _ => None,
            };
            assert_eq!(got_code, Some(*code));
            assert_eq!(&c.get("details").expect("details").to_value(), details);
        }
        Body::Done => {}
    }
}

fn check_output(out: &[u8], framing: Framing, source: &str, expected: &[Expected]) {
    let text = std::str::from_utf8(out).expect("the output is UTF-8");
    for c in text.chars() {
        assert!(
            c == '\n' || !is_python_line_break(c),
            "raw {c:?} in the output"
        );
    }
    let frames = strict_frames(text, framing);
    assert_eq!(
        frames.len(),
        expected.len(),
        "events sent vs events emitted"
    );
    if framing != Framing::Lines {
        let events: Vec<(Vec<u8>, Vec<u8>)> = sse_reference::parse(out)
            .into_iter()
            .map(|b| match b.outcome {
                Outcome::Event { event, data } => (event, data),
                other => panic!("a block that is not an event: {other:?}"),
            })
            .collect();
        let framed: Vec<(Vec<u8>, Vec<u8>)> = frames
            .iter()
            .map(|(n, d)| (n.unwrap_or("").as_bytes().to_vec(), d.as_bytes().to_vec()))
            .collect();
        assert_eq!(
            events, framed,
            "the reference SSE parser reads other events"
        );
    }
    let mut last_id = 0u128;
    for ((name, data), want) in frames.iter().zip(expected) {
        if let Some(name) = name {
            assert_eq!(*name, want.name);
        }
        serde_json::from_str::<serde_json::Value>(data).expect("serde_json parses the data");
        let json = json_tree::parse(data.as_bytes()).expect("the data is one JSON text");
        check_event(&json, want, source, &mut last_id);
    }
    let last = expected.last().expect("at least `done`");
    assert!(matches!(last.body, Body::Done));
    assert_eq!(
        expected
            .iter()
            .filter(|e| matches!(e.body, Body::Done))
            .count(),
        1
    );
}

fuzz_target!(|script: Script| {
    let framing = match script.framing % 3 {
        0 => Framing::Named,
        1 => Framing::DataOnly,
        _ => Framing::Lines,
    };
    let limits = QueueLimits {
        capacity: usize::MAX,
        slow_reader_timeout: Duration::from_secs(1),
    };
    let (sink, source) = event_queue(limits, 0);
    let mut h = Harness {
        handler: ResponseHandler::new(sink, framing, Arc::from(script.source.0.as_str())),
        source,
        out: Vec::new(),
        expected: Vec::new(),
        streams: Vec::new(),
        handles: Vec::new(),
        complete: false,
    };
    for op in script.ops {
        h.step(op);
    }
    if !h.complete {
        // What the server does when the agent returns.
        h.step(Op::Complete);
    }
    h.drain();
    check_output(&h.out, framing, &script.source.0, &h.expected);
});
