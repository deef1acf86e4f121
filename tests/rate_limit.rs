//! The rate limiter driven directly (no server): against real `redis-server` processes
//! started on free ports, as agentd instances on separate OS threads each with its own
//! current-thread runtime (as workers run), and through Redis outages.
//!
//! Needs `redis-server` on the PATH (`apt-get install -y redis-server`).

// A test process, not a worker: it may block its own threads, and signal or limit the
// processes it starts.
#![allow(clippy::disallowed_methods, unsafe_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

mod support;

use support::redis::Redis;

use agentd::edge::rate::{FailurePolicy, RateLimitConfig, RateLimiter, RateStats};
use agentd::edge::rate_redis::COOL_DOWN;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 8));
/// Scheduling slack on a loaded machine, on top of the Redis timeout.
const MARGIN: Duration = Duration::from_millis(400);

fn config(redis: Option<&Redis>, max: u64, policy: FailurePolicy) -> RateLimitConfig {
    let mut cfg = RateLimitConfig::new(max, Duration::from_secs(60));
    cfg.redis_url = redis.map(Redis::url);
    cfg.redis_failure = policy;
    cfg.redis_timeout = Duration::from_millis(200);
    cfg
}

/// Runs `f` on a new OS thread with its own current-thread runtime, like a worker.
fn on_worker<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn stat(s: &RateStats) -> [u64; 4] {
    [
        s.rejected.load(Relaxed),
        s.redis_errors.load(Relaxed),
        s.redis_failed_open.load(Relaxed),
        s.redis_failed_closed.load(Relaxed),
    ]
}

