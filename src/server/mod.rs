//! The server: a supervisor thread, one worker per core, and the handle to stop them.
//!
//! It serves any [`Service`] over HTTP/1.1 and HTTP/2 and knows nothing of what the
//! service does: routes, agents and policies live above it. The supervisor keeps a
//! duplicate of every worker's listening socket, so a worker that dies (a panic) is
//! replaced on the same socket without losing its backlog, while the others keep
//! serving. It must never serve requests itself.

#[doc(hidden)]
pub mod conn;
#[doc(hidden)]
pub mod listener;
#[doc(hidden)]
pub mod shutdown;
#[doc(hidden)]
pub mod tls;
#[doc(hidden)]
pub mod worker;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::{watch, Notify};

use crate::http::activity::ConnActivity;
use crate::http::ResponseBody;
use crate::obs::stats::Stats;
use shutdown::{advance, phase_channel, Phase};

/// How the server listens and how long it waits: built once at start.
#[derive(Clone)]
pub struct ServerSettings {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Worker threads (each with its own listener).
    pub workers: usize,
    /// The listen backlog of each worker's socket.
    pub backlog: i32,
    /// For the whole process; split evenly between workers.
    pub max_connections: u64,
    /// Longest time for a request head, from its first byte.
    pub header_read_timeout: Duration,
    /// Longest idle time between requests on a connection.
    pub keep_alive_timeout: Duration,
    /// How long responses may finish after a shutdown begins.
    pub shutdown_timeout: Duration,
    /// How long readiness fails before the listeners close (`SHUTDOWN_DELAY`).
    pub shutdown_delay: Duration,
    /// Header fields per HTTP/1 request.
    pub max_headers: usize,
    /// Bytes of an HTTP/1 head and of an HTTP/2 header list.
    pub max_header_bytes: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// Streams an HTTP/2 client may open and reset before they are served.
    pub h2_max_pending_resets: usize,
    /// Streams the server may reset for a client's errors on one HTTP/2 connection.
    pub h2_max_local_error_resets: usize,
    /// `Some`: every connection is HTTPS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// One request's connection, as a [`Service`] sees it.
pub struct ConnInfo {
    /// The connection's in-flight count and timers.
    pub activity: Arc<ConnActivity>,
    /// The worker serving it.
    pub worker: usize,
    /// The client's address.
    pub peer: IpAddr,
}

/// What the server serves: one call per request, and one background task per worker.
pub trait Service: Send + Sync + 'static {
    /// Answers one request. The future must not block the worker.
    fn call(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + use<Self>;

    /// Runs on worker `worker` for as long as it serves (aborted when it stops).
    fn worker_task(&self, worker: usize) -> impl Future<Output = ()> + Send + use<Self>;
}

/// What the server tells the service built on it: the shutdown phase, the workers
/// replaced after a panic, and the per-worker figures the connections count into.
pub struct ServerStatus {
    /// Running, draining or past the shutdown deadline.
    pub phase: watch::Receiver<Phase>,
    /// Every worker's figures.
    pub stats: Arc<Stats>,
    /// When the server started.
    pub started: Instant,
    /// Workers replaced after a panic.
    restarts: AtomicU64,
    workers: usize,
}

impl ServerStatus {
    /// How many workers were replaced after a panic.
    pub fn worker_restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// How many workers serve (resolved once at start).
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// True until a shutdown begins.
    pub fn is_running(&self) -> bool {
        *self.phase.borrow() == Phase::Running
    }
}

pub(crate) enum Msg {
    Exited(worker::Exit),
    Shutdown,
}

static WORKER_START_HOOK: OnceLock<fn()> = OnceLock::new();

/// Sets a function every worker thread calls when it starts (for instrumentation such
/// as allocation counting in tests). Only the first call takes effect.
#[doc(hidden)]
pub fn set_worker_start_hook(hook: fn()) {
    let _ = WORKER_START_HOOK.set(hook);
}

fn worker_start_hook() -> Option<fn()> {
    WORKER_START_HOOK.get().copied()
}

/// Asks a server to stop, as [`ServerHandle::shutdown`] does (again: drain at once).
pub struct ShutdownTrigger(mpsc::Sender<Msg>);

impl ShutdownTrigger {
    /// Sends the request (ignored once the server has stopped).
    pub fn fire(&self) {
        let _ = self.0.send(Msg::Shutdown);
    }
}

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    status: Arc<ServerStatus>,
    tx: mpsc::Sender<Msg>,
    supervisor: Option<std::thread::JoinHandle<()>>,
    crash: Vec<Arc<Notify>>,
}

