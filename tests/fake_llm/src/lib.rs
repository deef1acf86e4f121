//! `fake-llm`: a real HTTP server (hyper, HTTP/1.1 keep-alive and h2c) that speaks the
//! streaming formats of OpenAI's Chat Completions API and Anthropic's Messages API, with
//! faults that can be injected per request. agentd's LLM connector is tested and
//! benchmarked against it.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use fake_llm::{Behaviour, FakeLlm, Fault, Options};
//! let llm = FakeLlm::start(Options::default()).await?;
//! let base = llm.openai_base_url(); // http://127.0.0.1:PORT/v1
//! llm.push_fault(Fault::Status { status: 429, retry_after: Some("1".into()), retry_after_ms: None });
//! llm.set_default(Behaviour { tokens: 3, ..Behaviour::default() });
//! // ... point the client at `base`; the first request gets the 429, the rest 3 tokens.
//! assert_eq!(llm.requests().len(), 0);
//! llm.stop().await;
//! # Ok(()) }
//! ```
//!
//! Endpoints:
//! - `POST /v1/chat/completions` (OpenAI): needs `authorization: Bearer <non-empty>`,
//!   `model` and non-empty `messages`; `"stream":true` streams `chat.completion.chunk`s
//!   (role chunk, one chunk per token, finish chunk, usage chunk if
//!   `stream_options.include_usage`, `data: [DONE]`), otherwise one `chat.completion`.
//!   `max_tokens`/`max_completion_tokens` below the token count truncate (`"length"`).
//! - `POST /v1/messages` (Anthropic): needs `x-api-key`, `anthropic-version: 2023-06-01`,
//!   `model`, `messages`, `max_tokens`; streams `message_start`, `content_block_start`,
//!   `ping`, `content_block_delta`s, `content_block_stop`, `message_delta`,
//!   `message_stop`, or returns one `message`.
//! - `GET /v1/models`: a one-model list; a health probe that honours queued faults.
//!
//! Malformed JSON and missing fields get the provider's 400 error JSON. Usage counts are
//! deterministic: prompt tokens are the words of all message texts ([`prompt_tokens`]),
//! completion tokens the tokens sent. Token `i` is `format!("{token_text}{i}")`.
//!
//! Per-request faults come from [`FakeLlm::push_fault`] (FIFO, any route),
//! [`FakeLlm::push_fault_for`] (one route), or `[[…]]` directives in the last user
//! message; see [`directives`] for the syntax. Faults are only taken by requests that
//! pass validation (auth, JSON, required fields).
//!
//! Modules: [`behaviour`] (config types), [`directives`] (prompt syntax), `server`
//! (accept loop, connections, routes), `openai` / `anthropic` (wire formats), `sse`
//! (event encoding and chunking), `body` (the scripted response body), `answer`
//! (per-request resolution and token counting).

pub mod behaviour;
pub mod directives;

mod answer;
mod anthropic;
mod body;
mod openai;
mod server;
mod sse;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use answer::prompt_tokens;
pub use behaviour::{Behaviour, Chunking, Fault, LineEnding, Quirks};
pub use server::{Provider, Recorded};

use server::{lock, Shared};

/// Startup options.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Where to listen; `None` is `127.0.0.1:0` (a free port).
    pub addr: Option<SocketAddr>,
    /// What requests without a fault get.
    pub default: Behaviour,
}

/// A running fake upstream. Dropping it stops the server (like [`FakeLlm::stop`], without
/// waiting).
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeLlm {
    /// Binds `opts.addr` (default `127.0.0.1:0`) and spawns the server on the current tokio
    /// runtime.
    pub async fn start(opts: Options) -> std::io::Result<FakeLlm> {
        let addr = opts
            .addr
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(opts.default));
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server::run(listener, shared.clone(), rx));
        tracing::debug!(%addr, "fake-llm: listening");
        Ok(FakeLlm {
            addr,
            shared,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/v1`, as the OpenAI SDKs take `OPENAI_BASE_URL`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://ADDR`, as the Anthropic SDKs take `ANTHROPIC_BASE_URL`.
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a fault for the next valid request of any route (FIFO).
    pub fn push_fault(&self, fault: Fault) {
        self.shared.push_fault(None, fault);
    }

    /// Queues a fault for the next valid request of one route only. Route-specific and
    /// general faults share one FIFO: a request takes the oldest fault that fits it.
    pub fn push_fault_for(&self, provider: Provider, fault: Fault) {
        self.shared.push_fault(Some(provider), fault);
    }

    /// What requests without a queued fault get from now on.
    pub fn set_default(&self, behaviour: Behaviour) {
        *lock(&self.shared.default) = behaviour;
    }

    /// Every request received so far (while recording is on).
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Turns request recording on (the default) or off (for long benchmarks).
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::Relaxed);
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Chat responses (streaming or not) whose body is being sent now.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Chat responses whose body was dropped before its end because the client went away
    /// (or the server stopped), plus hung requests ([`Fault::HangBeforeHeaders`]) whose
    /// client left. Deliberate ends (EOF and reset faults) are not counted.
    pub fn cancelled(&self) -> u64 {
        self.shared.cancelled.load(Ordering::Relaxed)
    }

    /// Chat response bodies played to their scripted end (including deliberate EOF,
    /// mid-stream-error and reset endings).
    pub fn completed(&self) -> u64 {
        self.shared.completed.load(Ordering::Relaxed)
    }

    /// Stops accepting and drops every open connection (the upstream dies); returns once
    /// they are closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for FakeLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLlm").field("addr", &self.addr).finish()
    }
}
