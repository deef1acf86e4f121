//! The Sentient Chat event encoder: writes events as SSE frames, byte for byte.
//!
//! Keys come in the protocol's order, JSON is compact, non-ASCII stays raw UTF-8 except
//! U+2028, U+2029 and U+0085, which are escaped because the official client splits lines
//! on them. This module knows nothing about HTTP or queues: it appends bytes to a
//! caller's buffer and must never allocate beyond growing that buffer.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use ulid::Ulid;

use super::ids::{encode, ULID_LEN};

/// How an event is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `event: <name>\ndata: <json>\n\n` (the `/agent` and `/assist` responses).
    Named,
    /// `id: <event id>\ndata: <json>\n\n`, no `event:` line (`/stream`, for browsers'
    /// `EventSource.onmessage`; the id comes back as `Last-Event-ID` on a reconnect).
    DataOnly,
    /// `<json>\n`: one compact JSON object per line (WebSocket messages are cut from
    /// these lines; the JSON itself never contains a raw newline).
    Lines,
}

/// The body of one event after the common keys.
pub enum EventBody<'a> {
    /// `atomic.textblock`
    TextBlock(&'a str),
    /// `atomic.json`; the bytes are an already-encoded compact JSON object.
    Json(&'a [u8]),
    /// `chunked.text`
    Chunk {
        stream_id: &'a str,
        is_complete: bool,
        content: &'a str,
    },
    /// `atomic.error`; `details` is already-encoded JSON or `None` for `null`.
    Error {
        message: &'a str,
        code: i64,
        details: Option<&'a [u8]>,
    },
    /// `atomic.done`
    Done,
}

impl EventBody<'_> {
    fn content_type(&self) -> &'static str {
        match self {
            EventBody::TextBlock(_) => "atomic.textblock",
            EventBody::Json(_) => "atomic.json",
            EventBody::Chunk { .. } => "chunked.text",
            EventBody::Error { .. } => "atomic.error",
            EventBody::Done => "atomic.done",
        }
    }
}

/// Appends one complete SSE frame for an event to `buf`.
///
/// `event_name` must already be valid (see [`is_valid_event_name`]).
pub fn write_event(
    buf: &mut BytesMut,
    framing: Framing,
    event_name: &str,
    id: Ulid,
    source: &str,
    body: &EventBody<'_>,
) {
    let mut idb = [0u8; ULID_LEN];
    let id = encode(id, &mut idb).as_bytes();
    if framing == Framing::Named {
        buf.put_slice(b"event: ");
        buf.put_slice(event_name.as_bytes());
        buf.put_u8(b'\n');
    }
    if framing == Framing::DataOnly {
        // The SSE id: a browser that reconnects sends it back as `Last-Event-ID`.
        buf.put_slice(b"id: ");
        buf.put_slice(id);
        buf.put_u8(b'\n');
    }
    if framing != Framing::Lines {
        buf.put_slice(b"data: ");
    }
    buf.put_slice(b"{\"content_type\":\"");
    buf.put_slice(body.content_type().as_bytes());
    buf.put_slice(b"\",\"event_name\":");
    write_json_str(buf, event_name);
    buf.put_slice(b",\"schema_version\":\"1.0\",\"id\":\"");
    buf.put_slice(id);
    buf.put_slice(b"\",\"source\":");
    write_json_str(buf, source);
    buf.put_slice(b",\"metadata\":null");
    match body {
        EventBody::TextBlock(text) => {
            buf.put_slice(b",\"content\":");
            write_json_str(buf, text);
        }
        EventBody::Json(json) => {
            buf.put_slice(b",\"content\":");
            buf.put_slice(json);
        }
        EventBody::Chunk {
            stream_id,
            is_complete,
            content,
        } => {
            buf.put_slice(b",\"stream_id\":");
            write_json_str(buf, stream_id);
            buf.put_slice(if *is_complete {
                b",\"is_complete\":true,\"content\":"
            } else {
                b",\"is_complete\":false,\"content\":"
            });
            write_json_str(buf, content);
        }
        EventBody::Error {
            message,
            code,
            details,
        } => {
            buf.put_slice(b",\"content\":{\"error_message\":");
            write_json_str(buf, message);
            buf.put_slice(b",\"error_code\":");
            buf.put_slice(itoa::Buffer::new().format(*code).as_bytes());
            buf.put_slice(b",\"details\":");
            buf.put_slice(details.unwrap_or(b"null"));
            buf.put_u8(b'}');
        }
        EventBody::Done => {}
    }
    buf.put_slice(if framing == Framing::Lines {
        b"}\n"
    } else {
        b"}\n\n"
    });
}

/// Longest event name accepted, in bytes.
pub const MAX_EVENT_NAME_BYTES: usize = 256;

/// An event name goes raw into the `event:` line, so it must not contain control
/// characters (a newline would end the line and corrupt the stream).
pub fn is_valid_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME_BYTES
        && !name
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
}

/// What each byte needs: 0 = copy, 1 = short escape or \u00XX, 2 = maybe U+2028/U+2029
/// (lead 0xE2), 3 = maybe U+0085 (lead 0xC2).
const fn escape_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = 1;
        i += 1;
    }
    t[b'"' as usize] = 1;
    t[b'\\' as usize] = 1;
    t[0x7f] = 1;
    t[0xE2] = 2;
    t[0xC2] = 3;
    t
}
static ESCAPE: [u8; 256] = escape_table();

/// Appends `s` as a JSON string literal, quotes included.
pub fn write_json_str(buf: &mut BytesMut, s: &str) {
    buf.reserve(s.len() + 2);
    buf.put_u8(b'"');
    write_json_str_fragment(buf, s);
    buf.put_u8(b'"');
}

