//! An order- and duplicate-preserving JSON tree, parsed by serde_json.
//!
//! The oracles judge agentd's output and agentd's parsing against this tree, so it must
//! never share code with agentd's own JSON handling (simd-json, the hand-written event
//! encoder). It keeps every object member in input order, duplicates included, so key
//! order and duplicate-key semantics can be checked rather than lost in a map.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON number as serde_json classified it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl Num {
    pub fn as_f64(self) -> f64 {
        match self {
            Num::U(u) => u as f64,
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }
}

/// One JSON value; objects keep members in order, duplicates included.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(Num),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// Why a text did not parse.
#[derive(Debug)]
pub enum ParseError {
    /// Nested deeper than serde_json's recursion limit: no verdict on validity.
    TooDeep,
    /// Valid JSON grammar, but a number too large for an `f64` (`1e400`): readers that
    /// skip the value accept it, readers that keep it cannot.
    NumberOutOfRange,
    /// Not JSON.
    Invalid(String),
}

/// Parses one JSON text (trailing whitespace allowed, nothing else).
pub fn parse(bytes: &[u8]) -> Result<Json, ParseError> {
    serde_json::from_slice::<Json>(bytes).map_err(|e| {
        let m = e.to_string();
        if m.contains("recursion limit") {
            ParseError::TooDeep
        } else if m.contains("number out of range") {
            ParseError::NumberOutOfRange
        } else {
            ParseError::Invalid(m)
        }
    })
}

impl Json {
    /// The first member named `key` (what agentd's validator reads).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// How many members are named `key`.
    pub fn count(&self, key: &str) -> usize {
        match self {
            Json::Obj(members) => members.iter().filter(|(k, _)| k == key).count(),
            _ => 0,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Json::Obj(_))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn keys(&self) -> Vec<&str> {
        match self {
            Json::Obj(members) => members.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// Nesting below this value: 0 for a scalar or an empty container.
    pub fn depth(&self) -> usize {
        match self {
            Json::Arr(items) => items.iter().map(|v| v.depth() + 1).max().unwrap_or(0),
            Json::Obj(members) => members
                .iter()
                .map(|(_, v)| v.depth() + 1)
                .max()
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// True when some object at any level repeats a key.
    pub fn has_duplicate_keys(&self) -> bool {
        match self {
            Json::Arr(items) => items.iter().any(Json::has_duplicate_keys),
            Json::Obj(members) => {
                let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort_unstable();
                keys.windows(2).any(|w| w[0] == w[1])
                    || members.iter().any(|(_, v)| v.has_duplicate_keys())
            }
            _ => false,
        }
    }

    /// The serde_json value a map-based reader sees: the last duplicate wins.
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value as V;
        match self {
            Json::Null => V::Null,
            Json::Bool(b) => V::Bool(*b),
            Json::Num(Num::U(u)) => V::from(*u),
            Json::Num(Num::I(i)) => V::from(*i),
            Json::Num(Num::F(f)) => serde_json::Number::from_f64(*f).map_or(V::Null, V::Number),
            Json::Str(s) => V::String(s.clone()),
            Json::Arr(items) => V::Array(items.iter().map(Json::to_value).collect()),
            Json::Obj(members) => {
                let mut map = serde_json::Map::new();
                for (k, v) in members {
                    map.insert(k.clone(), v.to_value());
                }
                V::Object(map)
            }
        }
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Json, E> {
        Ok(Json::Num(Num::U(u)))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Json, E> {
        Ok(Json::Num(Num::I(i)))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Json, E> {
        Ok(Json::Num(Num::F(f)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::Str(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::Str(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Json>()? {
            items.push(v);
        }
        Ok(Json::Arr(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            members.push((k, v));
        }
        Ok(Json::Obj(members))
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_duplicates() {
        let j = parse(br#"{"b":1,"a":[true,null],"b":-2.5}"#).unwrap();
        assert_eq!(j.keys(), ["b", "a", "b"]);
        assert_eq!(j.get("b"), Some(&Json::Num(Num::U(1))));
        assert_eq!(j.count("b"), 2);
        assert!(j.has_duplicate_keys());
        assert_eq!(
            j.to_value(),
            serde_json::json!({"a": [true, null], "b": -2.5})
        );
        assert_eq!(j.depth(), 2);
    }

    #[test]
    fn classifies_failures() {
        assert!(matches!(parse(b"{"), Err(ParseError::Invalid(_))));
        assert!(matches!(
            parse(b"[1e400]"),
            Err(ParseError::NumberOutOfRange)
        ));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(parse(deep.as_bytes()), Err(ParseError::TooDeep)));
    }
}
