//! [`Endpoint`]: the live state of one backend (an LLM provider or an upstream agent),
//! shared by every worker: its breaker, what the health probes said, requests in
//! flight, the EWMA of its time to first token (or first event), an optional
//! concurrency cap, and its figures for `/metrics`, `/stats` and `/health/detailed`.
//!
//! Lock-free (atomics only), so workers never wait on each other here. It never does
//! I/O and knows nothing of what is sent to the backend (the wings do that).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::breaker::{Breaker, BreakerState};
use super::error::{BackendError, ErrorKind};
use super::probe::{ProbeState, Probed};
use super::slots::{Refusal, Slot, SlotLimits, Slots};
use crate::obs::stats::Histogram;
use tokio::time::Instant;

/// One backend's figures (read by `/stats` and `/metrics`).
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Requests sent.
    pub requests: AtomicU64,
    /// Answers that reached their end marker.
    pub completed: AtomicU64,
    /// Failures by [`ErrorKind`] index.
    pub errors: [AtomicU64; ErrorKind::ALL.len()],
    /// Tries again on this backend before the first token.
    pub retries: AtomicU64,
    /// Requests that came to this backend after another failed.
    pub failovers: AtomicU64,
    /// Prompt tokens the backend reported (LLM providers).
    pub tokens_in: AtomicU64,
    /// Completion tokens the backend reported (LLM providers).
    pub tokens_out: AtomicU64,
    /// From sending the request to the first token (or first event).
    pub ttft: Histogram,
    /// From sending the request to the end marker.
    pub latency: Histogram,
    /// agentd's own share of the time to first token (see `LlmAgent`).
    pub overhead: Histogram,
}

/// One backend's live state.
#[derive(Debug)]
pub struct Endpoint {
    name: String,
    /// Where it is (a provider's base URL, an upstream's URL): for the start-up line.
    address: String,
    pub breaker: Arc<Breaker>,
    /// Set by the probe loop; unknown until its first probe answers.
    pub health: ProbeState,
    in_flight: AtomicUsize,
    /// EWMA of time to first token, in microseconds (f64 bits); 0 = unknown.
    ttft_ewma: AtomicU64,
    /// Concurrent requests allowed for the whole process, when capped.
    pub slots: Option<Slots>,
    /// The failure kinds this backend's wing produces (what its figures list).
    kinds: &'static [ErrorKind],
    pub stats: EndpointStats,
}

/// How an endpoint stands for readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointState {
    /// No probe has answered yet.
    Unknown,
    /// Its last probe answered healthy and its breaker is not open.
    Up,
    /// Found unhealthy, or its breaker is open.
    Down,
}

/// How a set of endpoints (or any dependencies) stands for readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// At least one is known usable.
    Ready,
    /// None is usable yet, and some have not answered their first probe.
    Starting,
    /// Every one answered, and none is usable (also when there is none).
    Down,
}

/// The standing of a set of endpoints, given their states.
pub fn standing(states: impl Iterator<Item = EndpointState>) -> Standing {
    let mut unknown = false;
    for s in states {
        match s {
            EndpointState::Up => return Standing::Ready,
            EndpointState::Unknown => unknown = true,
            EndpointState::Down => {}
        }
    }
    if unknown {
        Standing::Starting
    } else {
        Standing::Down
    }
}

