//! The response body: an [`http_body::Body`] that plays a list of [`Step`]s (sleep, write a
//! frame, reset the connection, stall, abort), yielding between frames so each one is
//! flushed on its own, and keeping the in-flight / cancelled / completed counters.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::server::{ConnCtx, Shared};
use crate::sse::Step;

/// A scripted response body.
pub(crate) struct ScriptBody {
    steps: VecDeque<Step>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Return `Pending` once (after waking ourselves) before the next frame, so that the
    /// server flushes the previous one on its own.
    yield_next: bool,
    /// Exact length, for bodies that are one plain frame.
    exact: Option<u64>,
    conn: Option<Arc<ConnCtx>>,
    /// Counted in `in_flight` / `cancelled` / `completed` when set.
    stats: Option<Arc<Shared>>,
    done: bool,
}

impl ScriptBody {
    /// A body of fixed bytes (sent with `content-length`), not counted in the stream stats.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> ScriptBody {
        let bytes = bytes.into();
        let exact = Some(bytes.len() as u64);
        let mut steps = VecDeque::new();
        steps.push_back(Step::Data(bytes));
        ScriptBody {
            steps,
            sleep: None,
            yield_next: false,
            exact,
            conn: None,
            stats: None,
            done: false,
        }
    }

    /// A scripted body, counted in the stream stats.
    pub(crate) fn script(steps: VecDeque<Step>, conn: Arc<ConnCtx>, stats: Arc<Shared>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        ScriptBody {
            steps,
            sleep: None,
            yield_next: false,
            exact: None,
            conn: Some(conn),
            stats: Some(stats),
            done: false,
        }
    }

    /// Announces an exact length (`content-length`), even if the script then aborts.
    pub(crate) fn with_exact(mut self, len: u64) -> Self {
        self.exact = Some(len);
        self
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            if let Some(s) = &self.stats {
                s.completed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for ScriptBody {
    fn drop(&mut self) {
        if let Some(s) = &self.stats {
            s.in_flight.fetch_sub(1, Ordering::Relaxed);
            if !self.done {
                s.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Body for ScriptBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(sleep) = &mut this.sleep {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
            }
            if this.yield_next {
                this.yield_next = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match this.steps.pop_front() {
                None => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Some(Step::Sleep(d)) => this.sleep = Some(Box::pin(tokio::time::sleep(d))),
                Some(Step::Data(bytes)) => {
                    this.yield_next = !this.steps.is_empty();
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Some(Step::Reset) => {
                    // Deliberate: not a cancellation. The connection task drops us.
                    this.finish();
                    if let Some(conn) = &this.conn {
                        conn.reset.notify_one();
                    }
                    this.steps.push_front(Step::Stall);
                    return Poll::Pending;
                }
                Some(Step::Stall) => {
                    // Never woken again; the connection goes away when the client does.
                    this.steps.push_front(Step::Stall);
                    return Poll::Pending;
                }
                Some(Step::Abort) => {
                    this.finish();
                    return Poll::Ready(Some(Err(io::Error::other("fake-llm: body aborted"))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.steps.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
