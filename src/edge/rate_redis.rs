//! The Redis backend of the rate limiter: one fixed-window counter per client IP in
//! Redis, shared by every agentd instance pointing at the same server.
//!
//! Each request runs [`SCRIPT`] once (EVALSHA, loading the script on `NOSCRIPT`): it
//! increments `<prefix><ip>`, starts the window's expiry on the first hit, and returns
//! the count and the milliseconds left, atomically.
//!
//! Connections and failures: one connection per worker thread with a cool-down after a
//! failure ([`crate::backend::redis`]); every round trip, connecting included, is
//! bounded by `redis_timeout`, and during a worker's cool-down its requests are decided
//! by the failure policy without trying Redis. After the cool-down the next request
//! connects afresh: when Redis is back, limiting resumes by itself. `REDIS_URL` may name
//! a Redis Cluster: each script touches one key, so one slot.
//!
//! Health (`/health/ready`, `/health/detailed`): [`RedisLimiter::is_up`] answers from
//! what the last round trip (a request's or a probe's) saw when that is under
//! [`HEALTH_CACHE`] old, and otherwise sends one PING on the worker's own connection
//! (never a new client), one probe at a time for the whole process. A loop on the
//! health routes therefore costs Redis at most about one PING per [`HEALTH_CACHE`].
//!
//! What it must never do: return an error or wait past `redis_timeout`, open a
//! connection per health check, or log the URL (it may carry a password).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub use crate::backend::redis::COOL_DOWN;
use crate::backend::redis::{RedisFailure, RedisTarget, WorkerConnections};

use super::rate::{Decision, FailurePolicy, RateLimitConfig, RateStats};

/// How long what a round trip saw stands for Redis's health: health checks within it
/// send nothing to Redis.
pub const HEALTH_CACHE: Duration = Duration::from_secs(1);

/// What the last round trip to Redis saw, shared by every worker.
struct Health {
    /// 0: nothing seen yet, 1: answered, 2: failed.
    state: AtomicU8,
    /// When it was seen, in ms since `epoch`.
    at_ms: AtomicU64,
    epoch: Instant,
    /// A health probe is in flight (one at a time for the process).
    probing: AtomicBool,
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl Health {
    fn new() -> Health {
        Health {
            state: AtomicU8::new(UNKNOWN),
            at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            probing: AtomicBool::new(false),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Records what a round trip saw. A request's success that changes nothing
    /// refreshes the time at most every quarter of [`HEALTH_CACHE`], so that busy
    /// workers do not all write the same cache line on every request.
    fn observe(&self, up: bool, now: Instant) {
        let state = if up { UP } else { DOWN };
        let ms = self.ms(now);
        if self.state.load(Relaxed) != state {
            self.state.store(state, Relaxed);
            self.at_ms.store(ms, Relaxed);
        } else if ms.saturating_sub(self.at_ms.load(Relaxed)) >= HEALTH_CACHE.as_millis() as u64 / 4
        {
            self.at_ms.store(ms, Relaxed);
        }
    }

    /// The last state seen, if any.
    fn last(&self) -> Option<bool> {
        match self.state.load(Relaxed) {
            UNKNOWN => None,
            s => Some(s == UP),
        }
    }

    /// The last state seen, if it is under [`HEALTH_CACHE`] old.
    fn fresh(&self, now: Instant) -> Option<bool> {
        let age = self.ms(now).saturating_sub(self.at_ms.load(Relaxed));
        self.last()
            .filter(|_| age < HEALTH_CACHE.as_millis() as u64)
    }
}

/// Ends a probe however its future ends (finished or dropped mid-PING).
struct Probing<'a>(&'a AtomicBool);

impl Drop for Probing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Relaxed);
    }
}

/// The one script: `KEYS[1]` the client's key, `ARGV[1]` the window in ms. Returns
/// `{count, ms left}`. A key found without an expiry (written by something else) is
/// given one, so a client can never be locked out for good.
pub const SCRIPT: &str = r"
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
";

pub(crate) struct RedisLimiter {
    conns: WorkerConnections,
    script: redis::Script,
    max: u64,
    window: Duration,
    window_ms: u64,
    policy: FailurePolicy,
    prefix: String,
    health: Health,
}

