//! Configuration: environment variables (the guide's `.env` names), an optional `.env`
//! file, and command-line flags, turned once into a validated [`Config`].
//!
//! Every limit lives here with its default. Nothing else reads the environment; a bad
//! value is refused at start with a message naming the variable (exit code 2).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

mod host;
mod source;

pub use host::ListenHost;

/// Where resumable answers are kept (`RESUME_STORE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResumeStore {
    /// Not resumable.
    Off,
    /// In this process's memory.
    Memory,
    /// In memory and copied to Redis (`REDIS_URL`): any replica resumes or cancels.
    Redis,
}

/// Which agent answers `/agent`, `/assist`, `/stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AgentKind {
    /// Echoes the prompt; needs no keys and no network.
    Echo,
    /// The guide's LLM agent: analysis, the provider's tokens as they arrive, performance.
    Llm,
    /// Relays each request to an upstream agent (`AGENT_UPSTREAMS`) and streams its
    /// events back, repaired where the upstream breaks the protocol.
    Proxy,
}

pub use crate::obs::log::LogLevel;

#[derive(Clone, Debug, Parser)]
#[command(
    name = "agentd",
    version,
    about = "A thread-per-core server for agents speaking the Sentient Agent Framework protocol.",
    long_about = "A thread-per-core server for agents speaking the Sentient Agent Framework protocol.\n\n\
        Every option is also read from the environment variable named in brackets, and from \
        a .env file in the working directory (the environment wins). Durations are in \
        milliseconds, sizes in bytes."
)]
/// Every setting, from the environment, `.env` and flags (see `agentd --help`).
pub struct Config {
    /// Address or host name to listen on (a name is resolved once at start, an IPv4
    /// address preferred: `localhost` listens on 127.0.0.1).
    #[arg(long, env = "HOST", value_name = "HOST", default_value = "0.0.0.0")]
    pub host: ListenHost,

    /// Port to listen on (0 picks a free port).
    #[arg(long, env = "PORT", value_name = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Worker threads, each with its own listener (default: available cores).
    #[arg(long, env = "WORKERS", value_name = "WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Idle time allowed between requests on a keep-alive connection.
    #[arg(long, env = "KEEP_ALIVE_TIMEOUT", value_name = "KEEP_ALIVE_TIMEOUT", default_value_t = 72_000, value_parser = ms_range(1, 3_600_000))]
    pub keep_alive_timeout: u64,

    /// Time allowed to receive a request's head, from its first byte (or from the
    /// connection's start).
    #[arg(long, env = "HEADER_READ_TIMEOUT", value_name = "HEADER_READ_TIMEOUT", default_value_t = 10_000, value_parser = ms_range(1, 600_000))]
    pub header_read_timeout: u64,

    /// Time allowed to receive a request's body once its head arrived (408 after).
    #[arg(long, env = "CONNECTION_TIMEOUT", value_name = "CONNECTION_TIMEOUT", default_value_t = 60_000, value_parser = ms_range(1, 3_600_000))]
    pub connection_timeout: u64,

    /// Largest request body (413 above, without reading the rest).
    #[arg(long, env = "BODY_LIMIT", value_name = "BODY_LIMIT", default_value_t = 10_485_760, value_parser = clap::value_parser!(u64).range(1..=1_073_741_824))]
    pub body_limit: u64,

    /// Most open connections for the whole process (accepting pauses at the cap).
    #[arg(long, env = "MAX_CONNECTIONS", value_name = "MAX_CONNECTIONS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Most header fields in one HTTP/1 request (431 above).
    #[arg(long, env = "MAX_HEADERS", value_name = "MAX_HEADERS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_headers: u64,

    /// Largest HTTP/1 request head, and HTTP/2 header list, in bytes.
    #[arg(long, env = "MAX_HEADER_BYTES", value_name = "MAX_HEADER_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(8_192..=16_777_216))]
    pub max_header_bytes: u64,

    /// Most concurrent streams on one HTTP/2 connection.
    #[arg(long, env = "H2_MAX_CONCURRENT_STREAMS", value_name = "H2_MAX_CONCURRENT_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub h2_max_concurrent_streams: u32,

    /// Most HTTP/2 streams a client may open and reset before the server has served them
    /// (the rapid-reset defence: the connection gets GOAWAY above it).
    #[arg(long, env = "H2_MAX_PENDING_RESETS", value_name = "H2_MAX_PENDING_RESETS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub h2_max_pending_resets: u64,

    /// Most HTTP/2 streams the server may reset for a client's protocol errors on one
    /// connection before it sends GOAWAY.
    #[arg(long, env = "H2_MAX_LOCAL_ERROR_RESETS", value_name = "H2_MAX_LOCAL_ERROR_RESETS", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub h2_max_local_error_resets: u64,

