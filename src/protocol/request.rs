//! Request validators: `{query, session?}` bodies and `/stream` prompts.
//!
//! Bodies are parsed once with simd-json into a tape that each worker thread reuses,
//! then checked field by field against the protocol's rules (the JSON-schema of the
//! guide, tightened as the protocol says), collecting every problem with its JSON
//! pointer. Unknown keys are ignored at every level. Only the values agents need are
//! copied out. This module must never panic on any input.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use simd_json::prelude::*;
use simd_json::tape::Value;
use simd_json::{Buffers, Tape};

use super::ids::parse_canonical_ulid;
use super::types::{Preferences, Query, QueryContext, Session};

/// Longest prompt, in Unicode scalar values.
pub const MAX_PROMPT_CHARS: usize = 10_000;
/// Deepest nesting copied from `session.interactions`.
pub const MAX_INTERACTIONS_DEPTH: usize = 64;

/// One validation problem: where (a JSON pointer) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub path: Cow<'static, str>,
    pub message: Cow<'static, str>,
}

/// Why a request body was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// No body at all.
    Empty,
    /// Not JSON (syntax, invalid UTF-8, a lone surrogate escape).
    Malformed(String),
    /// JSON, but not a valid request.
    Invalid(Vec<Issue>),
}

struct Parser {
    buffers: Buffers,
    tape: Tape<'static>,
}

thread_local! {
    static PARSER: RefCell<Parser> = RefCell::new(Parser {
        buffers: Buffers::new(4096),
        tape: Tape::null(),
    });
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A parse error in plain words, with where it was found (never the parser's own
/// type names, nor the raw bytes, which may not be printable).
fn describe(e: &simd_json::Error) -> String {
    use simd_json::ErrorType as E;
    let what = match e.error() {
        E::InvalidUtf8 => "it is not valid UTF-8",
        E::InvalidEscape | E::InvalidUnicodeEscape | E::InvalidUnicodeCodepoint => {
            "a string holds an invalid escape sequence"
        }
        E::InvalidNumber | E::InvalidExponent => "a number is malformed",
        E::UnterminatedString => "a string is not closed",
        E::Eof => "it ends before the JSON value does",
        E::TrailingData => "more data follows the JSON value",
        E::KeyMustBeAString | E::BadKeyType => "an object key is not a string",
        E::ExpectedObjectColon => "a ':' is missing after an object key",
        E::ExpectedMapComma | E::ExpectedArrayComma => "a ',' is missing between two items",
        E::ExpectedMapEnd => "an object is not closed",
        _ => "it is not a JSON value",
    };
    format!(
        "The body is not valid JSON: {what} (near byte {})",
        e.index()
    )
}

/// Extra bytes a caller must leave after the body (see [`parse_agent_request`]).
pub const BODY_PADDING: usize = simd_json::INPUT_PADDING;

/// Parses and validates an agent request. `body[..len]` is the JSON; `body` must have
/// at least [`BODY_PADDING`] bytes after it (the parser reads, never uses, them). A
/// missing session is synthesized with `default_processor_id`.
pub fn parse_agent_request(
    body: &mut [u8],
    len: usize,
    default_processor_id: &Arc<str>,
) -> Result<(Session, Query), RequestError> {
    // A UTF-8 byte order mark is not part of the JSON text (RFC 8259 §8.1 lets a
    // parser ignore it; Fastify strips it).
    let len = if body[..len].starts_with(UTF8_BOM) {
        body.copy_within(UTF8_BOM.len()..len, 0);
        len - UTF8_BOM.len()
    } else {
        len
    };
    if body[..len].iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::Empty);
    }
    PARSER.with(|cell| {
        let mut guard = cell.borrow_mut();
        let parser = &mut *guard;
        // `Tape(Vec::new())`, unlike `Tape::null()`, does not allocate.
        let mut tape: Tape<'_> = std::mem::replace(&mut parser.tape, Tape(Vec::new())).reset();
        let result = match simd_json::fill_tape_padded(body, len, &mut parser.buffers, &mut tape) {
            Ok(()) => validate(tape.as_value(), default_processor_id),
            Err(e) => Err(RequestError::Malformed(describe(&e))),
        };
        parser.tape = tape.reset();
        result
    })
}

/// An optional member: absent or `null` (what Python's `None` serialises to) both
/// mean "not given".
fn optional<'v, 'i>(obj: &simd_json::tape::Object<'v, 'i>, key: &str) -> Option<Value<'v, 'i>> {
    obj.get(key).filter(|v| !v.is_null())
}

