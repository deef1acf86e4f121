//! The per-response event queue between an agent and the client's connection.
//!
//! The producer (a [`ResponseHandler`](super::ResponseHandler)) encodes events straight
//! into one shared buffer; the consumer (the HTTP body) takes everything that is ready
//! in one piece, so events emitted together leave in one write. The queue is bounded in
//! bytes: a producer waits while the buffer holds `capacity` bytes or more, and if the
//! reader stays that far behind past the slow-reader deadline the queue is aborted.
//!
//! A resumable queue also keeps a [`Journal`] of every event: when its reader goes
//! away it is *detached* rather than closed (the producer goes on, its events kept only
//! in the journal), and a new reader can attach and get everything after the last
//! event it saw, then the live events.
//! It knows nothing about HTTP and must never hold its lock across an await.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ulid::Ulid;

use super::journal::{Journal, ReplayError};

/// Why the producer can no longer send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The consumer went away (the client disconnected or the response was dropped).
    Disconnected,
    /// The reader stayed behind past the slow-reader deadline.
    SlowReader,
}

/// How a stream ended, as the request log reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ending {
    /// `done` was sent after a successful answer.
    #[default]
    Done,
    /// `done` was sent after an `atomic.error` with this code.
    Error(i64),
    /// The agent overran `AGENT_TIMEOUT` (error + done sent).
    TimedOut,
    /// The shutdown deadline cut the agent (error + done sent).
    Shutdown,
    /// The reader stayed behind past the slow-reader deadline and was cut off.
    SlowReader,
    /// The client left before the end.
    ClientGone,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Done => "done",
            Ending::Error(_) => "error",
            Ending::TimedOut => "timeout",
            Ending::Shutdown => "shutdown",
            Ending::SlowReader => "slow_reader",
            Ending::ClientGone => "client_gone",
        }
    }

    /// The `atomic.error` code sent, if any.
    pub fn error_code(self) -> Option<i64> {
        match self {
            Ending::Error(c) => Some(c),
            Ending::TimedOut => Some(504),
            Ending::Shutdown => Some(503),
            _ => None,
        }
    }
}

/// What a finished (or abandoned) stream sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    pub events: u64,
    pub bytes: u64,
    pub ending: Ending,
}

struct State {
    buf: BytesMut,
    /// How the producer ended the stream (meaningful once `finished`).
    ending: Ending,
    /// The producer wrote its last event.
    finished: bool,
    closed: Option<Closed>,
    consumer: Option<Waker>,
    producer: Option<Waker>,
    /// Events pushed and bytes taken (for metrics).
    events: u64,
    bytes: u64,
    /// Told once if the queue is aborted because its reader stayed behind.
    on_slow_reader: Option<Arc<dyn SlowReaderHook>>,
    /// Resumable queues only.
    journal: Option<Journal>,
    /// A resumable queue whose reader left: events go to the journal only.
    detached: bool,
    /// Which reader is current (a resumed reader replaces the one before it).
    reader: u64,
    /// Woken when the queue is detached or attached again.
    watcher: Option<Waker>,
    /// Woken on every event (a resumable queue's copy to a shared store), and when the
    /// producer stops without finishing.
    copier: Option<Waker>,
    /// The producer's end was dropped.
    sink_dropped: bool,
    /// When the producer wrote its last event.
    finished_at: Option<std::time::Instant>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("buffered", &self.buf.len())
            .field("finished", &self.finished)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// Whoever owns the transport under a queue, told when its reader is cut off.
pub trait SlowReaderHook: Send + Sync {
    fn slow_reader_cut(&self);
}

/// Limits of one queue.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    /// Bytes buffered before the producer must wait.
    pub capacity: usize,
    /// How long a producer may wait for space before the reader is cut off.
    pub slow_reader_timeout: Duration,
}

/// The producer's end.
#[derive(Debug)]
pub struct EventSink {
    shared: Arc<Mutex<State>>,
    limits: QueueLimits,
    /// A resumable queue's sink tells its copier when it is dropped; others need not.
    resumable: bool,
}

/// The consumer's end.
#[derive(Debug)]
pub struct EventSource {
    shared: Arc<Mutex<State>>,
    /// Which reader this is (see `State::reader`).
    reader: u64,
}

