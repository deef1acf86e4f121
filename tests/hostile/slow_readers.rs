//! Many SSE readers that never read, against an agent that floods: each is cut off
//! once its bounded queue stays full past the slow-reader deadline, its agent is
//! stopped, and this process's memory stays bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentd::{Agent, AgentError, Query, ResponseHandler, Session};
use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;
use crate::support::*;

/// Floods its stream until the server refuses; counts starts and ends, and how long
/// each ran.
struct CountingFloodAgent {
    started: AtomicU64,
    ended: AtomicU64,
    ended_slowly: AtomicU64,
    emitted: AtomicU64,
    longest_ms: AtomicU64,
    /// The longest wait, after its last event went out, before an agent was stopped.
    longest_final_wait_ms: AtomicU64,
    /// The shortest such wait (a cut before the deadline would be a bug too).
    shortest_final_wait_ms: AtomicU64,
}

impl Default for CountingFloodAgent {
    fn default() -> Self {
        CountingFloodAgent {
            started: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            ended_slowly: AtomicU64::new(0),
            emitted: AtomicU64::new(0),
            longest_ms: AtomicU64::new(0),
            longest_final_wait_ms: AtomicU64::new(0),
            shortest_final_wait_ms: AtomicU64::new(u64::MAX),
        }
    }
}

/// Chunk size of the flooding agent.
const FLOOD_CHUNK: usize = 16 * 1024;
/// Bytes one flooding response may emit before the test calls the queue unbounded.
const FLOOD_GIVE_UP: u64 = 256 * 1024 * 1024;

#[async_trait]
impl Agent for CountingFloodAgent {
    fn name(&self) -> &str {
        "counting-flood"
    }
    async fn assist(
        &self,
        _s: &Session,
        _q: &Query,
        h: &mut ResponseHandler,
    ) -> Result<(), AgentError> {
        let started = Instant::now();
        self.started.fetch_add(1, Ordering::SeqCst);
        let s = h.create_text_stream("FLOOD")?;
        let text = "x".repeat(FLOOD_CHUNK);
        let mut mine = 0u64;
        let mut last_sent = Instant::now();
        let why = loop {
            if let Err(e) = h.emit_chunk(&s, &text).await {
                break e;
            }
            last_sent = Instant::now();
            mine += FLOOD_CHUNK as u64;
            self.emitted.fetch_add(FLOOD_CHUNK as u64, Ordering::SeqCst);
            if mine > FLOOD_GIVE_UP {
                panic!("the queue never blocked");
            }
        };
        let final_wait = last_sent.elapsed().as_millis() as u64;
        if why.to_string().contains("slowly") {
            self.ended_slowly.fetch_add(1, Ordering::SeqCst);
        }
        self.longest_final_wait_ms
            .fetch_max(final_wait, Ordering::SeqCst);
        self.shortest_final_wait_ms
            .fetch_min(final_wait, Ordering::SeqCst);
        self.longest_ms
            .fetch_max(started.elapsed().as_millis() as u64, Ordering::SeqCst);
        self.ended.fetch_add(1, Ordering::SeqCst);
        Err(why.into())
    }
}

/// Reads and discards until the peer closes (or 10 s pass): whether it closed, and
/// whether `atomic.done` went by (the bytes are not kept: they would weigh on the RSS
/// this test measures).
async fn drain_to_close(s: &mut TcpStream) -> (bool, bool) {
    const DONE: &[u8] = b"atomic.done";
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    let mut saw_done = false;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => return (false, saw_done),
            Ok(Ok(0)) | Ok(Err(_)) => return (true, saw_done),
            Ok(Ok(n)) => {
                tail.extend_from_slice(&buf[..n.min(buf.len())]);
                saw_done |= find(&tail, DONE).is_some();
                let keep = tail.len().min(DONE.len());
                tail.drain(..tail.len() - keep);
            }
        }
    }
}

fn set_recv_buffer(s: &TcpStream, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the call; the option value is a c_int we own.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
}

/// The server's own count of (open connections, open SSE streams), from /metrics.
async fn open_connections_and_streams(server: &TestServer) -> (u64, u64) {
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gauge = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics")) as u64
    };
    (
        gauge("agentd_open_connections"),
        gauge("agentd_open_sse_streams"),
    )
}