#[derive(Default)]
struct Issues(Vec<Issue>);

impl Issues {
    fn push(&mut self, path: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) {
        self.0.push(Issue {
            path: path.into(),
            message: message.into(),
        });
    }
}

fn validate(
    root: Value<'_, '_>,
    default_processor_id: &Arc<str>,
) -> Result<(Session, Query), RequestError> {
    let mut issues = Issues::default();
    let Some(obj) = root.as_object() else {
        issues.push("", "must be object");
        return Err(RequestError::Invalid(issues.0));
    };
    let query = match obj.get("query") {
        None => {
            issues.push("", "must have required property 'query'");
            None
        }
        Some(q) => validate_query(q, &mut issues),
    };
    let session = match optional(&obj, "session") {
        None => None,
        Some(s) => validate_session(s, &mut issues),
    };
    match (query, issues.0.is_empty()) {
        (Some(query), true) => {
            let session = session.unwrap_or_else(|| Session::synthesized(default_processor_id));
            Ok((session, query))
        }
        _ => Err(RequestError::Invalid(issues.0)),
    }
}

fn validate_query(v: Value<'_, '_>, issues: &mut Issues) -> Option<Query> {
    let Some(obj) = v.as_object() else {
        issues.push("/query", "must be object");
        return None;
    };
    let id = match obj.get("id") {
        None => {
            issues.push("/query", "must have required property 'id'");
            None
        }
        Some(id) => ulid_field(id, "/query/id", issues),
    };
    let prompt = match obj.get("prompt") {
        None => {
            issues.push("/query", "must have required property 'prompt'");
            None
        }
        Some(p) => match p.as_str() {
            None => {
                issues.push("/query/prompt", "must be string");
                None
            }
            Some(s) => check_prompt(s)
                .map(str::to_owned)
                .map_err(|m| issues.push("/query/prompt", m))
                .ok(),
        },
    };
    let context = match optional(&obj, "context") {
        None => None,
        Some(c) => validate_context(c, issues),
    };
    Some(Query {
        id: id?,
        prompt: prompt?,
        context,
    })
}

/// Checks a prompt's length in Unicode scalar values (what JSON-schema counts).
pub fn check_prompt(s: &str) -> Result<&str, &'static str> {
    // More than 4 bytes per scalar is impossible, so a long string needs no count.
    let chars = if s.len() > 4 * MAX_PROMPT_CHARS {
        MAX_PROMPT_CHARS + 1
    } else {
        s.chars().count()
    };
    if chars == 0 {
        Err("must NOT have fewer than 1 characters")
    } else if chars > MAX_PROMPT_CHARS {
        Err("must NOT have more than 10000 characters")
    } else {
        Ok(s)
    }
}

const ULID_MESSAGE: &str =
    "must be a ULID: 26 upper-case Crockford base32 characters, the first 0-7";

fn ulid_field(v: Value<'_, '_>, path: &'static str, issues: &mut Issues) -> Option<ulid::Ulid> {
    match v.as_str() {
        None => {
            issues.push(path, "must be string");
            None
        }
        Some(s) => {
            let id = parse_canonical_ulid(s);
            if id.is_none() {
                issues.push(path, ULID_MESSAGE);
            }
            id
        }
    }
}

fn optional_string(
    obj: &simd_json::tape::Object<'_, '_>,
    key: &str,
    path: &'static str,
    issues: &mut Issues,
) -> Option<String> {
    let v = optional(obj, key)?;
    match v.as_str() {
        Some(s) => Some(s.to_owned()),
        None => {
            issues.push(path, "must be string");
            None
        }
    }
}

fn number(v: &Value<'_, '_>) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_i64().map(|i| i as f64))
        .or_else(|| v.as_u64().map(|u| u as f64))
}

