//! The rate limit gate: at most `max` requests per `window` per client IP, fixed
//! window (the Fastify guide's `@fastify/rate-limit` with `RATE_LIMIT_MAX` and
//! `RATE_LIMIT_WINDOW`).
//!
//! One [`RateLimiter`] is built at start-up and shared (behind an `Arc`) by every
//! worker thread, so the limit is one limit per process, not per worker:
//!
//! - **In memory** (no Redis URL): windows live in [`SHARDS`] (at most) mutex-guarded
//!   maps keyed by IP. A lock is held only for a few map operations, never across an
//!   `.await`. The maps hold at most `max_keys` windows in total: a full shard first
//!   drops its expired windows, then its oldest one (that client starts a fresh
//!   window). No background task.
//! - **With Redis** (`redis_url`): one limit shared by every agentd instance pointing at
//!   the same Redis; see [`super::rate_redis`] for the script, the per-worker
//!   connections and what happens while Redis is unreachable.
//!
//! What it must never do: error or hang a request (every Redis round trip is bounded by
//! `redis_timeout`, and trouble becomes the configured [`FailurePolicy`]), block a
//! worker (no lock across an await, no blocking I/O), hold unbounded state keyed by
//! client data, or log the Redis URL (it may carry a password).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::rate_redis::RedisLimiter;

/// Default for [`RateLimitConfig::max_keys`]: most client windows held in memory.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// Default for [`RateLimitConfig::redis_timeout`]: longest wait for one Redis round
/// trip (connecting included) before the failure policy decides.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// Default for [`RateLimitConfig::redis_prefix`].
pub const DEFAULT_REDIS_PREFIX: &str = "agentd:rl:";
/// Most shards of the in-memory limiter. Fewer are used when `max_keys` is small, so
/// that each shard still holds at least [`MIN_KEYS_PER_SHARD`] windows (a shard that is
/// too small would evict live windows while others sit empty).
pub const SHARDS: usize = 64;
/// Fewest windows per shard before the shard count is reduced.
pub const MIN_KEYS_PER_SHARD: usize = 256;

/// What to do with a request when Redis cannot answer within `redis_timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailurePolicy {
    /// Let the request through (availability over strictness).
    Open,
    /// Refuse the request with 503 `rate_limit_unavailable` (strictness over
    /// availability; the store's failure is the server's fault, not the client's).
    Closed,
}

/// The rate limiter's configuration (validated by [`RateLimiter::new`]).
#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    /// Requests allowed per window per key (client IP); at least 1.
    pub max: u64,
    /// The fixed window's length; at least 1 ms (Redis counts in milliseconds).
    pub window: Duration,
    /// In memory: most windows held in total (the memory bound); at least 1. Default
    /// [`DEFAULT_MAX_KEYS`].
    pub max_keys: usize,
    /// `redis://…` (or `unix://…`) to share one limit between instances; `None` keeps
    /// the limit in this process's memory.
    pub redis_url: Option<String>,
    /// What to do when Redis is unreachable, slow or erroring.
    pub redis_failure: FailurePolicy,
    /// Longest wait for one Redis round trip, connecting included; above zero.
    /// Default [`DEFAULT_REDIS_TIMEOUT`].
    pub redis_timeout: Duration,
    /// Prefix of the Redis keys (`<prefix><ip>`). Default [`DEFAULT_REDIS_PREFIX`].
    pub redis_prefix: String,
}

impl RateLimitConfig {
    /// An in-memory limit of `max` requests per `window`, every other field at its
    /// default (fail open on Redis trouble).
    pub fn new(max: u64, window: Duration) -> Self {
        RateLimitConfig {
            max,
            window,
            max_keys: DEFAULT_MAX_KEYS,
            redis_url: None,
            redis_failure: FailurePolicy::Open,
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
        }
    }
}

/// The verdict on one request, with what the `x-ratelimit-*` and `retry-after`
/// headers report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed (otherwise: 429).
    pub allowed: bool,
    /// The configured `max` (`x-ratelimit-limit`).
    pub limit: u64,
    /// Requests left in the current window after this one (`x-ratelimit-remaining`).
    pub remaining: u64,
    /// Until the current window ends (`x-ratelimit-reset`, and `retry-after` on 429;
    /// the caller rounds up to whole seconds).
    pub reset_after: Duration,
    /// Decided by the failure policy because the store (Redis) could not answer: a
    /// refusal then is the server's fault (503 `rate_limit_unavailable`), not a 429.
    pub unavailable: bool,
}

