//! Redis as every shared-state user sees it (the rate limiter, the resume store): one
//! server or a Redis Cluster behind one connection type, and one connection per worker
//! thread with a cool-down after a failure.
//!
//! `REDIS_URL` is one `redis://` (or `rediss://`) URL for one server, or a Redis
//! Cluster: several comma-separated node URLs, or one seed node written
//! `redis+cluster://host:port` (`rediss+cluster://` with TLS). Callers that touch several
//! keys in one script or pipeline hash-tag them (`{…}`) so that they share a slot.
//!
//! Connections: each worker thread runs its own current-thread runtime, and a redis
//! connection is driven by tasks on the runtime that created it, so each worker thread
//! keeps its own (in a thread-local, keyed by its user), made on first use and replaced
//! if the thread's runtime changes. A failed round trip drops that worker's connection
//! and starts a [`COOL_DOWN`] during which the worker does not try Redis, so an outage
//! costs one bounded wait per worker per cool-down, not one per request.
//!
//! It must never share a connection between runtimes, hold a borrow of the
//! thread-local across an await, or put the URL (it may carry a password) in an error.

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

/// After a failed Redis round trip, how long a worker leaves Redis alone.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// Where Redis is: one server or a cluster.
#[derive(Clone)]
pub enum RedisTarget {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
}

/// A connection to either kind: a pipeline or script goes to the one server, or to the
/// cluster node owning its keys' slot.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// A connection of its own (blocking reads), never shared.
    Dedicated(redis::aio::MultiplexedConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
            RedisConn::Dedicated(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Dedicated(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
            RedisConn::Dedicated(c) => c.get_db(),
        }
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.write_str(if self.is_cluster() {
            "RedisTarget::Cluster"
        } else {
            "RedisTarget::Single"
        })
    }
}

impl RedisTarget {
    /// Parses `REDIS_URL`; no I/O. The error names what is wrong, never the URL.
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let nodes: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let bad = |e: redis::RedisError| format!("bad Redis URL: {}", e.category());
        let seed = |n: &str| -> Option<String> {
            n.strip_prefix("redis+cluster://")
                .map(|rest| format!("redis://{rest}"))
                .or_else(|| {
                    n.strip_prefix("rediss+cluster://")
                        .map(|rest| format!("rediss://{rest}"))
                })
        };
        match nodes.as_slice() {
            [] => Err("bad Redis URL: empty".to_owned()),
            [one] if seed(one).is_none() => redis::Client::open(*one)
                .map(RedisTarget::Single)
                .map_err(bad),
            many => {
                let urls: Vec<String> = many
                    .iter()
                    .map(|n| seed(n).unwrap_or_else(|| (*n).to_owned()))
                    .collect();
                // Retries follow MOVED/ASK redirects and ride out a failover's first
                // moments; the caller's timeout bounds them all.
                ClusterClient::builder(urls)
                    .retries(3)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()
                    .map(|c| RedisTarget::Cluster(Box::new(c)))
                    .map_err(bad)
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }

    /// A shared connection (pipelined by every caller on the worker), within `timeout`.
    async fn connect(&self, timeout: Duration) -> Result<RedisConn, String> {
        match self {
            RedisTarget::Single(client) => {
                // Lazy: connects on first use, within the timeout, no retries inside
                // (the cool-down paces the attempts).
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(0);
                ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map(RedisConn::Single)
                    .map_err(|e| e.to_string())
            }
            RedisTarget::Cluster(client) => connect_cluster(client, timeout, timeout).await,
        }
    }

    /// A connection nobody else uses, for blocking reads (`XREAD BLOCK` holds its
    /// connection). `timeout` bounds the connect; `response` bounds each reply.
    pub async fn dedicated(
        &self,
        timeout: Duration,
        response: Duration,
    ) -> Result<RedisConn, String> {
        match self {
            RedisTarget::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(response));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(RedisConn::Dedicated)
                    .map_err(|e| e.to_string())
            }
            // A cluster connection of its own is already nobody else's.
            RedisTarget::Cluster(client) => connect_cluster(client, timeout, response).await,
        }
    }
}

/// A new connection to the cluster (its slot map fetched), within `timeout`; `response`
/// bounds each reply.
async fn connect_cluster(
    client: &ClusterClient,
    timeout: Duration,
    response: Duration,
) -> Result<RedisConn, String> {
    let config = redis::cluster::ClusterConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(response);
    let connect = client.get_async_connection_with_config(config);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(c)) => Ok(RedisConn::Cluster(c)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within the Redis timeout".to_owned()),
    }
}

/// Tells users apart in the per-thread connection table.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// One user's connection on one worker thread.
struct Slot {
    id: u64,
    owner: Weak<()>,
    /// The runtime the connection belongs to: a thread that replaced its runtime (the
    /// old one and its connection tasks are gone) starts afresh.
    runtime: tokio::runtime::Id,
    conn: Option<Arc<OnceCell<RedisConn>>>,
    /// Counts the connections made, so a late failure of an old one cannot end a newer.
    generation: u64,
    /// No Redis round trip before this instant (the cool-down after a failure).
    retry_at: Option<Instant>,
}