    /// Serve HTTPS with this PEM certificate chain (needs TLS_KEY). ALPN offers h2 and
    /// http/1.1; the handshake must finish within HEADER_READ_TIMEOUT.
    #[arg(long, env = "TLS_CERT", value_name = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) for TLS_CERT.
    #[arg(long, env = "TLS_KEY", value_name = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Listen backlog of each worker's socket.
    #[arg(long, env = "LISTEN_BACKLOG", value_name = "LISTEN_BACKLOG", default_value_t = 1024, value_parser = clap::value_parser!(i32).range(1..=65_535))]
    pub listen_backlog: i32,

    /// The agent to serve: echo, llm or proxy (default: proxy when AGENT_UPSTREAMS is
    /// set, else llm when a provider is configured, else echo).
    #[arg(long, env = "AGENT", value_name = "AGENT", value_enum)]
    pub agent: Option<AgentKind>,

    /// The agent's name (shown by /health).
    #[arg(
        long,
        env = "AGENT_NAME",
        value_name = "AGENT_NAME",
        default_value = "agentd echo agent"
    )]
    pub agent_name: String,

    /// `source` of events when a request carries no session.
    #[arg(
        long,
        env = "AGENT_ID",
        value_name = "AGENT_ID",
        default_value = "agentd"
    )]
    pub agent_id: String,

    /// Longest an agent may take for one response (then error + done).
    #[arg(long, env = "AGENT_TIMEOUT", value_name = "AGENT_TIMEOUT", default_value_t = 120_000, value_parser = ms_range(1, 86_400_000))]
    pub agent_timeout: u64,

    /// After SIGTERM/SIGINT, how long in-flight responses may run before they get
    /// error + done.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", value_name = "SHUTDOWN_TIMEOUT", default_value_t = 10_000, value_parser = ms_range(1, 3_600_000))]
    pub shutdown_timeout: u64,

    /// Bytes of events buffered per response before the agent must wait for the client.
    #[arg(long, env = "SSE_QUEUE_BYTES", value_name = "SSE_QUEUE_BYTES", default_value_t = 262_144, value_parser = clap::value_parser!(u64).range(1..=1_073_741_824))]
    pub sse_queue_bytes: u64,

    /// How long a full queue may wait for a slow reader before it is disconnected.
    #[arg(long, env = "SSE_SLOW_READER_TIMEOUT", value_name = "SSE_SLOW_READER_TIMEOUT", default_value_t = 30_000, value_parser = ms_range(1, 3_600_000))]
    pub sse_slow_reader_timeout: u64,

    /// Interval of `:` comment heartbeats on idle SSE streams (0 = off).
    #[arg(long, env = "SSE_HEARTBEAT", value_name = "SSE_HEARTBEAT", default_value_t = 0, value_parser = ms_range(0, 3_600_000))]
    pub sse_heartbeat: u64,

    /// Most bytes a non-streaming `POST /v1/chat/completions` collects before it
    /// answers (the answer's text plus its `sentient_events`); a longer answer is
    /// cancelled and refused with a 502 `response_too_large` error. Streaming is bounded
    /// by SSE_QUEUE_BYTES instead.
    #[arg(long, env = "CHAT_COMPLETION_MAX_BYTES", value_name = "CHAT_COMPLETION_MAX_BYTES", default_value_t = 4_194_304, value_parser = clap::value_parser!(u64).range(1024..=1_073_741_824))]
    pub chat_completion_max_bytes: u64,

    /// Most bytes of text a `tools/call` on `POST /mcp` collects (the result carries the
    /// whole text, and each progress notification the text so far); a longer answer is
    /// cancelled and ends as a tool error (`isError`).
    #[arg(long, env = "MCP_RESULT_MAX_BYTES", value_name = "MCP_RESULT_MAX_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(1024..=1_073_741_824))]
    pub mcp_result_max_bytes: u64,
    /// Most A2A tasks remembered for `GetTask` and `CancelTask` on `/a2a`; beyond it
    /// the oldest task is forgotten (`TaskNotFound`).
    #[arg(long, env = "A2A_TASKS_MAX", value_name = "A2A_TASKS_MAX", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub a2a_tasks_max: u64,

    /// Most bytes of answer text remembered per A2A task (beyond it the task keeps its
    /// status but not its text), and most a non-streaming `SendMessage` collects
    /// (beyond it the agent is cancelled and the task fails).
    #[arg(long, env = "A2A_TASK_MAX_BYTES", value_name = "A2A_TASK_MAX_BYTES", default_value_t = 262_144, value_parser = clap::value_parser!(u64).range(1024..=1_073_741_824))]
    pub a2a_task_max_bytes: u64,

    /// Updates one A2A subscriber (`SubscribeToTask`) may fall behind its task before its
    /// stream ends with an error (it may subscribe again).
    #[arg(long, env = "A2A_SUBSCRIBER_BACKLOG", value_name = "A2A_SUBSCRIBER_BACKLOG", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub a2a_subscriber_backlog: u64,

    /// Token coalescing: consecutive text deltas of one stream (LLM tokens, a proxied
    /// upstream's chunks) are joined into one `chunked.text` event until it holds this
    /// many characters (0 = off: one event per delta). The first delta of an answer
    /// leaves at once; a delta is never split.
    #[arg(long, env = "STREAM_CHUNK_SIZE", value_name = "STREAM_CHUNK_SIZE", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=65_536))]
    pub stream_chunk_size: u32,

    /// Token coalescing: longest wait of the first pending delta before the joined text
    /// is sent, whatever its size (used when STREAM_CHUNK_SIZE is set).
    #[arg(long, env = "STREAM_BUFFER_TIMEOUT", value_name = "STREAM_BUFFER_TIMEOUT", default_value_t = 50, value_parser = ms_range(1, 10_000))]
    pub stream_buffer_timeout: u64,

    /// `/stream` answers whose end is remembered, so that a browser's `EventSource`
    /// reconnecting after `done` (with `Last-Event-ID`) gets 204 and stops instead of
    /// running the agent again (0: not remembered).
    #[arg(long, env = "STREAM_DONE_MEMORY", value_name = "STREAM_DONE_MEMORY", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub stream_done_memory: u64,

    /// Serve the playground page at /playground (a page to try the agent from a browser).
    #[arg(long, env = "PLAYGROUND", value_name = "PLAYGROUND", default_value_t = true, action = clap::ArgAction::Set)]
    pub playground: bool,

    /// After SIGTERM/SIGINT, how long readiness fails while the server still accepts and
    /// serves (ms), so that a load balancer stops sending it traffic before its
    /// listeners close; then the drain (SHUTDOWN_TIMEOUT) begins. A second signal
    /// drains at once. 0: drain at once.
    #[arg(long, env = "SHUTDOWN_DELAY", value_name = "SHUTDOWN_DELAY", default_value_t = 0, value_parser = ms_range(0, 600_000))]
    pub shutdown_delay: u64,

    /// Where answers are kept for a client to resume them (`GET /agent/streams/{id}`):
    /// `memory` (this process), `redis` (this process, and copied to Redis at
    /// `REDIS_URL` so that any replica can resume or cancel) or `off` (no
    /// `x-stream-id`, a client that leaves cancels its answer at once).
    #[arg(
        long,
        env = "RESUME_STORE",
        value_name = "RESUME_STORE",
        default_value = "off"
    )]
    pub resume_store: ResumeStore,

    /// How long an answer whose client left keeps running, kept, for a resume (ms).
    #[arg(long, env = "RESUME_GRACE", value_name = "RESUME_GRACE", default_value_t = 10_000, value_parser = ms_range(0, 3_600_000))]
    pub resume_grace: u64,

    /// How long a finished answer stays resumable (ms).
    #[arg(long, env = "RESUME_TTL", value_name = "RESUME_TTL", default_value_t = 60_000, value_parser = ms_range(0, 86_400_000))]
    pub resume_ttl: u64,

    /// Bytes of events kept per answer; an answer over it can no longer be resumed
    /// from its start (a resume from a dropped position gets 410 `stream_truncated`).
    #[arg(long, env = "RESUME_BUFFER_BYTES", value_name = "RESUME_BUFFER_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(1024..=1_073_741_824))]
    pub resume_buffer_bytes: u64,

    /// Bytes of events kept by the whole process; past it the oldest finished answers
    /// are dropped first (checked every second).
    #[arg(long, env = "RESUME_MEMORY_BYTES", value_name = "RESUME_MEMORY_BYTES", default_value_t = 67_108_864, value_parser = clap::value_parser!(u64).range(1024..=68_719_476_736))]
    pub resume_memory_bytes: u64,

    /// `RESUME_STORE=redis`: events kept per stream in Redis (`XADD MAXLEN ~`); a
    /// resume from a position trimmed away gets 410 `stream_truncated`.
    #[arg(long, env = "RESUME_STREAM_EVENTS", value_name = "RESUME_STREAM_EVENTS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(16..=10_000_000))]
    pub resume_stream_events: u64,

    /// `RESUME_STORE=redis`: streams this process follows from Redis at once for
    /// clients resuming an answer another replica runs (each holds one Redis
    /// connection); past it, 503 `resume_unavailable`.
    #[arg(long, env = "RESUME_REMOTE_READERS", value_name = "RESUME_REMOTE_READERS", default_value_t = 1_024, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub resume_remote_readers: u64,

    /// `RESUME_STORE=redis`: longest wait for one Redis round trip (ms).
    #[arg(long, env = "RESUME_REDIS_TIMEOUT", value_name = "RESUME_REDIS_TIMEOUT", default_value_t = 500, value_parser = ms_range(1, 60_000))]
    pub resume_redis_timeout: u64,

    /// `RESUME_STORE=redis`: prefix of every key the resume store writes.
    #[arg(
        long,
        env = "RESUME_REDIS_PREFIX",
        value_name = "RESUME_REDIS_PREFIX",
        default_value = "agentd:stream:"
    )]
    pub resume_redis_prefix: String,

    /// Largest WebSocket message accepted on `/ws`, in bytes (a larger one closes the
    /// socket with 1009).
    #[arg(long, env = "WS_MAX_MESSAGE", value_name = "WS_MAX_MESSAGE", default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(64..=1_073_741_824))]
    pub ws_max_message: u64,

    /// How long a `/ws` socket may go without a message from the client (and no answer
    /// running) before it is closed.
    #[arg(long, env = "WS_IDLE_TIMEOUT", value_name = "WS_IDLE_TIMEOUT", default_value_t = 120_000, value_parser = ms_range(1, 86_400_000))]
    pub ws_idle_timeout: u64,

    /// Allowed CORS origins: a comma list, or `*` (any origin, reflected). Also checked
    /// on a WebSocket upgrade that sends `Origin` (403 otherwise).
    #[arg(
        long,
        env = "CORS_ORIGINS",
        value_name = "CORS_ORIGINS",
        default_value = "*"
    )]
    pub cors_origins: String,

    /// Send the security headers (helmet's set) on every response.
    #[arg(long, env = "SECURITY_HEADERS", value_name = "SECURITY_HEADERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub security_headers: bool,

    /// Compress responses (gzip or deflate, as the client's Accept-Encoding asks).
    #[arg(long, env = "COMPRESSION", value_name = "COMPRESSION", default_value_t = true, action = clap::ArgAction::Set)]
    pub compression: bool,

    /// Smallest complete body compressed, in bytes (SSE streams are always compressed
    /// when asked, flushed after every event).
    #[arg(long, env = "COMPRESS_THRESHOLD", value_name = "COMPRESS_THRESHOLD", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(0..=1_073_741_824))]
    pub compress_threshold: u64,

    /// Compression level, 1 (fast) to 9 (small).
    #[arg(long, env = "COMPRESSION_LEVEL", value_name = "COMPRESSION_LEVEL", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub compression_level: u32,

    /// Worker scheduling delay that sheds load with 503 (the guide's maxEventLoopDelay; 0 = off).
    #[arg(long, env = "MAX_EVENT_LOOP_DELAY", value_name = "MAX_EVENT_LOOP_DELAY", default_value_t = 1_000, value_parser = ms_range(0, 3_600_000))]
    pub max_event_loop_delay: u64,

    /// Resident memory that sheds load, in bytes (the guide's maxRssBytes; 0 = off).
    #[arg(
        long,
        env = "MAX_RSS_BYTES",
        value_name = "MAX_RSS_BYTES",
        default_value_t = 1_073_741_824
    )]
    pub max_rss_bytes: u64,

    /// Requests in flight (whole process) that shed load (0 = off).
    #[arg(
        long,
        env = "MAX_IN_FLIGHT",
        value_name = "MAX_IN_FLIGHT",
        default_value_t = 0
    )]
    pub max_in_flight: u64,

    /// `Retry-After` seconds on a shed request (the guide's retryAfter).
    #[arg(long, env = "SHED_RETRY_AFTER", value_name = "SHED_RETRY_AFTER", default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub shed_retry_after: u64,

    /// Serve Prometheus metrics at /metrics (also enabled by PROMETHEUS_METRICS).
    #[arg(long, env = "ENABLE_METRICS", value_name = "ENABLE_METRICS", default_value_t = false, action = clap::ArgAction::Set)]
    pub enable_metrics: bool,

    /// The guide's other name for ENABLE_METRICS.
    #[arg(long, env = "PROMETHEUS_METRICS", value_name = "PROMETHEUS_METRICS", default_value_t = false, action = clap::ArgAction::Set)]
    pub prometheus_metrics: bool,

    /// HS256 secret: tokens on /agent, /assist, /stream and /ws are verified with it
    /// (`Authorization: Bearer`, or `?access_token=` on /stream and /ws).
    #[arg(
        long,
        env = "JWT_SECRET",
        value_name = "JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,

    /// RS256 public key: PEM text, or the path of a PEM file.
    #[arg(long, env = "JWT_PUBLIC_KEY", value_name = "JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<String>,

    /// Clock leeway for `exp` and `nbf`.
    #[arg(long, env = "JWT_LEEWAY", value_name = "JWT_LEEWAY", default_value_t = 30_000, value_parser = ms_range(0, 86_400_000))]
    pub jwt_leeway: u64,

    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER", value_name = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE", value_name = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Require a valid token on /agent, /assist, /stream and /ws (otherwise a token is
    /// verified only when sent, as in the guide). /agent-api is authorised by its API
    /// key alone.
    #[arg(long, env = "AUTH_REQUIRED", value_name = "AUTH_REQUIRED", default_value_t = false, action = clap::ArgAction::Set)]
    pub auth_required: bool,

    /// Roles (the token's `role` claim) allowed on the agent routes; no claim = `user`.
    #[arg(
        long,
        env = "AGENT_ROLES",
        value_name = "AGENT_ROLES",
        default_value = "user,admin"
    )]
    pub agent_roles: String,

    /// API keys for POST /agent-api (`X-API-Key`), comma-separated; the key alone
    /// authorises that route.
    #[arg(
        long,
        env = "API_KEY_SECRET",
        value_name = "API_KEY_SECRET",
        hide_env_values = true
    )]
    pub api_key_secret: Option<String>,

    /// Requests allowed per client IP (an IPv6 client: its /64) per window (unset or
    /// 0 = no limit; the guide uses 1000).
    #[arg(
        long,
        env = "RATE_LIMIT_MAX",
        value_name = "RATE_LIMIT_MAX",
        default_value_t = 0
    )]
    pub rate_limit_max: u64,

    /// The rate limit's fixed window (the guide: 900000, 15 minutes).
    #[arg(long, env = "RATE_LIMIT_WINDOW", value_name = "RATE_LIMIT_WINDOW", default_value_t = 900_000, value_parser = ms_range(1, 31_536_000_000))]
    pub rate_limit_window: u64,

    /// Most client IPs the in-memory limiter remembers at once (memory bound).
    #[arg(long, env = "RATE_LIMIT_MAX_KEYS", value_name = "RATE_LIMIT_MAX_KEYS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub rate_limit_max_keys: u64,

    /// Redis shared by every instance for one global limit (redis://host:port/db).
    #[arg(
        long,
        env = "REDIS_URL",
        value_name = "REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// When Redis is unreachable: `open` lets requests through, `closed` refuses them
    /// with 503 `rate_limit_unavailable` (and /health/ready is 503 while it fails).
    #[arg(long, env = "RATE_LIMIT_REDIS_FAILURE", value_name = "RATE_LIMIT_REDIS_FAILURE", value_enum, default_value_t = crate::edge::rate::FailurePolicy::Open)]
    pub rate_limit_redis_failure: crate::edge::rate::FailurePolicy,

    /// Longest wait for one Redis round trip.
    #[arg(long, env = "RATE_LIMIT_REDIS_TIMEOUT", value_name = "RATE_LIMIT_REDIS_TIMEOUT", default_value_t = 100, value_parser = ms_range(1, 60_000))]
    pub rate_limit_redis_timeout: u64,

    /// Which proxies in front are trusted to write `X-Forwarded-For`, as Fastify's
    /// trustProxy: `false` (ignore the header), `true` (every hop: the leftmost entry),
    /// a hop count N, or a comma list of addresses/CIDR ranges (and `loopback`,
    /// `linklocal`, `uniquelocal`; at most 64). The client is the nearest hop that is
    /// not trusted; the peer must be trusted for the header to be read.
    #[arg(long, env = "TRUST_PROXY", value_name = "TRUST_PROXY", default_value = "false", value_parser = crate::edge::forwarded::TrustProxy::parse)]
    pub trust_proxy: crate::edge::forwarded::TrustProxy,

    /// OpenAI API key; setting it enables the OpenAI provider.
    #[arg(
        long,
        env = "OPENAI_API_KEY",
        value_name = "OPENAI_API_KEY",
        hide_env_values = true
    )]
    pub openai_api_key: Option<String>,

    /// OpenAI (or compatible server) base URL, as the OpenAI SDKs take it.
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        value_name = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,

    /// Model asked of the OpenAI provider.
    #[arg(
        long,
        env = "OPENAI_MODEL",
        value_name = "OPENAI_MODEL",
        default_value = "gpt-4-turbo"
    )]
    pub openai_model: String,

    /// Anthropic API key; setting it enables the Anthropic provider.
    #[arg(
        long,
        env = "ANTHROPIC_API_KEY",
        value_name = "ANTHROPIC_API_KEY",
        hide_env_values = true
    )]
    pub anthropic_api_key: Option<String>,

    /// Anthropic base URL, as the Anthropic SDKs take it.
    #[arg(
        long,
        env = "ANTHROPIC_BASE_URL",
        value_name = "ANTHROPIC_BASE_URL",
        default_value = "https://api.anthropic.com"
    )]
    pub anthropic_base_url: String,

    /// Model asked of the Anthropic provider.
    #[arg(
        long,
        env = "ANTHROPIC_MODEL",
        value_name = "ANTHROPIC_MODEL",
        default_value = "claude-3-5-sonnet-latest"
    )]
    pub anthropic_model: String,

    /// TOML file with several providers, models, scores and the strategy.
    #[arg(long, env = "LLM_CONFIG", value_name = "LLM_CONFIG")]
    pub llm_config: Option<std::path::PathBuf>,

    /// Overall deadline of one LLM answer, retries included.
    #[arg(long, env = "LLM_TIMEOUT", value_name = "LLM_TIMEOUT", default_value_t = 60_000, value_parser = ms_range(1, 3_600_000))]
    pub llm_timeout: u64,

    /// Time allowed to connect to a provider.
    #[arg(long, env = "LLM_CONNECT_TIMEOUT", value_name = "LLM_CONNECT_TIMEOUT", default_value_t = 5_000, value_parser = ms_range(1, 600_000))]
    pub llm_connect_timeout: u64,

    /// Time allowed for a provider's response head.
    #[arg(long, env = "LLM_FIRST_BYTE_TIMEOUT", value_name = "LLM_FIRST_BYTE_TIMEOUT", default_value_t = 30_000, value_parser = ms_range(1, 3_600_000))]
    pub llm_first_byte_timeout: u64,

    /// Longest silence allowed between two chunks of a provider's stream.
    #[arg(long, env = "LLM_IDLE_TIMEOUT", value_name = "LLM_IDLE_TIMEOUT", default_value_t = 30_000, value_parser = ms_range(1, 3_600_000))]
    pub llm_idle_timeout: u64,

    /// How long an idle pooled connection to a provider is kept.
    #[arg(long, env = "LLM_POOL_IDLE_TIMEOUT", value_name = "LLM_POOL_IDLE_TIMEOUT", default_value_t = 90_000, value_parser = ms_range(1, 3_600_000))]
    pub llm_pool_idle_timeout: u64,

    /// Upstream requests in flight per provider for the whole process, shared by every
    /// worker (the guide's maxSockets; its .env sets 10); also the idle connections kept
    /// per host per worker. The default never limits a healthy upstream at 1,000
    /// answers/s of 1 s each.
    #[arg(long, env = "LLM_CONCURRENT_REQUESTS", value_name = "LLM_CONCURRENT_REQUESTS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub llm_concurrent_requests: u32,

    /// Longest wait for a free slot of a provider (milliseconds; 0 = never wait); past
    /// it the request fails over to the next provider, or ends as saturated (503).
    #[arg(long, env = "LLM_QUEUE_TIMEOUT", value_name = "LLM_QUEUE_TIMEOUT", default_value_t = 250, value_parser = ms_range(0, 60_000))]
    pub llm_queue_timeout: u64,

    /// Requests that may wait for a slot of one provider at once (0 = never wait); one
    /// more fails over at once, or ends as saturated (503).
    #[arg(long, env = "LLM_QUEUE_MAX", value_name = "LLM_QUEUE_MAX", default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub llm_queue_max: u32,

    /// Retries per provider before the first token (the guide's maxRetries).
    #[arg(long, env = "LLM_MAX_RETRIES", value_name = "LLM_MAX_RETRIES", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub llm_max_retries: u32,

    /// First retry delay, doubled each retry, with jitter (the guide's baseDelay).
    #[arg(long, env = "LLM_RETRY_BASE_DELAY", value_name = "LLM_RETRY_BASE_DELAY", default_value_t = 500, value_parser = ms_range(0, 600_000))]
    pub llm_retry_base_delay: u64,

    /// Longest retry delay (the guide's maxDelay).
    #[arg(long, env = "LLM_RETRY_MAX_DELAY", value_name = "LLM_RETRY_MAX_DELAY", default_value_t = 5_000, value_parser = ms_range(0, 600_000))]
    pub llm_retry_max_delay: u64,

    /// Providers tried per request before giving up (the guide's maxAttempts).
    #[arg(long, env = "LLM_MAX_ATTEMPTS", value_name = "LLM_MAX_ATTEMPTS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub llm_max_attempts: u32,

    /// Provider selection: round-robin, weighted or least-latency.
    #[arg(long, env = "LLM_STRATEGY", value_name = "LLM_STRATEGY", value_enum, default_value_t = crate::llm::router::Strategy::RoundRobin)]
    pub llm_strategy: crate::llm::router::Strategy,

    /// Keep one session.activity_id on one provider.
    #[arg(long, env = "LLM_STICKY", value_name = "LLM_STICKY", default_value_t = false, action = clap::ArgAction::Set)]
    pub llm_sticky: bool,

    /// Consecutive failures that open a provider's breaker (the guide's failureThreshold).
    #[arg(long, env = "LLM_BREAKER_THRESHOLD", value_name = "LLM_BREAKER_THRESHOLD", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub llm_breaker_threshold: u32,

    /// How long an open breaker fails fast before letting a probe through (resetTimeout).
    #[arg(long, env = "LLM_BREAKER_RESET", value_name = "LLM_BREAKER_RESET", default_value_t = 30_000, value_parser = ms_range(1, 3_600_000))]
    pub llm_breaker_reset: u64,

    /// Interval of the providers' health probes.
    #[arg(long, env = "HEALTH_CHECK_INTERVAL", value_name = "HEALTH_CHECK_INTERVAL", default_value_t = 30_000, value_parser = ms_range(100, 86_400_000))]
    pub health_check_interval: u64,

    /// Upstream agents for AGENT=proxy: comma-separated http(s) URLs of their
    /// endpoints (e.g. http://127.0.0.1:8000/assist).
    #[arg(long, env = "AGENT_UPSTREAMS", value_name = "AGENT_UPSTREAMS")]
    pub agent_upstreams: Option<String>,

    /// How the proxy spreads requests over upstreams: round-robin or least-inflight.
    #[arg(long, env = "PROXY_BALANCE", value_name = "PROXY_BALANCE", value_enum, default_value_t = crate::agent::proxy::Balance::RoundRobin)]
    pub proxy_balance: crate::agent::proxy::Balance,

    /// Time allowed to connect to an upstream agent.
    #[arg(long, env = "PROXY_CONNECT_TIMEOUT", value_name = "PROXY_CONNECT_TIMEOUT", default_value_t = 2_000, value_parser = ms_range(1, 600_000))]
    pub proxy_connect_timeout: u64,

    /// Time allowed from sending a request upstream to its first event.
    #[arg(long, env = "PROXY_FIRST_EVENT_TIMEOUT", value_name = "PROXY_FIRST_EVENT_TIMEOUT", default_value_t = 30_000, value_parser = ms_range(1, 3_600_000))]
    pub proxy_first_event_timeout: u64,

    /// Longest silence allowed from an upstream once its stream started.
    #[arg(long, env = "PROXY_IDLE_TIMEOUT", value_name = "PROXY_IDLE_TIMEOUT", default_value_t = 30_000, value_parser = ms_range(1, 3_600_000))]
    pub proxy_idle_timeout: u64,

    /// Upstreams tried per request (failover happens only before the first event).
    #[arg(long, env = "PROXY_MAX_ATTEMPTS", value_name = "PROXY_MAX_ATTEMPTS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub proxy_max_attempts: u32,

    /// Consecutive failures that open an upstream's breaker.
    #[arg(long, env = "PROXY_BREAKER_THRESHOLD", value_name = "PROXY_BREAKER_THRESHOLD", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub proxy_breaker_threshold: u32,

    /// How long an open upstream breaker fails fast before letting a probe through.
    #[arg(long, env = "PROXY_BREAKER_RESET", value_name = "PROXY_BREAKER_RESET", default_value_t = 10_000, value_parser = ms_range(1, 3_600_000))]
    pub proxy_breaker_reset: u64,

    /// Interval of the upstreams' health checks (a GET of each URL).
    #[arg(long, env = "PROXY_HEALTH_CHECK_INTERVAL", value_name = "PROXY_HEALTH_CHECK_INTERVAL", default_value_t = 5_000, value_parser = ms_range(100, 86_400_000))]
    pub proxy_health_check_interval: u64,

    /// How long an idle pooled connection to an upstream is kept (below uvicorn's 5 s
    /// keep-alive, so the upstream is not the one closing it under a request).
    #[arg(long, env = "PROXY_POOL_IDLE_TIMEOUT", value_name = "PROXY_POOL_IDLE_TIMEOUT", default_value_t = 4_000, value_parser = ms_range(1, 3_600_000))]
    pub proxy_pool_idle_timeout: u64,

    /// Idle connections kept per upstream per worker.
    #[arg(long, env = "PROXY_POOL_MAX_IDLE", value_name = "PROXY_POOL_MAX_IDLE", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub proxy_pool_max_idle: u32,

    /// Log level: trace, debug, info, warn, error, fatal, silent.
    #[arg(long, env = "LOG_LEVEL", value_name = "LOG_LEVEL", value_enum, default_value_t = LogLevel::Info, ignore_case = true)]
    pub log_level: LogLevel,

    /// Log line format: `json` or `pretty` (default: json in production, else pretty).
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", value_parser = ["json", "pretty"])]
    pub log_format: Option<String>,

    /// `production` logs JSON lines and no per-request lines; anything else logs
    /// human-readable lines and one line per request.
    #[arg(
        long,
        env = "NODE_ENV",
        value_name = "NODE_ENV",
        default_value = "development"
    )]
    pub node_env: String,

    /// One log line per request (default: on unless NODE_ENV=production).
    #[arg(long, env = "REQUEST_LOGGING", value_name = "REQUEST_LOGGING")]
    pub request_logging: Option<bool>,

    /// Keys of the `.env` file that name no setting (reported at start).
    #[arg(skip)]
    pub unknown_dotenv_keys: Vec<String>,
}