impl Decision {
    /// The decision for the `count`-th request of a window ending in `reset_after`.
    pub(crate) fn counted(max: u64, count: u64, reset_after: Duration) -> Decision {
        Decision {
            allowed: count <= max,
            limit: max,
            remaining: max.saturating_sub(count),
            reset_after,
            unavailable: false,
        }
    }
}

/// Counters of the limiter's outcomes, summed over every worker.
#[derive(Debug, Default)]
pub struct RateStats {
    /// Requests refused (every `allowed: false`, fail-closed ones included).
    pub rejected: AtomicU64,
    /// Redis round trips that failed: errors, timeouts, refused connections.
    pub redis_errors: AtomicU64,
    /// Requests let through because Redis could not answer (policy `Open`), including
    /// those decided without trying during the cool-down after a failure.
    pub redis_failed_open: AtomicU64,
    /// Requests refused because Redis could not answer (policy `Closed`), including
    /// those decided without trying during the cool-down after a failure.
    pub redis_failed_closed: AtomicU64,
}

/// The rate limiter: an in-memory or a Redis backend, plus its counters. Shared by
/// all workers (`Send + Sync`).
pub struct RateLimiter {
    backend: Backend,
    stats: RateStats,
}

enum Backend {
    Memory(MemoryLimiter),
    Redis(Box<RedisLimiter>),
}

impl fmt::Debug for RateLimiter {
    // Never prints the Redis URL: it may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match &self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        };
        f.debug_struct("RateLimiter")
            .field("backend", &backend)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Validates `cfg` and builds the limiter. Does no I/O (Redis is first contacted
    /// by the first `check` on each worker), so it may be called outside any runtime.
    pub fn new(cfg: RateLimitConfig) -> Result<RateLimiter, String> {
        if cfg.max == 0 {
            return Err("rate limit: max must be at least 1".into());
        }
        if cfg.window < Duration::from_millis(1) {
            return Err("rate limit: the window must be at least 1 ms".into());
        }
        if cfg.max_keys == 0 {
            return Err("rate limit: max_keys must be at least 1".into());
        }
        let backend = match &cfg.redis_url {
            None => Backend::Memory(MemoryLimiter::new(cfg.max, cfg.window, cfg.max_keys)),
            Some(url) => {
                if cfg.redis_timeout.is_zero() {
                    return Err("rate limit: the Redis timeout must be above zero".into());
                }
                Backend::Redis(Box::new(RedisLimiter::new(url, &cfg)?))
            }
        };
        Ok(RateLimiter {
            backend,
            stats: RateStats::default(),
        })
    }

    /// Counts one request from `key` and says whether it may proceed. Never fails and
    /// never waits longer than `redis_timeout` (Redis trouble → the failure policy).
    pub async fn check(&self, key: IpAddr) -> Decision {
        // A dual-stack listener may report an IPv4 client as `::ffff:a.b.c.d`: one
        // client, one key; and an IPv6 client is its /64.
        let key = super::forwarded::rate_key(key);
        let decision = match &self.backend {
            Backend::Memory(m) => m.check_at(key, Instant::now()),
            Backend::Redis(r) => r.check(key, &self.stats).await,
        };
        if !decision.allowed {
            self.stats.rejected.fetch_add(1, Relaxed);
        }
        decision
    }

    /// Whether the Redis backend answers (cached, see [`super::rate_redis`]'s health);
    /// `None` for the in-memory limiter.
    pub async fn redis_up(&self) -> Option<bool> {
        match &self.backend {
            Backend::Memory(_) => None,
            Backend::Redis(r) => Some(r.is_up().await),
        }
    }

    /// The Redis failure policy; `None` for the in-memory limiter.
    pub fn redis_policy(&self) -> Option<FailurePolicy> {
        match &self.backend {
            Backend::Memory(_) => None,
            Backend::Redis(r) => Some(r.policy()),
        }
    }

    /// The counters, summed over all workers.
    pub fn stats(&self) -> &RateStats {
        &self.stats
    }
}

/// One client's fixed window.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    count: u64,
}