fn validate_context(v: Value<'_, '_>, issues: &mut Issues) -> Option<QueryContext> {
    let Some(obj) = v.as_object() else {
        issues.push("/query/context", "must be object");
        return None;
    };
    let mut ctx = QueryContext {
        session_id: optional_string(&obj, "sessionId", "/query/context/sessionId", issues),
        user_id: optional_string(&obj, "userId", "/query/context/userId", issues),
        preferences: None,
    };
    if let Some(p) = optional(&obj, "preferences") {
        let Some(p) = p.as_object() else {
            issues.push("/query/context/preferences", "must be object");
            return Some(ctx);
        };
        let mut prefs = Preferences::default();
        if let Some(t) = optional(&p, "temperature") {
            const PATH: &str = "/query/context/preferences/temperature";
            match number(&t) {
                None => issues.push(PATH, "must be number"),
                Some(x) if !(0.0..=2.0).contains(&x) => issues.push(PATH, "must be >= 0 and <= 2"),
                Some(x) => prefs.temperature = Some(x),
            }
        }
        if let Some(m) = optional(&p, "maxTokens") {
            const PATH: &str = "/query/context/preferences/maxTokens";
            match number(&m) {
                Some(x) if x.fract() != 0.0 || !x.is_finite() => {
                    issues.push(PATH, "must be integer")
                }
                None => issues.push(PATH, "must be integer"),
                Some(x) if !(1.0..=4000.0).contains(&x) => {
                    issues.push(PATH, "must be >= 1 and <= 4000")
                }
                Some(x) => prefs.max_tokens = Some(x as u32),
            }
        }
        ctx.preferences = Some(prefs);
    }
    Some(ctx)
}

fn validate_session(v: Value<'_, '_>, issues: &mut Issues) -> Option<Session> {
    let Some(obj) = v.as_object() else {
        issues.push("/session", "must be object");
        return None;
    };
    let processor_id = match obj.get("processor_id") {
        None => {
            issues.push("/session", "must have required property 'processor_id'");
            None
        }
        Some(p) => match p.as_str() {
            Some(s) => Some(Arc::<str>::from(s)),
            None => {
                issues.push("/session/processor_id", "must be string");
                None
            }
        },
    };
    let mut ulid = |key: &'static str, path: &'static str| match obj.get(key) {
        None => {
            issues.push("/session", format!("must have required property '{key}'"));
            None
        }
        Some(v) => ulid_field(v, path, issues),
    };
    let activity_id = ulid("activity_id", "/session/activity_id");
    let request_id = ulid("request_id", "/session/request_id");
    let interactions = match obj.get("interactions") {
        None => {
            issues.push("/session", "must have required property 'interactions'");
            None
        }
        Some(i) if i.as_array().is_none() => {
            issues.push("/session/interactions", "must be array");
            None
        }
        Some(i) => match to_json(i, 0) {
            Some(j) => Some(j),
            None => {
                issues.push("/session/interactions", "nested too deeply");
                None
            }
        },
    };
    Some(Session {
        processor_id: processor_id?,
        activity_id: activity_id?,
        request_id: request_id?,
        interactions: interactions?,
    })
}

/// Copies a tape value into an owned JSON value, refusing nesting past the limit.
fn to_json(v: Value<'_, '_>, depth: usize) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    if depth > MAX_INTERACTIONS_DEPTH {
        return None;
    }
    if let Some(a) = v.as_array() {
        let mut out = Vec::with_capacity(a.len());
        for item in a.iter() {
            out.push(to_json(item, depth + 1)?);
        }
        return Some(J::Array(out));
    }
    if let Some(o) = v.as_object() {
        let mut out = serde_json::Map::new();
        for (k, item) in o.iter() {
            out.insert(k.to_owned(), to_json(item, depth + 1)?);
        }
        return Some(J::Object(out));
    }
    Some(if let Some(s) = v.as_str() {
        J::String(s.to_owned())
    } else if let Some(b) = v.as_bool() {
        J::Bool(b)
    } else if let Some(i) = v.as_i64() {
        J::from(i)
    } else if let Some(u) = v.as_u64() {
        J::from(u)
    } else if let Some(f) = v.as_f64() {
        serde_json::Number::from_f64(f).map_or(J::Null, J::Number)
    } else {
        J::Null
    })
}

