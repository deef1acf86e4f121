//! A worker: one OS thread running a current-thread tokio runtime that accepts on its
//! own SO_REUSEPORT listener and serves every connection it accepts.
//!
//! Connections are capped per worker (accepting pauses at the cap, leaving clients in
//! the backlog); accept errors such as running out of file descriptors back off
//! instead of spinning. A worker never blocks its thread and never shares a lock.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::task::TaskTracker;

use super::shutdown::Phase;
use super::{conn, ServerSettings, ServerStatus, Service};

/// What every worker of one server shares.
pub(crate) struct Shared<S> {
    pub service: S,
    pub settings: ServerSettings,
    pub builders: conn::Builders,
    pub status: Arc<ServerStatus>,
}

/// How long connections may linger after the shutdown deadline before the worker
/// stops regardless.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Sent when a worker thread ends (normally or by a panic).
pub(crate) struct Exit {
    pub id: usize,
    pub panicked: bool,
}

struct ExitGuard {
    id: usize,
    tx: mpsc::Sender<super::Msg>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(super::Msg::Exited(Exit {
            id: self.id,
            panicked: std::thread::panicking(),
        }));
    }
}

/// Starts worker `id` on `listener`.
pub(crate) fn spawn<S: Service>(
    id: usize,
    listener: std::net::TcpListener,
    shared: Arc<Shared<S>>,
    crash: Arc<Notify>,
    exits: mpsc::Sender<super::Msg>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("agentd-worker-{id}"))
        .spawn(move || {
            let _guard = ExitGuard { id, tx: exits };
            if let Some(hook) = super::worker_start_hook() {
                hook();
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(worker = id, error = %e, "cannot build the worker runtime");
                    return;
                }
            };
            rt.block_on(serve(id, listener, shared, crash));
        })
}

async fn serve<S: Service>(
    id: usize,
    listener: std::net::TcpListener,
    shared: Arc<Shared<S>>,
    crash: Arc<Notify>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(worker = id, error = %e, "cannot use the listener");
            return;
        }
    };
    let background = tokio::spawn(shared.service.worker_task(id));
    let tracker = TaskTracker::new();
    let workers = shared.settings.workers as u64;
    let per_worker = shared.settings.max_connections.div_ceil(workers).max(1) as usize;
    let permits = Arc::new(Semaphore::new(per_worker));
    let mut phase = shared.status.phase.clone();
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = phase.wait_for(|p| p.is_draining()) => break,
            _ = crash.notified() => panic!("worker {id}: injected crash"),
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = phase.wait_for(|p| p.is_draining()) => break,
            _ = crash.notified() => panic!("worker {id}: injected crash"),
        };
        match accepted {
            Ok((stream, _peer)) => {
                backoff = Duration::from_millis(5);
                let _ = stream.set_nodelay(true);
                let hold: crate::http::activity::ConnHold = Arc::new((permit, tracker.token()));
                tracker.spawn(conn::drive(stream, shared.clone(), id, hold));
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS and friends: wait for resources to come back.
                tracing::warn!(worker = id, error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    drop(listener);
    background.abort();
    tracker.close();
    let mut phase = shared.status.phase.clone();
    tokio::select! {
        _ = tracker.wait() => {}
        _ = async {
            let _ = phase.wait_for(|p| *p == Phase::Deadline).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(worker = id, left = tracker.len(), "connections still open after the shutdown deadline");
        }
    }
}