/// What the consumer sees when it polls.
#[derive(Debug)]
pub enum Next {
    Data(Bytes),
    End,
    Aborted(Closed),
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding this lock cannot leave the state torn (every critical
    // section is a few field writes), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates a queue whose buffer starts with `initial_capacity` bytes.
pub fn event_queue(limits: QueueLimits, initial_capacity: usize) -> (EventSink, EventSource) {
    let shared = Arc::new(Mutex::new(State {
        buf: BytesMut::with_capacity(initial_capacity),
        ending: Ending::Done,
        finished: false,
        closed: None,
        consumer: None,
        producer: None,
        events: 0,
        bytes: 0,
        on_slow_reader: None,
        journal: None,
        detached: false,
        reader: 0,
        watcher: None,
        copier: None,
        sink_dropped: false,
        finished_at: None,
    }));
    (
        EventSink {
            shared: shared.clone(),
            limits,
            resumable: false,
        },
        EventSource { shared, reader: 0 },
    )
}

/// A queue whose events are also kept (up to `journal_limit` bytes) so that a reader
/// that leaves can be replaced ([`Resumable::attach`]).
pub fn resumable_event_queue(
    limits: QueueLimits,
    initial_capacity: usize,
    journal_limit: usize,
) -> (EventSink, EventSource, Resumable) {
    let (mut sink, source) = event_queue(limits, initial_capacity);
    sink.resumable = true;
    lock(&source.shared).journal = Some(Journal::new(journal_limit));
    let resumable = Resumable {
        shared: source.shared.clone(),
    };
    (sink, source, resumable)
}

/// Events taken from a resumable queue's journal in order ([`Resumable::next_batch`]).
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<(Ulid, Bytes)>,
    /// The producer has finished: the last event is the answer's last.
    pub finished: bool,
    /// The producer stopped without finishing (the queue was cut or its producer
    /// dropped): no event will follow.
    pub stopped: bool,
}

/// The handle that lets a new reader take over a resumable queue.
#[derive(Clone, Debug)]
pub struct Resumable {
    shared: Arc<Mutex<State>>,
}

impl Resumable {
    /// A new reader of everything after the event `after` (from the start for
    /// `None`), then the live events. The reader before it, if still there, ends.
    pub fn attach(&self, after: Option<Ulid>) -> Result<EventSource, ReplayError> {
        let (source, wakers) = {
            let mut st = lock(&self.shared);
            let journal = st.journal.as_ref().ok_or(ReplayError::UnknownPosition)?;
            let replay = journal.replay(after)?;
            st.buf = replay;
            st.detached = false;
            st.reader += 1;
            // The reader before, if any, is replaced: its transport's hook goes too.
            let old_hook = st.on_slow_reader.take();
            let wakers = (
                st.consumer.take(),
                st.producer.take(),
                st.watcher.take(),
                old_hook,
            );
            (
                EventSource {
                    shared: self.shared.clone(),
                    reader: st.reader,
                },
                wakers,
            )
        };
        drop(wakers.3);
        for w in [wakers.0, wakers.1, wakers.2].into_iter().flatten() {
            w.wake();
        }
        Ok(source)
    }

    /// When the producer wrote its last event (`None` while it runs).
    pub fn finished_at(&self) -> Option<std::time::Instant> {
        lock(&self.shared).finished_at
    }

