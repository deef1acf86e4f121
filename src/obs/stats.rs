//! Request counters and response-time histograms, one slot per worker.
//!
//! A worker only writes its own slot (relaxed atomics, no lock, no allocation); readers
//! sum all slots when they need a figure. The histogram is log-linear (8 sub-buckets
//! per power of two of microseconds, about 12% resolution), fixed in size.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const SUB: u32 = 8;
const SUB_BITS: u32 = 3;
/// Buckets cover 0 µs to 2^40 µs (about 12 days).
const BUCKETS: usize = ((40 - SUB_BITS + 1) * SUB) as usize + SUB as usize;

/// A fixed-size log-linear histogram of durations, updated with relaxed atomics.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let micros = d.as_micros().min(u64::MAX as u128) as u64;
        self.counts[bucket(micros)].fetch_add(1, Relaxed);
    }

    /// Adds this histogram's counts into `into`.
    fn add_to(&self, into: &mut [u64; BUCKETS]) {
        for (c, h) in into.iter_mut().zip(self.counts.iter()) {
            *c += h.load(Relaxed);
        }
    }

    /// Counts at or below each of [`PROM_BUCKETS`] (cumulative), then the total, and
    /// the approximate sum in seconds. Bounds fall on the internal buckets (~12%).
    pub fn cumulative(&self) -> (Vec<u64>, u64, f64) {
        let mut counts = [0u64; BUCKETS];
        self.add_to(&mut counts);
        let mut out = Vec::with_capacity(PROM_BUCKETS.len());
        for le in PROM_BUCKETS {
            let le_us = (le * 1e6) as u64;
            out.push(
                counts
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| bucket_upper(*i) <= le_us)
                    .map(|(_, c)| c)
                    .sum(),
            );
        }
        let total = counts.iter().sum();
        let sum = counts
            .iter()
            .enumerate()
            .map(|(i, &c)| c as f64 * bucket_upper(i) as f64 / 1e6)
            .sum();
        (out, total, sum)
    }

    /// Percentiles of what was recorded.
    pub fn latency(&self) -> Latency {
        let mut counts = [0u64; BUCKETS];
        self.add_to(&mut counts);
        Latency::from_counts(&counts)
    }
}

/// Prometheus bucket bounds for request durations, in seconds.
pub const PROM_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// A Prometheus histogram with [`PROM_BUCKETS`] (non-cumulative counts; +Inf last).
#[derive(Debug)]
pub struct PromHistogram {
    pub counts: [AtomicU64; PROM_BUCKETS.len() + 1],
    pub sum_us: AtomicU64,
}

impl Default for PromHistogram {
    fn default() -> Self {
        PromHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl PromHistogram {
    pub fn record(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = PROM_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(PROM_BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }
}

/// Routes as metric labels (bounded: never raw paths).
pub const ROUTE_LABELS: [&str; 21] = [
    "agent",
    "assist",
    "agent_api",
    "stream",
    "ws",
    "health",
    "health_live",
    "health_ready",
    "health_detailed",
    "metrics",
    "stats",
    "stream_resume",
    "stream_cancel",
    "openai_models",
    "openai_chat",
    "openapi",
    "playground",
    "mcp",
    "a2a_card",
    "a2a",
    "other",
];
/// Status classes as metric labels.
pub const CLASS_LABELS: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One worker's figures. Padded to its own cache lines.
#[repr(align(128))]
pub struct WorkerStats {
    requests: AtomicU64,
    hist: Histogram,
    agent_requests: AtomicU64,
    agent_hist: Histogram,
    pub by_route: [[AtomicU64; 5]; ROUTE_LABELS.len()],
    pub latency_by_route: [PromHistogram; ROUTE_LABELS.len()],
    pub events_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Opened minus closed, on this worker (may dip below zero between workers).
    pub connections: AtomicU64,
    pub connections_closed: AtomicU64,
    pub streams_opened: AtomicU64,
    pub streams_closed: AtomicU64,
}

fn bucket(micros: u64) -> usize {
    if micros < SUB as u64 {
        return micros as usize;
    }
    let msb = 63 - micros.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (micros >> shift) as usize & (SUB as usize - 1);
    (((shift + 1) * SUB) as usize + sub).min(BUCKETS - 1)
}

/// The upper bound of a bucket, in microseconds.
fn bucket_upper(i: usize) -> u64 {
    if i < SUB as usize {
        return i as u64;
    }
    let shift = (i / SUB as usize) as u32 - 1;
    let sub = (i % SUB as usize) as u64;
    ((SUB as u64 + sub + 1) << shift) - 1
}

impl WorkerStats {
    fn new() -> Self {
        WorkerStats {
            requests: AtomicU64::new(0),
            hist: Histogram::default(),
            agent_requests: AtomicU64::new(0),
            agent_hist: Histogram::default(),
            by_route: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency_by_route: std::array::from_fn(|_| PromHistogram::default()),
            events_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connections_closed: AtomicU64::new(0),
            streams_opened: AtomicU64::new(0),
            streams_closed: AtomicU64::new(0),
        }
    }

    /// Counts one finished request that took `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        self.requests.fetch_add(1, Relaxed);
        self.hist.record(elapsed);
    }

    /// Counts one finished request to an agent route (the agent's own figures).
    pub fn record_agent(&self, elapsed: Duration) {
        self.agent_requests.fetch_add(1, Relaxed);
        self.agent_hist.record(elapsed);
    }

    /// Counts one finished request by route label index and status.
    pub fn record_route(&self, route: usize, status: u16, elapsed: Duration) {
        let route = route.min(ROUTE_LABELS.len() - 1);
        let class = ((status / 100).clamp(1, 5) - 1) as usize;
        self.by_route[route][class].fetch_add(1, Relaxed);
        self.latency_by_route[route].record(elapsed);
    }
}

/// All workers' slots, and the process's requests in flight.
pub struct Stats {
    workers: Box<[WorkerStats]>,
    /// Every worker adds and subtracts here; on its own cache line.
    in_flight: InFlight,
}

#[repr(align(128))]
struct InFlight(AtomicU64);

/// Percentiles of response time, in milliseconds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub mean: f64,
}

impl Stats {
    pub fn new(workers: usize) -> Self {
        Stats {
            workers: (0..workers).map(|_| WorkerStats::new()).collect(),
            in_flight: InFlight(AtomicU64::new(0)),
        }
    }

