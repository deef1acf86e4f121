//! The server: a supervisor thread, one worker per core, and the handle to stop them.
//!
//! The supervisor keeps a duplicate of every worker's listening socket, so a worker that
//! dies (a panic) is replaced on the same socket without losing its backlog, while the
//! others keep serving. It must never serve requests itself.

pub mod conn;
pub mod listener;
pub mod shutdown;
pub mod tls;
pub mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::agent::Agent;
use crate::config::Config;
use crate::obs::stats::Stats;
use shutdown::{advance, phase_channel, Phase};

/// What every request handler shares.
pub struct App {
    pub config: Config,
    pub agent: Arc<dyn Agent>,
    pub stats: Arc<Stats>,
    pub phase: watch::Receiver<Phase>,
    pub started: Instant,
    pub request_logging: bool,
    /// `AGENT_ID`, shared by every synthesized session.
    pub agent_id: Arc<str>,
    pub cors: crate::edge::cors::Cors,
    pub shedder: crate::edge::shed::Shedder,
    /// `None` when `RATE_LIMIT_MAX` is 0.
    pub rate: Option<crate::edge::rate::RateLimiter>,
    pub auth: crate::edge::auth::Authenticator,
    /// Workers replaced after a panic.
    pub restarts: AtomicU64,
    /// WebSockets open.
    pub ws_open: AtomicU64,
    /// `done` ids of recently finished `/stream` answers (`STREAM_DONE_MEMORY`).
    pub finished_streams: crate::protocol::finished::FinishedStreams,
    /// `Some` when `TLS_CERT` / `TLS_KEY` are set: every connection is HTTPS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
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

fn authenticator(c: &Config) -> Result<crate::edge::auth::Authenticator, String> {
    use crate::edge::auth::{AuthConfig, Authenticator};
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect()
    };
    let public_key = match c.jwt_public_key.as_deref().filter(|k| !k.is_empty()) {
        Some(k) if k.trim_start().starts_with("-----BEGIN") => Some(k.to_owned()),
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "JWT_PUBLIC_KEY is neither a PEM key nor a readable file".to_owned()
            }
            _ => format!("JWT_PUBLIC_KEY names a file that cannot be read: {e}"),
        })?),
        None => None,
    };
    Authenticator::new(AuthConfig {
        jwt_secret: c.jwt_secret.clone().filter(|s| !s.is_empty()),
        jwt_public_key: public_key,
        leeway: Duration::from_millis(c.jwt_leeway),
        issuer: c.jwt_issuer.clone(),
        audience: c.jwt_audience.clone(),
        required: c.auth_required,
        agent_roles: list(&c.agent_roles),
        api_keys: c.api_key_secret.as_deref().map(list).unwrap_or_default(),
    })
}

fn rate_limiter(c: &Config) -> Result<Option<crate::edge::rate::RateLimiter>, String> {
    use crate::edge::rate::{RateLimitConfig, RateLimiter};
    if c.rate_limit_max == 0 {
        return Ok(None);
    }
    let mut rc = RateLimitConfig::new(c.rate_limit_max, Duration::from_millis(c.rate_limit_window));
    rc.max_keys = c.rate_limit_max_keys as usize;
    rc.redis_url = c.redis_url.clone().filter(|u| !u.is_empty());
    rc.redis_failure = c.rate_limit_redis_failure;
    rc.redis_timeout = Duration::from_millis(c.rate_limit_redis_timeout);
    RateLimiter::new(rc).map(Some).map_err(|e| {
        let var = if e.contains("Redis") {
            "REDIS_URL"
        } else {
            "RATE_LIMIT_MAX/RATE_LIMIT_WINDOW"
        };
        format!("{var}: {e}")
    })
}

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    app: Arc<App>,
    tx: mpsc::Sender<Msg>,
    supervisor: Option<std::thread::JoinHandle<()>>,
    crash: Vec<Arc<Notify>>,
}

/// Starts servers.
pub struct Server;

