//! Decodes one upstream event's `data` (Sentient Chat event JSON) into what the relay
//! needs, and nothing more: `id` and `source` are not read (agentd writes its own
//! monotonic ids and the session's `processor_id`), unknown keys are ignored.
//!
//! Pure and never panicking: a malformed event is an `Err` naming what is wrong, for
//! logs (the client only ever sees a safe message).

use std::borrow::Cow;

use serde::Deserialize;

use super::json::OrderedJson;

/// An upstream event, checked against the protocol's shapes.
#[derive(Debug, PartialEq)]
pub enum UpstreamEvent {
    TextBlock {
        name: String,
        content: String,
    },
    /// `content` is a JSON object.
    Json {
        name: String,
        content: OrderedJson,
    },
    Chunk {
        name: String,
        stream_id: String,
        is_complete: bool,
        content: String,
    },
    Error {
        message: String,
        code: i64,
        /// A JSON object, when present.
        details: Option<serde_json::Value>,
    },
    Done,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    content_type: Cow<'a, str>,
    #[serde(default)]
    event_name: Option<String>,
    #[serde(default)]
    stream_id: Option<String>,
    #[serde(default)]
    is_complete: Option<bool>,
    #[serde(default)]
    content: Option<OrderedJson>,
}

/// The reference's default `error_code`.
const DEFAULT_ERROR_CODE: i64 = 500;

/// Decodes one event's JSON text.
pub fn decode(data: &str) -> Result<UpstreamEvent, String> {
    let w: Wire<'_> =
        serde_json::from_str(data).map_err(|e| format!("event is not a JSON event: {e}"))?;
    let name = || w.event_name.clone().ok_or("event has no event_name");
    let text = |c: Option<OrderedJson>| match c {
        Some(OrderedJson::String(s)) => Ok(s),
        _ => Err("content must be a string"),
    };
    Ok(match &*w.content_type {
        "atomic.textblock" => UpstreamEvent::TextBlock {
            name: name()?,
            content: text(w.content)?,
        },
        "atomic.json" => match w.content {
            Some(c) if c.is_object() => UpstreamEvent::Json {
                name: name()?,
                content: c,
            },
            _ => return Err("atomic.json content must be an object".into()),
        },
        "chunked.text" => UpstreamEvent::Chunk {
            name: name()?,
            stream_id: w.stream_id.ok_or("chunked.text has no stream_id")?,
            is_complete: w.is_complete.ok_or("chunked.text has no is_complete")?,
            content: text(w.content)?,
        },
        "atomic.error" => {
            let Some(content) = w.content.filter(OrderedJson::is_object) else {
                return Err("atomic.error content must be an object".into());
            };
            let message = match content.get("error_message") {
                Some(OrderedJson::String(s)) => s.clone(),
                _ => return Err("atomic.error has no error_message string".into()),
            };
            let code = match content.get("error_code") {
                None => DEFAULT_ERROR_CODE,
                Some(OrderedJson::Number(n)) => n
                    .as_i64()
                    .ok_or("atomic.error error_code must be an integer")?,
                Some(_) => return Err("atomic.error error_code must be an integer".into()),
            };
            let details = match content.get("details") {
                None | Some(OrderedJson::Null) => None,
                Some(d) if d.is_object() => Some(d.clone().into()),
                Some(_) => return Err("atomic.error details must be an object or null".into()),
            };
            UpstreamEvent::Error {
                message,
                code,
                details,
            }
        }
        "atomic.done" => UpstreamEvent::Done,
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(format!("unknown content_type {shown:?}"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_five_shapes() {
        let chunk = r#"{"content_type":"chunked.text","event_name":"R","schema_version":"1.0","id":"01J","source":"s","metadata":null,"stream_id":"abc","is_complete":false,"content":"hi\u2028"}"#;
        assert_eq!(
            decode(chunk).unwrap(),
            UpstreamEvent::Chunk {
                name: "R".into(),
                stream_id: "abc".into(),
                is_complete: false,
                content: "hi\u{2028}".into()
            }
        );
        let block =
            r#"{"content_type":"atomic.textblock","event_name":"T","content":"x","extra":1}"#;
        assert!(matches!(decode(block), Ok(UpstreamEvent::TextBlock { .. })));
        let json = r#"{"content_type":"atomic.json","event_name":"J","content":{"b":1,"a":2}}"#;
        assert!(matches!(decode(json), Ok(UpstreamEvent::Json { .. })));
        let err = r#"{"content_type":"atomic.error","event_name":"error","content":{"error_message":"m","error_code":418,"details":{"k":1}}}"#;
        assert_eq!(
            decode(err).unwrap(),
            UpstreamEvent::Error {
                message: "m".into(),
                code: 418,
                details: Some(serde_json::json!({"k": 1}))
            }
        );
        let done = r#"{"content_type":"atomic.done","event_name":"done","schema_version":"1.0","id":"01J","source":"s","metadata":null}"#;
        assert_eq!(decode(done).unwrap(), UpstreamEvent::Done);
    }

    #[test]
    fn malformed_events_are_refused() {
        for bad in [
            "not json",
            "[1]",
            r#"{"event_name":"x"}"#,
            r#"{"content_type":"atomic.weird","event_name":"x"}"#,
            r#"{"content_type":"atomic.json","event_name":"J","content":[1]}"#,
            r#"{"content_type":"atomic.textblock","event_name":"T","content":3}"#,
            r#"{"content_type":"atomic.textblock","content":"x"}"#,
            r#"{"content_type":"chunked.text","event_name":"R","is_complete":true,"content":" "}"#,
            r#"{"content_type":"atomic.error","content":{"error_code":1}}"#,
            r#"{"content_type":"atomic.error","content":{"error_message":"m","details":[1]}}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
