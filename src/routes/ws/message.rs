//! The WebSocket message grammar: one client text message → [`ClientMessage`].
//!
//! `{"type":"ping"}`; `{"type":"agent-query","prompt":…,"id"?:ULID,"requestId"?:any}`
//! or the guide's nested shape `{"type":"agent-query","query":{"id"?,"prompt"},
//! "requestId"?}`, held to `/agent`'s prompt and id rules; anything else is
//! [`ClientMessage::Invalid`] with the message the client gets. `requestId` is kept as
//! compact JSON, ready to be echoed.
//!
//! Pure: no I/O, no clock, no agent; it must never panic, whatever the text (the
//! `ws_message` fuzz target checks). Public only so that the fuzz target can reach it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::protocol::events::write_json_value;
use crate::protocol::ids::{next_ulid, parse_canonical_ulid};
use crate::protocol::request::check_prompt;
use crate::protocol::Query;

/// One message from the client, validated.
#[derive(Debug)]
pub enum ClientMessage {
    Ping {
        request_id: Option<Bytes>,
    },
    Query {
        query: Query,
        request_id: Option<Bytes>,
    },
    Invalid {
        error: Cow<'static, str>,
        request_id: Option<Bytes>,
    },
}

/// A field seen without committing to its type, so each field gets its own message.
#[derive(Debug, Default)]
enum Loose<'a> {
    #[default]
    Missing,
    Str(Cow<'a, str>),
    Other,
}

struct LooseVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for LooseVisitor<'a> {
    type Value = Loose<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Other)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor(PhantomData))
    }
}

/// `requestId` may be any JSON value, `null` included (which is echoed too).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// The message's keys; unknown ones are ignored, as in `/agent` bodies.
#[derive(serde::Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Loose<'a>,
    #[serde(borrow, default)]
    prompt: Loose<'a>,
    #[serde(borrow, default)]
    id: Loose<'a>,
    #[serde(rename = "requestId", default, deserialize_with = "present")]
    request_id: Option<serde_json::Value>,
    /// The guide's second shape: `{"type":"agent-query","query":{"id","prompt"}}`.
    #[serde(default)]
    query: Option<serde_json::Value>,
}

/// A `serde_json::Value` member seen as [`Loose`] (for the nested `query` shape).
fn loose(v: Option<&serde_json::Value>) -> Loose<'_> {
    match v {
        None => Loose::Missing,
        Some(serde_json::Value::String(s)) => Loose::Str(std::borrow::Cow::Borrowed(s)),
        Some(_) => Loose::Other,
    }
}

/// Parses and validates one text message. Never panics.
pub fn parse_message(text: &str) -> ClientMessage {
    let wire: Wire<'_> = match serde_json::from_str(text) {
        // serde also reads a struct from an array; only an object is a message.
        Ok(_) if !text.trim_start().starts_with('{') => {
            return ClientMessage::Invalid {
                error: "the message must be a JSON object".into(),
                request_id: None,
            };
        }
        Ok(w) => w,
        Err(e) => {
            let error = if e.is_data() {
                format!("the message must be a JSON object: {e}")
            } else {
                format!("invalid JSON: {e}")
            };
            return ClientMessage::Invalid {
                error: error.into(),
                request_id: None,
            };
        }
    };
    // Re-encoded compact, with the protocol's escapes, once per message.
    let request_id = wire.request_id.as_ref().map(|v| {
        let mut b = BytesMut::new();
        match write_json_value(&mut b, v, false) {
            Ok(()) => b.freeze(),
            Err(_) => Bytes::from_static(b"null"),
        }
    });
    let invalid = |error: &'static str, request_id| ClientMessage::Invalid {
        error: error.into(),
        request_id,
    };
    match wire.kind {
        Loose::Str(t) if t == "ping" => ClientMessage::Ping { request_id },
        Loose::Str(t) if t == "agent-query" => {
            // Either shape: `prompt` and `id` at the top, or inside `query` (which wins).
            let (prompt, id) = match &wire.query {
                None | Some(serde_json::Value::Null) => (wire.prompt, wire.id),
                Some(serde_json::Value::Object(q)) => (loose(q.get("prompt")), loose(q.get("id"))),
                Some(_) => return invalid("query: must be object", request_id),
            };
            let prompt = match prompt {
                Loose::Str(p) => match check_prompt(&p) {
                    Ok(_) => p.into_owned(),
                    Err(m) => {
                        return ClientMessage::Invalid {
                            error: format!("prompt: {m}").into(),
                            request_id,
                        }
                    }
                },
                Loose::Missing => {
                    return invalid("prompt: must have required property 'prompt'", request_id)
                }
                Loose::Other => return invalid("prompt: must be string", request_id),
            };
            let id = match id {
                Loose::Missing => next_ulid(),
                Loose::Str(s) => match parse_canonical_ulid(&s) {
                    Some(id) => id,
                    None => {
                        return invalid(
                            "id: must be a ULID: 26 upper-case Crockford base32 characters, the first 0-7",
                            request_id,
                        )
                    }
                },
                Loose::Other => return invalid("id: must be string", request_id),
            };
            ClientMessage::Query {
                query: Query {
                    id,
                    prompt,
                    context: None,
                },
                request_id,
            }
        }
        Loose::Str(_) => invalid(
            "unknown type: expected \"ping\" or \"agent-query\"",
            request_id,
        ),
        Loose::Missing => invalid(
            "type: must have required property 'type' (\"ping\" or \"agent-query\")",
            request_id,
        ),
        Loose::Other => invalid("type: must be string", request_id),
    }
}
