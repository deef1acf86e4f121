//! Load shedding, as the guide's `under-pressure`: when a worker's scheduling delay (the
//! event-loop-delay equivalent, sampled per worker), the process's resident memory, or
//! the requests in flight pass their thresholds, new requests get 503 with
//! `Retry-After` and `{code:"under_pressure"}`. `/health/live` is never shed;
//! `/health/ready` reports the pressure. Checking costs a few relaxed atomic loads.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::obs::stats::Stats;

/// How often each worker samples its scheduling delay, and worker 0 the RSS.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug)]
pub struct ShedConfig {
    /// Scheduling delay that sheds (0 = off).
    pub max_delay: Duration,
    /// Resident memory that sheds, in bytes (0 = off).
    pub max_rss: u64,
    /// Requests in flight (whole process) that shed (0 = off).
    pub max_in_flight: u64,
}

/// Why requests are being shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pressure {
    SchedulingDelay,
    Memory,
    InFlight,
}

impl Pressure {
    pub fn as_str(self) -> &'static str {
        match self {
            Pressure::SchedulingDelay => "under pressure: scheduling delay",
            Pressure::Memory => "under pressure: memory",
            Pressure::InFlight => "under pressure: requests in flight",
        }
    }
}

pub struct Shedder {
    config: ShedConfig,
    /// Per worker: the last sampled scheduling delay, in microseconds.
    delay_us: Box<[AtomicU64]>,
    rss: AtomicU64,
    /// Counts the requests in flight (`RequestDone` keeps the count).
    stats: Arc<Stats>,
    pub shed: AtomicU64,
}

impl Shedder {
    pub fn new(config: ShedConfig, stats: Arc<Stats>) -> Shedder {
        Shedder {
            config,
            delay_us: (0..stats.workers().len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            rss: AtomicU64::new(0),
            stats,
            shed: AtomicU64::new(0),
        }
    }

    /// The pressure that applies to a new request on `worker`, if any.
    pub fn pressure(&self, worker: usize) -> Option<Pressure> {
        let c = &self.config;
        if !c.max_delay.is_zero() {
            let d = self.delay_us.get(worker).map_or(0, |d| d.load(Relaxed));
            if d > c.max_delay.as_micros() as u64 {
                return Some(Pressure::SchedulingDelay);
            }
        }
        if c.max_rss > 0 && self.rss.load(Relaxed) > c.max_rss {
            return Some(Pressure::Memory);
        }
        if c.max_in_flight > 0 && self.stats.in_flight() >= c.max_in_flight {
            return Some(Pressure::InFlight);
        }
        None
    }

    /// The worst pressure on any worker (for readiness).
    pub fn any_pressure(&self) -> Option<Pressure> {
        (0..self.delay_us.len()).find_map(|w| self.pressure(w))
    }

    pub fn config(&self) -> &ShedConfig {
        &self.config
    }

    pub fn in_flight(&self) -> u64 {
        self.stats.in_flight()
    }

    /// Samples this worker's scheduling delay forever (spawn it on the worker).
    pub async fn sample(&self, worker: usize) {
        loop {
            let asked = Instant::now();
            tokio::time::sleep(SAMPLE_INTERVAL).await;
            let late = asked.elapsed().saturating_sub(SAMPLE_INTERVAL);
            if let Some(d) = self.delay_us.get(worker) {
                d.store(late.as_micros() as u64, Relaxed);
            }
            if worker == 0 && self.config.max_rss > 0 {
                if let Some(rss) = crate::obs::process::rss_bytes() {
                    self.rss.store(rss, Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests that mean to block their own thread
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let s = Shedder::new(
            ShedConfig {
                max_delay: Duration::from_millis(100),
                max_rss: 0,
                max_in_flight: 2,
            },
            Arc::new(Stats::new(2)),
        );
        assert_eq!(s.pressure(0), None);
        s.stats.request_began();
        s.stats.request_began();
        assert_eq!(s.pressure(0), Some(Pressure::InFlight));
        s.stats.request_ended();
        assert_eq!(s.pressure(1), None);
        s.delay_us[1].store(200_000, Relaxed);
        assert_eq!(s.pressure(1), Some(Pressure::SchedulingDelay));
        assert_eq!(s.pressure(0), None);
        assert_eq!(s.any_pressure(), Some(Pressure::SchedulingDelay));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_worker_shows_its_delay() {
        let s = std::sync::Arc::new(Shedder::new(
            ShedConfig {
                max_delay: Duration::from_millis(50),
                max_rss: 0,
                max_in_flight: 0,
            },
            Arc::new(Stats::new(1)),
        ));
        let sampler = tokio::spawn({
            let s = s.clone();
            async move { s.sample(0).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Block the runtime's only thread, as a misbehaving handler would.
        std::thread::sleep(Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
        assert_eq!(s.pressure(0), Some(Pressure::SchedulingDelay));
        sampler.abort();
    }
}
