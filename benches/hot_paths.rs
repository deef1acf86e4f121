//! Micro-benchmarks of the hot paths, with allocation counts (divan's AllocProfiler):
//! routing, request validation, event encoding and JSON string escaping.
//!
//! Run: `cargo bench --bench hot_paths`

use agentd::http::{route, RouteMatch};
use agentd::protocol::events::{write_event, write_json_str, EventBody, Framing};
use agentd::protocol::ids::next_ulid;
use agentd::protocol::request::{parse_agent_request, BODY_PADDING};
use bytes::BytesMut;
use divan::{black_box, AllocProfiler, Bencher};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

fn main() {
    divan::main();
}

#[divan::bench(args = ["/health", "/health/live/", "//agent//", "/nope/deeper/path"])]
fn routing(path: &str) -> RouteMatch {
    route(&http::Method::GET, black_box(path))
}

const WITH_SESSION: &str = r#"{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"Hello Fast Agent!"},"session":{"processor_id":"sentient-chat-client","activity_id":"01JDX3ABCDEFGHJKMNPQRSTVWX","request_id":"01JDX3ABCDEFGHJKMNPQRSTVWY","interactions":[]}}"#;
const NO_SESSION: &str =
    r#"{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"Hello Fast Agent!"}}"#;

fn padded(json: &str) -> Vec<u8> {
    let mut v = json.as_bytes().to_vec();
    v.resize(json.len() + BODY_PADDING, 0);
    v
}

#[divan::bench(args = ["with_session", "without_session"])]
fn validate_request(bencher: Bencher, case: &str) {
    let json = if case == "with_session" {
        WITH_SESSION
    } else {
        NO_SESSION
    };
    let template = padded(json);
    bencher
        .with_inputs(|| template.clone())
        .bench_local_refs(|buf| parse_agent_request(buf, json.len(), &agent_id()).is_ok());
}

fn agent_id() -> std::sync::Arc<str> {
    std::sync::Arc::from("agentd")
}

#[divan::bench]
fn validate_10k_char_prompt(bencher: Bencher) {
    let json = format!(
        r#"{{"query":{{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"{}"}}}}"#,
        "é".repeat(10_000)
    );
    let template = padded(&json);
    bencher
        .with_inputs(|| template.clone())
        .bench_local_refs(|buf| parse_agent_request(buf, json.len(), &agent_id()).is_ok());
}

/// The echo agent's three events into one buffer (what one response writes).
#[divan::bench]
fn encode_echo_events(bencher: Bencher) {
    let mut buf = BytesMut::with_capacity(4096);
    bencher.bench_local(|| {
        buf.clear();
        let sid = "abcdef0000";
        let chunk = EventBody::Chunk {
            stream_id: sid,
            is_complete: false,
            content: "⚡ High-speed response to: Hello Fast Agent!",
        };
        write_event(
            &mut buf,
            Framing::Named,
            "RESPONSE",
            next_ulid(),
            "agentd",
            &chunk,
        );
        let close = EventBody::Chunk {
            stream_id: sid,
            is_complete: true,
            content: " ",
        };
        write_event(
            &mut buf,
            Framing::Named,
            "RESPONSE",
            next_ulid(),
            "agentd",
            &close,
        );
        write_event(
            &mut buf,
            Framing::Named,
            "done",
            next_ulid(),
            "agentd",
            &EventBody::Done,
        );
        buf.len()
    });
}

#[divan::bench(args = [16, 1024, 10_000])]
fn escape_json_string(bencher: Bencher, len: usize) {
    let s: String = "héllo \u{2028} wörld \"q\"\n"
        .chars()
        .cycle()
        .take(len)
        .collect();
    let mut buf = BytesMut::with_capacity(len * 2 + 16);
    bencher.bench_local(|| {
        buf.clear();
        write_json_str(&mut buf, black_box(&s));
        buf.len()
    });
}

#[divan::bench]
fn next_event_id() -> ulid::Ulid {
    next_ulid()
}