thread_local! {
    static SLOTS: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// A connection per worker thread to one [`RedisTarget`], each with its cool-down.
pub struct WorkerConnections {
    id: u64,
    /// Lives as long as this: the thread-local entries hold a `Weak` to it and are
    /// pruned once it is gone.
    alive: Arc<()>,
    target: RedisTarget,
    timeout: Duration,
}

/// What [`WorkerConnections::get`] found.
enum Got {
    Conn(RedisConn, u64),
    /// In the cool-down after a failure: do not try Redis.
    CoolingDown,
    /// Connecting failed (the cool-down has started).
    Failed(String),
}

impl WorkerConnections {
    pub fn new(target: RedisTarget, timeout: Duration) -> WorkerConnections {
        WorkerConnections {
            id: NEXT_ID.fetch_add(1, Relaxed),
            alive: Arc::new(()),
            target,
            timeout,
        }
    }

    /// This thread's connection cell, made if needed; `None` during a cool-down.
    fn cell(&self, now: Instant) -> Option<(Arc<OnceCell<RedisConn>>, u64)> {
        let runtime = tokio::runtime::Handle::current().id();
        SLOTS.with(|slots| {
            let mut slots = slots.borrow_mut();
            let i = match slots.iter().position(|s| s.id == self.id) {
                Some(i) => i,
                None => {
                    slots.retain(|s| s.owner.strong_count() > 0);
                    slots.push(Slot {
                        id: self.id,
                        owner: Arc::downgrade(&self.alive),
                        runtime,
                        conn: None,
                        generation: 0,
                        retry_at: None,
                    });
                    slots.len() - 1
                }
            };
            let slot = &mut slots[i];
            if slot.runtime != runtime {
                slot.runtime = runtime;
                slot.conn = None;
                slot.retry_at = None;
            }
            if let Some(cell) = &slot.conn {
                return Some((cell.clone(), slot.generation));
            }
            if slot.retry_at.is_some_and(|t| now < t) {
                return None;
            }
            slot.retry_at = None;
            slot.generation += 1;
            let cell = Arc::new(OnceCell::new());
            slot.conn = Some(cell.clone());
            Some((cell, slot.generation))
        })
    }

    /// This worker's connection (connecting within the timeout if needed).
    async fn get(&self) -> Got {
        let Some((cell, generation)) = self.cell(Instant::now()) else {
            return Got::CoolingDown;
        };
        let made = cell
            .get_or_try_init(|| self.target.connect(self.timeout))
            .await;
        match made {
            Ok(conn) => Got::Conn(conn.clone(), generation),
            Err(e) => {
                self.failed(generation);
                Got::Failed(e)
            }
        }
    }

    /// Drops this thread's connection (if it is still `generation`) and starts the
    /// cool-down. True when it did: the caller logs once per connection lost.
    pub fn failed(&self, generation: u64) -> bool {
        SLOTS.with(|slots| {
            let mut slots = slots.borrow_mut();
            let Some(slot) = slots.iter_mut().find(|s| s.id == self.id) else {
                return false;
            };
            if slot.generation != generation || slot.conn.is_none() {
                return false;
            }
            slot.conn = None;
            slot.retry_at = Some(Instant::now() + COOL_DOWN);
            true
        })
    }

    /// Runs `call` on this worker's connection within the timeout. A failure drops the
    /// connection and starts the cool-down; `Err(true)` when this call was the one that
    /// found it broken (log it), `Err(false)` otherwise.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, RedisFailure>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (conn, generation) = match self.get().await {
            Got::Conn(c, g) => (c, g),
            Got::CoolingDown => return Err(RedisFailure::CoolingDown),
            Got::Failed(e) => return Err(RedisFailure::Lost(e)),
        };
        match tokio::time::timeout(self.timeout, call(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.lost(generation, e.to_string())),
            Err(_) => Err(self.lost(generation, "no answer within the Redis timeout".to_owned())),
        }
    }

    fn lost(&self, generation: u64, error: String) -> RedisFailure {
        if self.failed(generation) {
            RedisFailure::Lost(error)
        } else {
            RedisFailure::Again(error)
        }
    }

    /// How many connection slots this thread holds (for tests).
    #[doc(hidden)]
    pub fn thread_slots() -> usize {
        SLOTS.with(|s| s.borrow().len())
    }
}

/// Why a round trip did not happen or failed.
#[derive(Debug)]
pub enum RedisFailure {
    /// The worker is in the cool-down: nothing was sent.
    CoolingDown,
    /// This call found the connection broken and started the cool-down (log it once).
    Lost(String),
    /// It failed on a connection another call had already found broken.
    Again(String),
}

impl RedisFailure {
    /// Whether something was tried (an error to count).
    pub fn tried(&self) -> bool {
        !matches!(self, RedisFailure::CoolingDown)
    }
}

impl std::fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisFailure::CoolingDown => f.write_str("in the cool-down after a failure"),
            RedisFailure::Lost(e) | RedisFailure::Again(e) => f.write_str(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_one_server_and_a_list_or_a_cluster_seed_is_a_cluster() {
        assert!(!RedisTarget::parse("redis://127.0.0.1:6379/")
            .unwrap()
            .is_cluster());
        assert!(
            RedisTarget::parse("redis://127.0.0.1:7000, redis://127.0.0.1:7001")
                .unwrap()
                .is_cluster()
        );
        assert!(RedisTarget::parse("redis+cluster://127.0.0.1:7000")
            .unwrap()
            .is_cluster());
        let e = RedisTarget::parse("http://user:secret@example/")
            .err()
            .unwrap();
        assert!(!e.contains("secret"), "{e}");
        assert!(RedisTarget::parse(" , ").is_err());
    }
}