/// Environment names read by agentd that are not settings of [`Config`].
pub(crate) const OTHER_KNOWN_VARS: &[&str] = &["RUST_LOG", "NO_COLOR"];

/// `AGENT_NAME`'s default (the LLM agent calls itself "agentd LLM agent" instead).
pub const DEFAULT_AGENT_NAME: &str = "agentd echo agent";

fn ms_range(min: u64, max: u64) -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(min..=max)
}

impl Config {
    /// `HOST` and `PORT` together.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host.ip(), self.port)
    }

    /// `WORKERS`, or the cores available to this process.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            Some(n) => n as usize,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// `NODE_ENV=production`.
    pub fn is_production(&self) -> bool {
        self.node_env.eq_ignore_ascii_case("production")
    }

    /// JSON log lines: `LOG_FORMAT=json`, or production without `LOG_FORMAT`.
    pub fn json_logs(&self) -> bool {
        match self.log_format.as_deref() {
            Some(f) => f == "json",
            None => self.is_production(),
        }
    }

    /// `REQUEST_LOGGING`, on unless in production.
    pub fn request_logging(&self) -> bool {
        self.request_logging.unwrap_or(!self.is_production())
    }

    /// `KEEP_ALIVE_TIMEOUT`.
    pub fn keep_alive_timeout(&self) -> Duration {
        Duration::from_millis(self.keep_alive_timeout)
    }
    /// `HEADER_READ_TIMEOUT`.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout)
    }
    /// `CONNECTION_TIMEOUT`: how long a request body may take.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.connection_timeout)
    }
    /// `AGENT_TIMEOUT`.
    pub fn agent_timeout(&self) -> Duration {
        Duration::from_millis(self.agent_timeout)
    }
    /// `SHUTDOWN_TIMEOUT`.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout)
    }
    /// `SSE_SLOW_READER_TIMEOUT`.
    pub fn slow_reader_timeout(&self) -> Duration {
        Duration::from_millis(self.sse_slow_reader_timeout)
    }
    /// `SSE_HEARTBEAT`, `None` when 0.
    pub fn heartbeat(&self) -> Option<Duration> {
        (self.sse_heartbeat > 0).then(|| Duration::from_millis(self.sse_heartbeat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_coalescing_is_off_by_default_and_bounded() {
        let c = Config::defaults();
        assert_eq!((c.stream_chunk_size, c.stream_buffer_timeout), (0, 50));
        let parse = |args: &[&str]| Config::try_parse_from([&["agentd"], args].concat());
        let c = parse(&[
            "--stream-chunk-size",
            "100",
            "--stream-buffer-timeout",
            "20",
        ])
        .unwrap();
        assert_eq!((c.stream_chunk_size, c.stream_buffer_timeout), (100, 20));
        for (flag, bad, name) in [
            ("--stream-chunk-size", "65537", "STREAM_CHUNK_SIZE"),
            ("--stream-buffer-timeout", "0", "STREAM_BUFFER_TIMEOUT"),
            ("--stream-buffer-timeout", "10001", "STREAM_BUFFER_TIMEOUT"),
            ("--a2a-subscriber-backlog", "0", "A2A_SUBSCRIBER_BACKLOG"),
            (
                "--a2a-subscriber-backlog",
                "65537",
                "A2A_SUBSCRIBER_BACKLOG",
            ),
        ] {
            let e = parse(&[flag, bad]).unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn defaults_match_the_guide() {
        let c = Config::defaults();
        assert_eq!(c.port, 3000);
        assert_eq!(c.host.to_string(), "0.0.0.0");
        assert_eq!(c.keep_alive_timeout, 72_000);
        assert_eq!(c.body_limit, 10_485_760);
        assert_eq!(c.connection_timeout, 60_000);
        assert!(c.request_logging());
    }

    #[test]
    fn trust_proxy_takes_fastifys_forms() {
        use crate::edge::forwarded::TrustProxy;
        let parse = |v: &str| Config::try_parse_from(["agentd", "--trust-proxy", v]);
        assert_eq!(Config::parse_from(["agentd"]).trust_proxy, TrustProxy::None);
        assert_eq!(parse("true").unwrap().trust_proxy, TrustProxy::All);
        assert_eq!(parse("false").unwrap().trust_proxy, TrustProxy::None);
        assert_eq!(parse("2").unwrap().trust_proxy, TrustProxy::Hops(2));
        assert!(matches!(
            parse("10.0.0.0/8,127.0.0.1").unwrap().trust_proxy,
            TrustProxy::List(l) if l.len() == 2
        ));
        let e = parse("10.0.0.300").unwrap_err();
        assert!(e.to_string().contains("TRUST_PROXY"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = Config::try_parse_from(["agentd", "--port", "abc"]).unwrap_err();
        assert!(e.to_string().contains("PORT"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = Config::try_parse_from(["agentd", "--max-header-bytes", "10"]).unwrap_err();
        assert!(e.to_string().contains("MAX_HEADER_BYTES"), "{e}");
    }

    #[test]
    fn llm_concurrency_settings_have_server_defaults_and_named_ranges() {
        let c = Config::parse_from(["agentd"]);
        assert_eq!(c.llm_concurrent_requests, 1024);
        assert_eq!(c.llm_queue_timeout, 250);
        assert_eq!(c.llm_queue_max, 256);
        let c = Config::parse_from(["agentd", "--llm-concurrent-requests", "10"]);
        assert_eq!(c.llm_concurrent_requests, 10, "the guide's value applies");
        for (flag, bad, var) in [
            ("--llm-concurrent-requests", "0", "LLM_CONCURRENT_REQUESTS"),
            ("--llm-queue-timeout", "60001", "LLM_QUEUE_TIMEOUT"),
            ("--llm-queue-max", "100001", "LLM_QUEUE_MAX"),
        ] {
            let e = Config::try_parse_from(["agentd", flag, bad]).unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
    }
}
