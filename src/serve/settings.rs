//! The configuration's raw values turned, once at start, into the typed settings each
//! part of the server takes: the server's listening and timeouts, the routes' limits,
//! the edge's policies (authentication, rate limits, shedding, CORS).
//!
//! Every conversion that can fail fails here, before anything listens, with a message
//! naming the variable. Nothing else converts configuration values, and nothing here
//! runs per request.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::redis::RedisTarget;
use crate::config::{Config, ResumeStore};
use crate::edge::auth::{AuthConfig, Authenticator};
use crate::edge::cors::Cors;
use crate::edge::rate::{RateLimitConfig, RateLimiter};
use crate::edge::shed::ShedConfig;
use crate::protocol::queue::QueueLimits;
use crate::routes::resume::redis::RedisResumeSettings;
use crate::routes::resume::ResumeSettings;
use crate::routes::{Compression, Edge, RouteSettings};
use crate::server::ServerSettings;

/// The server's settings. `workers` is resolved once: `available_parallelism` reads
/// cgroup files, which no worker may do on a request.
pub(crate) fn server(c: &Config) -> Result<ServerSettings, String> {
    let tls = match (&c.tls_cert, &c.tls_key) {
        (Some(cert), Some(key)) => Some(crate::server::tls::acceptor(cert, key)?),
        _ => None,
    };
    Ok(ServerSettings {
        addr: c.listen_addr(),
        workers: c.worker_count(),
        backlog: c.listen_backlog,
        max_connections: c.max_connections,
        header_read_timeout: c.header_read_timeout(),
        keep_alive_timeout: c.keep_alive_timeout(),
        shutdown_timeout: c.shutdown_timeout(),
        shutdown_delay: Duration::from_millis(c.shutdown_delay),
        max_headers: c.max_headers as usize,
        max_header_bytes: c.max_header_bytes as usize,
        h2_max_concurrent_streams: c.h2_max_concurrent_streams,
        h2_max_pending_resets: c.h2_max_pending_resets as usize,
        h2_max_local_error_resets: c.h2_max_local_error_resets as usize,
        tls,
    })
}

/// The routes' settings.
pub(crate) fn routes(c: &Config) -> Result<RouteSettings, String> {
    Ok(RouteSettings {
        agent_id: Arc::from(c.agent_id.as_str()),
        request_logging: c.request_logging(),
        compression: c.compression.then_some(Compression {
            level: c.compression_level,
            threshold: c.compress_threshold as usize,
        }),
        security_headers: c.security_headers,
        shed_retry_after: c.shed_retry_after,
        trust_proxy: c.trust_proxy.clone(),
        metrics: c.enable_metrics || c.prometheus_metrics,
        body_limit: c.body_limit,
        body_read_timeout: c.body_read_timeout(),
        queue: QueueLimits {
            capacity: c.sse_queue_bytes as usize,
            slow_reader_timeout: c.slow_reader_timeout(),
        },
        heartbeat: c.heartbeat(),
        agent_timeout: c.agent_timeout(),
        chat_completion_max_bytes: usize::try_from(c.chat_completion_max_bytes)
            .unwrap_or(usize::MAX),
        mcp_result_max_bytes: usize::try_from(c.mcp_result_max_bytes).unwrap_or(usize::MAX),
        a2a_tasks_max: usize::try_from(c.a2a_tasks_max).unwrap_or(usize::MAX),
        a2a_task_max_bytes: usize::try_from(c.a2a_task_max_bytes).unwrap_or(usize::MAX),
        a2a_subscriber_backlog: usize::try_from(c.a2a_subscriber_backlog).unwrap_or(usize::MAX),
        ws_max_message: usize::try_from(c.ws_max_message).unwrap_or(usize::MAX),
        ws_idle_timeout: Duration::from_millis(c.ws_idle_timeout),
        playground: c.playground,
        resume: resume(c)?,
    })
}

/// `RESUME_STORE` and its limits; `redis` needs `REDIS_URL`.
fn resume(c: &Config) -> Result<Option<ResumeSettings>, String> {
    let redis = match c.resume_store {
        ResumeStore::Off => return Ok(None),
        ResumeStore::Memory => None,
        ResumeStore::Redis => {
            let url = c
                .redis_url
                .as_deref()
                .ok_or("RESUME_STORE=redis needs REDIS_URL")?;
            Some(RedisResumeSettings {
                target: RedisTarget::parse(url).map_err(|e| format!("RESUME_STORE: {e}"))?,
                timeout: Duration::from_millis(c.resume_redis_timeout),
                max_events: usize::try_from(c.resume_stream_events).unwrap_or(usize::MAX),
                remote_readers: usize::try_from(c.resume_remote_readers).unwrap_or(usize::MAX),
                prefix: c.resume_redis_prefix.clone(),
            })
        }
    };
    Ok(Some(ResumeSettings {
        grace: Duration::from_millis(c.resume_grace),
        ttl: Duration::from_millis(c.resume_ttl),
        buffer_bytes: c.resume_buffer_bytes as usize,
        memory_bytes: c.resume_memory_bytes as usize,
        redis,
    }))
}

/// The edge's policies.
pub(crate) fn edge(c: &Config) -> Result<Edge, String> {
    Ok(Edge {
        cors: Cors::new(&c.cors_origins),
        shed: ShedConfig {
            max_delay: Duration::from_millis(c.max_event_loop_delay),
            max_rss: c.max_rss_bytes,
            max_in_flight: c.max_in_flight,
        },
        rate: rate_limiter(c)?,
        auth: authenticator(c)?,
        finished_streams: c.stream_done_memory as usize,
    })
}

fn authenticator(c: &Config) -> Result<Authenticator, String> {
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect()
    };
    let public_key = match c.jwt_public_key.as_deref().filter(|k| !k.is_empty()) {
        Some(k) if k.trim_start().starts_with("-----BEGIN") => Some(k.to_owned()),
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "JWT_PUBLIC_KEY is neither a PEM key nor a readable file".to_owned()
            }
            _ => format!("JWT_PUBLIC_KEY names a file that cannot be read: {e}"),
        })?),
        None => None,
    };
    Authenticator::new(AuthConfig {
        jwt_secret: c.jwt_secret.clone().filter(|s| !s.is_empty()),
        jwt_public_key: public_key,
        leeway: Duration::from_millis(c.jwt_leeway),
        issuer: c.jwt_issuer.clone(),
        audience: c.jwt_audience.clone(),
        required: c.auth_required,
        agent_roles: list(&c.agent_roles),
        api_keys: c.api_key_secret.as_deref().map(list).unwrap_or_default(),
    })
}

fn rate_limiter(c: &Config) -> Result<Option<RateLimiter>, String> {
    if c.rate_limit_max == 0 {
        return Ok(None);
    }
    let mut rc = RateLimitConfig::new(c.rate_limit_max, Duration::from_millis(c.rate_limit_window));
    rc.max_keys = c.rate_limit_max_keys as usize;
    rc.redis_url = c.redis_url.clone().filter(|u| !u.is_empty());
    rc.redis_failure = c.rate_limit_redis_failure;
    rc.redis_timeout = Duration::from_millis(c.rate_limit_redis_timeout);
    RateLimiter::new(rc).map(Some).map_err(|e| {
        let var = if e.contains("Redis") {
            "REDIS_URL"
        } else {
            "RATE_LIMIT_MAX/RATE_LIMIT_WINDOW"
        };
        format!("{var}: {e}")
    })
}
