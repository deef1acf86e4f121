//! Real `redis-server` processes for tests: one server on a free port, or a Redis
//! Cluster of three masters and three replicas made with `redis-cli --cluster create`.
//! Every process is killed (by its PID) when its handle is dropped.
//!
//! Needs `redis-server` and `redis-cli` on the PATH (`apt-get install -y redis-server`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A `redis-server` child process.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// A cluster node's working folder (its nodes.conf), removed on drop.
    dir: Option<PathBuf>,
}

impl Redis {
    /// Starts one on a free port.
    pub fn start() -> Redis {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            match Redis::start_on(port) {
                Ok(r) => return r,
                Err(e) => last = e,
            }
        }
        panic!("could not start redis-server: {last}");
    }

    /// Starts one on `port`, waiting until it answers PING.
    pub fn start_on(port: u16) -> Result<Redis, String> {
        Redis::spawn(port, &[], None)
    }

    fn spawn(port: u16, extra: &[&str], dir: Option<PathBuf>) -> Result<Redis, String> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(d) = &dir {
            cmd.current_dir(d);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run redis-server ({e}); these tests need it: \
                 apt-get install -y redis-server"
            )
        });
        let mut redis = Redis {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if ping(port) {
                return Ok(redis);
            }
            if let Ok(Some(status)) = redis.child.as_mut().unwrap().try_wait() {
                redis.child = None;
                return Err(format!("redis-server on port {port} exited: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {port} never answered"));
            }
            pause(10);
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    #[allow(unsafe_code)] // a test signalling the process it started
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's PID.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One command through `redis-cli`, its output trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Whether a Redis answers PING on `port` within a short wait.
pub fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// `redis-cli -p port args…`, its output trimmed.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Three masters and three replicas on loopback.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster and waits until every slot is served.
    pub fn start() -> RedisCluster {
        let base = std::env::temp_dir().join(format!("agentd-cluster-{}", std::process::id()));
        let mut nodes = Vec::new();
        while nodes.len() < 6 {
            let port = free_port();
            // The cluster bus listens on port + 10000: both must be free.
            if port > 55_000 || std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
                continue;
            }
            let dir = base.join(port.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "1000",
                "--cluster-config-file",
                "nodes.conf",
            ];
            if let Ok(r) = Redis::spawn(port, &extra, Some(dir)) {
                nodes.push(r);
            }
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        assert!(
            cluster.wait_ok(Duration::from_secs(20)),
            "the cluster never reached state ok"
        );
        // A replica that never synced with its master cannot take over from it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let synced = cluster
                .nodes
                .iter()
                .filter(|n| {
                    n.cli(&["info", "replication"])
                        .contains("master_link_status:up")
                })
                .count();
            if synced == 3 {
                break;
            }
            assert!(Instant::now() < deadline, "replicas never synced");
            pause(100);
        }
        cluster
    }

    /// `REDIS_URL` naming every node.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// True once every running node reports `cluster_state:ok` and all slots are served.
    pub fn wait_ok(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let ok = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                let info = n.cli(&["cluster", "info"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            });
            if ok {
                return true;
            }
            pause(100);
        }
        false
    }

    /// The node that is master of `key`'s slot.
    pub fn master_of(&self, key: &str) -> usize {
        let live = self.nodes.iter().find(|n| n.child.is_some()).unwrap();
        let slot: u16 = live.cli(&["cluster", "keyslot", key]).parse().unwrap();
        self.nodes
            .iter()
            .position(|n| n.child.is_some() && owns(n, slot))
            .expect("a master owns the slot")
    }

    /// SIGKILLs the master of `key`'s slot and waits until its replica serves the slot
    /// and every live node sees the cluster whole again.
    pub fn fail_over(&mut self, key: &str) {
        let master = self.master_of(key);
        self.nodes[master].kill();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let moved = self.nodes.iter().position(|n| {
                n.child.is_some() && n.cli(&["role"]).starts_with("master") && {
                    let slot: u16 = n.cli(&["cluster", "keyslot", key]).parse().unwrap_or(0);
                    owns(n, slot)
                }
            });
            if moved.is_some() && self.wait_ok(Duration::from_millis(100)) {
                return;
            }
            pause(100);
        }
        panic!("the cluster did not fail over");
    }
}

/// Whether node `n` serves `slot` itself (a `CLUSTER SLOTS` range with its port first).
fn owns(n: &Redis, slot: u16) -> bool {
    let out = n.cli(&["cluster", "slots"]);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    // Each range: start, end, master ip, master port, master id, then replicas.
    let mut i = 0;
    while i + 3 < lines.len() {
        if let (Ok(start), Ok(end)) = (lines[i].parse::<u16>(), lines[i + 1].parse::<u16>()) {
            if lines[i + 2] == "127.0.0.1" && (start..=end).contains(&slot) {
                return lines[i + 3] == n.port.to_string();
            }
        }
        i += 1;
    }
    false
}

/// Waits on the test's own thread (these helpers run before and between async steps).
#[allow(clippy::disallowed_methods)]
fn pause(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// A config for a replica sharing the Redis at `url` (`RESUME_STORE=redis`, metrics on).
pub fn redis_replica(url: &str) -> agentd::Config {
    let mut c = super::config();
    c.resume_store = agentd::config::ResumeStore::Redis;
    c.redis_url = Some(url.to_owned());
    c.enable_metrics = true;
    c
}
