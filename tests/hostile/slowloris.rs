//! Slowloris at scale: a thousand connections send a request head a line at a time
//! and never finish it; every one must be closed by the header timeout + 1 s while a
//! normal client keeps being served.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;
use crate::support::*;

/// Slow-header connections opened at once (fewer when the descriptor limit is lower).
const SLOWLORIS_CONNECTIONS: usize = 1_000;
/// How often a slow client sends one more header line.
const TRICKLE_EVERY: Duration = Duration::from_millis(200);

/// How one slow-header connection ended.
struct SlowEnd {
    /// From the connection's start to the server closing it; `None` if it never did.
    closed_after: Option<Duration>,
    /// Bytes the server sent (none expected: it drops the connection without an answer).
    got: Vec<u8>,
}

/// Sends a request head a line at a time, never finishing it, until the server closes.
async fn slow_header_client(addr: SocketAddr, give_up: Duration) -> SlowEnd {
    let mut got = Vec::new();
    // Timed from before the connect: never less than the server's own clock, which
    // starts at accept.
    let started = Instant::now();
    let end = tokio::time::Instant::now() + give_up;
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return SlowEnd {
            closed_after: None,
            got,
        };
    };
    let closed = |got| SlowEnd {
        closed_after: Some(started.elapsed()),
        got,
    };
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .is_err()
    {
        return closed(got);
    }
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + TRICKLE_EVERY, TRICKLE_EVERY);
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return closed(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return closed(got);
                }
            }
            _ = tokio::time::sleep_until(end) => {
                return SlowEnd { closed_after: None, got };
            }
        }
    }
}

/// Normal traffic: `GET /health/live` on new connections, one every `every`, until
/// `stop` is set; the statuses (None = failed) and latencies.
async fn normal_traffic(
    addr: SocketAddr,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> (Vec<Option<u16>>, Vec<Duration>) {
    let (mut statuses, mut latencies) = (Vec::new(), Vec::new());
    while !stop.load(Ordering::SeqCst) {
        let (status, took) = live_once(addr).await;
        statuses.push(status);
        latencies.push(took);
        tokio::time::sleep(every).await;
    }
    latencies.sort();
    (statuses, latencies)
}

/// [`normal_traffic`] on a thread and runtime of its own, so its latencies are not
/// those of this runtime juggling a thousand attackers.
fn normal_traffic_thread(
    addr: SocketAddr,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<Option<u16>>, Vec<Duration>)> {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(normal_traffic(addr, every, stop))
    })
}

#[tokio::test]
async fn slowloris_at_scale_is_cut_at_the_header_timeout_while_normal_traffic_is_served() {
    let _quiet = MEMORY_HEAVY.lock().await;
    // Both ends of every connection live in this process: two descriptors each.
    let fd_limit = raise_nofile_limit();
    let n = SLOWLORIS_CONNECTIONS.min((fd_limit.saturating_sub(256) / 2) as usize);
    assert!(
        n >= 100,
        "too few descriptors for a meaningful run ({fd_limit})"
    );
    let header_timeout = Duration::from_millis(1_000);
    let mut cfg = config();
    cfg.header_read_timeout = header_timeout.as_millis() as u64;
    let server = start_echo_with(cfg);
    let addr = server.addr;
    let every = Duration::from_millis(10);

    let stop = Arc::new(AtomicBool::new(false));
    let baseline = normal_traffic_thread(addr, every, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (base_statuses, base_lat) = baseline.await.unwrap();
    assert!(base_statuses.iter().all(|s| *s == Some(200)));

    let stop = Arc::new(AtomicBool::new(false));
    let during = normal_traffic_thread(addr, every, stop.clone());
    let give_up = header_timeout + Duration::from_secs(3);
    let attackers: Vec<_> = (0..n)
        .map(|_| tokio::spawn(slow_header_client(addr, give_up)))
        .collect();
    let mut ends = Vec::with_capacity(n);
    for a in attackers {
        ends.push(a.await.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    let (statuses, lat) = during.await.unwrap();

    let never_closed = ends.iter().filter(|e| e.closed_after.is_none()).count();
    let answered = ends.iter().filter(|e| !e.got.is_empty()).count();
    let mut closed: Vec<Duration> = ends.iter().filter_map(|e| e.closed_after).collect();
    closed.sort();
    eprintln!(
        "slowloris: {n} connections, header timeout {} ms: closed after p50 {:.0} ms, max {:.0} ms; \
         normal traffic: {} requests, p50 {:.2} ms, p99 {:.2} ms (baseline {} requests, p50 {:.2} ms, p99 {:.2} ms)",
        header_timeout.as_millis(),
        ms(percentile(&closed, 0.5)),
        ms(closed.last().copied().unwrap_or_default()),
        statuses.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        base_statuses.len(),
        ms(percentile(&base_lat, 0.5)),
        ms(percentile(&base_lat, 0.99)),
    );
    assert_eq!(never_closed, 0, "slow-header connections left open");
    assert_eq!(answered, 0, "an unfinished head got an answer");
    let latest = *closed.last().unwrap();
    assert!(
        latest <= header_timeout + Duration::from_secs(1),
        "a slow-header connection stayed open {latest:?}"
    );
    assert!(
        statuses.len() >= 5,
        "normal traffic made too few requests to count"
    );
    let failed = statuses.iter().filter(|s| **s != Some(200)).count();
    assert_eq!(
        failed, 0,
        "normal requests failed during the attack: {statuses:?}"
    );
}
