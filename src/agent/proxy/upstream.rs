//! The upstream agents: each one's URL and live state (health, breaker, requests in
//! flight), shared by every worker, and the pool that orders them for a request.
//!
//! Lock-free (atomics only), so workers never wait on each other here; it never does
//! I/O (the health monitor and the relay do).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use smallvec::SmallVec;

use super::balance::{order, Balance, Load};
use crate::llm::breaker::{Breaker, BreakerState};
use crate::llm::probe_loop::{standing, ProbeState, Probed, Standing};

/// One upstream agent.
#[derive(Debug)]
pub struct Upstream {
    pub url: Uri,
    pub breaker: Arc<Breaker>,
    /// Set by the health monitor; unknown until its first probe answers.
    health: ProbeState,
    in_flight: AtomicUsize,
}

impl Upstream {
    pub fn new(url: Uri, breaker: Breaker) -> Upstream {
        Upstream {
            url,
            breaker: Arc::new(breaker),
            health: ProbeState::default(),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Worth trying now: not found unhealthy by a probe, and its breaker not open.
    pub fn is_usable(&self) -> bool {
        self.health.get() != Probed::Unhealthy && self.breaker.state() != BreakerState::Open
    }

    /// Known usable: its last probe answered healthy and its breaker is not open
    /// (what readiness counts).
    pub fn is_ready(&self) -> bool {
        self.is_healthy() && self.breaker.state() != BreakerState::Open
    }

    /// Its last probe answered healthy.
    pub fn is_healthy(&self) -> bool {
        self.health.get() == Probed::Healthy
    }

    /// The health monitor's record of this upstream.
    pub fn probe_state(&self) -> &ProbeState {
        &self.health
    }

    /// Records a health probe's result; returns the state before it.
    pub fn set_healthy(&self, ok: bool) -> Probed {
        self.health.set(ok)
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
    pub upstreams: Vec<Arc<Upstream>>,
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
                .map(|u| {
                    Arc::new(Upstream::new(
                        u,
                        Breaker::new(breaker_threshold, breaker_reset),
                    ))
                })
                .collect(),
            balance,
            turn: AtomicUsize::new(0),
        }
    }

    /// True when at least one upstream is usable.
    pub fn any_usable(&self) -> bool {
        self.upstreams.iter().any(|u| u.is_usable())
    }

    /// Readiness: ready once an upstream answered its probe and is usable; starting
    /// while none is and some have not answered yet.
    pub fn standing(&self) -> Standing {
        standing(
            self.upstreams
                .iter()
                .map(|u| (u.health.get(), u.breaker.state() != BreakerState::Open)),
        )
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
        assert_eq!(pool.standing(), Standing::Starting);
        pool.upstreams[0].set_healthy(true);
        assert_eq!(pool.standing(), Standing::Ready);
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
        assert_eq!(pool.standing(), Standing::Down);
    }
}
