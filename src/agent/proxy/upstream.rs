//! The upstream agents: each one's URL and live state (health, breaker, requests in
//! flight), shared by every worker, and the pool that orders them for a request.
//!
//! Lock-free (atomics only), so workers never wait on each other here; it never does
//! I/O (the health monitor and the relay do).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use smallvec::SmallVec;

use super::balance::{order, Balance, Load};
use crate::llm::breaker::{Breaker, BreakerState};

/// One upstream agent.
#[derive(Debug)]
pub struct Upstream {
    pub url: Uri,
    pub breaker: Arc<Breaker>,
    /// Set by the health monitor; optimistic until its first probe.
    healthy: AtomicBool,
    in_flight: AtomicUsize,
}

impl Upstream {
    pub fn new(url: Uri, breaker: Breaker) -> Upstream {
        Upstream {
            url,
            breaker: Arc::new(breaker),
            healthy: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Healthy and its breaker not open.
    pub fn is_usable(&self) -> bool {
        self.healthy.load(Relaxed) && self.breaker.state() != BreakerState::Open
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Records a health probe's result; returns the previous one.
    pub fn set_healthy(&self, ok: bool) -> bool {
        self.healthy.swap(ok, Relaxed)
    }

    /// Requests now in flight to this upstream, from every worker.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// Counts one request in flight until the guard is dropped.
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self)
    }
}

/// One request in flight to an upstream (see [`Upstream::begin`]).
#[derive(Debug)]
pub struct InFlight<'a>(&'a Upstream);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Every upstream, and the rotation shared by all workers.
#[derive(Debug)]
pub struct UpstreamPool {
    pub upstreams: Vec<Upstream>,
    balance: Balance,
    turn: AtomicUsize,
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
                .map(|u| Upstream::new(u, Breaker::new(breaker_threshold, breaker_reset)))
                .collect(),
            balance,
            turn: AtomicUsize::new(0),
        }
    }

    /// True when at least one upstream is usable.
    pub fn any_usable(&self) -> bool {
        self.upstreams.iter().any(Upstream::is_usable)
    }

    /// Indices of the upstreams in the order this request should try them.
    pub fn order(&self) -> SmallVec<[usize; 8]> {
        let turn = self.turn.fetch_add(1, Relaxed);
        let loads: SmallVec<[Load; 8]> = self
            .upstreams
            .iter()
            .map(|u| Load {
                in_flight: u.in_flight(),
                usable: u.is_usable(),
            })
            .collect();
        order(self.balance, turn, &loads)
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
        let held = pool.upstreams[0].begin();
        for _ in 0..4 {
            assert_eq!(pool.order()[0], 1);
        }
        drop(held);
        assert_eq!(pool.upstreams[0].in_flight(), 0);
        pool.upstreams[1].set_healthy(false);
        assert_eq!(pool.order()[0], 0);
        assert!(pool.any_usable());
        pool.upstreams[0].set_healthy(false);
        assert!(!pool.any_usable());
    }
}
