//! Health checks: every `PROXY_HEALTH_CHECK_INTERVAL` each upstream gets a `GET` of its
//! URL; any answer below 500 means the process is up and serving HTTP (the Python
//! reference answers 405 to a GET of `/assist`), while a refused connection, a timeout
//! or a 5xx marks it unhealthy until a probe succeeds. Unhealthy upstreams are tried
//! last, and `/health/ready` is 503 while no upstream is usable.
//!
//! Runs on its own thread with its own runtime and client, so it never competes with
//! request handling, and stops when the pool is dropped. It never sends a query (that
//! would run the upstream's agent).

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

use super::upstream::{Upstream, UpstreamPool};
use crate::llm::client::{self, HttpClient, PoolConfig};

/// Longest wait for one probe's answer (shorter when the interval is).
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes of a probe's answer read (the rest is dropped with the connection).
const MAX_PROBE_BODY: usize = 16 * 1024;

/// Starts the monitor for `pool`: a first probe at once, then one per `interval`.
pub fn spawn(
    pool: &Arc<UpstreamPool>,
    interval: Duration,
    pool_config: PoolConfig,
) -> std::io::Result<()> {
    let weak: Weak<UpstreamPool> = Arc::downgrade(pool);
    std::thread::Builder::new()
        .name("agentd-proxy-health".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let c = client::build(pool_config);
                let timeout = interval.min(MAX_PROBE_TIMEOUT);
                loop {
                    let Some(pool) = weak.upgrade() else { return };
                    // All at once, so one hanging upstream does not delay the others.
                    let probes = pool.upstreams.iter().map(|u| probe(&c, u, timeout));
                    let results = futures_util::future::join_all(probes).await;
                    for (u, ok) in pool.upstreams.iter().zip(results) {
                        if u.set_healthy(ok) != ok {
                            if ok {
                                tracing::info!(upstream = %u.url, "upstream agent healthy again");
                            } else {
                                tracing::warn!(upstream = %u.url, "upstream agent health check failed");
                            }
                        }
                    }
                    drop(pool);
                    tokio::time::sleep(interval).await;
                }
            });
        })?;
    Ok(())
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
