//! Health checks: each upstream gets a `GET` of its URL at once when the proxy starts,
//! then every `PROXY_HEALTH_CHECK_INTERVAL`; any answer below 500 means the process is
//! up and serving HTTP (the Python reference answers 405 to a GET of `/assist`), while
//! a refused connection, a timeout or a 5xx marks it unhealthy until a probe succeeds.
//! Unhealthy upstreams are tried last, `/health/ready` says `starting` until a probe
//! answered and is 503 while no upstream is usable.
//!
//! The loop is `llm::probe_loop`'s: its own thread, runtime and client, every upstream
//! probed at once, stopped when the proxy agent is dropped. It never sends a query
//! (that would run the upstream's agent).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

use super::upstream::{Upstream, UpstreamPool};
use crate::llm::client::{HttpClient, PoolConfig};
use crate::llm::probe_loop::{self, ProbeLoop, ProbeState, Probed};

/// Longest wait for one probe's answer (shorter when the interval is).
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes of a probe's answer read (the rest is dropped with the connection).
const MAX_PROBE_BODY: usize = 16 * 1024;

/// Starts the monitor for `pool`: a first probe at once, then one per `interval`. It
/// runs until the returned handle is dropped.
pub fn spawn(
    pool: &Arc<UpstreamPool>,
    interval: Duration,
    pool_config: PoolConfig,
) -> std::io::Result<ProbeLoop> {
    probe_loop::spawn(
        "agentd-proxy-health",
        pool.upstreams.clone(),
        interval,
        interval.min(MAX_PROBE_TIMEOUT),
        pool_config,
    )
}

impl probe_loop::Target for Upstream {
    fn probe<'a>(
        &'a self,
        client: &'a HttpClient,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = bool> + 'a>> {
        Box::pin(probe(client, self, timeout))
    }

    fn probe_state(&self) -> &ProbeState {
        Upstream::probe_state(self)
    }

    fn log_change(&self, _was: Probed, now_ok: bool) {
        if now_ok {
            tracing::info!(upstream = %self.url, "upstream agent healthy again");
        } else {
            tracing::warn!(upstream = %self.url, "upstream agent health check failed");
        }
    }
}

async fn probe(c: &HttpClient, u: &Upstream, timeout: Duration) -> bool {
    let Ok(req) = Request::get(u.url.clone()).body(Full::new(Bytes::new())) else {
        return false;
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let Ok(Ok(res)) = tokio::time::timeout_at(deadline, c.request(req)).await else {
        return false;
    };
    let ok = !res.status().is_server_error();
    // Read the (small) answer so the connection can be reused for the next probe.
    let mut body = res.into_body();
    let mut read = 0;
    while read <= MAX_PROBE_BODY {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => read += f.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
    ok
}
