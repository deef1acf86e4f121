//! File-descriptor exhaustion: the `agentd` binary runs with a small open-file limit
//! and more connections than descriptors; its accept loop must back off (not spin)
//! while out of them and serve again once they are free.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::*;

/// Open-file limit of the spawned server: small enough to run out quickly.
const SPAWNED_NOFILE: u64 = 64;
/// Client connections opened against it: well past its descriptors.
const FD_FLOOD_CONNECTIONS: usize = 150;

/// An `agentd` child process, killed (by its pid) when dropped.
struct Spawned {
    child: Child,
    addr: SocketAddr,
    /// Lines of its log that report a failed accept.
    accept_failures: Arc<AtomicU64>,
}

impl Spawned {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    /// User + system CPU time so far, in seconds (from /proc/<pid>/stat).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }
    /// Not exited (a zombie counts as exited).
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the `agentd` binary on 127.0.0.1:0 with `nofile` descriptors at most and
/// `env` set; waits for its "listening" line to learn the address.
fn spawn_agentd(nofile: u64, env: &[(&str, &str)]) -> Spawned {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentd"));
    cmd.env_clear()
        // Away from any .env file in the working directory.
        .current_dir(std::env::temp_dir())
        .envs([
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("NODE_ENV", "production"),
            ("LOG_FORMAT", "json"),
        ])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("agentd starts");
    let stderr = child.stderr.take().unwrap();
    let accept_failures = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let failures = accept_failures.clone();
    // Drains the log for as long as the child lives (a full pipe would stall it).
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("accept failed") {
                failures.fetch_add(1, Ordering::SeqCst);
            }
            if line.contains("agentd listening") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line);
                }
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("agentd logs its address");
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    let addr = v["addr"]
        .as_str()
        .or_else(|| v["fields"]["addr"].as_str())
        .expect("addr in the listening line")
        .parse()
        .unwrap();
    Spawned {
        child,
        addr,
        accept_failures,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_backs_off_when_out_of_descriptors_and_recovers() {
    raise_nofile_limit();
    let max_connections = (FD_FLOOD_CONNECTIONS * 4).to_string();
    let mut server = spawn_agentd(
        SPAWNED_NOFILE,
        &[
            ("WORKERS", "1"),
            ("MAX_CONNECTIONS", &max_connections),
            ("HEADER_READ_TIMEOUT", "30000"),
            ("KEEP_ALIVE_TIMEOUT", "30000"),
        ],
    );
    let addr = server.addr;
    let (status, _) = live_once(addr).await;
    assert_eq!(status, Some(200));
    let fds_at_start = server.open_fds();

    // Every connection asks once and stays open: the accepted ones hold descriptors,
    // the rest wait in the backlog while accept fails with EMFILE.
    let mut conns = Vec::new();
    for _ in 0..FD_FLOOD_CONNECTIONS {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        conns.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut answered = 0;
    for s in conns.iter_mut() {
        let mut buf = [0u8; 512];
        answered += usize::from(matches!(s.try_read(&mut buf), Ok(n) if n > 0));
    }
    assert!(
        answered > 0 && answered < FD_FLOOD_CONNECTIONS,
        "the server should serve some and run out of descriptors: {answered} answered"
    );

    // Exhausted: the accept loop must back off, not spin.
    let window = Duration::from_secs(2);
    let (cpu0, fail0) = (
        server.cpu_seconds(),
        server.accept_failures.load(Ordering::SeqCst),
    );
    tokio::time::sleep(window).await;
    let cpu = server.cpu_seconds() - cpu0;
    let failures = server.accept_failures.load(Ordering::SeqCst) - fail0;
    let fds_exhausted = server.open_fds();
    eprintln!(
        "fd exhaustion: NOFILE {SPAWNED_NOFILE}, {fds_at_start} descriptors at start, \
         {fds_exhausted} when exhausted; {answered}/{FD_FLOOD_CONNECTIONS} connections served; \
         over {:?}: {:.3} s CPU ({:.1}% of a core), {failures} failed accepts logged",
        window,
        cpu,
        cpu / window.as_secs_f64() * 100.0,
    );
    assert!(
        cpu < window.as_secs_f64() * 0.5,
        "the accept loop spins while out of descriptors: {cpu:.3} s CPU in {window:?}"
    );
    assert!(
        failures <= 50,
        "{failures} failed accepts logged in {window:?}: no back-off"
    );

    // Freed: the server accepts and serves again (back-off is at most 1 s).
    drop(conns);
    let started = Instant::now();
    let mut recovered = None;
    while started.elapsed() < Duration::from_secs(10) {
        if live_once(addr).await.0 == Some(200) {
            recovered = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = recovered.expect("the server serves again once descriptors are free");
    eprintln!(
        "fd exhaustion: serving again {:.0} ms after the clients left",
        ms(recovered)
    );
    for _ in 0..20 {
        assert_eq!(live_once(addr).await.0, Some(200));
    }
    assert!(
        server.running(),
        "the server must survive running out of descriptors"
    );
}
