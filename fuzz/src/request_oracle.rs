//! The request rules of the protocol (`{query, session?}`), restated over a
//! [`Json`](crate::json_tree::Json) tree parsed by serde_json.
//!
//! An independent second implementation: agentd's validator runs on a simd-json tape,
//! this one on serde_json's output, and the fuzz target demands that both agree. It
//! follows the protocol text, not agentd's code, except where the protocol is silent:
//! a duplicated key is read as its first occurrence (what agentd does; see the README).

use std::collections::BTreeSet;

use crate::json_tree::{Json, Num};

/// Longest prompt, in Unicode scalar values (the protocol's 10000).
pub const PROMPT_MAX_CHARS: usize = 10_000;
/// Deepest nesting agentd copies out of `session.interactions`.
pub const INTERACTIONS_MAX_DEPTH: usize = 64;

/// `query.context` as the rules accept it.
#[derive(Clone, Debug, PartialEq)]
pub struct Context {
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub preferences: Option<(Option<f64>, Option<u32>)>,
}

/// `session` as the rules accept it.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub processor_id: String,
    pub activity_id: u128,
    pub request_id: u128,
    /// As a map-based reader sees it (the last duplicate wins inside interactions).
    pub interactions: serde_json::Value,
}

/// A request the rules accept.
#[derive(Clone, Debug, PartialEq)]
pub struct Accepted {
    pub id: u128,
    pub prompt: String,
    pub context: Option<Context>,
    pub session: Option<Session>,
}

/// The verdict on one JSON document.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Accepted(Accepted),
    /// The JSON pointers of every broken rule.
    Refused(BTreeSet<String>),
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A canonical ULID: 26 upper-case Crockford base32 digits, the first `0`-`7`.
pub fn ulid(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 26 || !(b'0'..=b'7').contains(&b[0]) {
        return None;
    }
    let mut n: u128 = 0;
    for &c in b {
        let digit = CROCKFORD.iter().position(|&a| a == c)? as u128;
        n = (n << 5) | digit;
    }
    Some(n)
}

struct Refusals(BTreeSet<String>);

impl Refusals {
    fn at(&mut self, path: &str) {
        self.0.insert(path.to_owned());
    }
}

/// Judges a parsed request body.
pub fn judge(root: &Json) -> Verdict {
    let mut r = Refusals(BTreeSet::new());
    if !root.is_object() {
        r.at("");
        return Verdict::Refused(r.0);
    }
    let query = match root.get("query") {
        None => {
            r.at("");
            None
        }
        Some(q) => query(q, &mut r),
    };
    let session = optional(root, "session").and_then(|s| session(s, &mut r));
    match query {
        Some(mut a) if r.0.is_empty() => {
            a.session = session;
            Verdict::Accepted(a)
        }
        _ => Verdict::Refused(r.0),
    }
}

fn query(q: &Json, r: &mut Refusals) -> Option<Accepted> {
    if !q.is_object() {
        r.at("/query");
        return None;
    }
    let id = match q.get("id") {
        None => {
            r.at("/query");
            None
        }
        Some(v) => {
            let id = v.as_str().and_then(ulid);
            if id.is_none() {
                r.at("/query/id");
            }
            id
        }
    };
    let prompt = match q.get("prompt") {
        None => {
            r.at("/query");
            None
        }
        Some(v) => match v.as_str() {
            Some(s) if (1..=PROMPT_MAX_CHARS).contains(&s.chars().count()) => Some(s.to_owned()),
            _ => {
                r.at("/query/prompt");
                None
            }
        },
    };
    let context = optional(q, "context").and_then(|c| context(c, r));
    Some(Accepted {
        id: id?,
        prompt: prompt?,
        context,
        session: None,
    })
}

/// The protocol's optional members: `null` is the same as absent.
fn optional<'a>(obj: &'a Json, key: &str) -> Option<&'a Json> {
    obj.get(key).filter(|v| !matches!(v, Json::Null))
}