/// One shard: the windows, and their keys in the order their windows started, so that
/// the expired and the oldest windows are found at the front in O(1).
#[derive(Debug)]
struct Shard {
    map: HashMap<IpAddr, Window>,
    /// `(key, window start)`, oldest first. An entry whose start no longer matches the
    /// key's window (reset or evicted since) is stale and skipped; the queue is
    /// compacted when stale entries reach the live ones in number, so it holds at most
    /// about twice `cap` entries.
    order: VecDeque<(IpAddr, Instant)>,
    /// Most windows in this shard.
    cap: usize,
}

impl Shard {
    fn is_live(&self, key: &IpAddr, start: Instant) -> bool {
        self.map.get(key).is_some_and(|w| w.start == start)
    }

    /// Makes room for one more window: the expired windows go first, then (only if
    /// none had expired) the oldest.
    fn make_room(&mut self, now: Instant, window: Duration) {
        while let Some(&(key, start)) = self.order.front() {
            if now.saturating_duration_since(start) < window {
                break;
            }
            self.order.pop_front();
            if self.is_live(&key, start) {
                self.map.remove(&key);
            }
        }
        if self.map.len() < self.cap {
            return;
        }
        while let Some((key, start)) = self.order.pop_front() {
            if self.is_live(&key, start) {
                self.map.remove(&key);
                return;
            }
        }
    }

    fn push_order(&mut self, key: IpAddr, start: Instant) {
        self.order.push_back((key, start));
        if self.order.len() > 2 * self.cap + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|w| w.start == *s));
        }
    }
}

/// The in-memory backend: fixed windows in sharded maps, at most `max_keys` in total.
pub(crate) struct MemoryLimiter {
    max: u64,
    window: Duration,
    shards: Box<[Mutex<Shard>]>,
    /// Keyed hashing picks the shard, so clients cannot aim at one shard.
    hasher: RandomState,
}

impl MemoryLimiter {
    pub(crate) fn new(max: u64, window: Duration, max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        // A power of two between 1 and SHARDS, keeping MIN_KEYS_PER_SHARD per shard.
        let wanted = (max_keys / MIN_KEYS_PER_SHARD).clamp(1, SHARDS);
        let n = 1usize << wanted.ilog2();
        // Caps add up to exactly max_keys.
        let shards = (0..n)
            .map(|i| {
                let cap = max_keys / n + usize::from(i < max_keys % n);
                Mutex::new(Shard {
                    map: HashMap::with_capacity(cap.min(1024)),
                    order: VecDeque::new(),
                    cap,
                })
            })
            .collect();
        MemoryLimiter {
            max,
            window,
            shards,
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &IpAddr) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) & (self.shards.len() - 1);
        // A panic cannot happen with the lock held (no user code runs under it), and
        // if it did the maps would still be consistent enough for a rate limit.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one request from `key` at `now`.
    pub(crate) fn check_at(&self, key: IpAddr, now: Instant) -> Decision {
        let mut shard = self.shard(&key);
        if let Some(w) = shard.map.get_mut(&key) {
            let age = now.saturating_duration_since(w.start);
            if age < self.window {
                w.count = w.count.saturating_add(1);
                return Decision::counted(self.max, w.count, self.window - age);
            }
            // The window is over: this request opens the next one.
            *w = Window {
                start: now,
                count: 1,
            };
        } else {
            if shard.map.len() >= shard.cap {
                shard.make_room(now, self.window);
            }
            shard.map.insert(
                key,
                Window {
                    start: now,
                    count: 1,
                },
            );
        }
        shard.push_order(key, now);
        Decision::counted(self.max, 1, self.window)
    }

    /// Windows held, over all shards.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests that mean to block their own thread
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Arc;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn counts_up_to_max_then_refuses() {
        let m = MemoryLimiter::new(3, Duration::from_secs(10), 1000);
        let t0 = Instant::now();
        let d: Vec<Decision> = (0..5).map(|_| m.check_at(ip(1), t0)).collect();
        assert_eq!(
            d.iter().map(|d| d.allowed).collect::<Vec<_>>(),
            [true, true, true, false, false]
        );
        assert_eq!(
            d.iter().map(|d| d.remaining).collect::<Vec<_>>(),
            [2, 1, 0, 0, 0]
        );
        assert!(d.iter().all(|d| d.limit == 3));
        // Another key has its own window.
        assert!(m.check_at(ip(2), t0).allowed);
    }