impl RedisLimiter {
    /// Parses the URL; no I/O.
    pub(crate) fn new(url: &str, cfg: &RateLimitConfig) -> Result<Self, String> {
        let target = RedisTarget::parse(url).map_err(|e| format!("rate limit: {e}"))?;
        let window_ms = u64::try_from(cfg.window.as_millis())
            .map_err(|_| "rate limit: the window is too long".to_owned())?;
        Ok(RedisLimiter {
            conns: WorkerConnections::new(target, cfg.redis_timeout),
            script: redis::Script::new(SCRIPT),
            max: cfg.max,
            window: cfg.window,
            window_ms,
            policy: cfg.redis_failure,
            prefix: cfg.redis_prefix.clone(),
            health: Health::new(),
        })
    }

    /// Records a failed round trip; logs once per connection lost.
    fn failed(&self, failure: &RedisFailure) {
        self.health.observe(false, Instant::now());
        if let RedisFailure::Lost(error) = failure {
            // The error, never the URL (it may carry a password).
            tracing::warn!(
                %error,
                policy = ?self.policy,
                cool_down_ms = COOL_DOWN.as_millis() as u64,
                "rate limit: Redis failed; deciding by the failure policy",
            );
        }
    }

    /// Counts one request from `ip` in Redis; on any trouble, the failure policy.
    pub(crate) async fn check(&self, ip: IpAddr, stats: &RateStats) -> Decision {
        let key = format!("{}{}", self.prefix, ip);
        let mut call = self.script.prepare_invoke();
        call.key(key).arg(self.window_ms);
        let reply = self
            .conns
            .run(|mut conn| async move { call.invoke_async::<(u64, i64)>(&mut conn).await })
            .await;
        match reply {
            Ok((count, ttl_ms)) => {
                self.health.observe(true, Instant::now());
                let reset = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
                Decision::counted(self.max, count, reset.min(self.window))
            }
            Err(f) => {
                if f.tried() {
                    stats.redis_errors.fetch_add(1, Relaxed);
                    self.failed(&f);
                }
                self.fail(stats)
            }
        }
    }

    /// The failure policy.
    pub(crate) fn policy(&self) -> FailurePolicy {
        self.policy
    }

    /// Whether Redis answers: what the last round trip saw if under [`HEALTH_CACHE`]
    /// old, else one PING on this worker's connection (within `redis_timeout`). While
    /// another worker's probe is in flight, the last state seen (up if none yet).
    pub(crate) async fn is_up(&self) -> bool {
        if let Some(up) = self.health.fresh(Instant::now()) {
            return up;
        }
        if self.health.probing.swap(true, Relaxed) {
            return self.health.last().unwrap_or(true);
        }
        let _probing = Probing(&self.health.probing);
        let up = self.ping().await;
        self.health.observe(up, Instant::now());
        up
    }

    /// One PING on this worker's connection; a failure drops it and starts the
    /// cool-down, as a request's failure does. During a cool-down: down, sending nothing.
    async fn ping(&self) -> bool {
        let pong = self
            .conns
            .run(
                |mut conn| async move { redis::cmd("PING").query_async::<String>(&mut conn).await },
            )
            .await;
        match pong {
            Ok(pong) => pong == "PONG",
            Err(f) => {
                if f.tried() {
                    self.failed(&f);
                }
                false
            }
        }
    }

