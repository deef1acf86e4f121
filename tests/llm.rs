//! The LLM agent and connector against a fake upstream that is a real HTTP server
//! speaking OpenAI's and Anthropic's streaming formats, with faults injected.

mod support;

use std::time::{Duration, Instant};

use agentd::Config;
use fake_llm::{Behaviour, Chunking, FakeLlm, Fault, Options, Provider};
use support::*;

fn llm_config() -> Config {
    let mut c = config();
    c.workers = Some(1);
    c.llm_max_retries = 2;
    c.llm_retry_base_delay = 10;
    c.llm_retry_max_delay = 50;
    c.health_check_interval = 60_000;
    c
}

fn with_openai(mut c: Config, fake: &FakeLlm) -> Config {
    c.openai_api_key = Some("sk-test-key".into());
    c.openai_base_url = fake.openai_base_url();
    c.openai_model = "fake-gpt".into();
    c
}

fn with_anthropic(mut c: Config, fake: &FakeLlm) -> Config {
    c.anthropic_api_key = Some("ant-test-key".into());
    c.anthropic_base_url = fake.anthropic_base_url();
    c.anthropic_model = "fake-claude".into();
    c
}

async fn fake(tokens: usize) -> FakeLlm {
    FakeLlm::start(Options {
        default: Behaviour {
            tokens,
            ..Behaviour::default()
        },
        ..Options::default()
    })
    .await
    .unwrap()
}

/// The chat requests the fake received (health probes left out).
fn completions(fake: &FakeLlm) -> Vec<fake_llm::Recorded> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect()
}

fn body_of(r: &fake_llm::Recorded) -> &serde_json::Value {
    &r.body
}

fn texts(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .filter(|e| e.event == "AI_RESPONSE" && e.data["is_complete"] == false)
        .map(|e| e.data["content"].as_str().unwrap().to_string())
        .collect()
}

fn error_of(evs: &[Event]) -> Option<serde_json::Value> {
    evs.iter()
        .find(|e| e.event == "error")
        .map(|e| e.data["content"].clone())
}

async fn ask(server: &TestServer, body: String) -> Vec<Event> {
    let res = post_json(server, "/agent", body).await;
    assert_eq!(res.status(), 200);
    let evs = events(res).await;
    assert_well_formed(&evs);
    evs
}

fn start_llm(c: Config) -> TestServer {
    let agent = agentd::configured_agent(&c).expect("llm agent");
    start(c, agent)
}

#[tokio::test]
async fn openai_tokens_stream_through_with_analysis_and_performance() {
    let fake = fake(5).await;
    let mut c = with_openai(llm_config(), &fake);
    c.enable_metrics = true;
    let server = start_llm(c);
    let body = serde_json::json!({
        "query": {"id": ID, "prompt": "Explain streams", "context": {"preferences": {"temperature": 1.5, "maxTokens": 77}}},
    })
    .to_string();
    let evs = ask(&server, body).await;
    let names: Vec<&str> = evs.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"ANALYSIS"));
    assert_eq!(&names[names.len() - 2..], &["PERFORMANCE", "done"]);
    assert_eq!(texts(&evs).len(), 5);
    assert_eq!(evs[0].data["content"]["provider"], "openai");
    assert_eq!(evs[0].data["content"]["model"], "fake-gpt");
    let perf = &evs[evs.len() - 2].data["content"];
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "agentd_llm_overhead_seconds_count{provider=\"openai\"} 1",
        "agentd_llm_time_to_first_token_seconds_count{provider=\"openai\"} 1",
        "agentd_llm_requests_total{provider=\"openai\"} 1",
    ] {
        assert!(metrics.contains(family), "{family} missing");
    }
    assert!(
        perf["tokensOut"].as_u64().is_some(),
        "usage is counted: {perf}"
    );
    let reqs = completions(&fake);
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.header("authorization"), Some("Bearer sk-test-key"));
    assert_eq!(body_of(r)["model"], "fake-gpt");
    assert_eq!(body_of(r)["stream"], true);
    assert_eq!(body_of(r)["stream_options"]["include_usage"], true);
    assert_eq!(body_of(r)["temperature"], 1.5);
    assert_eq!(body_of(r)["max_tokens"], 77);
    assert_eq!(body_of(r)["messages"][1]["content"], "Explain streams");
}