    #[test]
    fn window_rolls_over() {
        let window = Duration::from_millis(50);
        let m = MemoryLimiter::new(2, window, 1000);
        let t0 = Instant::now();
        assert!(m.check_at(ip(1), t0).allowed);
        let d = m.check_at(ip(1), t0 + Duration::from_millis(20));
        assert!(d.allowed);
        assert_eq!(d.reset_after, Duration::from_millis(30));
        assert!(!m.check_at(ip(1), t0 + Duration::from_millis(49)).allowed);
        // Fixed window: the next one starts with the first request after the end.
        let d = m.check_at(ip(1), t0 + window);
        assert_eq!((d.allowed, d.remaining, d.reset_after), (true, 1, window));
        assert!(m.check_at(ip(1), t0 + Duration::from_millis(90)).allowed);
        assert!(!m.check_at(ip(1), t0 + Duration::from_millis(99)).allowed);
    }

    #[test]
    fn rolls_over_in_real_time() {
        let m = MemoryLimiter::new(1, Duration::from_millis(20), 10);
        assert!(m.check_at(ip(1), Instant::now()).allowed);
        assert!(!m.check_at(ip(1), Instant::now()).allowed);
        std::thread::sleep(Duration::from_millis(25));
        assert!(m.check_at(ip(1), Instant::now()).allowed);
    }

    #[test]
    fn shard_count_follows_max_keys() {
        let count = |k| {
            MemoryLimiter::new(1, Duration::from_secs(1), k)
                .shards
                .len()
        };
        assert_eq!(count(DEFAULT_MAX_KEYS), SHARDS);
        assert_eq!(count(1), 1);
        assert_eq!(count(MIN_KEYS_PER_SHARD * 3), 2);
        assert_eq!(count(MIN_KEYS_PER_SHARD * 4), 4);
        for k in [1, 7, 255, 1000, 12_345, DEFAULT_MAX_KEYS] {
            let m = MemoryLimiter::new(1, Duration::from_secs(1), k);
            assert!(m.shards.len().is_power_of_two());
            let total: usize = m.shards.iter().map(|s| s.lock().unwrap().cap).sum();
            assert_eq!(total, k, "caps add up to max_keys");
        }
    }

    #[test]
    fn keys_spread_over_shards() {
        let m = MemoryLimiter::new(1, Duration::from_secs(60), DEFAULT_MAX_KEYS);
        let t0 = Instant::now();
        for n in 0..6400 {
            m.check_at(ip(n), t0);
        }
        for s in m.shards.iter() {
            let len = s.lock().unwrap().map.len();
            assert!((25..=200).contains(&len), "uneven shard: {len}");
        }
    }

    #[test]
    fn key_bound_holds_with_many_ips() {
        let max_keys = 1000;
        let m = MemoryLimiter::new(5, Duration::from_secs(60), max_keys);
        let t0 = Instant::now();
        for n in 0..50_000u32 {
            let d = m.check_at(ip(n), t0 + Duration::from_micros(u64::from(n)));
            assert!(d.allowed);
            if n % 1000 == 0 {
                assert!(m.len() <= max_keys);
            }
        }
        assert!(m.len() <= max_keys);
        assert!(
            m.len() > max_keys * 9 / 10,
            "the bound is used: {}",
            m.len()
        );
        for s in m.shards.iter() {
            let s = s.lock().unwrap();
            assert!(s.map.len() <= s.cap);
            assert!(s.order.len() <= 2 * s.cap + 16, "order queue bounded");
        }
        // The most recent clients kept their windows; the oldest were evicted.
        let newest = ip(49_999);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(m.check_at(newest, later).remaining, 3);
        assert_eq!(
            m.check_at(ip(0), later).remaining,
            4,
            "evicted: a fresh window"
        );
    }