/// Polls the server's (open connections, open SSE streams) until only the metrics
/// request's connection is left, or `within` passes; the last figures.
async fn open_after_cut(server: &TestServer, within: Duration) -> (u64, u64) {
    let end = Instant::now() + within;
    loop {
        let open = open_connections_and_streams(server).await;
        if open == (1, 0) || Instant::now() >= end {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Slow-reader connections read to their end from the client's side, per round.
const CLIENTS_DRAINED: usize = 3;

/// Slow readers opened at once, per round.
const SLOW_READERS: usize = 50;
/// Growth of this process's RSS allowed over a round (the queues hold 50 × 64 KiB).
const SLOW_READER_RSS_BOUND: u64 = 64 * 1024 * 1024;

#[tokio::test]
async fn many_slow_sse_readers_are_cut_off_their_agents_stop_and_memory_stays_bounded() {
    let _quiet = MEMORY_HEAVY.lock().await;
    let slow_reader_timeout = Duration::from_millis(500);
    let mut cfg = config();
    cfg.sse_queue_bytes = 64 * 1024;
    cfg.sse_slow_reader_timeout = slow_reader_timeout.as_millis() as u64;
    cfg.enable_metrics = true;
    let agent = Arc::new(CountingFloodAgent::default());
    let server = start(cfg, agent.clone());
    assert_eq!(get_status(&server, "/health/live").await, 200);
    let req = raw_agent_request(&body("flood"), "");
    let mut rss_after_rounds = Vec::new();
    let rss_start = rss_self();
    for round in 1..=2u64 {
        let rss_before = rss_self();
        let mut clients = Vec::with_capacity(SLOW_READERS);
        for _ in 0..SLOW_READERS {
            // A tiny receive buffer, then never a read.
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            let mut s = sock.connect(server.addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            clients.push(s);
        }
        let want = round * SLOW_READERS as u64;
        let sent = Instant::now();
        let mut rss_peak = rss_before;
        while agent.ended.load(Ordering::SeqCst) < want && sent.elapsed() < Duration::from_secs(15)
        {
            rss_peak = rss_peak.max(rss_self());
            assert!(
                rss_peak - rss_before < SLOW_READER_RSS_BOUND,
                "RSS grew {} MiB with {SLOW_READERS} slow readers",
                (rss_peak - rss_before) >> 20
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let all_ended = sent.elapsed();
        assert_eq!(agent.started.load(Ordering::SeqCst), want);
        assert_eq!(
            agent.ended.load(Ordering::SeqCst),
            want,
            "every flooding agent is stopped"
        );
        assert_eq!(
            agent.ended_slowly.load(Ordering::SeqCst),
            want,
            "each stopped because its reader was too slow"
        );
        // A cut-off stream, read to its end, never brings `done`. A few are (each holds
        // megabytes the kernel buffered); the others leave without reading.
        for mut s in clients.drain(..CLIENTS_DRAINED) {
            set_recv_buffer(&s, 1 << 20);
            let (closed, saw_done) = drain_to_close(&mut s).await;
            assert!(closed, "a slow reader's connection was left open");
            assert!(!saw_done, "a cut-off stream must not end with done");
        }
        drop(clients);
        // Nothing is left behind on the server: its own count of open connections and
        // streams comes back to the metrics request's one connection.
        let open = open_after_cut(&server, Duration::from_secs(5)).await;
        let all_closed = sent.elapsed();
        assert_eq!(
            open,
            (1, 0),
            "(open connections, open SSE streams) after the slow readers left"
        );
        let rss_after = rss_self();
        rss_after_rounds.push(rss_after);
        eprintln!(
            "slow readers, round {round}: {SLOW_READERS} cut off, all agents stopped {:.0} ms after \
             the requests (longest agent {} ms; a full queue waited {}..{} ms, timeout {} ms); \
             server connections all gone {:.0} ms after the requests, once the clients left; \
             emitted {} MiB in all; RSS {} -> peak {} -> {} MiB",
            ms(all_ended),
            agent.longest_ms.load(Ordering::SeqCst),
            agent.shortest_final_wait_ms.load(Ordering::SeqCst),
            agent.longest_final_wait_ms.load(Ordering::SeqCst),
            slow_reader_timeout.as_millis(),
            ms(all_closed),
            agent.emitted.load(Ordering::SeqCst) >> 20,
            rss_before >> 20,
            rss_peak >> 20,
            rss_after >> 20,
        );
    }
    let longest = Duration::from_millis(agent.longest_final_wait_ms.load(Ordering::SeqCst));
    let shortest = Duration::from_millis(agent.shortest_final_wait_ms.load(Ordering::SeqCst));
    assert!(
        longest <= slow_reader_timeout + Duration::from_secs(1),
        "a full queue waited {longest:?} with a {slow_reader_timeout:?} slow-reader timeout"
    );
    assert!(
        shortest >= slow_reader_timeout * 9 / 10,
        "a reader was cut after {shortest:?}, before the {slow_reader_timeout:?} deadline"
    );
    // The second round costs no more than the first: nothing is kept per cut-off reader.
    let growth = rss_after_rounds[1].saturating_sub(rss_after_rounds[0]);
    assert!(
        growth < SLOW_READER_RSS_BOUND / 4,
        "RSS grew {} MiB between rounds (started at {} MiB)",
        growth >> 20,
        rss_start >> 20
    );
    assert_eq!(get_status(&server, "/health/live").await, 200);
}

/// The server must close a cut-off slow reader's connection itself, without the
/// client's help: otherwise a client that never reads keeps the socket, its
/// `MAX_CONNECTIONS` slot and megabytes of kernel send buffer for as long as it likes.
#[tokio::test]
async fn slow_readers_are_disconnected_without_reading() {
    let slow_reader_timeout = Duration::from_millis(500);
    let mut cfg = config();
    cfg.sse_queue_bytes = 64 * 1024;
    cfg.sse_slow_reader_timeout = slow_reader_timeout.as_millis() as u64;
    cfg.header_read_timeout = 2_000;
    cfg.enable_metrics = true;
    let agent = Arc::new(CountingFloodAgent::default());
    let server = start(cfg, agent.clone());
    let req = raw_agent_request(&body("flood"), "");
    let mut clients = Vec::new();
    for _ in 0..5 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut s = sock.connect(server.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        clients.push(s);
    }
    assert!(
        eventually(Duration::from_secs(10), || agent
            .ended
            .load(Ordering::SeqCst)
            == 5)
        .await,
        "the flooding agents are stopped"
    );
    // The clients are still there, still not reading.
    let open = open_after_cut(&server, slow_reader_timeout + Duration::from_secs(2)).await;
    assert_eq!(
        open,
        (1, 0),
        "(open connections, open SSE streams) after the slow-reader deadline"
    );
    drop(clients);
}
