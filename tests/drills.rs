//! Fault drills over real sockets: SIGTERM to the real binary with 200 SSE streams in
//! flight (streams that finish before the deadline, and streams the deadline cuts), a
//! worker that panics mid-stream, and the LLM upstream killed mid-stream and restarted.
//!
//! Each drill asserts what a client sees: every stream ends with `done` (complete, or
//! `atomic.error` then `done`), none is cut short except the crashed worker's, and the
//! server is back to serving within its bound. The drills take turns (one at a time),
//! so their timing bounds hold on a small machine. Redis killed and restarted under
//! load is drilled in tests/rate_limit.rs, next to the limiter's other outage tests.

// A test process, not a worker: it may block its own threads, and signal or limit the
// processes it starts.
#![allow(clippy::disallowed_methods, unsafe_code)]

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentd::{Agent, AgentError, Query, ResponseHandler, Session};
use async_trait::async_trait;
use eventsource_stream::Eventsource;
use fake_llm::{Behaviour, FakeLlm, Options};
use futures_util::StreamExt;
use support::*;
use tokio::sync::Notify;

/// Drills run one at a time: each one loads the machine, and each asserts time bounds.
static ONE_DRILL_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The longest wait for any one event of a stream.
const EVENT_WAIT: Duration = Duration::from_secs(20);

/// How one SSE response ended, as the client saw it.
struct Outcome {
    events: Vec<Event>,
    /// The connection failed before the body's end (reset, closed mid-chunk).
    transport_error: Option<String>,
    /// When the body ended (cleanly or not).
    ended: Instant,
}

impl Outcome {
    /// Ended cleanly with `done` last: not truncated.
    fn ends_with_done(&self) -> bool {
        self.transport_error.is_none()
            && self.events.last().map(|e| e.event.as_str()) == Some("done")
    }

    fn error(&self) -> Option<&serde_json::Value> {
        self.events
            .iter()
            .find(|e| e.event == "error")
            .map(|e| &e.data["content"])
    }

    /// Text chunks received (stream closes left out).
    fn chunks(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter(|e| e.data["content_type"] == "chunked.text" && e.data["is_complete"] == false)
            .map(|e| e.data["content"].as_str().unwrap())
            .collect()
    }
}

/// Reads an SSE body to its end; `on_first_chunk` gets the first text chunk's content
/// the moment it arrives (the stream is then known to be in flight).
async fn read_stream(res: reqwest::Response, on_first_chunk: impl FnOnce(&str)) -> Outcome {
    assert_eq!(res.status(), 200);
    let mut on_first_chunk = Some(on_first_chunk);
    let mut stream = res.bytes_stream().eventsource();
    let mut events = Vec::new();
    let mut transport_error = None;
    while let Some(item) = tokio::time::timeout(EVENT_WAIT, stream.next())
        .await
        .expect("an event or the body's end within the wait")
    {
        let ev = match item {
            Ok(ev) => ev,
            Err(e) => {
                transport_error = Some(e.to_string());
                break;
            }
        };
        let data: serde_json::Value = serde_json::from_str(&ev.data).expect("event data is JSON");
        if data["content_type"] == "chunked.text" && data["is_complete"] == false {
            if let Some(f) = on_first_chunk.take() {
                f(data["content"].as_str().unwrap());
            }
        }
        events.push(Event {
            event: ev.event,
            id: ev.id,
            data,
            raw: ev.data,
        });
    }
    Outcome {
        events,
        transport_error,
        ended: Instant::now(),
    }
}

/// Counts streams that reached their first chunk; wakes whoever waits for a number.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    changed: Notify,
}

impl InFlight {
    fn arrived(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Waits until `n` streams are in flight; false if `timeout` passes first.
    async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async {
            loop {
                let changed = self.changed.notified();
                if self.count.load(Ordering::SeqCst) >= n {
                    return;
                }
                changed.await;
            }
        })
        .await
        .is_ok()
    }
}

fn agent_post(client: &reqwest::Client, url: &str, body: String) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
}

/// A query for the LLM agent that lets the upstream's whole answer through (the
/// agent's own `max_tokens` default follows the prompt's length).
fn llm_body(prompt: &str) -> String {
    serde_json::json!({
        "query": {"id": ID, "prompt": prompt, "context": {"preferences": {"maxTokens": 2000}}}
    })
    .to_string()
}