    #[test]
    fn full_shard_drops_expired_windows_before_live_ones() {
        let window = Duration::from_secs(1);
        // One shard of 4.
        let m = MemoryLimiter::new(10, window, 4);
        let t0 = Instant::now();
        m.check_at(ip(1), t0); // expires at t0 + 1 s
        m.check_at(ip(2), t0); // expires at t0 + 1 s
        m.check_at(ip(3), t0 + Duration::from_millis(1500));
        m.check_at(ip(4), t0 + Duration::from_millis(1600));
        assert_eq!(m.len(), 4);
        // Full: both expired windows go, the live ones stay.
        m.check_at(ip(5), t0 + Duration::from_millis(1700));
        assert_eq!(m.len(), 3);
        let later = t0 + Duration::from_millis(1800);
        assert_eq!(
            m.check_at(ip(3), later).remaining,
            8,
            "ip 3 kept its window"
        );
        assert_eq!(
            m.check_at(ip(4), later).remaining,
            8,
            "ip 4 kept its window"
        );
        // Full again, nothing expired: the oldest live window (ip 3) goes.
        m.check_at(ip(6), later);
        assert_eq!(m.len(), 4);
        m.check_at(ip(7), later);
        assert_eq!(m.len(), 4);
        assert_eq!(
            m.check_at(ip(4), later).remaining,
            7,
            "ip 4 kept its window"
        );
    }

    #[test]
    fn repeated_resets_keep_the_order_queue_bounded() {
        let window = Duration::from_millis(1);
        let m = MemoryLimiter::new(1, window, 2);
        let t0 = Instant::now();
        for i in 0..10_000u64 {
            let d = m.check_at(ip((i % 2) as u32), t0 + Duration::from_millis(i));
            assert!(d.allowed);
        }
        let s = m.shards[0].lock().unwrap();
        assert!(s.order.len() <= 2 * s.cap + 16);
    }

    #[test]
    fn ipv4_and_ipv6_are_distinct_keys() {
        let m = MemoryLimiter::new(1, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        assert!(m.check_at(IpAddr::V4(Ipv4Addr::LOCALHOST), t0).allowed);
        assert!(m.check_at(IpAddr::V6(Ipv6Addr::LOCALHOST), t0).allowed);
        assert!(!m.check_at(IpAddr::V6(Ipv6Addr::LOCALHOST), t0).allowed);
    }

    #[tokio::test]
    async fn ipv4_mapped_ipv6_is_the_ipv4_client() {
        let l = RateLimiter::new(RateLimitConfig::new(1, Duration::from_secs(60))).unwrap();
        let v4 = Ipv4Addr::new(198, 51, 100, 9);
        assert!(l.check(IpAddr::V4(v4)).await.allowed);
        assert!(!l.check(IpAddr::V6(v4.to_ipv6_mapped())).await.allowed);
    }

    #[test]
    fn one_limit_across_threads() {
        let m = Arc::new(MemoryLimiter::new(1000, Duration::from_secs(60), 100));
        let t0 = Instant::now();
        let allowed: usize = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    (0..500).filter(|_| m.check_at(ip(7), t0).allowed).count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(allowed, 1000);
    }

    #[test]
    fn config_is_validated() {
        let ok = RateLimitConfig::new(10, Duration::from_secs(1));
        assert!(RateLimiter::new(ok.clone()).is_ok());
        let bad = |f: fn(&mut RateLimitConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            RateLimiter::new(c).unwrap_err()
        };
        assert!(bad(|c| c.max = 0).contains("max"));
        assert!(bad(|c| c.window = Duration::from_micros(10)).contains("window"));
        assert!(bad(|c| c.max_keys = 0).contains("max_keys"));
        assert!(bad(|c| c.redis_url = Some("not a url".into())).contains("Redis URL"));
        assert!(bad(|c| {
            c.redis_url = Some("redis://127.0.0.1:1".into());
            c.redis_timeout = Duration::ZERO;
        })
        .contains("timeout"));
    }

    #[test]
    fn debug_hides_the_redis_url() {
        let mut c = RateLimitConfig::new(10, Duration::from_secs(1));
        c.redis_url = Some("redis://:hunter2@127.0.0.1:1/".into());
        // Built outside any runtime: no I/O.
        let l = RateLimiter::new(c).unwrap();
        let s = format!("{l:?}");
        assert!(s.contains("redis") && !s.contains("hunter2"), "{s}");
    }

    #[tokio::test]
    async fn rejections_are_counted() {
        let l = RateLimiter::new(RateLimitConfig::new(2, Duration::from_secs(60))).unwrap();
        for _ in 0..5 {
            l.check(ip(1)).await;
        }
        assert_eq!(l.stats().rejected.load(Relaxed), 3);
    }
}