/// Appends the escaped contents of `s` without quotes.
pub fn write_json_str_fragment<B: BufMut>(buf: &mut B, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let class = ESCAPE[b as usize];
        if class == 0 {
            i += 1;
            continue;
        }
        let escaped: &[u8] = match class {
            1 => match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                _ => {
                    buf.put_slice(&bytes[start..i]);
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    buf.put_slice(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[(b >> 4) as usize],
                        HEX[(b & 0xf) as usize],
                    ]);
                    i += 1;
                    start = i;
                    continue;
                }
            },
            2 if bytes.get(i + 1) == Some(&0x80) && bytes.get(i + 2) == Some(&0xA8) => b"\\u2028",
            2 if bytes.get(i + 1) == Some(&0x80) && bytes.get(i + 2) == Some(&0xA9) => b"\\u2029",
            3 if bytes.get(i + 1) == Some(&0x85) => b"\\u0085",
            _ => {
                i += 1;
                continue;
            }
        };
        buf.put_slice(&bytes[start..i]);
        buf.put_slice(escaped);
        // Multi-byte sequences are consumed whole.
        i += match class {
            2 => 3,
            3 => 2,
            _ => 1,
        };
        start = i;
    }
    buf.put_slice(&bytes[start..]);
}

/// serde_json formatter that applies the protocol's extra escapes to every string.
struct ProtocolFormatter;

impl serde_json::ser::Formatter for ProtocolFormatter {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut out = bytes::BytesMut::new();
        if fragment.as_bytes().iter().any(|&b| ESCAPE[b as usize] >= 2) {
            write_json_str_fragment(&mut out, fragment);
            writer.write_all(&out)
        } else {
            writer.write_all(fragment.as_bytes())
        }
    }
}

/// Why a JSON value could not be encoded as event content.
#[derive(Debug, thiserror::Error)]
pub enum JsonContentError {
    #[error("content must be a JSON object")]
    NotAnObject,
    #[error("content could not be serialized: {0}")]
    Serialize(String),
}

/// Appends `value` as compact JSON with the protocol's escapes. When `object_only`,
/// anything but a JSON object is refused and nothing is appended.
pub fn write_json_value<T: Serialize + ?Sized>(
    buf: &mut BytesMut,
    value: &T,
    object_only: bool,
) -> Result<(), JsonContentError> {
    let start = buf.len();
    let mut ser = serde_json::Serializer::with_formatter(buf.writer(), ProtocolFormatter);
    let res = value.serialize(&mut ser);
    let buf = ser.into_inner().into_inner();
    if let Err(e) = res {
        buf.truncate(start);
        return Err(JsonContentError::Serialize(e.to_string()));
    }
    if object_only && buf.get(start) != Some(&b'{') {
        buf.truncate(start);
        return Err(JsonContentError::NotAnObject);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        let mut b = BytesMut::new();
        write_json_str(&mut b, s);
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn escapes_what_json_and_the_client_need() {
        assert_eq!(esc("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(esc("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(esc("\u{1}\u{1f}\u{7f}"), r#""\u0001\u001f\u007f""#);
        assert_eq!(
            esc("x\u{2028}y\u{2029}z\u{85}"),
            r#""x\u2028y\u2029z\u0085""#
        );
        assert_eq!(esc("é⚡😀"), "\"é⚡😀\"");
        // Other characters sharing the lead bytes stay raw.
        assert_eq!(esc("\u{2026}\u{a9}"), "\"\u{2026}\u{a9}\"");
    }

    #[test]
    fn escaped_strings_round_trip_through_serde_json() {
        let samples = [
            "",
            "plain",
            "\u{2028}\u{2029}\u{85}",
            "\0\u{1}\"\\/",
            "日本語 😀 \u{7f}",
        ];
        for s in samples {
            let back: String = serde_json::from_str(&esc(s)).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn json_values_get_the_extra_escapes_and_objects_are_enforced() {
        let mut b = BytesMut::new();
        let v = serde_json::json!({"k\u{2028}": ["\u{85}", 1, null]});
        write_json_value(&mut b, &v, true).unwrap();
        assert_eq!(&b[..], br#"{"k\u2028":["\u0085",1,null]}"#);
        let mut b = BytesMut::new();
        assert!(matches!(
            write_json_value(&mut b, &serde_json::json!([1]), true),
            Err(JsonContentError::NotAnObject)
        ));
        assert!(b.is_empty());
    }

    #[test]
    fn done_event_bytes() {
        let mut b = BytesMut::new();
        let id = Ulid::from_string("01JDX3ABCDEFGHJKMNPQRSTVWX").unwrap();
        write_event(&mut b, Framing::Named, "done", id, "src", &EventBody::Done);
        assert_eq!(
            &b[..],
            &b"event: done\ndata: {\"content_type\":\"atomic.done\",\"event_name\":\"done\",\"schema_version\":\"1.0\",\"id\":\"01JDX3ABCDEFGHJKMNPQRSTVWX\",\"source\":\"src\",\"metadata\":null}\n\n"[..]
        );
    }

    #[test]
    fn event_names_cannot_break_framing() {
        assert!(is_valid_event_name("RESPONSE"));
        assert!(!is_valid_event_name(""));
        assert!(!is_valid_event_name("a\nb"));
        assert!(!is_valid_event_name("a\rb"));
        assert!(!is_valid_event_name("a\u{2028}b"));
        assert!(!is_valid_event_name(&"x".repeat(MAX_EVENT_NAME_BYTES + 1)));
    }
}