/// Binds the listeners, builds the service with `build` (given the server's status)
/// and starts the workers. Returns once every worker is accepting (connections made
/// before that wait in the backlog).
pub fn start<S: Service>(
    settings: ServerSettings,
    build: impl FnOnce(Arc<ServerStatus>) -> Result<S, String>,
) -> std::io::Result<ServerHandle> {
    let workers = settings.workers;
    let listeners = listener::bind_all(settings.addr, workers, settings.backlog)?;
    let addr = listeners[0].local_addr()?;
    let (phase_tx, phase_rx) = phase_channel();
    let status = Arc::new(ServerStatus {
        phase: phase_rx,
        stats: Arc::new(Stats::new(workers)),
        started: Instant::now(),
        restarts: AtomicU64::new(0),
        workers,
    });
    let service = build(status.clone())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let shared = Arc::new(worker::Shared {
        service,
        builders: conn::builders(&settings),
        settings,
        status: status.clone(),
    });
    let (tx, rx) = mpsc::channel();
    let crash: Vec<Arc<Notify>> = (0..workers).map(|_| Arc::new(Notify::new())).collect();
    for (id, l) in listeners.iter().enumerate() {
        worker::spawn(
            id,
            l.try_clone()?,
            shared.clone(),
            crash[id].clone(),
            tx.clone(),
        )?;
    }
    let sup = Supervisor {
        shared,
        phase: phase_tx,
        listeners,
        crash: crash.clone(),
        tx: tx.clone(),
    };
    let supervisor = std::thread::Builder::new()
        .name("agentd-supervisor".into())
        .spawn(move || sup.run(rx, workers))?;
    Ok(ServerHandle {
        addr,
        status,
        tx,
        supervisor: Some(supervisor),
        crash,
    })
}

impl ServerHandle {
    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Begins a graceful shutdown: readiness fails, listeners close, connections are
    /// told to close, responses run to `done` until `SHUTDOWN_TIMEOUT`.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Msg::Shutdown);
    }

    /// What asks this server to stop from another thread (a second signal).
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger(self.tx.clone())
    }

    /// Waits until every worker has stopped.
    pub fn wait(mut self) {
        if let Some(s) = self.supervisor.take() {
            let _ = s.join();
        }
    }

    /// True while the server accepts new work.
    pub fn is_ready(&self) -> bool {
        self.status.is_running()
    }

    /// How many workers serve (resolved once at start).
    pub fn workers(&self) -> usize {
        self.status.workers()
    }

    /// How many workers were replaced after a panic.
    pub fn worker_restarts(&self) -> u64 {
        self.status.worker_restarts()
    }

    /// Makes worker `id` panic (to exercise the supervisor).
    #[doc(hidden)]
    pub fn crash_worker(&self, id: usize) {
        if let Some(n) = self.crash.get(id) {
            n.notify_one();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.supervisor.is_some() {
            self.shutdown();
        }
    }
}

struct Supervisor<S: Service> {
    shared: Arc<worker::Shared<S>>,
    phase: watch::Sender<Phase>,
    listeners: Vec<std::net::TcpListener>,
    crash: Vec<Arc<Notify>>,
    tx: mpsc::Sender<Msg>,
}

impl<S: Service> Supervisor<S> {
    fn run(mut self, rx: mpsc::Receiver<Msg>, mut alive: usize) {
        let mut deadline: Option<Instant> = None;
        loop {
            let msg = match deadline {
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            };
            match msg {
                Ok(Msg::Shutdown) => {
                    let phase = *self.phase.borrow();
                    let delay = self.shared.settings.shutdown_delay;
                    if phase == Phase::Running && !delay.is_zero() {
                        tracing::info!(
                            delay_ms = delay.as_millis() as u64,
                            "shutting down: not ready, still serving for SHUTDOWN_DELAY"
                        );
                        advance(&self.phase, Phase::Leaving);
                        deadline = Some(Instant::now() + delay);
                    } else if phase < Phase::Draining {
                        // A second request to stop while leaving drains at once.
                        deadline = Some(self.drain());
                    }
                }
                Ok(Msg::Exited(exit)) => {
                    alive -= 1;
                    let running = !self.phase.borrow().is_draining();
                    if exit.panicked && running {
                        tracing::error!(worker = exit.id, "worker panicked; restarting it");
                        if self.respawn(exit.id) {
                            alive += 1;
                        }
                    } else if running {
                        tracing::error!(worker = exit.id, "worker stopped unexpectedly");
                    }
                    if alive == 0 {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if *self.phase.borrow() == Phase::Leaving {
                        deadline = Some(self.drain());
                    } else if *self.phase.borrow() == Phase::Draining {
                        tracing::warn!("shutdown deadline reached: ending responses still running");
                        advance(&self.phase, Phase::Deadline);
                        deadline = Some(
                            Instant::now() + worker::SHUTDOWN_GRACE + Duration::from_millis(500),
                        );
                    } else {
                        tracing::warn!(workers = alive, "workers did not stop in time");
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// Closes the listeners and tells connections to close; returns the deadline for
    /// the responses still running.
    fn drain(&mut self) -> Instant {
        tracing::info!("shutting down: draining connections");
        advance(&self.phase, Phase::Draining);
        self.listeners.clear();
        Instant::now() + self.shared.settings.shutdown_timeout
    }

    fn respawn(&mut self, id: usize) -> bool {
        let listener = match self.listeners.get(id).map(|l| l.try_clone()) {
            Some(Ok(l)) => l,
            _ => return false,
        };
        match worker::spawn(
            id,
            listener,
            self.shared.clone(),
            self.crash[id].clone(),
            self.tx.clone(),
        ) {
            Ok(_) => {
                self.shared.status.restarts.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::error!(worker = id, error = %e, "cannot restart worker");
                false
            }
        }
    }
}