#[tokio::test]
async fn anthropic_tokens_stream_through() {
    let fake = fake(4).await;
    let server = start_llm(with_anthropic(llm_config(), &fake));
    let evs = ask(&server, body("hello")).await;
    assert_eq!(texts(&evs).len(), 4);
    let r = &completions(&fake)[0];
    assert_eq!(r.header("x-api-key"), Some("ant-test-key"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(body_of(r)["stream"], true);
    assert_eq!(body_of(r)["model"], "fake-claude");
    assert!(body_of(r)["max_tokens"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn utf8_split_at_every_byte_arrives_whole() {
    let fake = FakeLlm::start(Options {
        default: Behaviour {
            tokens: 3,
            token_text: "é⚡😀".into(),
            chunking: Chunking::SplitEvery(1),
            ..Behaviour::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    for cfg in [
        with_openai(llm_config(), &fake),
        with_anthropic(llm_config(), &fake),
    ] {
        let server = start_llm(cfg);
        let evs = ask(&server, body("x")).await;
        let all: String = texts(&evs).concat();
        assert!(all.contains("é⚡😀"), "{all}");
        assert!(error_of(&evs).is_none());
    }
}

#[tokio::test]
async fn rate_limits_are_retried_honouring_retry_after() {
    let fake = fake(2).await;
    fake.push_fault_for(
        Provider::OpenAi,
        Fault::Status {
            status: 429,
            retry_after: None,
            retry_after_ms: Some("300".into()),
        },
    );
    let server = start_llm(with_openai(llm_config(), &fake));
    let started = Instant::now();
    let evs = ask(&server, body("x")).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited as asked"
    );
    assert!(error_of(&evs).is_none());
    assert_eq!(texts(&evs).len(), 2);
    assert_eq!(completions(&fake).len(), 2);
}

#[tokio::test]
async fn server_errors_are_retried_up_to_the_limit() {
    let fake = fake(2).await;
    for _ in 0..3 {
        fake.push_fault_for(
            Provider::OpenAi,
            Fault::Status {
                status: 500,
                retry_after: None,
                retry_after_ms: None,
            },
        );
    }
    let server = start_llm(with_openai(llm_config(), &fake));
    let evs = ask(&server, body("x")).await;
    let err = error_of(&evs).expect("all three tries failed");
    assert_eq!(err["error_code"], 502);
    assert_eq!(err["details"]["kind"], "upstream");
    assert_eq!(completions(&fake).len(), 3, "1 try + 2 retries");
    // Nothing of the upstream's error body leaks.
    assert!(!evs.iter().any(|e| e.raw.contains("sk-test-key")));
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let fake = fake(2).await;
    fake.push_fault_for(
        Provider::OpenAi,
        Fault::Status {
            status: 401,
            retry_after: None,
            retry_after_ms: None,
        },
    );
    let server = start_llm(with_openai(llm_config(), &fake));
    let evs = ask(&server, body("x")).await;
    assert_eq!(error_of(&evs).unwrap()["details"]["kind"], "client");
    assert_eq!(completions(&fake).len(), 1);
}

#[tokio::test]
async fn fails_over_to_the_next_provider_before_the_first_token() {
    let bad = fake(2).await;
    let good = fake(3).await;
    for _ in 0..3 {
        bad.push_fault_for(
            Provider::OpenAi,
            Fault::Status {
                status: 529,
                retry_after: None,
                retry_after_ms: None,
            },
        );
    }
    let mut c = with_anthropic(with_openai(llm_config(), &bad), &good);
    c.llm_max_retries = 0;
    let server = start_llm(c);
    // Round-robin starts with openai (the bad one) on the first request.
    let evs = ask(&server, body("x")).await;
    assert!(error_of(&evs).is_none(), "{:?}", error_of(&evs));
    assert_eq!(texts(&evs).len(), 3);
    assert_eq!(evs[0].data["content"]["provider"], "anthropic");
    assert_eq!(completions(&bad).len(), 1);
}

#[tokio::test]
async fn no_retry_after_the_first_token() {
    let fake = fake(5).await;
    fake.push_fault_for(Provider::OpenAi, Fault::MidStreamError { after_tokens: 2 });
    let server = start_llm(with_openai(llm_config(), &fake));
    let evs = ask(&server, body("x")).await;
    assert_eq!(texts(&evs).len(), 2);
    let err = error_of(&evs).expect("an error, not a silently short answer");
    assert_eq!(err["details"]["kind"], "upstream");
    assert_eq!(completions(&fake).len(), 1);
}

#[tokio::test]
async fn every_broken_stream_ends_with_error_and_done() {
    let fake = fake(5).await;
    let mut c = with_anthropic(llm_config(), &fake);
    c.llm_idle_timeout = 300;
    c.llm_max_retries = 0;
    // Four failures in a row would open the breaker (that it counts streams that fail
    // after starting is what the breaker test shows); here each fault is seen alone.
    c.llm_breaker_threshold = 100;
    let server = start_llm(c);
    let cases = [
        (Fault::EofWithoutDone { after_tokens: 2 }, "truncated"),
        (Fault::Reset { after_tokens: 1 }, "network"),
        (Fault::Stall { after_tokens: 1 }, "timeout"),
        (Fault::MidStreamError { after_tokens: 1 }, "overloaded"),
    ];
    for (fault, kind) in cases {
        fake.push_fault_for(Provider::Anthropic, fault);
        let evs = ask(&server, body("x")).await;
        let err = error_of(&evs).unwrap_or_else(|| panic!("{kind}: no error event"));
        assert_eq!(err["details"]["kind"], kind);
    }
}

#[tokio::test]
async fn a_hanging_upstream_times_out() {
    let fake = fake(2).await;
    fake.push_fault_for(Provider::OpenAi, Fault::HangBeforeHeaders);
    let mut c = with_openai(llm_config(), &fake);
    c.llm_first_byte_timeout = 300;
    c.llm_max_retries = 0;
    let server = start_llm(c);
    let started = Instant::now();
    let evs = ask(&server, body("x")).await;
    assert_eq!(error_of(&evs).unwrap()["error_code"], 504);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn the_breaker_opens_and_fails_fast() {
    let fake = fake(2).await;
    for _ in 0..2 {
        fake.push_fault_for(
            Provider::OpenAi,
            Fault::Status {
                status: 500,
                retry_after: None,
                retry_after_ms: None,
            },
        );
    }
    let mut c = with_openai(llm_config(), &fake);
    c.llm_max_retries = 0;
    c.llm_breaker_threshold = 2;
    c.llm_breaker_reset = 300;
    let server = start_llm(c);
    for _ in 0..2 {
        assert!(error_of(&ask(&server, body("x")).await).is_some());
    }
    let evs = ask(&server, body("x")).await;
    let err = error_of(&evs).unwrap();
    assert_eq!(err["details"]["kind"], "breaker_open");
    assert_eq!(err["error_code"], 503);
    assert_eq!(completions(&fake).len(), 2, "not sent while open");
    let ready = client()
        .get(server.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    // After the reset timeout a probe goes through and closes it.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let evs = ask(&server, body("x")).await;
    assert!(error_of(&evs).is_none());
    assert_eq!(get_status(&server, "/health/ready").await, 200);
}

#[tokio::test]
async fn a_client_that_leaves_aborts_the_upstream_request() {
    let fake = FakeLlm::start(Options {
        default: Behaviour {
            tokens: 1000,
            token_delay: Duration::from_millis(20),
            ..Behaviour::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    let server = start_llm(with_openai(llm_config(), &fake));
    let res = post_json(&server, "/agent", body("x")).await;
    let mut stream = res.bytes_stream();
    use futures_util::StreamExt;
    let _ = stream.next().await;
    assert!(eventually(Duration::from_secs(5), || fake.in_flight() == 1).await);
    drop(stream);
    assert!(
        eventually(Duration::from_secs(5), || fake.cancelled() == 1).await,
        "the fake sees the upstream request aborted"
    );
}

#[tokio::test]
async fn sequential_requests_reuse_one_pooled_connection() {
    let fake = fake(2).await;
    let server = start_llm(with_openai(llm_config(), &fake));
    for _ in 0..5 {
        assert!(error_of(&ask(&server, body("x")).await).is_none());
    }
    assert_eq!(completions(&fake).len(), 5);
    let conns: std::collections::HashSet<u64> =
        completions(&fake).iter().map(|r| r.connection).collect();
    assert_eq!(conns.len(), 1, "one TCP connection for sequential requests");
}

#[tokio::test]
async fn unhealthy_providers_make_readiness_fail() {
    let fake = fake(2).await;
    let mut c = with_openai(llm_config(), &fake);
    c.health_check_interval = 100;
    let server = start_llm(c);
    assert!(status_becomes(&server, "/health/ready", 200, Duration::from_secs(2)).await);
    fake.set_default(Behaviour {
        tokens: 2,
        ..Behaviour::default()
    });
    for _ in 0..3 {
        fake.push_fault(Fault::Status {
            status: 503,
            retry_after: None,
            retry_after_ms: None,
        });
    }
    assert!(
        status_becomes(&server, "/health/ready", 503, Duration::from_secs(2)).await,
        "a failed probe makes the only provider unusable"
    );
    // Probes succeed again afterwards.
    assert!(status_becomes(&server, "/health/ready", 200, Duration::from_secs(3)).await);
}

#[test]
fn a_bad_llm_config_file_is_refused_with_its_line() {
    let dir = std::env::temp_dir().join(format!("agentd-llm-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("llm.toml");
    std::fs::write(&path, "strategy = \"round-robin\"\n[[providers]]\nname = \"x\"\nkind = \"openai\"\nmodle = \"typo\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentd"))
        .env("LLM_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line"), "{err}");
    assert!(err.contains("modle"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn llm_concurrent_requests_caps_requests_in_flight_per_provider_per_process() {
    let fake = FakeLlm::start(Options {
        default: Behaviour {
            tokens: 5,
            token_delay: Duration::from_millis(60),
            ..Behaviour::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    let mut c = with_openai(llm_config(), &fake);
    // Two workers share the one cap of the process.
    c.workers = Some(2);
    c.llm_concurrent_requests = 2;
    // Long enough for every one of the six to get its turn.
    c.llm_queue_timeout = 10_000;
    let server = std::sync::Arc::new(start_llm(c));
    let asks: Vec<_> = (0..6)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move { ask(&server, body(&format!("q{i}"))).await })
        })
        .collect();
    // Sample the upstream's in-flight count while the six wait their turn two by two.
    let mut most = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) && asks.iter().any(|a| !a.is_finished()) {
        most = most.max(fake.in_flight());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for a in asks {
        assert!(
            error_of(&a.await.unwrap()).is_none(),
            "waiting is not failing"
        );
    }
    assert_eq!(
        most, 2,
        "at most LLM_CONCURRENT_REQUESTS upstream requests at once, whatever WORKERS is"
    );
}

/// The figures of `GET /metrics` as text.
async fn metrics_text(server: &TestServer) -> String {
    client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn json_of(server: &TestServer, path: &str) -> (u16, serde_json::Value) {
    let res = client().get(server.url(path)).send().await.unwrap();
    let code = res.status().as_u16();
    (code, res.json().await.unwrap())
}

/// Both providers on one fake, one slot each, no retries.
fn two_providers_one_slot_each(fake: &FakeLlm, queue_timeout_ms: u64) -> Config {
    let mut c = with_anthropic(with_openai(llm_config(), fake), fake);
    c.enable_metrics = true;
    c.llm_concurrent_requests = 1;
    c.llm_queue_timeout = queue_timeout_ms;
    c.llm_max_retries = 0;
    c
}

/// A long answer that holds its provider's slot for about `ms`.
fn long_answer(ms: u64) -> String {
    body(&format!("[[tokens=4,token_delay_ms={}]]", ms / 4))
}

#[tokio::test]
async fn a_full_provider_is_waited_for_at_most_llm_queue_timeout_then_failed_over() {
    let fake = fake(2).await;
    let server = std::sync::Arc::new(start_llm(two_providers_one_slot_each(&fake, 300)));
    assert!(status_becomes(&server, "/health/ready", 200, Duration::from_secs(2)).await);
    // Round-robin: the first request starts at openai, the second at anthropic, the
    // third at openai again.
    let first = tokio::spawn({
        let s = server.clone();
        async move { ask(&s, long_answer(2_000)).await }
    });
    assert!(eventually(Duration::from_secs(2), || fake.in_flight() == 1).await);
    let second = ask(&server, body("quick")).await;
    assert!(error_of(&second).is_none());
    assert_eq!(second[0].data["content"]["provider"], "anthropic");
    // openai is full: the third waits for its slot, then fails over to anthropic.
    let t = Instant::now();
    let third = ask(&server, body("quick")).await;
    let took = t.elapsed();
    assert!(error_of(&third).is_none(), "{:?}", error_of(&third));
    assert_eq!(third[0].data["content"]["provider"], "anthropic");
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_millis(900),
        "waited LLM_QUEUE_TIMEOUT for openai, no longer: {took:?}"
    );
    let m = metrics_text(&server).await;
    for line in [
        "agentd_llm_saturated_total{provider=\"openai\",reason=\"queue_timeout\"} 1",
        "agentd_llm_slots_in_use{provider=\"openai\"} 1",
        "agentd_llm_slots_limit{provider=\"openai\"} 1",
        "agentd_llm_queue_waiters{provider=\"openai\"} 0",
        "agentd_llm_failovers_total{provider=\"anthropic\"} 1",
        "agentd_llm_saturated_requests_total 0",
    ] {
        assert!(m.contains(line), "{line} missing from\n{m}");
    }
    assert!(
        m.contains("agentd_llm_queue_wait_seconds_count{provider=\"openai\"} 2"),
        "{m}"
    );
    assert!(error_of(&first.await.unwrap()).is_none());
}

#[tokio::test]
async fn when_no_provider_has_room_the_request_ends_saturated_without_waiting_longer() {
    let fake = fake(2).await;
    let server = std::sync::Arc::new(start_llm(two_providers_one_slot_each(&fake, 200)));
    assert!(status_becomes(&server, "/health/ready", 200, Duration::from_secs(2)).await);
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let s = server.clone();
            tokio::spawn(async move { ask(&s, long_answer(2_000)).await })
        })
        .collect();
    assert!(eventually(Duration::from_secs(2), || fake.in_flight() == 2).await);
    let t = Instant::now();
    let evs = ask(&server, body("x")).await;
    let took = t.elapsed();
    let err = error_of(&evs).expect("an honest error, not a wait");
    assert_eq!(err["error_code"], 503);
    assert_eq!(err["details"]["kind"], "saturated");
    // One LLM_QUEUE_TIMEOUT per provider tried (LLM_MAX_ATTEMPTS = 2), not LLM_TIMEOUT.
    assert!(
        took >= Duration::from_millis(380) && took < Duration::from_millis(1_000),
        "{took:?}"
    );
    assert_eq!(completions(&fake).len(), 2, "never sent upstream");
    // Saturation is load, not failure: readiness holds, the figures show it.
    assert_eq!(get_status(&server, "/health/ready").await, 200);
    let (code, detailed) = json_of(&server, "/health/detailed").await;
    assert_eq!(code, 200, "{detailed}");
    let openai = &detailed["checks"]["providers"]["concurrency"]["openai"];
    assert_eq!(openai["inUse"], 1, "{detailed}");
    assert_eq!(openai["limit"], 1);
    assert_eq!(openai["saturated"], 1);
    let (_, stats) = json_of(&server, "/stats").await;
    assert_eq!(
        stats["llm"]["anthropic"]["concurrency"]["saturated"], 1,
        "{stats}"
    );
    assert_eq!(stats["llmSaturatedRequests"], 1);
    let m = metrics_text(&server).await;
    assert!(m.contains("agentd_llm_saturated_requests_total 1"), "{m}");
    assert!(
        m.contains("agentd_llm_errors_total{provider=\"openai\",kind=\"saturated\"} 1"),
        "{m}"
    );
    for h in holders {
        assert!(error_of(&h.await.unwrap()).is_none());
    }
}

#[tokio::test]
async fn more_answers_than_slots_wait_a_bounded_time_and_llm_queue_max_bounds_the_waiters() {
    let fake = fake(2).await;
    let mut c = with_openai(llm_config(), &fake);
    c.llm_concurrent_requests = 2;
    c.llm_queue_timeout = 150;
    c.llm_queue_max = 2;
    c.llm_max_retries = 0;
    c.enable_metrics = true;
    let server = std::sync::Arc::new(start_llm(c));
    assert!(status_becomes(&server, "/health/ready", 200, Duration::from_secs(2)).await);
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let s = server.clone();
            tokio::spawn(async move { ask(&s, long_answer(1_200)).await })
        })
        .collect();
    assert!(eventually(Duration::from_secs(2), || fake.in_flight() == 2).await);
    // Six more at once: two may wait (LLM_QUEUE_MAX), four are refused at once; none
    // waits past LLM_QUEUE_TIMEOUT.
    let t = Instant::now();
    let extra: Vec<_> = (0..6)
        .map(|_| {
            let s = server.clone();
            tokio::spawn(async move {
                let evs = ask(&s, body("x")).await;
                (evs, t.elapsed())
            })
        })
        .collect();
    for e in extra {
        let (evs, took) = e.await.unwrap();
        let err = error_of(&evs).expect("saturated");
        assert_eq!(err["details"]["kind"], "saturated");
        assert!(took < Duration::from_millis(600), "waited {took:?}");
    }
    let m = metrics_text(&server).await;
    for line in [
        "agentd_llm_saturated_total{provider=\"openai\",reason=\"queue_full\"} 4",
        "agentd_llm_saturated_total{provider=\"openai\",reason=\"queue_timeout\"} 2",
        "agentd_llm_saturated_requests_total 6",
    ] {
        assert!(m.contains(line), "{line} missing from\n{m}");
    }
    assert_eq!(completions(&fake).len(), 2);
    for h in holders {
        assert!(error_of(&h.await.unwrap()).is_none());
    }
}

#[tokio::test]
async fn the_guide_value_applies_when_set_and_the_default_is_a_server_s() {
    assert_eq!(llm_config().llm_concurrent_requests, 1024);
    let fake = fake(1).await;
    let mut c = with_openai(llm_config(), &fake);
    c.llm_concurrent_requests = 10;
    let agent = agentd::configured_agent(&c).unwrap();
    let deps = agent.dependencies();
    let provider = deps[0].members[0].endpoint.as_ref().unwrap();
    let slots = provider.slots.as_ref().unwrap();
    assert_eq!(slots.limits().limit, 10);
    assert_eq!(slots.limits().queue_timeout, Duration::from_millis(250));
}

#[tokio::test]
async fn a_huge_retry_after_ms_fails_over_instead_of_panicking() {
    let fake = fake(3).await;
    for huge in ["1e300", "1e22"] {
        fake.push_fault_for(
            Provider::OpenAi,
            Fault::Status {
                status: 429,
                retry_after: None,
                retry_after_ms: Some(huge.into()),
            },
        );
        let mut c = with_anthropic(with_openai(llm_config(), &fake), &fake);
        c.llm_max_retries = 2;
        let server = start_llm(c);
        let t = Instant::now();
        let evs = ask(&server, body("x")).await;
        assert!(error_of(&evs).is_none(), "{huge}: {:?}", error_of(&evs));
        assert_eq!(evs[0].data["content"]["provider"], "anthropic", "{huge}");
        assert_eq!(texts(&evs).len(), 3);
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    // Alone, the provider's 429 is the answer: clean, at once.
    fake.push_fault_for(
        Provider::OpenAi,
        Fault::Status {
            status: 429,
            retry_after: None,
            retry_after_ms: Some("1e300".into()),
        },
    );
    let server = start_llm(with_openai(llm_config(), &fake));
    let evs = ask(&server, body("x")).await;
    let err = error_of(&evs).unwrap();
    assert_eq!(err["error_code"], 429);
    assert_eq!(err["details"]["kind"], "rate_limited");
}

#[tokio::test]
async fn readiness_says_starting_until_the_first_probe_answers() {
    let fake = fake(2).await;
    // The first probe of each provider hangs (until the probe's timeout).
    fake.push_fault_for(Provider::Models, Fault::HangBeforeHeaders);
    fake.push_fault_for(Provider::Models, Fault::HangBeforeHeaders);
    let mut c = with_anthropic(with_openai(llm_config(), &fake), &fake);
    c.health_check_interval = 1_000;
    let server = start_llm(c);
    let (code, ready) = json_of(&server, "/health/ready").await;
    assert_eq!(code, 503);
    assert_eq!(ready["status"], "starting", "{ready}");
    let (code, detailed) = json_of(&server, "/health/detailed").await;
    assert_eq!(code, 503);
    assert_eq!(detailed["status"], "starting", "{detailed}");
    assert_eq!(detailed["checks"]["providers"]["status"], "starting");
    assert_eq!(detailed["checks"]["providers"]["usable"], 0);
    // The next round answers.
    assert!(status_becomes(&server, "/health/ready", 200, Duration::from_secs(4)).await);
    let (_, detailed) = json_of(&server, "/health/detailed").await;
    assert_eq!(detailed["checks"]["providers"]["usable"], 2, "{detailed}");
}

#[tokio::test]
async fn unreachable_providers_are_not_ready_from_the_start() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = llm_config();
    c.openai_api_key = Some("sk-test-key".into());
    c.openai_base_url = format!("http://127.0.0.1:{dead}/v1");
    c.anthropic_api_key = Some("ant-test-key".into());
    c.anthropic_base_url = format!("http://127.0.0.1:{dead}");
    // An interval far longer than the test: only the first probe can say it.
    c.health_check_interval = 60_000;
    let server = start_llm(c);
    assert_ne!(
        get_status(&server, "/health/ready").await,
        200,
        "never ready on a guess"
    );
    let t = Instant::now();
    loop {
        let (code, ready) = json_of(&server, "/health/ready").await;
        assert_eq!(code, 503);
        if ready["status"] == "not ready" {
            assert_eq!(ready["reason"], "no LLM provider is usable");
            break;
        }
        assert_eq!(ready["status"], "starting");
        assert!(t.elapsed() < Duration::from_secs(3), "probes answered late");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, detailed) = json_of(&server, "/health/detailed").await;
    assert_eq!(code, 503);
    assert_eq!(detailed["status"], "unhealthy");
    assert_eq!(detailed["checks"]["providers"]["usable"], 0, "{detailed}");
    assert_eq!(detailed["checks"]["providers"]["status"], "down");
}

#[tokio::test]
async fn the_health_thread_lets_go_of_the_providers_when_the_server_stops() {
    let fake = fake(1).await;
    let mut c = with_openai(llm_config(), &fake);
    c.health_check_interval = 60_000;
    let agent = agentd::configured_agent(&c).unwrap();
    let provider = std::sync::Arc::downgrade(
        agent.dependencies()[0].members[0]
            .endpoint
            .as_ref()
            .unwrap(),
    );
    let server = start(c, agent);
    assert!(status_becomes(&server, "/health/ready", 200, Duration::from_secs(2)).await);
    server.stop().await;
    // The agent (and its router) went with the server; the probe thread, which holds
    // the providers, must end at once rather than after its 60 s sleep.
    assert!(
        eventually(Duration::from_secs(1), || provider.upgrade().is_none()).await,
        "the health thread outlived the server"
    );
}

#[tokio::test]
async fn idle_pooled_connections_close_after_llm_pool_idle_timeout() {
    let fake = fake(2).await;
    let mut c = with_openai(llm_config(), &fake);
    c.llm_pool_idle_timeout = 200;
    let server = start_llm(c);
    assert!(error_of(&ask(&server, body("x")).await).is_none());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(error_of(&ask(&server, body("y")).await).is_none());
    let conns: std::collections::HashSet<u64> =
        completions(&fake).iter().map(|r| r.connection).collect();
    assert_eq!(
        conns.len(),
        2,
        "the idle connection was dropped, a new one made"
    );
}

#[tokio::test]
async fn connecting_is_bounded_by_llm_connect_timeout() {
    // A listener whose backlog is full: the kernel leaves further SYNs unanswered, so a
    // connect hangs until the client gives up.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let mut c = llm_config();
    c.openai_api_key = Some("sk-test-key".into());
    c.openai_base_url = format!("http://{addr}/v1");
    c.llm_connect_timeout = 300;
    c.llm_max_retries = 0;
    c.llm_timeout = 20_000;
    let server = start_llm(c);
    let t0 = Instant::now();
    let evs = ask(&server, body("x")).await;
    let took = t0.elapsed();
    assert!(error_of(&evs).is_some(), "{evs:?}");
    // Not refused at once: the connect hung until the timeout cut it.
    assert!(
        took >= Duration::from_millis(250),
        "failed after only {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the connect was not cut at LLM_CONNECT_TIMEOUT: {took:?}"
    );
}
