use http::{HeaderMap, HeaderValue, Method, Version};

use super::handshake::{accept_key, check_upgrade};
use super::message::{parse_message, ClientMessage};

#[test]
fn accept_key_matches_rfc_6455() {
    // RFC 6455 §1.3.
    let v = accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(v, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn base64_pads() {
    let enc = |s: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    assert_eq!(enc(b""), "");
    assert_eq!(enc(b"f"), "Zg==");
    assert_eq!(enc(b"fo"), "Zm8=");
    assert_eq!(enc(b"foo"), "Zm9v");
    assert_eq!(enc(b"foobar"), "Zm9vYmFy");
    assert_eq!(enc(&[0xfb, 0xff]), "+/8=");
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

const GOOD: &[(&str, &str)] = &[
    ("connection", "keep-alive, Upgrade"),
    ("upgrade", "WebSocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

#[test]
fn upgrade_checks() {
    let h = headers(GOOD);
    assert_eq!(
        check_upgrade(&Method::GET, Version::HTTP_11, &h).unwrap(),
        b"dGhlIHNhbXBsZSBub25jZQ=="
    );
    let (issues, bad_version) =
        check_upgrade(&Method::GET, Version::HTTP_2, &headers(&[])).unwrap_err();
    assert!(bad_version);
    assert_eq!(issues.len(), 5, "{issues:?}");
    let mut h = headers(GOOD);
    h.insert("sec-websocket-version", HeaderValue::from_static("8"));
    let (issues, bad_version) = check_upgrade(&Method::GET, Version::HTTP_11, &h).unwrap_err();
    assert!(bad_version);
    assert_eq!(issues[0].path, "/headers/sec-websocket-version");
    let mut h = headers(GOOD);
    h.insert("sec-websocket-key", HeaderValue::from_static("short=="));
    let (issues, bad_version) = check_upgrade(&Method::GET, Version::HTTP_11, &h).unwrap_err();
    assert!(!bad_version);
    assert_eq!(issues[0].path, "/headers/sec-websocket-key");
    let mut h = headers(GOOD);
    h.append(
        "sec-websocket-key",
        HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
    );
    assert!(check_upgrade(&Method::GET, Version::HTTP_11, &h).is_err());
    assert!(check_upgrade(&Method::HEAD, Version::HTTP_11, &headers(GOOD)).is_err());
}

fn error_of(text: &str) -> String {
    match parse_message(text) {
        ClientMessage::Invalid { error, .. } => error.into_owned(),
        other => panic!("expected an error for {text}, got {other:?}"),
    }
}

#[test]
fn messages() {
    assert!(matches!(
        parse_message(r#"{"type":"ping"}"#),
        ClientMessage::Ping { request_id: None }
    ));
    match parse_message(r#"{"type":"ping","requestId":{"a":[1,"\u2028"]}}"#) {
        ClientMessage::Ping {
            request_id: Some(r),
        } => assert_eq!(&r[..], br#"{"a":[1,"\u2028"]}"#),
        other => panic!("{other:?}"),
    }
    match parse_message(r#"{"requestId":null,"prompt":"h\u00e9","type":"agent-query","x":1}"#) {
        ClientMessage::Query { query, request_id } => {
            assert_eq!(query.prompt, "hé");
            assert_eq!(request_id.as_deref(), Some(&b"null"[..]));
        }
        other => panic!("{other:?}"),
    }
    match parse_message(r#"{"type":"agent-query","prompt":"x","id":"01JDX3ABCDEFGHJKMNPQRSTVWX"}"#)
    {
        ClientMessage::Query { query, .. } => {
            assert_eq!(query.id.to_string(), "01JDX3ABCDEFGHJKMNPQRSTVWX")
        }
        other => panic!("{other:?}"),
    }
    assert!(error_of("{").starts_with("invalid JSON"));
    assert!(error_of("[1]").starts_with("the message must be a JSON object"));
    assert!(error_of("[\"ping\"]").starts_with("the message must be a JSON object"));
    assert!(error_of("7").starts_with("the message must be a JSON object"));
    assert!(error_of(r#"{"type":"nope"}"#).starts_with("unknown type"));
    assert!(error_of(r#"{"prompt":"x"}"#).starts_with("type: must have"));
    assert_eq!(error_of(r#"{"type":1}"#), "type: must be string");
    assert!(error_of(r#"{"type":"agent-query"}"#).starts_with("prompt: must have"));
    assert_eq!(
        error_of(r#"{"type":"agent-query","prompt":null}"#),
        "prompt: must be string"
    );
    assert_eq!(
        error_of(r#"{"type":"agent-query","prompt":""}"#),
        "prompt: must NOT have fewer than 1 characters"
    );
    assert!(
        error_of(r#"{"type":"agent-query","prompt":"x","id":"01jdx3abcdefghjkmnpqrstvwx"}"#)
            .starts_with("id: must be a ULID")
    );
    assert_eq!(
        error_of(r#"{"type":"agent-query","prompt":"x","id":[]}"#),
        "id: must be string"
    );
    match parse_message(
        r#"{"type":"agent-query","query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"nested"},"requestId":"r2"}"#,
    ) {
        ClientMessage::Query { query, request_id } => {
            assert_eq!(query.prompt, "nested");
            assert_eq!(query.id.to_string(), "01JDX3ABCDEFGHJKMNPQRSTVWX");
            assert_eq!(request_id.as_deref(), Some(&br#""r2""#[..]));
        }
        _ => panic!("the guide's nested shape is a query"),
    }
    assert!(
        error_of(r#"{"type":"agent-query","query":{"id":"x"}}"#).starts_with("prompt: must have")
    );
    assert_eq!(
        error_of(r#"{"type":"agent-query","query":"x"}"#),
        "query: must be object"
    );
    match parse_message(r#"{"type":"bad","requestId":7}"#) {
        ClientMessage::Invalid { request_id, .. } => {
            assert_eq!(request_id.as_deref(), Some(&b"7"[..]))
        }
        other => panic!("{other:?}"),
    }
}
