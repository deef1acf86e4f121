//! The server's lifecycle phase, broadcast to every worker, connection and response.
//!
//! `Running` → `Draining` (readiness fails, listeners close, connections are told to
//! close, responses run on) → `Deadline` (responses still running get error + done).
//! The phase only moves forward.

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    Draining,
    Deadline,
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