    /// Resolves once the queue has had no reader for `grace` (its reader left and
    /// nobody attached again in time). Never resolves while a reader is attached.
    pub async fn abandoned(&self, grace: Duration) {
        loop {
            poll_fn(|cx| {
                let mut st = lock(&self.shared);
                if st.detached {
                    Poll::Ready(())
                } else {
                    st.watcher = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            let attached = poll_fn(|cx| {
                let mut st = lock(&self.shared);
                if st.detached {
                    st.watcher = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            });
            if tokio::time::timeout(grace, attached).await.is_err() {
                return;
            }
        }
    }

    /// The events after `after` (from the start for `None`), waiting until there is
    /// at least one or the producer has finished. With `finished` true, the batch ends
    /// with the last event the producer wrote.
    pub async fn next_batch(&self, after: Option<Ulid>) -> Result<Batch, ReplayError> {
        poll_fn(|cx| {
            let mut st = lock(&self.shared);
            let journal = match st.journal.as_ref() {
                Some(j) => j,
                None => return Poll::Ready(Err(ReplayError::UnknownPosition)),
            };
            let events = match journal.events_after(after) {
                Ok(e) => e,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let stopped = !st.finished && (st.closed.is_some() || st.sink_dropped);
            if events.is_empty() && !st.finished && !stopped {
                st.copier = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(Ok(Batch {
                events,
                finished: st.finished,
                stopped,
            }))
        })
        .await
    }

    /// True when the producer has finished and `id` is its last event (`done`).
    pub fn ended_with(&self, id: Ulid) -> bool {
        let st = lock(&self.shared);
        st.finished && st.journal.as_ref().and_then(Journal::last) == Some(id)
    }

    /// True when the event `id` is one of this queue's kept events.
    pub fn holds(&self, id: Ulid) -> bool {
        lock(&self.shared)
            .journal
            .as_ref()
            .is_some_and(|j| j.contains(id))
    }

    /// Bytes the journal holds.
    pub fn kept_bytes(&self) -> usize {
        lock(&self.shared)
            .journal
            .as_ref()
            .map_or(0, Journal::bytes)
    }
}

impl EventSink {
    /// Waits until the buffer is below capacity. Fails when the consumer is gone, or
    /// when the reader stays behind past the slow-reader deadline (the queue is then
    /// aborted so the connection is cut).
    pub async fn ready(&self) -> Result<(), Closed> {
        let wait = poll_fn(|cx| self.poll_space(cx));
        match self.poll_space_now() {
            Poll::Ready(r) => r,
            Poll::Pending => {
                match tokio::time::timeout(self.limits.slow_reader_timeout, wait).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.abort(Closed::SlowReader);
                        Err(Closed::SlowReader)
                    }
                }
            }
        }
    }

    fn poll_space_now(&self) -> Poll<Result<(), Closed>> {
        let st = lock(&self.shared);
        Self::space(&st, self.limits.capacity)
    }

    fn space(st: &State, capacity: usize) -> Poll<Result<(), Closed>> {
        if let Some(c) = st.closed {
            return Poll::Ready(Err(c));
        }
        if st.detached || st.buf.len() < capacity {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn poll_space(&self, cx: &mut Context<'_>) -> Poll<Result<(), Closed>> {
        let mut st = lock(&self.shared);
        let p = Self::space(&st, self.limits.capacity);
        if p.is_pending() {
            st.producer = Some(cx.waker().clone());
        }
        p
    }

    /// Appends bytes written by `write` and wakes the consumer. `finish` marks the
    /// last write. Does not wait: call [`ready`](Self::ready) first.
    pub fn push(&self, finish: bool, write: impl FnOnce(&mut BytesMut)) -> Result<(), Closed> {
        self.push_event(None, finish, write)
    }

    /// [`push`](Self::push) for one event with id `id`, which a resumable queue's
    /// journal keeps.
    pub fn push_event(
        &self,
        id: Option<Ulid>,
        finish: bool,
        write: impl FnOnce(&mut BytesMut),
    ) -> Result<(), Closed> {
        let waker = {
            let mut st = lock(&self.shared);
            if let Some(c) = st.closed {
                return Err(c);
            }
            let start = st.buf.len();
            write(&mut st.buf);
            let st = &mut *st;
            if let (Some(journal), Some(id)) = (&mut st.journal, id) {
                journal.append(id, &st.buf[start..]);
                if st.detached {
                    st.buf.clear();
                }
            }
            st.events += 1;
            if finish && !st.finished {
                st.finished_at = Some(std::time::Instant::now());
            }
            st.finished |= finish;
            (st.consumer.take(), st.copier.take())
        };
        for w in [waker.0, waker.1].into_iter().flatten() {
            w.wake();
        }
        Ok(())
    }

    /// Cuts the stream off: the consumer ends with an error.
    pub fn abort(&self, why: Closed) {
        let (waker, copier, hook) = {
            let mut st = lock(&self.shared);
            let first = st.closed.is_none();
            st.closed.get_or_insert(why);
            let hook = if first && why == Closed::SlowReader {
                st.on_slow_reader.take()
            } else {
                None
            };
            (st.consumer.take(), st.copier.take(), hook)
        };
        for w in [waker, copier].into_iter().flatten() {
            w.wake();
        }
        if let Some(hook) = hook {
            hook.slow_reader_cut();
        }
    }

    /// Records how the stream ends (for the request log); call before the last push.
    pub fn set_ending(&self, ending: Ending) {
        lock(&self.shared).ending = ending;
    }

    /// True once the consumer is gone or the queue was aborted.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared).closed.is_some()
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        if !self.resumable {
            return;
        }
        let copier = {
            let mut st = lock(&self.shared);
            st.sink_dropped = true;
            st.copier.take()
        };
        if let Some(w) = copier {
            w.wake();
        }
    }
}

impl EventSource {
    /// Takes everything buffered, or reports the end, or registers for a wake-up.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        let (out, waker) = {
            let mut st = lock(&self.shared);
            if let Some(c) = st.closed {
                return Poll::Ready(Next::Aborted(c));
            }
            if st.reader != self.reader {
                // A resumed reader took over.
                return Poll::Ready(Next::Aborted(Closed::Disconnected));
            }
            if !st.buf.is_empty() {
                // The last take hands the whole buffer over (free); earlier ones split
                // it so later events reuse the spare capacity.
                let data = if st.finished {
                    std::mem::take(&mut st.buf).freeze()
                } else {
                    st.buf.split().freeze()
                };
                st.bytes += data.len() as u64;
                (Poll::Ready(Next::Data(data)), st.producer.take())
            } else if st.finished {
                return Poll::Ready(Next::End);
            } else {
                st.consumer = Some(cx.waker().clone());
                return Poll::Pending;
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        out
    }

    /// Sets what runs if the reader is cut off for staying behind: the consumer may
    /// never be polled again (a connection that cannot flush stops reading its body),
    /// so whoever owns the transport must hear of it directly.
    pub fn on_slow_reader(&self, hook: Arc<dyn SlowReaderHook>) {
        lock(&self.shared).on_slow_reader = Some(hook);
    }

    /// Events pushed and bytes taken so far, and how the stream ended (a stream that
    /// did not end is reported as abandoned by its client).
    pub fn summary(&self) -> StreamSummary {
        let st = lock(&self.shared);
        let ending = match st.closed {
            Some(Closed::SlowReader) => Ending::SlowReader,
            _ if st.finished && st.buf.is_empty() => st.ending,
            _ => Ending::ClientGone,
        };
        StreamSummary {
            events: st.events,
            bytes: st.bytes,
            ending,
        }
    }

    /// True when the producer finished and everything was taken.
    pub fn is_end(&self) -> bool {
        let st = lock(&self.shared);
        st.finished && st.buf.is_empty() && st.closed.is_none()
    }
}

impl Drop for EventSource {
    fn drop(&mut self) {
        let wakers = {
            let mut st = lock(&self.shared);
            if st.reader != self.reader {
                return;
            }
            // The hook belongs to this reader's transport (it holds its connection's
            // slot): a kept queue outlives the connection and must not keep it.
            let hook = st.on_slow_reader.take();
            if st.journal.is_some() && st.closed.is_none() {
                // Resumable: the producer goes on, into the journal only.
                st.detached = true;
                st.buf.clear();
            } else {
                st.closed.get_or_insert(Closed::Disconnected);
            }
            (st.producer.take(), st.watcher.take(), hook)
        };
        let (producer, watcher, hook) = wakers;
        // Dropped outside the lock: the hook's last reference may end a connection.
        drop(hook);
        for w in [producer, watcher].into_iter().flatten() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    fn limits(capacity: usize, ms: u64) -> QueueLimits {
        QueueLimits {
            capacity,
            slow_reader_timeout: Duration::from_millis(ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn coalesces_ready_events_into_one_chunk() {
        let (sink, mut source) = event_queue(limits(1024, 1000), 64);
        sink.push(false, |b| b.extend_from_slice(b"a")).unwrap();
        sink.push(true, |b| b.extend_from_slice(b"b")).unwrap();
        let next = poll_fn(|cx| source.poll_next(cx).map(Some)).await.unwrap();
        assert!(matches!(next, Next::Data(ref d) if &d[..] == b"ab"));
        assert!(matches!(
            poll_fn(|cx| source.poll_next(cx)).await,
            Next::End
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_the_producer_wait_then_cuts_a_slow_reader() {
        let (sink, source) = event_queue(limits(4, 500), 8);
        sink.ready().await.unwrap();
        sink.push(false, |b| b.extend_from_slice(b"12345")).unwrap();
        // Over capacity: nobody reads, so after the deadline the reader is cut off.
        let started = tokio::time::Instant::now();
        assert_eq!(sink.ready().await, Err(Closed::SlowReader));
        assert!(started.elapsed() >= Duration::from_millis(500));
        let mut source = source;
        let next = poll_fn(|cx| source.poll_next(cx)).await;
        assert!(matches!(next, Next::Aborted(Closed::SlowReader)));
    }

    #[tokio::test(start_paused = true)]
    async fn reading_frees_space() {
        let (sink, mut source) = event_queue(limits(4, 500), 8);
        sink.push(false, |b| b.extend_from_slice(b"12345")).unwrap();
        let waiting = tokio::spawn(async move { sink.ready().await });
        tokio::task::yield_now().await;
        assert!(matches!(
            poll_fn(|cx| Poll::Ready(source.poll_next(cx))).await,
            Poll::Ready(Next::Data(_))
        ));
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn dropping_the_consumer_disconnects_the_producer() {
        let (sink, source) = event_queue(limits(4, 500), 8);
        drop(source);
        assert_eq!(sink.ready().await, Err(Closed::Disconnected));
        assert_eq!(sink.push(false, |_| {}), Err(Closed::Disconnected));
    }
}
