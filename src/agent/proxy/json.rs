//! [`OrderedJson`]: a JSON value that keeps object keys in the order they arrived, so
//! an upstream's `atomic.json` content reaches the client as the upstream wrote it
//! (`serde_json::Value` would sort the keys).
//!
//! It is re-serialized through the protocol's encoder, which makes it compact and
//! escapes U+2028/U+2029/U+0085. Depth is bounded by serde_json's recursion limit (128).
//! It must never be used to parse anything but one upstream event's content.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A JSON value with object keys in arrival order.
#[derive(Clone, Debug, PartialEq)]
pub enum OrderedJson {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<OrderedJson>),
    Object(Vec<(String, OrderedJson)>),
}

impl OrderedJson {
    pub fn is_object(&self) -> bool {
        matches!(self, OrderedJson::Object(_))
    }

    /// The value of `key` in an object (the last one, as JSON parsers do).
    pub fn get(&self, key: &str) -> Option<&OrderedJson> {
        match self {
            OrderedJson::Object(m) => m.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl From<OrderedJson> for serde_json::Value {
    fn from(v: OrderedJson) -> Self {
        use serde_json::Value;
        match v {
            OrderedJson::Null => Value::Null,
            OrderedJson::Bool(b) => Value::Bool(b),
            OrderedJson::Number(n) => Value::Number(n),
            OrderedJson::String(s) => Value::String(s),
            OrderedJson::Array(a) => Value::Array(a.into_iter().map(Into::into).collect()),
            OrderedJson::Object(m) => {
                Value::Object(m.into_iter().map(|(k, v)| (k, v.into())).collect())
            }
        }
    }
}

impl Serialize for OrderedJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OrderedJson::Null => s.serialize_unit(),
            OrderedJson::Bool(b) => s.serialize_bool(*b),
            OrderedJson::Number(n) => n.serialize(s),
            OrderedJson::String(v) => s.serialize_str(v),
            OrderedJson::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            OrderedJson::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct OrderedVisitor;

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = OrderedJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<OrderedJson, E> {
        serde_json::Number::from_f64(v)
            .map(OrderedJson::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<OrderedJson, E> {
        Ok(OrderedJson::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<OrderedJson, E> {
        Ok(OrderedJson::String(v))
    }

    fn visit_unit<E>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Null)
    }

    fn visit_none<E>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<OrderedJson, D::Error> {
        OrderedJson::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OrderedJson, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(OrderedJson::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedJson, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some((k, v)) = map.next_entry::<String, OrderedJson>()? {
            out.push((k, v));
        }
        Ok(OrderedJson::Object(out))
    }
}

impl<'de> Deserialize<'de> for OrderedJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OrderedJson, D::Error> {
        d.deserialize_any(OrderedVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::events::write_json_value;
    use bytes::BytesMut;

    #[test]
    fn keeps_key_order_and_gets_the_protocol_escapes() {
        let src = r#"{ "z": 1, "a": [true, null, 1.5, -2], "m": {"y": "x", "b": "\u2028"} }"#;
        let v: OrderedJson = serde_json::from_str(src).unwrap();
        let mut out = BytesMut::new();
        write_json_value(&mut out, &v, true).unwrap();
        assert_eq!(
            &out[..],
            br#"{"z":1,"a":[true,null,1.5,-2],"m":{"y":"x","b":"\u2028"}}"#
        );
        assert_eq!(v.get("z"), Some(&OrderedJson::Number(1.into())));
        let back: serde_json::Value = v.into();
        assert_eq!(back["m"]["b"], "\u{2028}");
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert!(serde_json::from_str::<OrderedJson>(&deep).is_err());
    }
}