    /// A request began (the whole process's count: load shedding reads it).
    pub fn request_began(&self) {
        self.in_flight.0.fetch_add(1, Relaxed);
    }

    /// A request ended.
    pub fn request_ended(&self) {
        self.in_flight.0.fetch_sub(1, Relaxed);
    }

    /// Requests in flight in the whole process.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.0.load(Relaxed)
    }

    pub fn worker(&self, i: usize) -> &WorkerStats {
        &self.workers[i]
    }

    pub fn workers(&self) -> &[WorkerStats] {
        &self.workers
    }

    /// Sums one counter over every worker.
    pub fn sum(&self, f: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
        self.workers.iter().map(|w| f(w).load(Relaxed)).sum()
    }

    pub fn requests(&self) -> u64 {
        self.workers.iter().map(|w| w.requests.load(Relaxed)).sum()
    }

    /// Requests answered by the agent (agent routes only).
    pub fn agent_requests(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.agent_requests.load(Relaxed))
            .sum()
    }

    /// Percentiles over the agent routes' requests so far.
    pub fn agent_latency(&self) -> Latency {
        let mut counts = [0u64; BUCKETS];
        for w in self.workers.iter() {
            w.agent_hist.add_to(&mut counts);
        }
        Latency::from_counts(&counts)
    }

    /// Percentiles over every request so far.
    pub fn latency(&self) -> Latency {
        let mut counts = [0u64; BUCKETS];
        for w in self.workers.iter() {
            w.hist.add_to(&mut counts);
        }
        Latency::from_counts(&counts)
    }
}

impl Latency {
    fn from_counts(counts: &[u64; BUCKETS]) -> Latency {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Latency::default();
        }
        let at = |q: f64| {
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return bucket_upper(i) as f64 / 1000.0;
                }
            }
            0.0
        };
        let sum: f64 = counts
            .iter()
            .enumerate()
            .map(|(i, &c)| c as f64 * bucket_upper(i) as f64)
            .sum();
        Latency {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            mean: sum / total as f64 / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bounded() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1000,
            123_456,
            1 << 39,
            u64::MAX,
        ] {
            let b = bucket(v);
            assert!(b >= last && b < BUCKETS, "{v} -> {b}");
            if v < (1 << 40) {
                assert!(
                    bucket_upper(b) >= v,
                    "{v} above its bucket {}",
                    bucket_upper(b)
                );
                assert!(bucket_upper(b) as f64 <= v as f64 * 1.125 + 1.0);
            }
            last = b;
        }
    }

    #[test]
    fn percentiles_across_workers() {
        let s = Stats::new(2);
        for i in 0..100u64 {
            s.worker((i % 2) as usize)
                .record(Duration::from_millis(i + 1));
        }
        assert_eq!(s.requests(), 100);
        let l = s.latency();
        assert!((45.0..=57.0).contains(&l.p50), "{l:?}");
        assert!((90.0..=108.0).contains(&l.p99), "{l:?}");
    }
}