impl Server {
    /// Binds the listeners and starts the workers. Returns once every worker is
    /// accepting (connections made before that wait in the backlog).
    pub fn start(mut config: Config, agent: Arc<dyn Agent>) -> std::io::Result<ServerHandle> {
        let workers = config.worker_count();
        // Resolved once: `available_parallelism` reads cgroup files, which no worker
        // may do on a request (`/health`, `/stats` report the count).
        config.workers = Some(workers as u16);
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let rate = rate_limiter(&config).map_err(invalid)?;
        let auth = authenticator(&config).map_err(invalid)?;
        let tls = tls::acceptor(&config).map_err(invalid)?;
        let listeners = listener::bind_all(config.listen_addr(), workers, config.listen_backlog)?;
        let addr = listeners[0].local_addr()?;
        let (phase_tx, phase_rx) = phase_channel();
        let app = Arc::new(App {
            request_logging: config.request_logging(),
            agent_id: Arc::from(config.agent_id.as_str()),
            cors: crate::edge::cors::Cors::new(&config.cors_origins),
            rate,
            auth,
            restarts: AtomicU64::new(0),
            ws_open: AtomicU64::new(0),
            finished_streams: crate::protocol::finished::FinishedStreams::new(
                config.stream_done_memory as usize,
            ),
            tls,
            shedder: crate::edge::shed::Shedder::new(
                crate::edge::shed::ShedConfig {
                    max_delay: Duration::from_millis(config.max_event_loop_delay),
                    max_rss: config.max_rss_bytes,
                    max_in_flight: config.max_in_flight,
                },
                workers,
            ),
            config,
            agent,
            stats: Arc::new(Stats::new(workers)),
            phase: phase_rx,
            started: Instant::now(),
        });
        let (tx, rx) = mpsc::channel();
        let crash: Vec<Arc<Notify>> = (0..workers).map(|_| Arc::new(Notify::new())).collect();
        for (id, l) in listeners.iter().enumerate() {
            worker::spawn(
                id,
                l.try_clone()?,
                app.clone(),
                crash[id].clone(),
                tx.clone(),
            )?;
        }
        let sup = Supervisor {
            app: app.clone(),
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
            app,
            tx,
            supervisor: Some(supervisor),
            crash,
        })
    }
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

    /// Waits until every worker has stopped.
    pub fn wait(mut self) {
        if let Some(s) = self.supervisor.take() {
            let _ = s.join();
        }
    }

    /// True while the server accepts new work.
    pub fn is_ready(&self) -> bool {
        *self.app.phase.borrow() == Phase::Running
    }

    /// How many workers serve (resolved once at start).
    pub fn workers(&self) -> usize {
        self.app.config.worker_count()
    }

    /// How many workers were replaced after a panic.
    pub fn worker_restarts(&self) -> u64 {
        self.app.restarts.load(Ordering::Relaxed)
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

struct Supervisor {
    app: Arc<App>,
    phase: watch::Sender<Phase>,
    listeners: Vec<std::net::TcpListener>,
    crash: Vec<Arc<Notify>>,
    tx: mpsc::Sender<Msg>,
}

impl Supervisor {
    fn run(mut self, rx: mpsc::Receiver<Msg>, mut alive: usize) {
        let mut deadline: Option<Instant> = None;
        loop {
            let msg = match deadline {
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            };
            match msg {
                Ok(Msg::Shutdown) => {
                    if deadline.is_none() {
                        tracing::info!("shutting down: draining connections");
                        advance(&self.phase, Phase::Draining);
                        self.listeners.clear();
                        deadline = Some(Instant::now() + self.app.config.shutdown_timeout());
                    }
                }
                Ok(Msg::Exited(exit)) => {
                    alive -= 1;
                    let running = *self.phase.borrow() == Phase::Running;
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
                    if *self.phase.borrow() == Phase::Draining {
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

    fn respawn(&mut self, id: usize) -> bool {
        let listener = match self.listeners.get(id).map(|l| l.try_clone()) {
            Some(Ok(l)) => l,
            _ => return false,
        };
        match worker::spawn(
            id,
            listener,
            self.app.clone(),
            self.crash[id].clone(),
            self.tx.clone(),
        ) {
            Ok(_) => {
                self.app.restarts.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::error!(worker = id, error = %e, "cannot restart worker");
                false
            }
        }
    }
}
