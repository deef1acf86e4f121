//! The server's lifecycle phase, broadcast to every worker, connection and response.
//!
//! `Running` → `Leaving` (only with `SHUTDOWN_DELAY`: readiness fails while everything
//! else goes on, so that a load balancer stops sending before the listeners close) →
//! `Draining` (listeners close, connections are told to close, responses run on) →
//! `Deadline` (responses still running get error + done). The phase only moves forward.

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving, ready.
    Running,
    /// Serving, not ready (`SHUTDOWN_DELAY`).
    Leaving,
    /// Listeners closed, connections closing, responses running on.
    Draining,
    /// Responses still running are ended.
    Deadline,
}

impl Phase {
    /// True once the listeners close and connections are told to close.
    pub fn is_draining(self) -> bool {
        self >= Phase::Draining
    }
}

/// Creates the phase channel.
pub fn phase_channel() -> (watch::Sender<Phase>, watch::Receiver<Phase>) {
    watch::channel(Phase::Running)
}

/// Moves the phase forward to `to` (never back).
pub fn advance(tx: &watch::Sender<Phase>, to: Phase) {
    tx.send_if_modified(|p| {
        if *p < to {
            *p = to;
            true
        } else {
            false
        }
    });
}