impl Endpoint {
    pub fn new(
        name: impl Into<String>,
        address: impl Into<String>,
        breaker: Breaker,
        slots: Option<SlotLimits>,
        kinds: &'static [ErrorKind],
    ) -> Endpoint {
        Endpoint {
            name: name.into(),
            address: address.into(),
            breaker: Arc::new(breaker),
            health: ProbeState::default(),
            in_flight: AtomicUsize::new(0),
            ttft_ewma: AtomicU64::new(0),
            slots: slots.map(Slots::new),
            kinds,
            stats: EndpointStats::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The failure kinds its figures list.
    pub fn kinds(&self) -> &'static [ErrorKind] {
        self.kinds
    }

    fn breaker_allows(&self) -> bool {
        self.breaker.state() != BreakerState::Open
    }

    /// Worth trying now: not found unhealthy by a probe, and its breaker not open.
    pub fn is_usable(&self) -> bool {
        self.health.get() != Probed::Unhealthy && self.breaker_allows()
    }

    /// Known usable: its last probe answered healthy and its breaker is not open
    /// (what readiness counts).
    pub fn is_ready(&self) -> bool {
        self.is_healthy() && self.breaker_allows()
    }

    /// Its last probe answered healthy.
    pub fn is_healthy(&self) -> bool {
        self.health.get() == Probed::Healthy
    }

    /// Where it stands for readiness.
    pub fn state(&self) -> EndpointState {
        match self.health.get() {
            Probed::Unknown => EndpointState::Unknown,
            Probed::Healthy if self.breaker_allows() => EndpointState::Up,
            _ => EndpointState::Down,
        }
    }

    /// Requests now in flight to this backend, from every worker.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// Counts one request in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// EWMA of time to first token; `None` until measured.
    pub fn ttft_ewma(&self) -> Option<Duration> {
        let v = f64::from_bits(self.ttft_ewma.load(Relaxed));
        (v > 0.0).then(|| Duration::from_micros(v as u64))
    }

    pub fn record_ttft(&self, ttft: Duration) {
        self.stats.ttft.record(ttft);
        let us = ttft.as_micros() as f64;
        let old = f64::from_bits(self.ttft_ewma.load(Relaxed));
        let new = if old == 0.0 { us } else { old * 0.8 + us * 0.2 };
        self.ttft_ewma.store(new.to_bits(), Relaxed);
    }

    pub fn record_error(&self, e: &BackendError) {
        self.stats.errors[e.kind.index()].fetch_add(1, Relaxed);
    }

    /// A concurrency slot when the endpoint is capped (`None` when it is not): at once
    /// when one is free, else after a bounded wait, or a refusal (see [`Slots`]).
    pub async fn acquire_slot(&self, deadline: Instant) -> Result<Option<Slot>, Refusal> {
        match &self.slots {
            Some(s) => s.acquire(deadline).await.map(Some),
            None => Ok(None),
        }
    }

    /// Failures of `kind` so far.
    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.stats.errors[kind.index()].load(Relaxed)
    }
}

/// One request in flight to an endpoint (see [`Endpoint::begin`]).
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_in_flight_and_ttft() {
        let e = Arc::new(Endpoint::new(
            "e",
            "http://e/",
            Breaker::new(1, Duration::from_secs(60)),
            None,
            &ErrorKind::ALL,
        ));
        assert_eq!(e.state(), EndpointState::Unknown);
        assert!(e.is_usable() && !e.is_ready());
        e.health.set(true);
        assert_eq!(e.state(), EndpointState::Up);
        let held = e.begin();
        assert_eq!(e.in_flight(), 1);
        drop(held);
        assert_eq!(e.in_flight(), 0);
        assert_eq!(e.ttft_ewma(), None);
        e.record_ttft(Duration::from_millis(100));
        e.record_ttft(Duration::from_millis(200));
        assert_eq!(e.ttft_ewma(), Some(Duration::from_millis(120)));
        e.breaker.try_acquire().unwrap().fail();
        assert_eq!(e.state(), EndpointState::Down);
        assert!(!e.is_usable());
    }

    #[test]
    fn standing_needs_one_answered_usable_endpoint() {
        use EndpointState::*;
        let of = |v: &[EndpointState]| standing(v.iter().copied());
        assert_eq!(of(&[Unknown, Unknown]), Standing::Starting);
        assert_eq!(of(&[Down, Unknown]), Standing::Starting);
        assert_eq!(of(&[Up, Unknown]), Standing::Ready);
        assert_eq!(of(&[Down, Down]), Standing::Down);
        assert_eq!(of(&[]), Standing::Down);
    }
}
