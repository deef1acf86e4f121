//! The upstream agents: each one's URL, how it is health-checked, and its live state (a
//! [`crate::backend::Endpoint`]: health, breaker, requests in flight, figures), shared
//! by every worker; and the pool that orders them for a request.
//!
//! Health checks run on the one probe loop ([`crate::backend::probe`]): a `GET` of
//! each URL at once when the proxy starts, then every `PROXY_HEALTH_CHECK_INTERVAL`.
//! Any answer below 500 means the process is up and serving HTTP (the Python reference
//! answers 405 to a GET of `/assist`); a refused connection, a timeout or a 5xx marks
//! it unhealthy until a check succeeds. A check never sends a query (that would run
//! the upstream's agent). The pool itself is lock-free and never does I/O.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;
use smallvec::SmallVec;

use super::balance::Balance;
use super::error::UPSTREAM_KINDS;
use crate::backend::client::{self, HttpClient, PoolConfig};
use crate::backend::order::{self, Candidate, Rotation};
use crate::backend::probe::{self, ProbeLoop, ProbeState, Probed};
use crate::backend::{standing, Breaker, Endpoint, Standing};

/// Longest wait for one health check's answer (shorter when the interval is).
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes of a health check's answer read (the rest is dropped with the connection).
const MAX_PROBE_BODY: usize = 16 * 1024;

/// One upstream agent.
#[derive(Debug)]
pub struct Upstream {
    pub url: Uri,
    pub endpoint: Arc<Endpoint>,
}

impl Upstream {
    pub fn new(url: Uri, breaker: Breaker) -> Upstream {
        let name = url.to_string();
        Upstream {
            endpoint: Arc::new(Endpoint::new(
                name.clone(),
                name,
                breaker,
                None,
                &UPSTREAM_KINDS,
            )),
            url,
        }
    }

    /// Records a health check's result; returns the state before it.
    pub fn set_healthy(&self, ok: bool) -> Probed {
        self.endpoint.health.set(ok)
    }
}

impl probe::Target for Upstream {
    fn probe<'a>(
        &'a self,
        client: &'a HttpClient,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = bool> + 'a>> {
        Box::pin(async move {
            let Ok(req) = Request::get(self.url.clone()).body(Full::new(Bytes::new())) else {
                return false;
            };
            let deadline = tokio::time::Instant::now() + timeout;
            let Ok(res) = client::send(client, req, deadline).await else {
                return false;
            };
            let ok = !res.status().is_server_error();
            // Read the (small) answer so the connection can be reused for the next check.
            client::discard(res.into_body(), MAX_PROBE_BODY, deadline).await;
            ok
        })
    }

    fn probe_state(&self) -> &ProbeState {
        &self.endpoint.health
    }

    fn log_change(&self, _was: Probed, now_ok: bool) {
        if now_ok {
            tracing::info!(upstream = %self.url, "upstream agent healthy again");
        } else {
            tracing::warn!(upstream = %self.url, "upstream agent health check failed");
        }
    }
}

/// Every upstream, and the rotation shared by all workers.
#[derive(Debug)]
pub struct UpstreamPool {
    pub upstreams: Vec<Arc<Upstream>>,
    balance: Balance,
    rotation: Rotation,
}

impl UpstreamPool {
    pub fn new(
        urls: Vec<Uri>,
        balance: Balance,
        breaker_threshold: u32,
        breaker_reset: Duration,
    ) -> UpstreamPool {
        UpstreamPool {
            upstreams: urls
                .into_iter()
                .map(|u| {
                    Arc::new(Upstream::new(
                        u,
                        Breaker::new(breaker_threshold, breaker_reset),
                    ))
                })
                .collect(),
            balance,
            rotation: Rotation::default(),
        }
    }

    /// Starts the health checks: a first one at once, then one per `interval`, until
    /// the returned handle is dropped.
    pub fn spawn_health_checks(
        &self,
        interval: Duration,
        pool: PoolConfig,
    ) -> std::io::Result<ProbeLoop> {
        probe::spawn(
            "agentd-proxy-health",
            self.upstreams.clone(),
            interval,
            interval.min(MAX_PROBE_TIMEOUT),
            pool,
        )
    }

    /// True when at least one upstream is usable.
    pub fn any_usable(&self) -> bool {
        self.upstreams.iter().any(|u| u.endpoint.is_usable())
    }

    /// Readiness: ready once an upstream answered its check and is usable; starting
    /// while none is and some have not answered yet.
    pub fn standing(&self) -> Standing {
        standing(self.upstreams.iter().map(|u| u.endpoint.state()))
    }

    /// Indices of the upstreams in the order this request should try them.
    pub fn order(&self) -> SmallVec<[usize; 8]> {
        let policy = self.balance.policy();
        let candidates: SmallVec<[Candidate; 8]> = self
            .upstreams
            .iter()
            .map(|u| Candidate {
                usable: u.endpoint.is_usable(),
                in_flight: u.endpoint.in_flight(),
                ttft: u.endpoint.ttft_ewma(),
                weight: 0.0,
            })
            .collect();
        order::order(policy, self.rotation.turn(policy), &candidates, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_guards_count_and_steer_least_inflight() {
        let pool = UpstreamPool::new(
            vec!["http://a/".parse().unwrap(), "http://b/".parse().unwrap()],
            Balance::LeastInflight,
            3,
            Duration::from_secs(1),
        );
        assert_eq!(pool.standing(), Standing::Starting);
        pool.upstreams[0].set_healthy(true);
        assert_eq!(pool.standing(), Standing::Ready);
        let held = pool.upstreams[0].endpoint.begin();
        for _ in 0..4 {
            assert_eq!(pool.order()[0], 1);
        }
        drop(held);
        assert_eq!(pool.upstreams[0].endpoint.in_flight(), 0);
        pool.upstreams[1].set_healthy(false);
        assert_eq!(pool.order()[0], 0);
        assert!(pool.any_usable());
        pool.upstreams[0].set_healthy(false);
        assert!(!pool.any_usable());
        assert_eq!(pool.standing(), Standing::Down);
    }
}