/// Checks `CLIENT` until a decision comes from Redis rather than from the failure
/// policy (a fresh Redis counts from 1: `remaining < max`); returns how long it took.
async fn until_redis_answers(limiter: &RateLimiter, max: u64) -> Duration {
    let start = Instant::now();
    loop {
        let d = limiter.check(CLIENT).await;
        if d.allowed && d.remaining < max {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < COOL_DOWN * 3,
            "limiting did not resume: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn two_instances_share_one_limit_through_redis() {
    let redis = Redis::start();
    const MAX: u64 = 10;
    // Two agentd instances, each with two workers: four OS threads, four runtimes.
    let instances: Vec<Arc<RateLimiter>> = (0..2)
        .map(|_| {
            Arc::new(RateLimiter::new(config(Some(&redis), MAX, FailurePolicy::Closed)).unwrap())
        })
        .collect();
    let start = Arc::new(Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let limiter = instances[i % 2].clone();
            let start = start.clone();
            on_worker(move || {
                Box::pin(async move {
                    start.wait();
                    let mut allowed = 0;
                    for _ in 0..8 {
                        let d = limiter.check(CLIENT).await;
                        assert_eq!(d.limit, MAX);
                        assert!(d.reset_after <= Duration::from_secs(60));
                        assert!(d.reset_after > Duration::from_secs(50), "{d:?}");
                        allowed += u64::from(d.allowed);
                    }
                    allowed
                })
            })
        })
        .collect();
    let allowed: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(allowed, MAX, "one limit across both instances");
    let stats: Vec<[u64; 4]> = instances.iter().map(|l| stat(l.stats())).collect();
    assert_eq!(stats[0][0] + stats[1][0], 32 - MAX, "rejections counted");
    assert!(stats.iter().all(|s| s[1..] == [0, 0, 0]), "{stats:?}");

    // Another client has its own window, and the count is shared from either side.
    let rt = current_thread_runtime();
    rt.block_on(async {
        let d = instances[0].check(OTHER).await;
        assert!(d.allowed && d.remaining == MAX - 1, "{d:?}");
        let d = instances[1].check(OTHER).await;
        assert!(d.allowed && d.remaining == MAX - 2, "{d:?}");
    });
}

#[test]
fn redis_window_rolls_over() {
    let redis = Redis::start();
    let mut cfg = config(Some(&redis), 2, FailurePolicy::Closed);
    cfg.window = Duration::from_millis(300);
    let limiter = RateLimiter::new(cfg).unwrap();
    current_thread_runtime().block_on(async {
        assert!(limiter.check(CLIENT).await.allowed);
        assert!(limiter.check(CLIENT).await.allowed);
        let d = limiter.check(CLIENT).await;
        assert!(!d.allowed && d.remaining == 0);
        assert!(d.reset_after <= Duration::from_millis(300));
        // Wait out the window (as a client told `retry-after` would).
        tokio::time::sleep(d.reset_after + Duration::from_millis(20)).await;
        let d = limiter.check(CLIENT).await;
        assert!(d.allowed && d.remaining == 1, "{d:?}");
    });
    assert_eq!(stat(limiter.stats()), [1, 0, 0, 0]);
}

/// Redis killed: every check returns within the timeout (most without trying, during
/// the cool-down), decided by the policy and counted; restarted on the same port:
/// limiting resumes by itself.
fn outage(policy: FailurePolicy) {
    const MAX: u64 = 5;
    let mut redis = Redis::start();
    let port = redis.port;
    let cfg = config(Some(&redis), MAX, policy);
    let timeout = cfg.redis_timeout;
    let limiter = RateLimiter::new(cfg).unwrap();
    current_thread_runtime().block_on(async {
        let d = limiter.check(CLIENT).await;
        assert!(d.allowed && d.remaining == MAX - 1, "{d:?}");

        redis.kill();
        let outage = Instant::now();
        for _ in 0..20 {
            let t = Instant::now();
            let d = limiter.check(CLIENT).await;
            assert!(
                t.elapsed() < timeout + MARGIN,
                "check took {:?}",
                t.elapsed()
            );
            assert_eq!(d.allowed, policy == FailurePolicy::Open, "{d:?}");
        }
        assert!(outage.elapsed() < timeout + MARGIN, "no wait per request");
        let [rejected, errors, open, closed] = stat(limiter.stats());
        assert!(errors >= 1);
        match policy {
            FailurePolicy::Open => assert_eq!([rejected, open, closed], [0, 20, 0]),
            FailurePolicy::Closed => assert_eq!([rejected, open, closed], [20, 0, 20]),
        }

        // Back on the same port (empty: nothing was persisted).
        redis = Redis::start_on(port).expect("restart on the same port");
        let took = until_redis_answers(&limiter, MAX).await;
        assert!(took <= COOL_DOWN + MARGIN, "resumed after {took:?}");
        // That answer was the fresh window's first request; 4 more are allowed.
        let mut allowed = 0;
        for _ in 0..6 {
            allowed += u64::from(limiter.check(CLIENT).await.allowed);
        }
        assert_eq!(allowed, MAX - 1, "limiting again");
    });
    drop(redis);
}

#[test]
fn redis_outage_fails_open_and_recovers() {
    outage(FailurePolicy::Open);
}

#[test]
fn redis_outage_fails_closed_and_recovers() {
    outage(FailurePolicy::Closed);
}

/// A Redis that stops answering (SIGSTOP: the kernel still accepts connections) costs
/// at most the timeout, then the cool-down answers at once; it resumes after SIGCONT.
#[test]
fn stalled_redis_is_bounded_by_the_timeout() {
    const MAX: u64 = 100;
    let redis = Redis::start();
    let cfg = config(Some(&redis), MAX, FailurePolicy::Closed);
    let timeout = cfg.redis_timeout;
    let limiter = RateLimiter::new(cfg).unwrap();
    current_thread_runtime().block_on(async {
        assert!(limiter.check(CLIENT).await.allowed);
        redis.signal(libc::SIGSTOP);
        let t = Instant::now();
        let d = limiter.check(CLIENT).await;
        let waited = t.elapsed();
        assert!(!d.allowed);
        assert!(waited >= timeout - Duration::from_millis(5), "{waited:?}");
        assert!(waited < timeout + MARGIN, "{waited:?}");
        let t = Instant::now();
        for _ in 0..10 {
            assert!(!limiter.check(CLIENT).await.allowed);
        }
        assert!(
            t.elapsed() < Duration::from_millis(50),
            "cool-down answers at once"
        );
        assert_eq!(stat(limiter.stats()), [11, 1, 0, 11]);

        redis.signal(libc::SIGCONT);
        let took = until_redis_answers(&limiter, MAX).await;
        assert!(took <= COOL_DOWN + MARGIN, "resumed after {took:?}");
    });
}

#[test]
fn memory_limiter_is_one_limit_for_all_workers() {
    const MAX: u64 = 50;
    let limiter = Arc::new(RateLimiter::new(config(None, MAX, FailurePolicy::Open)).unwrap());
    let start = Arc::new(Barrier::new(2));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let limiter = limiter.clone();
            let start = start.clone();
            on_worker(move || {
                Box::pin(async move {
                    start.wait();
                    let mut allowed = 0;
                    for _ in 0..40 {
                        allowed += u64::from(limiter.check(CLIENT).await.allowed);
                    }
                    allowed
                })
            })
        })
        .collect();
    let allowed: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(allowed, MAX);
    assert_eq!(stat(limiter.stats()), [80 - MAX, 0, 0, 0]);
}