/// A fake upstream whose answers are `tokens` tokens, `token_delay` apart.
async fn slow_upstream(tokens: usize, token_delay: Duration) -> FakeLlm {
    let fake = FakeLlm::start(Options {
        default: Behaviour {
            tokens,
            token_delay,
            ..Behaviour::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    fake.set_recording(false);
    fake
}

// ---- SIGTERM to the real binary ----

/// The `agentd` binary as a child process (killed by its PID if the drill fails).
struct Binary {
    child: tokio::process::Child,
    port: u16,
    log: PathBuf,
}

impl Binary {
    /// Starts `agentd` serving the LLM agent against `fake`, two workers, with
    /// `SHUTDOWN_TIMEOUT` = `shutdown_timeout`, and waits until it answers.
    async fn llm_agent(fake: &FakeLlm, shutdown_timeout: Duration, name: &str) -> Binary {
        let port = free_port();
        let log =
            std::env::temp_dir().join(format!("agentd-drill-{name}-{}.log", std::process::id()));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentd"))
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("WORKERS", "2")
            .env("NODE_ENV", "production")
            .env("LOG_LEVEL", "warn")
            .env("AGENT", "llm")
            .env("OPENAI_API_KEY", "sk-drill")
            .env("OPENAI_BASE_URL", fake.openai_base_url())
            .env("OPENAI_MODEL", "fake-gpt")
            // Every one of the 200 streams holds an upstream request at once.
            .env("LLM_CONCURRENT_REQUESTS", "256")
            .env("HEALTH_CHECK_INTERVAL", "60000")
            // A busy test machine must not turn the drill's requests into 503s.
            .env("MAX_EVENT_LOOP_DELAY", "0")
            .env("SHUTDOWN_TIMEOUT", shutdown_timeout.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("agentd starts");
        let bin = Binary { child, port, log };
        let live = format!("http://127.0.0.1:{port}/health/live");
        let started = Instant::now();
        while client().get(&live).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "agentd did not answer within 10 s: {}",
                bin.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bin
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sigterm(&self) {
        let pid = self.child.id().expect("running") as i32;
        // SAFETY: kill(2) on our own child's PID.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// 200 streams in flight, SIGTERM, every stream ends with `done`, exit 0 within the
/// deadline + 1 s. Returns the streams' outcomes for the variant's own checks.
async fn sigterm_with_streams_in_flight(
    tokens: usize,
    token_delay: Duration,
    shutdown_timeout: Duration,
    name: &str,
) -> Vec<Outcome> {
    const STREAMS: usize = 200;
    let fake = slow_upstream(tokens, token_delay).await;
    let mut bin = Binary::llm_agent(&fake, shutdown_timeout, name).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let in_flight = Arc::new(InFlight::default());
    let url = bin.url("/agent");
    let streams: Vec<_> = (0..STREAMS)
        .map(|_| {
            let req = agent_post(&client, &url, llm_body("drill"));
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                let res = req.send().await.expect("response head");
                read_stream(res, |_| in_flight.arrived()).await
            })
        })
        .collect();
    assert!(
        in_flight.wait_for(STREAMS, Duration::from_secs(20)).await,
        "only {} of {STREAMS} streams started: {}",
        in_flight.count.load(Ordering::SeqCst),
        bin.log_text()
    );

    bin.sigterm();
    let signalled = Instant::now();
    let mut outcomes = Vec::with_capacity(STREAMS);
    for s in streams {
        outcomes.push(s.await.unwrap());
    }
    let bound = shutdown_timeout + Duration::from_secs(1);
    let status = tokio::time::timeout(bound.saturating_sub(signalled.elapsed()), bin.child.wait())
        .await
        .unwrap_or_else(|_| panic!("agentd still running {bound:?} after SIGTERM"))
        .unwrap();
    let exited = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status; log: {}",
        bin.log_text()
    );
    assert!(exited <= bound, "exited {exited:?} after SIGTERM");

    let truncated = outcomes.iter().filter(|o| !o.ends_with_done()).count();
    assert_eq!(
        truncated, 0,
        "streams without done: {truncated} of {STREAMS}"
    );
    for o in &outcomes {
        assert!(o.ended >= signalled, "a stream ended before SIGTERM");
        assert_well_formed(&o.events);
        assert!(!o.chunks().is_empty(), "every stream was mid-answer");
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_200_streams_finish_before_the_deadline() {
    let _turn = ONE_DRILL_AT_A_TIME.lock().await;
    // 3 s answers, an 8 s deadline: every stream completes normally.
    let outcomes = sigterm_with_streams_in_flight(
        30,
        Duration::from_millis(100),
        Duration::from_secs(8),
        "finish",
    )
    .await;
    for o in &outcomes {
        assert!(o.error().is_none(), "{:?}", o.error());
        assert_eq!(o.chunks().len(), 30, "every token arrived");
        let names: Vec<&str> = o.events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(&names[names.len() - 2..], &["PERFORMANCE", "done"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_deadline_ends_200_streams_with_error_and_done() {
    let _turn = ONE_DRILL_AT_A_TIME.lock().await;
    // 30 s answers, a 1.5 s deadline: every stream is cut by it.
    let outcomes = sigterm_with_streams_in_flight(
        600,
        Duration::from_millis(50),
        Duration::from_millis(1500),
        "deadline",
    )
    .await;
    for o in &outcomes {
        let err = o.error().expect("error before done");
        assert_eq!(err["error_code"], 503, "{err}");
        assert!(o.chunks().len() < 600, "cut before the answer's end");
    }
}

// ---- a worker panics mid-stream ----

/// Names the worker thread that serves it in its first chunk, then sends `chunks`
/// more `delay` apart (none for the prompt "quick").
struct WhereAgent {
    chunks: usize,
    delay: Duration,
}

#[async_trait]
impl Agent for WhereAgent {
    fn name(&self) -> &str {
        "where"
    }
    async fn assist(
        &self,
        _s: &Session,
        q: &Query,
        h: &mut ResponseHandler,
    ) -> Result<(), AgentError> {
        let s = h.create_text_stream("WHERE")?;
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        h.emit_chunk(&s, &thread).await?;
        if q.prompt != "quick" {
            for i in 0..self.chunks {
                tokio::time::sleep(self.delay).await;
                h.emit_chunk(&s, &format!("chunk {i}")).await?;
            }
        }
        h.complete_stream(s).await?;
        h.complete().await?;
        Ok(())
    }
}

const WORKER_0: &str = "agentd-worker-0";

/// One request on a new connection; the worker thread that answered it.
async fn answered_by(server: &TestServer) -> Option<String> {
    let res = agent_post(&client(), &server.url("/agent"), body("quick"))
        .send()
        .await
        .ok()?;
    let out = read_stream(res, |_| {}).await;
    out.ends_with_done()
        .then(|| out.chunks().first().map(|s| s.to_string()))
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_panic_mid_stream_ends_only_its_own_streams() {
    let _turn = ONE_DRILL_AT_A_TIME.lock().await;
    const STREAMS: usize = 32;
    const CHUNKS: usize = 30;
    let mut cfg = config();
    cfg.workers = Some(2);
    cfg.max_event_loop_delay = 0;
    let server = start(
        cfg,
        Arc::new(WhereAgent {
            chunks: CHUNKS,
            delay: Duration::from_millis(100),
        }),
    );
    let client = client();
    let url = server.url("/agent");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // One connection per concurrent request; SO_REUSEPORT spreads them over both workers.
    let streams: Vec<_> = (0..STREAMS)
        .map(|_| {
            let req = agent_post(&client, &url, body("slow"));
            let tx = tx.clone();
            tokio::spawn(async move {
                let res = req.send().await.expect("response head");
                let mut worker = String::new();
                let out = read_stream(res, |w| {
                    worker = w.to_owned();
                    let _ = tx.send(worker.clone());
                })
                .await;
                (worker, out)
            })
        })
        .collect();
    let mut on_worker_0 = 0;
    for _ in 0..STREAMS {
        let w = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("every stream starts")
            .unwrap();
        on_worker_0 += usize::from(w == WORKER_0);
    }
    assert!(
        on_worker_0 > 0 && on_worker_0 < STREAMS,
        "streams on both workers ({on_worker_0} of {STREAMS} on worker 0)"
    );

    server.handle().crash_worker(0);
    let crashed = Instant::now();
    // The worker is replaced, on its own socket, and answers new connections.
    let mut served_again = None;
    while crashed.elapsed() < Duration::from_secs(3) {
        if answered_by(&server).await.as_deref() == Some(WORKER_0) {
            served_again = Some(crashed.elapsed());
            break;
        }
    }
    let served_again = served_again.expect("worker 0 answers again");
    assert_eq!(server.handle().worker_restarts(), 1);
    assert!(
        served_again < Duration::from_secs(1),
        "worker 0 served again after {served_again:?}"
    );

    for s in streams {
        let (worker, out) = s.await.unwrap();
        if worker == WORKER_0 {
            assert!(
                !out.ends_with_done(),
                "a stream of the crashed worker ended"
            );
            assert!(
                out.ended.duration_since(crashed) < Duration::from_secs(2),
                "it ended with the worker, not later"
            );
        } else {
            assert!(out.ends_with_done(), "{:?}", out.transport_error);
            assert_well_formed(&out.events);
            assert!(out.error().is_none());
            assert_eq!(out.chunks().len(), 1 + CHUNKS, "untouched by the crash");
        }
    }
}

// ---- the LLM upstream killed mid-stream and restarted ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_upstream_killed_mid_stream_and_restarted() {
    let _turn = ONE_DRILL_AT_A_TIME.lock().await;
    const STREAMS: usize = 4;
    let fake = slow_upstream(200, Duration::from_millis(20)).await;
    let upstream = fake.addr();
    let mut cfg = config();
    cfg.workers = Some(1);
    cfg.openai_api_key = Some("sk-drill".into());
    cfg.openai_base_url = fake.openai_base_url();
    cfg.openai_model = "fake-gpt".into();
    // No retries: a stale pooled connection after the restart would show as an error.
    cfg.llm_max_retries = 0;
    cfg.llm_breaker_threshold = 3;
    cfg.llm_breaker_reset = 500;
    cfg.health_check_interval = 200;
    // Far above the drill's bounds: the broken streams must end because the upstream's
    // connections closed, not because the idle timer ran out.
    cfg.llm_idle_timeout = 30_000;
    let agent = agentd::configured_agent(&cfg).expect("llm agent");
    let server = start(cfg, agent);
    let ask = |prompt: &'static str| {
        let req = agent_post(&client(), &server.url("/agent"), llm_body(prompt));
        async move { read_stream(req.send().await.unwrap(), |_| {}).await }
    };

    let in_flight = Arc::new(InFlight::default());
    let streams: Vec<_> = (0..STREAMS)
        .map(|_| {
            let req = agent_post(&client(), &server.url("/agent"), llm_body("long"));
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                read_stream(req.send().await.unwrap(), |_| in_flight.arrived()).await
            })
        })
        .collect();
    assert!(in_flight.wait_for(STREAMS, Duration::from_secs(10)).await);
    // A short answer beside them: its connection waits idle in the pool when the
    // upstream dies, and must not be handed out broken afterwards.
    let short = ask("[[tokens=2,token_delay_ms=0]]").await;
    assert!(short.ends_with_done() && short.error().is_none());

    fake.stop().await;
    let killed = Instant::now();
    for s in streams {
        let out = s.await.unwrap();
        assert!(out.ends_with_done(), "{:?}", out.transport_error);
        assert_well_formed(&out.events);
        let err = out.error().expect("atomic.error, not a short answer");
        let kind = err["details"]["kind"].as_str().unwrap();
        assert!(matches!(kind, "network" | "truncated"), "{err}");
        assert!(!out.chunks().is_empty() && out.chunks().len() < 200);
        assert!(
            out.ended.duration_since(killed) < Duration::from_secs(2),
            "ended with the upstream"
        );
    }

    // While it is down: an answer is an error + done at once, and readiness fails.
    let t = Instant::now();
    let down = ask("while down").await;
    assert!(down.ends_with_done() && down.error().is_some());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "no hang: {:?}",
        t.elapsed()
    );
    assert!(status_becomes(&server, "/health/ready", 503, Duration::from_secs(2)).await);

    // Back on the same port: once the breaker's reset passes, answers succeed again.
    let fake = FakeLlm::start(Options {
        addr: Some(upstream),
        default: Behaviour {
            tokens: 3,
            ..Behaviour::default()
        },
    })
    .await
    .expect("the upstream restarts on its port");
    let restarted = Instant::now();
    assert!(
        status_becomes(&server, "/health/ready", 200, Duration::from_secs(3)).await,
        "readiness recovers"
    );
    let mut recovered = false;
    while restarted.elapsed() < Duration::from_secs(3) {
        let out = ask("after").await;
        assert!(out.ends_with_done());
        if out.error().is_none() {
            recovered = true;
            break;
        }
        let kind = &out.error().unwrap()["details"]["kind"];
        assert_eq!(kind, "breaker_open", "only the breaker may refuse now");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "answers succeed after the restart");
    for _ in 0..5 {
        let out = ask("again").await;
        assert!(
            out.ends_with_done() && out.error().is_none(),
            "{:?}",
            out.error()
        );
        assert_eq!(out.chunks().len(), 3);
    }
    assert!(
        fake.connections_accepted() >= 1,
        "new connections to the new upstream"
    );
}
