//! What the hostile-client tests share: raw-socket reads that tell a close from a
//! timeout, HTTP/1 status lines found in raw bytes, a one-shot liveness probe, process
//! figures from /proc, and the lock that keeps memory-heavy tests apart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::find;

/// Held by the tests that make this process's memory move a lot (1,000 sockets, 50
/// flooded streams), so the one that measures this process's RSS sees only its own.
pub static MEMORY_HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Raises this process's open-file soft limit to its hard limit; returns the soft limit.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        r.rlim_cur
    }
}

/// Reads until the peer closes (EOF or reset) or `timeout` passes; says which.
pub async fn read_to_close(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + timeout;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(end, s.read(&mut chunk)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The status codes of every HTTP/1.x response head in `wire`, in order.
pub fn response_statuses(wire: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(p) = find(&wire[at..], b"HTTP/1.") {
        let start = at + p;
        let line = &wire[start..wire.len().min(start + 13)];
        // "HTTP/1.1 200 " — a request line ("... HTTP/1.1\r\n") does not match.
        if line.len() == 13
            && line[8] == b' '
            && line[9..12].iter().all(u8::is_ascii_digit)
            && line[12] == b' '
        {
            out.push(std::str::from_utf8(&line[9..12]).unwrap().parse().unwrap());
        }
        at = start + 7;
    }
    out
}

/// `GET /health/live` on a new connection (`Connection: close`): its status and time.
pub async fn live_once(addr: SocketAddr) -> (Option<u16>, Duration) {
    let started = Instant::now();
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (None, started.elapsed());
    };
    if s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return (None, started.elapsed());
    }
    let (wire, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    (response_statuses(&wire).first().copied(), started.elapsed())
}

pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// This process's resident set size, from /proc.
pub fn rss_self() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}
