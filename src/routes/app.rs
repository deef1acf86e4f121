//! What every request handler shares: the agent, the edge's policies, the typed
//! settings the routes read, and the server's status (phase, figures).
//!
//! Built once at start and read-only afterwards, apart from counters. Only the routes
//! read it: the server below them serves it through [`Service`] without knowing it,
//! and the HTTP module never sees it. It must never hold raw configuration values: the
//! settings here are typed and converted once.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::agent::Agent;
use crate::edge::auth::Authenticator;
use crate::edge::cors::Cors;
use crate::edge::forwarded::TrustProxy;
use crate::edge::rate::RateLimiter;
use crate::edge::shed::Shedder;
use crate::obs::stats::Stats;
use crate::protocol::finished::FinishedStreams;
use crate::protocol::queue::QueueLimits;
use crate::server::shutdown::Phase;
use crate::server::{ConnInfo, ServerStatus, Service};

/// The routes' settings, converted once from the configuration.
#[derive(Clone, Debug)]
pub struct RouteSettings {
    /// `AGENT_ID`, shared by every synthesized session.
    pub agent_id: Arc<str>,
    pub request_logging: bool,
    /// `Some` when responses may be compressed (`COMPRESSION`).
    pub compression: Option<Compression>,
    pub security_headers: bool,
    /// Seconds, in `Retry-After` when a request is shed.
    pub shed_retry_after: u64,
    pub trust_proxy: TrustProxy,
    /// `/metrics` answers (`ENABLE_METRICS` or `PROMETHEUS_METRICS`).
    pub metrics: bool,
    pub body_limit: u64,
    pub body_read_timeout: Duration,
    /// Every answer's event queue.
    pub queue: QueueLimits,
    /// SSE comment heartbeats (`SSE_HEARTBEAT`, `None` when 0).
    pub heartbeat: Option<Duration>,
    pub agent_timeout: Duration,
    /// Largest non-streaming chat completion (`CHAT_COMPLETION_MAX_BYTES`).
    pub chat_completion_max_bytes: usize,
    /// Largest text a `tools/call` on `/mcp` collects (`MCP_RESULT_MAX_BYTES`).
    pub mcp_result_max_bytes: usize,
    /// Most A2A tasks remembered for `GetTask` and `CancelTask` (`A2A_TASKS_MAX`).
    pub a2a_tasks_max: usize,
    /// Most text remembered per A2A task, and most a `SendMessage` collects
    /// (`A2A_TASK_MAX_BYTES`).
    pub a2a_task_max_bytes: usize,
    /// Updates an A2A subscriber may fall behind (`A2A_SUBSCRIBER_BACKLOG`).
    pub a2a_subscriber_backlog: usize,
    pub ws_max_message: usize,
    pub ws_idle_timeout: Duration,
    /// `GET /playground` answers (`PLAYGROUND`).
    pub playground: bool,
    /// `Some` when answers are resumable (`RESUME_STORE=memory`).
    pub resume: Option<super::resume::ResumeSettings>,
}

/// How responses are compressed.
#[derive(Clone, Copy, Debug)]
pub struct Compression {
    pub level: u32,
    /// Bodies shorter than this are sent as they are.
    pub threshold: usize,
}

/// What every request handler shares.
pub struct App {
    pub settings: RouteSettings,
    pub agent: Arc<dyn Agent>,
    /// The server's phase, restarts and worker count.
    pub server: Arc<ServerStatus>,
    pub stats: Arc<Stats>,
    pub phase: watch::Receiver<Phase>,
    pub started: Instant,
    pub cors: Cors,
    pub shedder: Shedder,
    /// `None` when `RATE_LIMIT_MAX` is 0.
    pub rate: Option<RateLimiter>,
    pub auth: Authenticator,
    /// WebSockets open.
    pub ws_open: AtomicU64,
    /// `done` ids of recently finished `/stream` answers (`STREAM_DONE_MEMORY`).
    pub finished_streams: FinishedStreams,
    /// Resumable answers (`RESUME_STORE`).
    pub streams: Option<super::resume::StreamStore>,
    /// The A2A tasks this process remembers.
    pub(crate) a2a_tasks: super::a2a::tasks::TaskStore,
}

/// The edge's policies, built (and checked) before the server starts.
pub struct Edge {
    pub cors: Cors,
    pub shed: crate::edge::shed::ShedConfig,
    pub rate: Option<RateLimiter>,
    pub auth: Authenticator,
    /// `STREAM_DONE_MEMORY`.
    pub finished_streams: usize,
}

impl App {
    /// The shared state on a started server.
    pub fn new(
        settings: RouteSettings,
        edge: Edge,
        agent: Arc<dyn Agent>,
        server: Arc<ServerStatus>,
    ) -> App {
        let workers = server.workers();
        let streams = settings
            .resume
            .clone()
            .map(|r| super::resume::StreamStore::new(r, workers));
        App {
            streams,
            a2a_tasks: super::a2a::tasks::TaskStore::new(
                settings.a2a_tasks_max,
                settings.a2a_task_max_bytes,
                settings.a2a_subscriber_backlog,
            ),
            settings,
            agent,
            stats: server.stats.clone(),
            phase: server.phase.clone(),
            started: server.started,
            shedder: Shedder::new(edge.shed, server.stats.clone()),
            server,
            cors: edge.cors,
            rate: edge.rate,
            auth: edge.auth,
            ws_open: AtomicU64::new(0),
            finished_streams: FinishedStreams::new(edge.finished_streams),
        }
    }

    /// How many workers serve.
    pub fn workers(&self) -> usize {
        self.server.workers()
    }
}

/// The service the server runs: every route, over one [`App`].
pub struct Routes(pub Arc<App>);

impl Service for Routes {
    fn call(
        &self,
        req: http::Request<hyper::body::Incoming>,
        conn: &ConnInfo,
    ) -> impl std::future::Future<
        Output = Result<http::Response<crate::http::ResponseBody>, std::convert::Infallible>,
    > + Send
           + use<> {
        // Boxed: hyper keeps room for the request's future in every HTTP/1 connection,
        // idle or not (1.7 KB for this one); a box per request costs less than that
        // room on every held connection.
        Box::pin(super::handle(
            req,
            self.0.clone(),
            conn.activity.clone(),
            conn.worker,
            conn.peer,
        ))
    }

    fn worker_task(&self, worker: usize) -> impl std::future::Future<Output = ()> + Send + use<> {
        let app = self.0.clone();
        async move {
            match &app.streams {
                Some(store) => {
                    tokio::join!(app.shedder.sample(worker), store.sweep_forever(worker));
                }
                None => app.shedder.sample(worker).await,
            }
        }
    }
}
