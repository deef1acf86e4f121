//! Arbitrary bytes as a `POST /agent` body through agentd's request validator (the
//! simd-json tape parser and the protocol's rules), judged against serde_json and an
//! independent restatement of the rules.
//!
//! Checks: no panic; a leading byte order mark is skipped; an all-whitespace body is `Empty`; `Malformed` exactly when
//! serde_json refuses the text; otherwise accept/refuse, the refused JSON pointers and
//! every extracted value agree with the oracle; an accepted request satisfies the
//! protocol (canonical ULIDs, 1 to 10000-character prompt); and the bytes after the
//! body, which the parser may read, never change the result.

#![no_main]

use std::collections::BTreeSet;
use std::sync::Arc;

use agentd::protocol::request::{parse_agent_request, RequestError, BODY_PADDING};
use agentd::{Query, Session};
use agentd_fuzz::json_tree::{self, ParseError};
use agentd_fuzz::request_oracle::{self, Verdict};
use libfuzzer_sys::fuzz_target;

const DEFAULT_PROCESSOR: &str = "fuzz-processor";

fn run(data: &[u8], padding: u8) -> Result<(Session, Query), RequestError> {
    // Exactly the body and its padding, like the server's buffer, so a read past the
    // padding leaves the allocation (and the address sanitizer sees it).
    let mut buf = Vec::with_capacity(data.len() + BODY_PADDING);
    buf.extend_from_slice(data);
    buf.resize(data.len() + BODY_PADDING, padding);
    parse_agent_request(&mut buf, data.len(), &Arc::from(DEFAULT_PROCESSOR))
}

/// The result with the parts a missing session makes at random left out.
fn comparable(r: &Result<(Session, Query), RequestError>) -> String {
    match r {
        Ok((s, q))
            if &*s.processor_id == DEFAULT_PROCESSOR && s.interactions == serde_json::json!([]) =>
        {
            format!("Ok(synthesized?, {q:?})")
        }
        other => format!("{other:?}"),
    }
}

fn check_accepted(session: &Session, query: &Query, session_sent: bool) {
    let id = query.id.to_string();
    assert_eq!(request_oracle::ulid(&id), Some(query.id.0), "query.id {id}");
    let chars = query.prompt.chars().count();
    assert!(
        (1..=10_000).contains(&chars),
        "prompt of {chars} characters"
    );
    if !session_sent {
        assert_eq!(&*session.processor_id, DEFAULT_PROCESSOR);
        assert_ne!(session.activity_id, session.request_id);
        assert_eq!(session.interactions, serde_json::json!([]));
    }
    assert!(session.interactions.is_array());
}

fn compare(oracle: &Verdict, got: &Result<(Session, Query), RequestError>, root: &json_tree::Json) {
    match (oracle, got) {
        (Verdict::Accepted(want), Ok((session, query))) => {
            check_accepted(session, query, root.get("session").is_some());
            assert_eq!(query.id.0, want.id);
            assert_eq!(query.prompt, want.prompt);
            let context = query.context.as_ref().map(|c| request_oracle::Context {
                session_id: c.session_id.clone(),
                user_id: c.user_id.clone(),
                preferences: c.preferences.map(|p| (p.temperature, p.max_tokens)),
            });
            assert_eq!(context, want.context);
            if let Some(ws) = &want.session {
                assert_eq!(&*session.processor_id, ws.processor_id);
                assert_eq!(session.activity_id.0, ws.activity_id);
                assert_eq!(session.request_id.0, ws.request_id);
                assert_eq!(session.interactions, ws.interactions);
            }
        }
        (Verdict::Refused(want), Err(RequestError::Invalid(issues))) => {
            assert!(!issues.is_empty());
            let paths: BTreeSet<String> = issues.iter().map(|i| i.path.to_string()).collect();
            assert_eq!(&paths, want, "refused at other pointers: {issues:?}");
            for i in issues {
                assert!(!i.message.is_empty());
            }
        }
        (want, got) => panic!("oracle says {want:?}, agentd says {got:?}"),
    }
}

/// True when valid JSON `text` holds an integer literal outside both `i64` and `u64`.
/// JSON allows any size (JavaScript and Python read them), simd-json without its
/// `big-int-as-float` feature refuses them: a known divergence (see the README).
fn has_out_of_range_integer(text: &[u8]) -> bool {
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < text.len()
                    && matches!(text[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let token = std::str::from_utf8(&text[start..i]).unwrap_or("");
                let integer = !token.contains(['.', 'e', 'E']);
                if integer && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                    return true;
                }
            }
            _ => i += 1,
        }
    }
    false
}

fuzz_target!(|data: &[u8]| {
    let got = run(data, 0);
    // The padding is read, never used: other bytes there change nothing.
    let again = run(data, b'"');
    assert_eq!(
        comparable(&got),
        comparable(&again),
        "the padding changed the result"
    );

    // One leading UTF-8 byte order mark is skipped, as RFC 8259 §8.1 allows.
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    if data.iter().all(u8::is_ascii_whitespace) {
        assert_eq!(got, Err(RequestError::Empty));
        return;
    }
    assert_ne!(got, Err(RequestError::Empty));
    match json_tree::parse(data) {
        Err(ParseError::TooDeep) => {
            if let Ok((s, q)) = &got {
                check_accepted(s, q, true);
            }
        }
        Err(ParseError::NumberOutOfRange) => {
            // A number no f64 holds: agentd must refuse the body, never read infinity.
            assert!(matches!(got, Err(RequestError::Malformed(_))), "{got:?}");
        }
        Err(ParseError::Invalid(why)) => {
            assert!(
                matches!(got, Err(RequestError::Malformed(_))),
                "serde_json refuses ({why}), agentd says {got:?}"
            );
        }
        Ok(_) if has_out_of_range_integer(data) => {
            assert!(matches!(got, Err(RequestError::Malformed(_))), "{got:?}");
        }
        Ok(root) => {
            assert!(
                !matches!(got, Err(RequestError::Malformed(_))),
                "serde_json accepts {root:?}, agentd says {got:?}"
            );
            compare(&request_oracle::judge(&root), &got, &root);
        }
    }
});