/// Decodes the `prompt` parameter of a query string (`a=1&prompt=...`), with
/// `application/x-www-form-urlencoded` rules (`+` is a space).
pub fn prompt_from_query(query: Option<&str>) -> Result<String, Issue> {
    let issue = |m: &'static str| Issue {
        path: "/prompt".into(),
        message: m.into(),
    };
    let raw = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("prompt="))
        .ok_or_else(|| issue("must have required parameter 'prompt'"))?;
    let bytes: Vec<u8> = raw
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    let decoded: Cow<'_, [u8]> = percent_encoding::percent_decode(&bytes).into();
    let s = std::str::from_utf8(&decoded).map_err(|_| issue("must be valid UTF-8"))?;
    check_prompt(s).map_err(issue)?;
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<(Session, Query), RequestError> {
        let mut body = json.as_bytes().to_vec();
        let len = body.len();
        body.resize(len + BODY_PADDING, 0);
        parse_agent_request(&mut body, len, &Arc::from("agentd"))
    }

    fn issues(json: &str) -> Vec<(String, String)> {
        match parse(json) {
            Err(RequestError::Invalid(v)) => v
                .into_iter()
                .map(|i| (i.path.into_owned(), i.message.into_owned()))
                .collect(),
            other => panic!("expected validation issues, got {other:?}"),
        }
    }

    const ID: &str = "01JDX3ABCDEFGHJKMNPQRSTVWX";

    #[test]
    fn minimal_request_gets_a_synthesized_session() {
        let (s, q) = parse(&format!(r#"{{"query":{{"id":"{ID}","prompt":"hi"}}}}"#)).unwrap();
        assert_eq!(q.prompt, "hi");
        assert_eq!(q.id.to_string(), ID);
        assert_eq!(&*s.processor_id, "agentd");
        assert_eq!(s.interactions, serde_json::json!([]));
        assert_ne!(s.activity_id, s.request_id);
    }

    #[test]
    fn full_request_with_unknown_keys() {
        let body = format!(
            r#"{{"x":1,"query":{{"id":"{ID}","prompt":"p","extra":[1],"context":{{"sessionId":"s","userId":"u","preferences":{{"temperature":0.5,"maxTokens":100,"z":0}}}}}},
               "session":{{"processor_id":"proc","activity_id":"{ID}","request_id":"{ID}","interactions":[{{"request":{{"a":"\u2028"}}}}],"more":true}}}}"#
        );
        let (s, q) = parse(&body).unwrap();
        let prefs = q.context.unwrap().preferences.unwrap();
        assert_eq!(prefs.temperature, Some(0.5));
        assert_eq!(prefs.max_tokens, Some(100));
        assert_eq!(&*s.processor_id, "proc");
        assert_eq!(s.interactions[0]["request"]["a"], "\u{2028}");
    }

    #[test]
    fn each_rule_reports_its_path() {
        assert_eq!(issues("[]"), vec![("".into(), "must be object".into())]);
        assert_eq!(issues("{}")[0].1, "must have required property 'query'");
        assert_eq!(
            issues(r#"{"query":{"prompt":"x"}}"#)[0].1,
            "must have required property 'id'"
        );
        assert_eq!(
            issues(&format!(r#"{{"query":{{"id":"{ID}"}}}}"#))[0].1,
            "must have required property 'prompt'"
        );
        assert_eq!(
            issues(r#"{"query":{"id":1,"prompt":"x"}}"#)[0],
            ("/query/id".into(), "must be string".into())
        );
        assert_eq!(
            issues(r#"{"query":{"id":null,"prompt":"x"}}"#)[0].0,
            "/query/id"
        );
        assert_eq!(
            issues(r#"{"query":{"id":"01jdx3abcdefghjkmnpqrstvwx","prompt":"x"}}"#)[0].0,
            "/query/id"
        );
        assert_eq!(
            issues(r#"{"query":{"id":"8ZZZZZZZZZZZZZZZZZZZZZZZZZ","prompt":"x"}}"#)[0].0,
            "/query/id"
        );
        assert_eq!(
            issues(&format!(r#"{{"query":{{"id":"{ID}","prompt":""}}}}"#))[0].0,
            "/query/prompt"
        );
        assert_eq!(
            issues(&format!(r#"{{"query":{{"id":"{ID}","prompt":5}}}}"#))[0].1,
            "must be string"
        );
        let ctx = |c: &str| {
            issues(&format!(
                r#"{{"query":{{"id":"{ID}","prompt":"x","context":{c}}}}}"#
            ))[0]
                .0
                .clone()
        };
        assert_eq!(ctx("1"), "/query/context");
        assert_eq!(ctx(r#"{"sessionId":1}"#), "/query/context/sessionId");
        assert_eq!(
            ctx(r#"{"preferences":{"temperature":2.5}}"#),
            "/query/context/preferences/temperature"
        );
        assert_eq!(
            ctx(r#"{"preferences":{"temperature":"1"}}"#),
            "/query/context/preferences/temperature"
        );
        assert_eq!(
            ctx(r#"{"preferences":{"maxTokens":1.5}}"#),
            "/query/context/preferences/maxTokens"
        );
        assert_eq!(
            ctx(r#"{"preferences":{"maxTokens":4001}}"#),
            "/query/context/preferences/maxTokens"
        );
        assert_eq!(
            ctx(r#"{"preferences":{"maxTokens":0}}"#),
            "/query/context/preferences/maxTokens"
        );
        let q = format!(r#""query":{{"id":"{ID}","prompt":"x"}}"#);
        let sess = |s: &str| issues(&format!("{{{q},\"session\":{s}}}"));
        assert_eq!(sess("1")[0].0, "/session");
        assert_eq!(sess("{}").len(), 4, "all four fields are required");
        assert_eq!(
            sess(&format!(
                r#"{{"processor_id":1,"activity_id":"x","request_id":"{ID}","interactions":{{}}}}"#
            ))
            .into_iter()
            .map(|i| i.0)
            .collect::<Vec<_>>(),
            vec![
                "/session/processor_id",
                "/session/activity_id",
                "/session/interactions"
            ]
        );
    }

    #[test]
    fn prompt_length_counts_unicode_scalars() {
        let ok = "😀".repeat(MAX_PROMPT_CHARS);
        assert!(parse(&format!(r#"{{"query":{{"id":"{ID}","prompt":"{ok}"}}}}"#)).is_ok());
        let long = "é".repeat(MAX_PROMPT_CHARS + 1);
        assert_eq!(
            issues(&format!(r#"{{"query":{{"id":"{ID}","prompt":"{long}"}}}}"#))[0].0,
            "/query/prompt"
        );
        // An escaped surrogate pair is one scalar.
        let pairs = "\\ud83d\\ude00".repeat(MAX_PROMPT_CHARS);
        assert!(parse(&format!(
            r#"{{"query":{{"id":"{ID}","prompt":"{pairs}"}}}}"#
        ))
        .is_ok());
    }

    #[test]
    fn null_optional_members_mean_absent() {
        let (s, q) = parse(&format!(
            r#"{{"query":{{"id":"{ID}","prompt":"p","context":null}},"session":null}}"#
        ))
        .unwrap();
        assert!(q.context.is_none());
        assert_eq!(&*s.processor_id, "agentd");
        let (_, q) = parse(&format!(
            r#"{{"query":{{"id":"{ID}","prompt":"p","context":{{"sessionId":null,"userId":null,"preferences":{{"temperature":null,"maxTokens":null}}}}}}}}"#
        ))
        .unwrap();
        let c = q.context.unwrap();
        assert_eq!((c.session_id, c.user_id), (None, None));
        // Required members stay required.
        assert_eq!(
            issues(r#"{"query":{"id":null,"prompt":"p"}}"#)[0].0,
            "/query/id"
        );
        assert_eq!(issues(r#"{"query":null}"#)[0].0, "/query");
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_errors_are_plain_words() {
        let body = format!(
            "\u{feff}{}",
            r#"{"query":{"id":"ID","prompt":"p"}}"#.replace("ID", ID)
        );
        assert!(parse(&body).is_ok());
        assert_eq!(parse("\u{feff}"), Err(RequestError::Empty));
        let Err(RequestError::Malformed(m)) = parse("\u{feff}\u{feff}{}") else {
            panic!("two marks are not JSON");
        };
        assert!(m.starts_with("The body is not valid JSON"), "{m}");
        assert!(!m.contains("InternalError") && !m.contains('ï'), "{m}");
        let Err(RequestError::Malformed(m)) = parse(r#"{"query":{"id":"x""#) else {
            panic!()
        };
        assert!(m.contains("near byte"), "{m}");
    }

    #[test]
    fn malformed_bodies() {
        assert_eq!(parse(""), Err(RequestError::Empty));
        assert_eq!(parse("  \n"), Err(RequestError::Empty));
        assert!(matches!(parse("{"), Err(RequestError::Malformed(_))));
        assert!(matches!(
            parse(r#"{"a":"\ud800"}"#),
            Err(RequestError::Malformed(_))
        ));
        assert!(matches!(
            parse(r#"{"a":"\udc00x"}"#),
            Err(RequestError::Malformed(_))
        ));
        let mut bad = br#"{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"#.to_vec();
        bad.extend_from_slice(b"\"\xff\xfe\"}}");
        let len = bad.len();
        bad.resize(len + BODY_PADDING, 0);
        assert!(matches!(
            parse_agent_request(&mut bad, len, &Arc::from("a")),
            Err(RequestError::Malformed(_))
        ));
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn stream_prompt_from_query_string() {
        assert_eq!(
            prompt_from_query(Some("prompt=hello+world%21")).unwrap(),
            "hello world!"
        );
        assert_eq!(
            prompt_from_query(Some("a=1&prompt=%E2%9A%A1")).unwrap(),
            "⚡"
        );
        assert!(prompt_from_query(None).is_err());
        assert!(prompt_from_query(Some("prompt=")).is_err());
        assert!(prompt_from_query(Some("prompt=%FF")).is_err());
    }
}
