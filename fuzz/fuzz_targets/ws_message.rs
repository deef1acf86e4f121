//! Arbitrary text as one WebSocket message through agentd's message grammar
//! (`routes::ws::message::parse_message`).
//!
//! Input: the bytes as UTF-8 (what a text frame carries; the socket refuses anything
//! else with 1007 before the grammar sees it), other inputs are skipped.
//!
//! Checks: no panic; an accepted query's prompt passes `check_prompt` (1 to 10000
//! characters) and its id is a canonical ULID; a message that is not a JSON object is
//! refused; every `requestId` kept for echoing is one compact JSON value that reads
//! back as what the message sent; an error always has a message.

#![no_main]

use agentd::protocol::ids::parse_canonical_ulid;
use agentd::protocol::request::check_prompt;
use agentd::routes::ws::message::{parse_message, ClientMessage};
use libfuzzer_sys::fuzz_target;

/// The `requestId` kept for echoing must be JSON equal to the one the message sent.
fn check_request_id(text: &str, kept: Option<&[u8]>) {
    let Some(kept) = kept else { return };
    let echoed: serde_json::Value =
        serde_json::from_slice(kept).expect("an echoed requestId is one JSON value");
    // Only a message that parsed as an object can have had one.
    let sent: serde_json::Value = serde_json::from_str(text).expect("the message was JSON");
    if let Some(v) = sent.get("requestId") {
        // serde_json keeps the last of repeated keys, agentd the first: compare only
        // when the key is not repeated.
        if text.matches("\"requestId\"").count() == 1 {
            assert_eq!(&echoed, v, "requestId changed on its way back");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let is_object = matches!(
        serde_json::from_str::<serde_json::Value>(text),
        Ok(serde_json::Value::Object(_))
    );
    match parse_message(text) {
        ClientMessage::Query { query, request_id } => {
            assert!(is_object, "a query that is not a JSON object: {text:?}");
            assert!(
                check_prompt(&query.prompt).is_ok(),
                "accepted prompt fails check_prompt: {:?}",
                query.prompt
            );
            let id = query.id.to_string();
            assert_eq!(parse_canonical_ulid(&id), Some(query.id), "id {id}");
            check_request_id(text, request_id.as_deref());
        }
        ClientMessage::Ping { request_id } => {
            assert!(is_object, "a ping that is not a JSON object: {text:?}");
            check_request_id(text, request_id.as_deref());
        }
        ClientMessage::Invalid { error, request_id } => {
            assert!(!error.is_empty());
            if request_id.is_some() {
                check_request_id(text, request_id.as_deref());
            }
        }
    }
});
