//! A circuit breaker per backend (LLM provider or upstream agent), shared by every worker.
//!
//! It opens after `threshold` consecutive failures (the guide's `failureThreshold`).
//! Consecutive failures rather than a ratio over a window: a ratio needs enough traffic
//! in the window to mean anything, and at low traffic it either never trips or trips
//! on two requests; a run of failures is what an outage looks like at any rate. While
//! open it fails fast; after `reset` one probe request is let through (half-open): its
//! success closes the breaker, its failure opens it again. A probe that ends neither
//! way (the client left) frees the slot for the next probe. Lock-free: atomics only.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    reset: Duration,
    epoch: Instant,
    failures: AtomicU32,
    /// Milliseconds since `epoch` + 1 when it opened; 0 = closed.
    opened_at: AtomicU64,
    probing: AtomicBool,
}

/// Permission to send one request. Report how it ended; dropping it unreported is
/// neutral.
#[derive(Debug)]
pub struct BreakerPermit {
    breaker: Arc<Breaker>,
    probe: bool,
    settled: bool,
}

impl Breaker {
    pub fn new(threshold: u32, reset: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            reset,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub fn state(&self) -> BreakerState {
        match self.opened_at.load(SeqCst) {
            0 => BreakerState::Closed,
            t if self.now().saturating_sub(t) < self.reset.as_millis() as u64 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// A permit, or `None` while open (or while another probe is out).
    pub fn try_acquire(self: &Arc<Self>) -> Option<BreakerPermit> {
        let probe = match self.state() {
            BreakerState::Closed => false,
            BreakerState::Open => return None,
            BreakerState::HalfOpen => {
                if self
                    .probing
                    .compare_exchange(false, true, SeqCst, SeqCst)
                    .is_err()
                {
                    return None;
                }
                true
            }
        };
        Some(BreakerPermit {
            breaker: self.clone(),
            probe,
            settled: false,
        })
    }

    fn success(&self, probe: bool) {
        self.failures.store(0, SeqCst);
        if probe || self.opened_at.load(SeqCst) != 0 {
            self.opened_at.store(0, SeqCst);
        }
        if probe {
            self.probing.store(false, SeqCst);
        }
    }

    fn failure(&self, probe: bool) {
        if probe {
            self.opened_at.store(self.now(), SeqCst);
            self.probing.store(false, SeqCst);
            return;
        }
        let f = self.failures.fetch_add(1, SeqCst) + 1;
        if f >= self.threshold && self.opened_at.load(SeqCst) == 0 {
            self.opened_at.store(self.now(), SeqCst);
        }
    }
}

impl BreakerPermit {
    pub fn succeed(mut self) {
        self.settled = true;
        self.breaker.success(self.probe);
    }

    pub fn fail(mut self) {
        self.settled = true;
        self.breaker.failure(self.probe);
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.breaker.probing.store(false, SeqCst);
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests that mean to block their own thread
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_after_reset() {
        let b = Arc::new(Breaker::new(3, Duration::from_millis(50)));
        for _ in 0..2 {
            b.try_acquire().unwrap().fail();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire().unwrap().succeed();
        for _ in 0..3 {
            b.try_acquire().unwrap().fail();
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire().is_none(), "fails fast while open");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_none(), "one probe at a time");
        probe.fail();
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(60));
        let probe = b.try_acquire().unwrap();
        drop(probe);
        let probe = b.try_acquire().expect("an abandoned probe frees the slot");
        probe.succeed();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
