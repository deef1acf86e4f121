//! Health monitoring of the LLM providers: a cheap probe (list models) of every
//! provider at once when the router starts, then every `HEALTH_CHECK_INTERVAL`; a
//! failed probe marks a provider unhealthy until one succeeds. Until a provider's first
//! probe answers, readiness says `starting`.
//!
//! The loop is [`super::probe_loop`]'s: its own thread, runtime and client, so it never
//! competes with request handling; it stops when the router is dropped.

use std::sync::Arc;
use std::time::Duration;

use super::probe_loop::{self, ProbeLoop};
use super::router::Router;

/// Longest wait for one probe's answer (shorter when the interval is).
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the monitor for `router`'s providers, probing at once and then every
/// `interval`. The router keeps the returned handle (see [`Router::keep_monitor`]).
pub fn spawn(router: &Arc<Router>, interval: Duration) -> std::io::Result<ProbeLoop> {
    probe_loop::spawn(
        "agentd-llm-health",
        router.providers.clone(),
        interval,
        interval.min(MAX_PROBE_TIMEOUT),
        router.config.pool,
    )
}
