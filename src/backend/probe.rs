//! The one health-probe loop, for LLM providers and the proxy's upstream agents alike
//! (each says how it is probed by implementing [`Target`]): a thread of its own with its own runtime
//! and client, a first round of probes at once, then one round per interval; every
//! target of a round is probed concurrently, so one hanging target delays no other.
//!
//! Each target's state starts [`Probed::Unknown`]: readiness reports `starting` until
//! a probe answered (see [`super::endpoint::standing`]). The loop stops as soon as its [`ProbeLoop`] handle is dropped
//! (mid-round or mid-sleep), never an interval later. It never touches request
//! handling and never sends anything but the targets' own probes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::client::{self, HttpClient, PoolConfig};

/// What the probes have said about one target so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probed {
    /// No probe has answered yet.
    Unknown,
    Healthy,
    Unhealthy,
}

/// A target's probe state, readable from every worker.
#[derive(Debug)]
pub struct ProbeState(AtomicU8);

impl Default for ProbeState {
    fn default() -> Self {
        ProbeState(AtomicU8::new(Probed::Unknown as u8))
    }
}

impl ProbeState {
    pub fn get(&self) -> Probed {
        match self.0.load(Relaxed) {
            1 => Probed::Healthy,
            2 => Probed::Unhealthy,
            _ => Probed::Unknown,
        }
    }

    /// Records a probe's answer; returns the state before it.
    pub fn set(&self, ok: bool) -> Probed {
        let new = if ok {
            Probed::Healthy
        } else {
            Probed::Unhealthy
        };
        match self.0.swap(new as u8, Relaxed) {
            1 => Probed::Healthy,
            2 => Probed::Unhealthy,
            _ => Probed::Unknown,
        }
    }
}

/// One thing the loop probes.
pub trait Target: Send + Sync + 'static {
    /// One probe within `timeout`: true when the target answered as healthy.
    fn probe<'a>(
        &'a self,
        client: &'a HttpClient,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = bool> + 'a>>;

    /// Where the answer is kept.
    fn probe_state(&self) -> &ProbeState;

    /// Logs a change of state (`was` is what the previous probe said).
    fn log_change(&self, was: Probed, now_ok: bool);
}

/// The running loop: dropping it stops the thread at once.
pub struct ProbeLoop {
    _stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ProbeLoop {
    /// Stops the loop and waits for its thread.
    pub fn stop(self) {
        let ProbeLoop { _stop, thread } = self;
        drop(_stop);
        let _ = thread.join();
    }

    /// True once the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// Starts probing `targets`: a round at once, then one every `interval`, each probe
/// bounded by `timeout`.
pub fn spawn<T: Target>(
    thread_name: &str,
    targets: Vec<Arc<T>>,
    interval: Duration,
    timeout: Duration,
    pool: PoolConfig,
) -> std::io::Result<ProbeLoop> {
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let c = client::build(pool);
                loop {
                    let round = futures_util::future::join_all(
                        targets.iter().map(|t| t.probe(&c, timeout)),
                    );
                    let results = tokio::select! {
                        biased;
                        _ = &mut stop_rx => return,
                        r = round => r,
                    };
                    for (t, ok) in targets.iter().zip(results) {
                        let was = t.probe_state().set(ok);
                        // A healthy first answer is the expected start: not worth a line.
                        let changed = match was {
                            Probed::Unknown | Probed::Healthy => !ok,
                            Probed::Unhealthy => ok,
                        };
                        if changed {
                            t.log_change(was, ok);
                        }
                    }
                    tokio::select! {
                        biased;
                        _ = &mut stop_rx => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                }
            });
        })?;
    Ok(ProbeLoop {
        _stop: stop_tx,
        thread,
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests that mean to block their own thread
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    struct Slow {
        state: ProbeState,
        probes: AtomicUsize,
        delay: Duration,
    }

    impl Target for Slow {
        fn probe<'a>(
            &'a self,
            _: &'a HttpClient,
            _: Duration,
        ) -> Pin<Box<dyn Future<Output = bool> + 'a>> {
            Box::pin(async move {
                self.probes.fetch_add(1, Relaxed);
                tokio::time::sleep(self.delay).await;
                true
            })
        }
        fn probe_state(&self) -> &ProbeState {
            &self.state
        }
        fn log_change(&self, _: Probed, _: bool) {}
    }

    fn pool() -> PoolConfig {
        PoolConfig {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_idle_per_host: 1,
        }
    }

    fn slow(delay_ms: u64) -> Arc<Slow> {
        Arc::new(Slow {
            state: ProbeState::default(),
            probes: AtomicUsize::new(0),
            delay: Duration::from_millis(delay_ms),
        })
    }

    fn wait_for(what: impl Fn() -> bool, within: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < within {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        what()
    }

    #[test]
    fn probes_every_target_at_once_and_at_the_start() {
        let targets: Vec<_> = (0..3).map(|_| slow(300)).collect();
        let started = Instant::now();
        let l = spawn(
            "test-probe-loop",
            targets.clone(),
            Duration::from_secs(3600),
            Duration::from_secs(5),
            pool(),
        )
        .unwrap();
        assert_eq!(targets[0].state.get(), Probed::Unknown);
        assert!(wait_for(
            || targets.iter().all(|t| t.state.get() == Probed::Healthy),
            Duration::from_secs(2)
        ));
        // Three 300 ms probes in series would take 900 ms.
        assert!(
            started.elapsed() < Duration::from_millis(800),
            "{:?}",
            started.elapsed()
        );
        l.stop();
    }

    #[test]
    fn dropping_the_handle_stops_the_thread_at_once() {
        // Mid-sleep: the interval is an hour.
        let t = slow(0);
        let l = spawn(
            "test-probe-loop",
            vec![t.clone()],
            Duration::from_secs(3600),
            Duration::from_secs(1),
            pool(),
        )
        .unwrap();
        assert!(wait_for(
            || t.state.get() == Probed::Healthy,
            Duration::from_secs(2)
        ));
        let started = Instant::now();
        l.stop();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        // Mid-round: the probe takes an hour.
        let t = slow(3_600_000);
        let l = spawn(
            "test-probe-loop",
            vec![t.clone()],
            Duration::from_secs(1),
            Duration::from_secs(1),
            pool(),
        )
        .unwrap();
        assert!(wait_for(
            || t.probes.load(Relaxed) == 1,
            Duration::from_secs(2)
        ));
        let started = Instant::now();
        l.stop();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
}