/// Two agentd servers (real sockets, real HTTP) sharing one Redis: one global limit;
/// Redis killed: the fail-open policy, no hang; Redis back: limiting resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agentd_servers_share_one_limit_and_survive_redis_outages() {
    let mut redis = Redis::start();
    let port = redis.port;
    let server_with = |url: String| {
        let mut c = support::config();
        c.rate_limit_max = 6;
        c.rate_limit_window = 60_000;
        c.redis_url = Some(url);
        c.rate_limit_redis_timeout = 200;
        support::start_echo_with(c)
    };
    let a = server_with(redis.url());
    let b = server_with(redis.url());
    let client = support::client();
    let status = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..10 {
        let s = if i % 2 == 0 { &a } else { &b };
        match status(s.url("/stream?prompt=x")).await {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (6, 4), "one limit across both servers");

    redis.kill();
    for s in [&a, &b] {
        let started = Instant::now();
        assert_eq!(status(s.url("/stream?prompt=x")).await, 200, "fail open");
        assert!(
            started.elapsed() < Duration::from_millis(200) + MARGIN,
            "no hang"
        );
    }

    let _redis = Redis::start_on(port).expect("redis restarts on its port");
    // After the cool-down the limit applies again (a fresh Redis: a fresh window).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut resumed = false;
    while Instant::now() < deadline {
        if status(a.url("/stream?prompt=x")).await == 429 {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(resumed, "limiting resumes once Redis is back");
}

/// One request of the load in `outage_under_load`.
struct Answer {
    sent: Instant,
    took: Duration,
    status: u16,
}

/// Redis killed and restarted while clients keep sending (a little load: six clients in
/// a loop on one agentd with two workers). No request waits past the Redis timeout,
/// every request sent during the outage is decided by the policy, every 200 is a whole
/// answer, and limiting resumes by itself once Redis is back on its port.
async fn outage_under_load(policy: FailurePolicy) {
    const MAX: u64 = 40;
    const CLIENTS: usize = 6;
    const REDIS_TIMEOUT: Duration = Duration::from_millis(200);
    let mut redis = Redis::start();
    let port = redis.port;
    let mut c = support::config();
    c.rate_limit_max = MAX;
    c.rate_limit_window = 60_000;
    c.redis_url = Some(redis.url());
    c.rate_limit_redis_timeout = REDIS_TIMEOUT.as_millis() as u64;
    c.rate_limit_redis_failure = policy;
    let server = support::start_echo_with(c);
    let url = server.url("/agent");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = Arc::new(std::sync::Mutex::new(Vec::<Answer>::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, stop, answers) = (url.clone(), stop.clone(), answers.clone());
            tokio::spawn(async move {
                let client = support::client();
                while !stop.load(Relaxed) {
                    let sent = Instant::now();
                    let res = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(support::body("under load"))
                        .send()
                        .await
                        .expect("an answer, never a transport error");
                    let status = res.status().as_u16();
                    let text = res.text().await.expect("the whole body");
                    let took = sent.elapsed();
                    let last_event = text.trim_end().rsplit("\n\n").next().unwrap_or("");
                    assert!(
                        status == 429
                            || status == 503
                            || (status == 200 && last_event.starts_with("event: done\n")),
                        "status {status}: {text}"
                    );
                    answers.lock().unwrap().push(Answer { sent, took, status });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let seen = |from: Instant, status: u16| {
        answers
            .lock()
            .unwrap()
            .iter()
            .any(|a| a.sent >= from && a.status == status)
    };
    let started = Instant::now();
    assert!(
        support::eventually(Duration::from_secs(5), || seen(started, 429)).await,
        "the limit is reached"
    );

    redis.kill();
    let killed = Instant::now();
    // Past one cool-down, so each worker goes back to a dead Redis at least once.
    tokio::time::sleep(COOL_DOWN + Duration::from_millis(500)).await;
    redis = Redis::start_on(port).expect("restart on the same port");
    let restarted = Instant::now();
    // A fresh Redis is a fresh window: fail-open shows Redis deciding again by 429s
    // (the new window used up), fail-closed by 200s.
    let resumed_by = match policy {
        FailurePolicy::Open => 429,
        FailurePolicy::Closed => 200,
    };
    assert!(
        support::eventually(Duration::from_secs(5), || seen(restarted, resumed_by)).await,
        "limiting resumes"
    );
    let resumed = restarted.elapsed();
    stop.store(true, Relaxed);
    for c in clients {
        c.await.expect("every client ran clean");
    }

    let answers = answers.lock().unwrap();
    let slowest = answers.iter().map(|a| a.took).max().unwrap();
    assert!(
        slowest < REDIS_TIMEOUT + MARGIN,
        "a request took {slowest:?}"
    );
    let during: Vec<u16> = answers
        .iter()
        .filter(|a| a.sent >= killed && a.sent + a.took < restarted)
        .map(|a| a.status)
        .collect();
    // Closed: Redis's failure is the server's, so 503 (`rate_limit_unavailable`).
    let by_policy = match policy {
        FailurePolicy::Open => 200,
        FailurePolicy::Closed => 503,
    };
    assert!(
        during.len() >= 20,
        "load during the outage: {}",
        during.len()
    );
    assert!(
        during.iter().all(|s| *s == by_policy),
        "the policy decides during the outage: {during:?}"
    );
    assert!(
        resumed <= COOL_DOWN + MARGIN + Duration::from_millis(500),
        "resumed {resumed:?} after the restart"
    );
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load_fails_open() {
    outage_under_load(FailurePolicy::Open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load_fails_closed() {
    outage_under_load(FailurePolicy::Closed).await;
}

/// One command to the Redis on `port`, inline; the reply as text (a bulk reply's
/// payload, or the status/integer line).
fn redis_command(port: u16, command: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "redis closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some(line_end) = text.find("\r\n") else {
            continue;
        };
        if let Some(len) = text.strip_prefix('$') {
            let len: usize = len[..line_end - 1].parse().unwrap();
            if buf.len() >= line_end + 2 + len {
                return text[line_end + 2..line_end + 2 + len].to_owned();
            }
        } else {
            return text[1..line_end].to_owned();
        }
    }
}

/// A field of `INFO <section>` as a number.
fn redis_info(port: u16, section: &str, field: &str) -> u64 {
    let info = redis_command(port, &format!("INFO {section}"));
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// PING calls Redis has served, from `INFO commandstats`.
fn redis_pings(port: u16) -> u64 {
    let info = redis_command(port, "INFO commandstats");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
        .and_then(|v| v.split(',').next())
        .map_or(0, |v| v.parse().unwrap())
}

/// Redis down with the `closed` policy is the server's failure, not the client's:
/// limited routes answer 503 `rate_limit_unavailable` with `Retry-After`, and
/// `/health/ready` is 503 while (and only while) Redis fails, so a load balancer sends
/// the traffic elsewhere. With the `open` policy readiness stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_the_closed_policy_is_503_and_not_ready() {
    let mut redis = Redis::start();
    let port = redis.port;
    let server_with = |policy: FailurePolicy| {
        let mut c = support::config();
        c.rate_limit_max = 1000;
        c.rate_limit_window = 60_000;
        c.redis_url = Some(redis.url());
        c.rate_limit_redis_timeout = 200;
        c.rate_limit_redis_failure = policy;
        support::start_echo_with(c)
    };
    let closed = server_with(FailurePolicy::Closed);
    let open = server_with(FailurePolicy::Open);
    let client = support::client();
    assert_eq!(support::get_status(&closed, "/stream?prompt=x").await, 200);
    assert_eq!(support::get_status(&closed, "/health/ready").await, 200);

    redis.kill();
    let res = support::post_json(&closed, "/agent", support::body("x")).await;
    assert_eq!(res.status(), 503);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert!(!res.headers().contains_key("x-ratelimit-remaining"));
    let j: serde_json::Value = res.json().await.unwrap();
    assert_eq!(j["code"], "rate_limit_unavailable");
    assert!(j["requestId"].is_string());
    assert_eq!(support::get_status(&closed, "/stream?prompt=x").await, 503);
    // Not ready while Redis is down (within the health cache and a probe's timeout).
    assert!(
        support::status_becomes(&closed, "/health/ready", 503, Duration::from_secs(3)).await,
        "readiness follows Redis"
    );
    let ready = client
        .get(closed.url("/health/ready"))
        .send()
        .await
        .unwrap();
    let j: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(j["reason"], "rate limit store unavailable");
    // The open policy lets traffic through, so it stays ready.
    assert_eq!(support::get_status(&open, "/stream?prompt=x").await, 200);
    assert_eq!(support::get_status(&open, "/health/ready").await, 200);

    let _redis = Redis::start_on(port).expect("redis restarts on its port");
    // With no traffic at all (the balancer moved it away) readiness comes back by itself.
    assert!(
        support::status_becomes(&closed, "/health/ready", 200, Duration::from_secs(5)).await,
        "ready again once Redis answers"
    );
    // Each worker has its own Redis connection and cool-down (1 s): a worker that last
    // failed may refuse for up to that long after readiness (answered by another) is back.
    assert!(
        support::status_becomes(&closed, "/stream?prompt=x", 200, Duration::from_secs(3)).await,
        "limited traffic served again once Redis answers"
    );
}

/// `/health/detailed` asks Redis through the rate limiter's own connections (at most
/// one per worker, however many calls) and reuses an answer for a second: a loop on it
/// neither opens connections nor floods Redis with PINGs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_reuse_the_limiters_connection_and_are_cached() {
    let redis = Redis::start();
    let mut c = support::config();
    c.rate_limit_max = 1000;
    c.redis_url = Some(redis.url());
    c.rate_limit_redis_timeout = 200;
    c.rate_limit_redis_failure = FailurePolicy::Closed;
    let workers = c.workers.unwrap() as u64;
    let server = support::start_echo_with(c);
    let client = support::client();
    let connections_before = redis_info(redis.port, "stats", "total_connections_received");
    let pings_before = redis_pings(redis.port);
    let started = Instant::now();
    const CALLS: usize = 200;
    for _ in 0..CALLS {
        for path in ["/health/detailed", "/health/ready"] {
            let res = client.get(server.url(path)).send().await.unwrap();
            assert_eq!(res.status(), 200, "{path}");
        }
    }
    let elapsed = started.elapsed();
    let res = client
        .get(server.url("/health/detailed"))
        .send()
        .await
        .unwrap();
    let j: serde_json::Value = res.json().await.unwrap();
    assert_eq!(j["checks"]["redis"]["status"], "up");
    let opened =
        redis_info(redis.port, "stats", "total_connections_received") - connections_before - 2; // this test's own two INFO connections
    assert!(
        opened <= workers,
        "{opened} Redis connections for {CALLS} health calls"
    );
    let pings = redis_pings(redis.port) - pings_before;
    assert!(
        pings <= elapsed.as_secs() + 2,
        "{pings} PINGs in {elapsed:?}: the answer is cached for a second"
    );
}
