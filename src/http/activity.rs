//! What one connection is doing: requests in flight, since when it has been idle, and
//! since when a request head has been arriving. The connection driver reads it to
//! enforce the header-read and keep-alive timeouts; requests update it.
//!
//! Updates are relaxed atomics on the connection's own worker: no locks, no allocation.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// What keeps a connection counted (its slot under `MAX_CONNECTIONS`, its place in the
/// worker's drain): held by the connection, and by a WebSocket that outlives it.
pub type ConnHold = std::sync::Arc<dyn std::any::Any + Send + Sync>;

pub struct ConnActivity {
    pub hold: Option<ConnHold>,
    epoch: Instant,
    in_flight: AtomicU32,
    /// Milliseconds since `epoch` when the last request finished.
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` + 1 when bytes of a new head started arriving; 0 = none.
    head_started: AtomicU64,
    /// Set when a response gave up on its reader: the connection must be dropped.
    cut: AtomicBool,
    /// Wakes the connection driver when `cut` is set (an atomic swap per poll, where a
    /// `Notify` would take a lock on every wake of the connection).
    cut_wake: futures_util::task::AtomicWaker,
}

impl std::fmt::Debug for ConnActivity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnActivity")
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Default for ConnActivity {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnActivity {
    /// A new connection counts as awaiting its first head from now.
    pub fn new() -> Self {
        Self::with_hold(None)
    }

    pub fn with_hold(hold: Option<ConnHold>) -> Self {
        ConnActivity {
            hold,
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(1),
            cut: AtomicBool::new(false),
            cut_wake: futures_util::task::AtomicWaker::new(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A request's head arrived.
    pub fn begin_request(&self) {
        self.in_flight.fetch_add(1, Relaxed);
        self.head_started.store(0, Relaxed);
    }

    /// A response finished (or was dropped).
    pub fn end_request(&self) {
        if self.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.idle_since.store(self.now_ms(), Relaxed);
        }
    }

    /// Bytes arrived from the client.
    pub fn on_read(&self) {
        if self.in_flight.load(Relaxed) == 0 && self.head_started.load(Relaxed) == 0 {
            self.head_started.store(self.now_ms() + 1, Relaxed);
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Asks the connection driver to drop the connection now. A response that gave up
    /// on a client which stopped reading does this: the connection cannot flush, so
    /// neither HTTP/1 nor HTTP/2 would ever poll the response again to learn it ended.
    pub fn cut(&self) {
        self.cut.store(true, Relaxed);
        self.cut_wake.wake();
    }

    /// Ready once [`cut`](Self::cut) was called.
    pub fn poll_cut(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.cut.load(Relaxed) {
            return std::task::Poll::Ready(());
        }
        self.cut_wake.register(cx.waker());
        // A cut between the load and the registration found no waker to wake.
        if self.cut.load(Relaxed) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// What the connection driver should do now, and when to look again.
    pub fn check(&self, header_timeout: Duration, keep_alive: Duration) -> Verdict {
        if self.cut.load(Relaxed) {
            return Verdict::Cut;
        }
        let now = self.now_ms();
        let (ht, ka) = (
            header_timeout.as_millis() as u64,
            keep_alive.as_millis() as u64,
        );
        if self.in_flight() > 0 {
            return Verdict::Wait(ht.min(ka));
        }
        match self.head_started.load(Relaxed) {
            0 => {
                let idle = now.saturating_sub(self.idle_since.load(Relaxed));
                if idle >= ka {
                    Verdict::IdleTimeout
                } else {
                    // A slow head may start at any moment: look again within `ht`.
                    Verdict::Wait((ka - idle).min(ht))
                }
            }
            started => {
                let waited = now.saturating_sub(started - 1);
                if waited >= ht {
                    Verdict::HeaderTimeout
                } else {
                    Verdict::Wait(ht - waited)
                }
            }
        }
    }
}

impl crate::protocol::queue::SlowReaderHook for ConnActivity {
    fn slow_reader_cut(&self) {
        self.cut();
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do; look again after this many milliseconds.
    Wait(u64),
    /// Idle past the keep-alive timeout: close gracefully.
    IdleTimeout,
    /// A head took too long: drop the connection.
    HeaderTimeout,
    /// A response gave up on its reader: drop the connection.
    Cut,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_connection_is_dropped_whatever_else_it_does() {
        let a = ConnActivity::new();
        a.begin_request();
        a.cut();
        let (ht, ka) = (Duration::from_secs(10), Duration::from_secs(60));
        assert_eq!(a.check(ht, ka), Verdict::Cut);
    }

    #[test]
    fn verdicts() {
        let a = ConnActivity::new();
        let (ht, ka) = (Duration::from_millis(0), Duration::from_secs(60));
        assert_eq!(a.check(ht, ka), Verdict::HeaderTimeout, "no head yet");
        a.begin_request();
        assert!(matches!(a.check(ht, ka), Verdict::Wait(_)));
        a.end_request();
        assert!(matches!(
            a.check(Duration::from_secs(1), ka),
            Verdict::Wait(_)
        ));
        assert_eq!(
            a.check(Duration::from_secs(1), Duration::ZERO),
            Verdict::IdleTimeout
        );
        a.on_read();
        assert_eq!(a.check(ht, ka), Verdict::HeaderTimeout);
    }
}