    /// The failure policy's decision. The headers report the full allowance (open) or
    /// none (closed), and a reset at the end of the cool-down.
    fn fail(&self, stats: &RateStats) -> Decision {
        let allowed = match self.policy {
            FailurePolicy::Open => {
                stats.redis_failed_open.fetch_add(1, Relaxed);
                true
            }
            FailurePolicy::Closed => {
                stats.redis_failed_closed.fetch_add(1, Relaxed);
                false
            }
        };
        Decision {
            allowed,
            limit: self.max,
            remaining: if allowed { self.max } else { 0 },
            reset_after: COOL_DOWN,
            unavailable: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::rate::{RateLimiter, RateStats};
    use std::net::{Ipv4Addr, TcpListener};
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const TIMEOUT: Duration = Duration::from_millis(100);
    /// Scheduling slack on a loaded machine.
    const MARGIN: Duration = Duration::from_millis(400);

    fn limiter(url: String, policy: FailurePolicy) -> RateLimiter {
        let mut cfg = RateLimitConfig::new(10, Duration::from_secs(60));
        cfg.redis_url = Some(url);
        cfg.redis_failure = policy;
        cfg.redis_timeout = TIMEOUT;
        RateLimiter::new(cfg).unwrap()
    }

    fn counts(s: &RateStats) -> [u64; 4] {
        [
            s.rejected.load(Relaxed),
            s.redis_errors.load(Relaxed),
            s.redis_failed_open.load(Relaxed),
            s.redis_failed_closed.load(Relaxed),
        ]
    }

    /// A port nothing listens on: connections are refused at once.
    fn refused_url() -> String {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("redis://127.0.0.1:{port}/")
    }

    /// A server that accepts connections and never answers; counts them.
    fn black_hole() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}/", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().flatten() {
                count.fetch_add(1, Relaxed);
                held.push(s);
            }
        });
        (url, accepted)
    }

    #[test]
    fn the_script_counts_once_and_expires() {
        assert_eq!(SCRIPT.matches("INCR").count(), 1);
        assert!(SCRIPT.contains("PEXPIRE") && SCRIPT.contains("PTTL"));
    }

    #[tokio::test]
    async fn unreachable_redis_fails_open_then_cools_down() {
        let l = limiter(refused_url(), FailurePolicy::Open);
        let t = Instant::now();
        let d = l.check(IP).await;
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining, d.reset_after), (10, 10, COOL_DOWN));
        // During the cool-down Redis is not tried again.
        for _ in 0..50 {
            assert!(l.check(IP).await.allowed);
        }
        assert!(t.elapsed() < TIMEOUT + MARGIN, "{:?}", t.elapsed());
        assert_eq!(counts(l.stats()), [0, 1, 51, 0]);
    }

    #[tokio::test]
    async fn silent_redis_times_out_and_fails_closed() {
        let (url, accepted) = black_hole();
        let l = limiter(url, FailurePolicy::Closed);
        let t = Instant::now();
        let d = l.check(IP).await;
        let waited = t.elapsed();
        assert!(!d.allowed && d.remaining == 0);
        assert!(waited >= TIMEOUT - Duration::from_millis(5), "{waited:?}");
        assert!(waited < TIMEOUT + MARGIN, "{waited:?}");
        let t = Instant::now();
        assert!(!l.check(IP).await.allowed);
        assert!(
            t.elapsed() < Duration::from_millis(50),
            "cool-down: no wait"
        );
        assert_eq!(counts(l.stats()), [2, 1, 0, 2]);
        assert_eq!(accepted.load(Relaxed), 1);
    }

    #[test]
    fn a_new_runtime_on_the_thread_gets_a_new_connection() {
        let (url, accepted) = black_hole();
        let l = limiter(url, FailurePolicy::Open);
        for round in 1..=2 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                l.check(IP).await;
                l.check(IP).await;
            });
            // Within each runtime the second check is in the cool-down; the second
            // runtime does not inherit the first one's connection or cool-down.
            assert_eq!(accepted.load(Relaxed), round);
        }
        assert_eq!(counts(l.stats())[1], 2);
    }

    #[tokio::test]
    async fn health_is_cached_and_opens_no_connection_of_its_own() {
        let (url, accepted) = black_hole();
        let l = limiter(url, FailurePolicy::Closed);
        let t = Instant::now();
        assert_eq!(
            l.redis_up().await,
            Some(false),
            "no answer within the timeout"
        );
        for _ in 0..20 {
            assert_eq!(l.redis_up().await, Some(false));
        }
        assert!(t.elapsed() < TIMEOUT + MARGIN, "{:?}", t.elapsed());
        // The probe used the worker's connection and started its cool-down: a request
        // right after neither waits nor connects.
        assert!(!l.check(IP).await.allowed);
        assert_eq!(accepted.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn a_dropped_probe_lets_the_next_one_run() {
        let (url, _accepted) = black_hole();
        let mut cfg = RateLimitConfig::new(10, Duration::from_secs(60));
        cfg.redis_timeout = TIMEOUT;
        let r = RedisLimiter::new(&url, &cfg).unwrap();
        // Cancelled mid-PING (a client reset): the probe's claim must not stay behind.
        let cut = tokio::time::timeout(Duration::from_millis(10), r.is_up()).await;
        assert!(cut.is_err());
        assert!(!r.health.probing.load(Relaxed));
        assert!(!r.is_up().await);
    }

    #[test]
    fn dropped_limiters_leave_the_thread_table() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = refused_url();
        rt.block_on(async {
            for _ in 0..20 {
                limiter(url.clone(), FailurePolicy::Open).check(IP).await;
            }
        });
        assert!(WorkerConnections::thread_slots() <= 1);
    }
}
