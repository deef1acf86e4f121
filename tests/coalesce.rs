//! Token coalescing (`STREAM_CHUNK_SIZE`, `STREAM_BUFFER_TIMEOUT`) end to end: the LLM
//! agent against the fake provider and the proxy against a fake upstream agent. With
//! coalescing on the client gets fewer chunk events carrying the same text, the first
//! delta alone and at once, pending text before any later event (an error included),
//! and `done` last.

mod support;

use std::time::Duration;

use agentd::config::AgentKind;
use agentd::Config;
use fake_llm::{Behaviour, FakeLlm, Fault, Options, Provider};
use support::upstream_agent::{Mode, UpstreamAgent};
use support::*;

fn coalescing(mut c: Config, chunk_size: u32, timeout_ms: u64) -> Config {
    c.stream_chunk_size = chunk_size;
    c.stream_buffer_timeout = timeout_ms;
    c
}

fn llm_config(fake: &FakeLlm) -> Config {
    let mut c = config();
    c.workers = Some(1);
    c.llm_max_retries = 0;
    c.health_check_interval = 60_000;
    c.openai_api_key = Some("sk-test-key".into());
    c.openai_base_url = fake.openai_base_url();
    c.openai_model = "fake-gpt".into();
    c
}

fn proxy_config(up: &UpstreamAgent) -> Config {
    let mut c = config();
    c.workers = Some(1);
    c.agent = Some(AgentKind::Proxy);
    c.agent_upstreams = Some(up.url());
    c.proxy_health_check_interval = 60_000;
    c
}

async fn ask(c: Config, prompt: &str) -> Vec<Event> {
    let agent = agentd::configured_agent(&c).expect("agent");
    let server = start(c, agent);
    let res = post_json(&server, "/agent", body(prompt)).await;
    assert_eq!(res.status(), 200);
    let evs = events(res).await;
    assert_well_formed(&evs);
    evs
}

/// The contents of the text chunks (completions left out), in order.
fn chunks(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .filter(|e| e.data["content_type"] == "chunked.text" && e.data["is_complete"] == false)
        .map(|e| e.data["content"].as_str().unwrap().to_owned())
        .collect()
}

fn names(evs: &[Event]) -> Vec<&str> {
    evs.iter().map(|e| e.event.as_str()).collect()
}

async fn fake(behaviour: Behaviour) -> FakeLlm {
    FakeLlm::start(Options {
        default: behaviour,
        ..Options::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn llm_tokens_are_joined_into_fewer_events_with_the_same_text_and_the_first_alone() {
    let behaviour = Behaviour {
        tokens: 200,
        token_text: "é😀".into(),
        token_delay: Duration::from_millis(1),
        ..Behaviour::default()
    };
    let fake = fake(behaviour.clone()).await;
    let prompt = "x".repeat(200); // max_tokens large enough for 200 tokens
    let off = ask(llm_config(&fake), &prompt).await;
    let on = ask(coalescing(llm_config(&fake), 100, 50), &prompt).await;
    let (off_chunks, on_chunks) = (chunks(&off), chunks(&on));
    assert_eq!(off_chunks.len(), 200, "off: one event per token");
    assert_eq!(off_chunks.concat(), behaviour.text(200));
    assert_eq!(on_chunks.concat(), off_chunks.concat(), "the same text");
    assert!(
        on_chunks.len() <= 200 / 10,
        "on: ~100 characters (~23 tokens) per event, got {} events",
        on_chunks.len()
    );
    assert_eq!(
        on_chunks[0],
        behaviour.token(0),
        "the first token leaves alone"
    );
    for n in [&off, &on] {
        let names = names(n);
        assert_eq!(names.first(), Some(&"ANALYSIS"));
        assert_eq!(&names[names.len() - 2..], ["PERFORMANCE", "done"]);
    }
}

#[tokio::test]
async fn llm_pending_text_leaves_at_the_buffer_timeout() {
    // Tokens 150 ms apart, a 10 ms timeout: every token leaves on its own, by the
    // timer, long before the next one.
    let behaviour = Behaviour {
        tokens: 4,
        token_delay: Duration::from_millis(150),
        ..Behaviour::default()
    };
    let fake = fake(behaviour.clone()).await;
    let evs = ask(coalescing(llm_config(&fake), 1000, 10), "x").await;
    let want: Vec<String> = (0..4).map(|i| behaviour.token(i)).collect();
    assert_eq!(chunks(&evs), want);
}

#[tokio::test]
async fn llm_an_error_flushes_the_pending_text_first() {
    let fake = fake(Behaviour::default()).await;
    fake.push_fault_for(Provider::OpenAi, Fault::MidStreamError { after_tokens: 4 });
    let behaviour = Behaviour::default();
    let evs = ask(coalescing(llm_config(&fake), 1000, 10_000), "x").await;
    assert_eq!(
        chunks(&evs),
        [
            behaviour.token(0),
            behaviour.text(4)[behaviour.token(0).len()..].to_owned()
        ]
    );
    let order: Vec<(&str, bool)> = evs
        .iter()
        .map(|e| (e.event.as_str(), e.data["is_complete"] == true))
        .collect();
    assert_eq!(
        order,
        [
            ("ANALYSIS", false),
            ("AI_RESPONSE", false),
            ("AI_RESPONSE", false),
            ("error", false),
            ("AI_RESPONSE", true),
            ("done", false),
        ],
        "the text, then the error, then the stream closed"
    );
}

#[tokio::test]
async fn proxy_chunks_are_joined_and_flushed_by_the_completion() {
    let up = UpstreamAgent::start(Mode::WellBehaved).await;
    let off = ask(proxy_config(&up), "x").await;
    assert_eq!(chunks(&off), ["one ", "two ", "three"]);
    let on = ask(coalescing(proxy_config(&up), 100, 10_000), "x").await;
    assert_eq!(chunks(&on), ["one ", "two three"]);
    assert_eq!(
        names(&on),
        ["GREETING", "DATA", "RESPONSE", "RESPONSE", "RESPONSE", "done"]
    );
}

#[tokio::test]
async fn proxy_the_end_of_the_upstream_stream_flushes_before_the_error() {
    let up = UpstreamAgent::start(Mode::NoDone).await;
    let evs = ask(coalescing(proxy_config(&up), 100, 10_000), "x").await;
    assert_eq!(chunks(&evs), ["one ", "two three"]);
    let names = names(&evs);
    let error = names.iter().position(|n| *n == "error").expect("an error");
    assert_eq!(&names[error..], ["error", "done"], "{names:?}");
}

#[tokio::test]
async fn proxy_slow_chunks_leave_at_the_buffer_timeout() {
    let up = UpstreamAgent::start(Mode::Slow {
        events: 3,
        delay: Duration::from_millis(150),
    })
    .await;
    let evs = ask(coalescing(proxy_config(&up), 1000, 10), "x").await;
    assert_eq!(chunks(&evs), ["slow 0 ", "slow 1 ", "slow 2 "]);
    let fast = UpstreamAgent::start(Mode::Slow {
        events: 40,
        delay: Duration::from_millis(1),
    })
    .await;
    let evs = ask(coalescing(proxy_config(&fast), 100, 10_000), "x").await;
    let got = chunks(&evs);
    let want: String = (0..40).map(|i| format!("slow {i} ")).collect();
    assert_eq!(got.concat(), want);
    assert_eq!(got[0], "slow 0 ");
    assert!(got.len() <= 5, "{got:?}");
}