fn optional_string(obj: &Json, key: &str, path: &str, r: &mut Refusals) -> Option<String> {
    let v = optional(obj, key)?;
    if v.as_str().is_none() {
        r.at(path);
    }
    v.as_str().map(str::to_owned)
}

fn context(c: &Json, r: &mut Refusals) -> Option<Context> {
    if !c.is_object() {
        r.at("/query/context");
        return None;
    }
    let mut ctx = Context {
        session_id: optional_string(c, "sessionId", "/query/context/sessionId", r),
        user_id: optional_string(c, "userId", "/query/context/userId", r),
        preferences: None,
    };
    if let Some(p) = optional(c, "preferences") {
        if !p.is_object() {
            r.at("/query/context/preferences");
            return Some(ctx);
        }
        let temperature = optional(p, "temperature").and_then(|t| match t {
            Json::Num(n) if (0.0..=2.0).contains(&n.as_f64()) => Some(n.as_f64()),
            _ => {
                r.at("/query/context/preferences/temperature");
                None
            }
        });
        let max_tokens = optional(p, "maxTokens").and_then(|m| {
            let n = match m {
                Json::Num(Num::U(u)) => Some(*u as f64),
                Json::Num(Num::I(i)) => Some(*i as f64),
                Json::Num(Num::F(f)) if f.fract() == 0.0 => Some(*f),
                _ => None,
            };
            match n {
                Some(x) if (1.0..=4000.0).contains(&x) => Some(x as u32),
                _ => {
                    r.at("/query/context/preferences/maxTokens");
                    None
                }
            }
        });
        ctx.preferences = Some((temperature, max_tokens));
    }
    Some(ctx)
}

fn session(s: &Json, r: &mut Refusals) -> Option<Session> {
    if !s.is_object() {
        r.at("/session");
        return None;
    }
    let processor_id = match s.get("processor_id") {
        None => {
            r.at("/session");
            None
        }
        Some(v) => {
            if v.as_str().is_none() {
                r.at("/session/processor_id");
            }
            v.as_str().map(str::to_owned)
        }
    };
    let mut ulid_field = |key: &str| match s.get(key) {
        None => {
            r.at("/session");
            None
        }
        Some(v) => {
            let id = v.as_str().and_then(ulid);
            if id.is_none() {
                r.at(&format!("/session/{key}"));
            }
            id
        }
    };
    let activity_id = ulid_field("activity_id");
    let request_id = ulid_field("request_id");
    let interactions = match s.get("interactions") {
        None => {
            r.at("/session");
            None
        }
        Some(i @ Json::Arr(_)) if i.depth() <= INTERACTIONS_MAX_DEPTH => Some(i.to_value()),
        Some(_) => {
            r.at("/session/interactions");
            None
        }
    };
    Some(Session {
        processor_id: processor_id?,
        activity_id: activity_id?,
        request_id: request_id?,
        interactions: interactions?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids() {
        assert_eq!(ulid("00000000000000000000000001"), Some(1));
        assert_eq!(ulid("7ZZZZZZZZZZZZZZZZZZZZZZZZZ"), Some(u128::MAX));
        assert_eq!(ulid("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"), None);
        assert_eq!(ulid("0000000000000000000000000I"), None);
        assert_eq!(ulid("0000000000000000000000000"), None);
    }

    #[test]
    fn rules() {
        let judge_text = |t: &str| judge(&crate::json_tree::parse(t.as_bytes()).unwrap());
        let ok = r#"{"query":{"id":"00000000000000000000000001","prompt":"hi"}}"#;
        assert!(matches!(judge_text(ok), Verdict::Accepted(a) if a.id == 1 && a.prompt == "hi"));
        let Verdict::Refused(paths) = judge_text(r#"{"query":{"prompt":""},"session":{}}"#) else {
            panic!("accepted");
        };
        assert_eq!(
            paths.into_iter().collect::<Vec<_>>(),
            ["/query", "/query/prompt", "/session"]
        );
    }
}
