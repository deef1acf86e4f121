//! The concurrency cap of one backend (for LLM providers, `LLM_CONCURRENT_REQUESTS`): at most `limit`
//! upstream requests in flight for the whole process (every worker shares one set of
//! slots, as the guide's single Node process shares its `maxSockets`), and a bounded
//! wait for a slot: at most `queue_max` waiters (`LLM_QUEUE_MAX`), none longer than
//! `queue_timeout` (`LLM_QUEUE_TIMEOUT`). Past either the caller hears "saturated" at
//! once and moves on to the next provider.
//!
//! A free slot costs two atomic operations and no allocation. It never waits past its
//! timeout or the caller's deadline, never queues more than `queue_max`, and never
//! does I/O.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::obs::stats::Histogram;

/// Why no slot was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot busy and `queue_max` requests already waiting.
    QueueFull,
    /// Waited `queue_timeout` (or up to the request's deadline) without a slot.
    WaitedTooLong,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::QueueFull => "queue_full",
            Refusal::WaitedTooLong => "queue_timeout",
        }
    }
}

/// The limits of one provider's slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotLimits {
    pub limit: usize,
    pub queue_max: usize,
    pub queue_timeout: Duration,
}

/// One provider's slots, shared by every worker.
#[derive(Debug)]
pub struct Slots {
    semaphore: Arc<Semaphore>,
    limits: SlotLimits,
    waiters: AtomicUsize,
    /// How long each slot was waited for (zero when one was free).
    pub wait: Histogram,
    /// Refusals by [`Refusal`] (queue full, waited too long).
    refused: [AtomicUsize; 2],
}

/// A slot held; given back when dropped.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

/// A place among the waiters, given back when dropped (also when the waiting request
/// is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Slots {
    pub fn new(limits: SlotLimits) -> Slots {
        let limit = limits.limit.clamp(1, Semaphore::MAX_PERMITS);
        Slots {
            semaphore: Arc::new(Semaphore::new(limit)),
            limits: SlotLimits { limit, ..limits },
            waiters: AtomicUsize::new(0),
            wait: Histogram::default(),
            refused: [AtomicUsize::new(0), AtomicUsize::new(0)],
        }
    }

    pub fn limits(&self) -> SlotLimits {
        self.limits
    }

    /// Slots held now, by every worker.
    pub fn in_use(&self) -> usize {
        self.limits
            .limit
            .saturating_sub(self.semaphore.available_permits())
    }

    /// Requests waiting for a slot now.
    pub fn waiters(&self) -> usize {
        self.waiters.load(Relaxed)
    }

    /// Requests refused a slot, for `why`.
    pub fn refused(&self, why: Refusal) -> usize {
        self.refused[why as usize].load(Relaxed)
    }

    /// A slot: at once when one is free, else after a wait bounded by `queue_timeout`
    /// and `deadline`, or a refusal.
    pub async fn acquire(&self, deadline: Instant) -> Result<Slot, Refusal> {
        // FIFO: a free permit is never taken ahead of a waiter (tokio hands released
        // permits to waiters first).
        if let Ok(p) = self.semaphore.clone().try_acquire_owned() {
            self.wait.record(Duration::ZERO);
            return Ok(Slot(p));
        }
        let queue_max = self.limits.queue_max;
        if self
            .waiters
            .fetch_update(Relaxed, Relaxed, |w| (w < queue_max).then_some(w + 1))
            .is_err()
        {
            return Err(self.refuse(Refusal::QueueFull));
        }
        let _waiting = Waiting(&self.waiters);
        let started = Instant::now();
        let until = deadline.min(started + self.limits.queue_timeout);
        let got = tokio::time::timeout_at(until, self.semaphore.clone().acquire_owned()).await;
        self.wait.record(started.elapsed());
        match got {
            Ok(Ok(p)) => Ok(Slot(p)),
            _ => Err(self.refuse(Refusal::WaitedTooLong)),
        }
    }

    fn refuse(&self, why: Refusal) -> Refusal {
        self.refused[why as usize].fetch_add(1, Relaxed);
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(limit: usize, queue_max: usize, queue_timeout_ms: u64) -> Arc<Slots> {
        Arc::new(Slots::new(SlotLimits {
            limit,
            queue_max,
            queue_timeout: Duration::from_millis(queue_timeout_ms),
        }))
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn free_slots_are_given_at_once_and_counted() {
        let s = slots(2, 0, 0);
        let a = s.acquire(far()).await.unwrap();
        let _b = s.acquire(far()).await.unwrap();
        assert_eq!(s.in_use(), 2);
        assert_eq!(s.acquire(far()).await.unwrap_err(), Refusal::QueueFull);
        drop(a);
        assert_eq!(s.in_use(), 1);
        assert!(s.acquire(far()).await.is_ok());
        assert_eq!(s.refused(Refusal::QueueFull), 1);
    }

    #[tokio::test]
    async fn waiters_are_bounded_and_wait_no_longer_than_the_timeout() {
        let s = slots(1, 2, 200);
        let held = s.acquire(far()).await.unwrap();
        let w1 = tokio::spawn({
            let s = s.clone();
            // Keeps the slot it gets, so the second waiter runs out of time.
            async move { s.acquire(far()).await }
        });
        let w2 = tokio::spawn({
            let s = s.clone();
            async move {
                let t = Instant::now();
                (s.acquire(far()).await.map(|_| ()), t.elapsed())
            }
        });
        while s.waiters() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            s.acquire(far()).await.unwrap_err(),
            Refusal::QueueFull,
            "a third waiter is refused at once"
        );
        drop(held);
        let _second_holder = w1.await.unwrap().expect("the first waiter gets the slot");
        let (r, waited) = w2.await.unwrap();
        assert_eq!(r, Err(Refusal::WaitedTooLong));
        assert!(
            waited >= Duration::from_millis(190) && waited < Duration::from_millis(400),
            "{waited:?}"
        );
        assert_eq!(s.waiters(), 0);
        assert_eq!(s.refused(Refusal::WaitedTooLong), 1);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_gives_its_place_back() {
        let s = slots(1, 1, 10_000);
        let _held = s.acquire(far()).await.unwrap();
        let w = tokio::spawn({
            let s = s.clone();
            async move { s.acquire(far()).await.map(|_| ()) }
        });
        while s.waiters() < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        w.abort();
        let _ = w.await;
        assert_eq!(s.waiters(), 0);
    }

    #[tokio::test]
    async fn the_deadline_cuts_the_wait_short() {
        let s = slots(1, 1, 10_000);
        let _held = s.acquire(far()).await.unwrap();
        let t = Instant::now();
        let r = s.acquire(Instant::now() + Duration::from_millis(50)).await;
        assert_eq!(r.unwrap_err(), Refusal::WaitedTooLong);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
