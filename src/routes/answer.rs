//! An answer's lifecycle, the same for `/agent`, `/assist`, `/stream` and `/ws`:
//! [`begin`] opens the answer's bounded event queue and its [`ResponseHandler`],
//! [`run_answer`] runs the agent under `AGENT_TIMEOUT` and the shutdown deadline, and
//! `finish` ends the response whatever the agent did.
//!
//! The one-`done` rule lives here: whatever the agent does (returns, fails, panics,
//! overruns `AGENT_TIMEOUT`, or is cut by the shutdown deadline) the answer ends with
//! exactly one `done`, after an `atomic.error` when it did not succeed, unless the
//! client is gone. The routes only frame the events for their transport (an SSE body,
//! WebSocket messages); they must never emit an event themselves or end an answer
//! another way. Nothing here may block the worker.

use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_util::FutureExt;
use http::HeaderValue;
use tokio::task::AbortHandle;

use crate::agent::AgentError;
use crate::protocol::events::Framing;
use crate::protocol::queue::{event_queue, resumable_event_queue, Ending, EventSource, Resumable};
use crate::protocol::{ProtocolError, Query, ResponseHandler, Session};
use crate::routes::{App, Caller};
use crate::server::shutdown::Phase;

/// Initial size of an answer's event buffer; it grows up to `SSE_QUEUE_BYTES`.
const INITIAL_EVENT_BUFFER: usize = 1024;

/// Opens an answer to `query`: its events are read from the returned source, and the
/// returned future runs the agent and ends the answer (see [`run_answer`]). Nothing
/// runs until the future is polled; dropping it cancels the agent.
pub(crate) fn begin(
    app: &Arc<App>,
    session: Session,
    query: Query,
    framing: Framing,
    request_id: &HeaderValue,
) -> (impl Future<Output = ()> + Send + 'static, EventSource) {
    let (sink, source) = event_queue(app.settings.queue, INITIAL_EVENT_BUFFER);
    let handler = ResponseHandler::new(sink, framing, session.processor_id.clone());
    let run = run_answer(
        app.clone(),
        session,
        query,
        handler,
        request_id.clone(),
        None,
    );
    (run, source)
}

/// [`begin`] for an answer a client may resume (`RESUME_STORE`): its events are kept,
/// it is registered under a new stream id, and a client that leaves does not cancel it
/// until `RESUME_GRACE` has passed without a resume. Without a store, [`begin`] as is
/// (no id).
pub(crate) fn begin_resumable(
    app: &Arc<App>,
    session: Session,
    query: Query,
    framing: Framing,
    request_id: &HeaderValue,
    caller: Caller,
    context: Option<Box<str>>,
) -> (
    impl Future<Output = ()> + Send + 'static,
    EventSource,
    Option<HeaderValue>,
) {
    let Some(store) = app.streams.as_ref() else {
        let (run, source) = begin(app, session, query, framing, request_id);
        return (futures_util::future::Either::Left(run), source, None);
    };
    let s = store.settings();
    let (sink, source, resumable) =
        resumable_event_queue(app.settings.queue, INITIAL_EVENT_BUFFER, s.buffer_bytes);
    let grace = s.grace;
    let principal = store.shared().and(caller.principal.clone());
    let kept = store.keep(caller.worker, resumable.clone(), caller.principal);
    store.copy_to_shared(|| crate::routes::resume::redis::Copy {
        id: kept.id.to_str().unwrap_or_default().to_owned(),
        queue: resumable.clone(),
        principal,
        framing,
        source: session.processor_id.clone(),
        cancel: kept.cancel.clone(),
        context,
        hold: caller.hold.clone(),
    });
    let handler = ResponseHandler::new(sink, framing, session.processor_id.clone());
    let resume = Resume {
        queue: resumable,
        cancel: kept.cancel,
        grace,
        _hold: caller.hold,
    };
    let run = run_answer(
        app.clone(),
        session,
        query,
        handler,
        request_id.clone(),
        Some(resume),
    );
    (
        futures_util::future::Either::Right(run),
        source,
        Some(kept.id),
    )
}

/// What a resumable answer's run watches: DELETE, and its reader's absence.
struct Resume {
    queue: Resumable,
    cancel: Arc<tokio::sync::Notify>,
    grace: std::time::Duration,
    /// The slot of the connection that started it, held while the answer runs (a
    /// drain waits for it), let go when it ends.
    _hold: Option<crate::http::activity::ConnHold>,
}

/// Polls an answer's run once, inline: an agent that finishes without waiting (the
/// echo agent) costs no task and its events leave in one write. Otherwise the run
/// continues as a task on this worker, whose handle the caller aborts when the client
/// leaves.
pub(crate) fn run_inline_then_spawn<F>(mut run: Pin<Box<F>>) -> Option<AbortHandle>
where
    F: Future<Output = ()> + Send + 'static,
{
    match run.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(()) => None,
        // Spawning polls it again with a real waker.
        Poll::Pending => Some(tokio::spawn(run).abort_handle()),
    }
}

enum Outcome {
    Done,
    Failed(AgentError),
    Panicked,
    TimedOut,
    ShutdownDeadline,
    /// `DELETE /agent/streams/{id}`.
    Cancelled,
    /// The client left and nobody resumed within `RESUME_GRACE`.
    Abandoned,
}

type Caught = Result<Result<(), AgentError>, Box<dyn std::any::Any + Send>>;

impl From<Caught> for Outcome {
    fn from(r: Caught) -> Self {
        match r {
            Ok(Ok(())) => Outcome::Done,
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => Outcome::Panicked,
        }
    }
}

/// Runs the agent on `query` and ends the answer (one `done`, last). A finished
/// `/stream` answer's `done` id is remembered, so that an `EventSource` reconnecting
/// after it gets 204.
async fn run_answer(
    app: Arc<App>,
    session: Session,
    query: Query,
    mut handler: ResponseHandler,
    request_id: HeaderValue,
    resume: Option<Resume>,
) {
    let deadline = tokio::time::Instant::now() + app.settings.agent_timeout;
    let outcome = {
        let assist =
            AssertUnwindSafe(app.agent.assist(&session, &query, &mut handler)).catch_unwind();
        let mut assist = std::pin::pin!(assist);
        // An agent that finishes without waiting needs neither the timeout's timer nor
        // the shutdown watch: poll it once before arming them.
        let first = poll_fn(|cx| Poll::Ready(assist.as_mut().poll(cx))).await;
        match first {
            Poll::Ready(r) => Outcome::from(r),
            Poll::Pending => {
                let mut phase = app.phase.clone();
                let cancelled = async {
                    match &resume {
                        Some(r) => r.cancel.notified().await,
                        None => std::future::pending().await,
                    }
                };
                let abandoned = async {
                    match &resume {
                        Some(r) => r.queue.abandoned(r.grace).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    r = tokio::time::timeout_at(deadline, assist) => match r {
                        Ok(r) => Outcome::from(r),
                        Err(_) => Outcome::TimedOut,
                    },
                    _ = phase.wait_for(|p| *p == Phase::Deadline) => Outcome::ShutdownDeadline,
                    _ = cancelled => Outcome::Cancelled,
                    _ = abandoned => Outcome::Abandoned,
                }
            }
        }
    };
    finish(&mut handler, outcome, &request_id).await;
    if handler.framing() == Framing::DataOnly {
        if let Some(id) = handler.done_id() {
            app.finished_streams.insert(id);
        }
    }
}

/// Ends the answer whatever the agent did: error (if any), open streams, `done`.
async fn finish(handler: &mut ResponseHandler, outcome: Outcome, request_id: &HeaderValue) {
    if handler.is_disconnected() {
        return;
    }
    let (failure, ending) = match outcome {
        Outcome::Done => (None, Ending::Done),
        Outcome::Failed(e) => {
            tracing::warn!(request_id = ?request_id, error = %e, "agent failed");
            let code = e.code;
            (Some(e), Ending::Error(code))
        }
        Outcome::Panicked => {
            tracing::error!(request_id = ?request_id, "agent panicked");
            (
                Some(AgentError::new("The agent failed while answering", 500)),
                Ending::Error(500),
            )
        }
        Outcome::TimedOut => {
            tracing::warn!(request_id = ?request_id, "agent timed out");
            (
                Some(AgentError::new("The agent did not answer in time", 504)),
                Ending::TimedOut,
            )
        }
        Outcome::ShutdownDeadline => (
            Some(AgentError::new("The server is shutting down", 503)),
            Ending::Shutdown,
        ),
        Outcome::Cancelled => (
            Some(AgentError::new("The answer was cancelled", 499)),
            Ending::Error(499),
        ),
        // Nobody reads: the end is kept for a resume that comes within RESUME_TTL.
        Outcome::Abandoned => (
            Some(AgentError::new(
                "The client left and did not resume in time",
                499,
            )),
            Ending::ClientGone,
        ),
    };
    if handler.is_complete() {
        return;
    }
    if let Some(e) = failure {
        let sent = handler
            .emit_error(&e.message, e.code, e.details.as_ref())
            .await;
        if let Err(ProtocolError::InvalidContent(_)) = sent {
            // Details that are not a JSON object are dropped, the error still goes out.
            let _ = handler.emit_error(&e.message, e.code, None).await;
        }
    }
    // An error the agent emitted itself was recorded by `emit_error`.
    if ending != Ending::Done {
        handler.set_ending(ending);
    }
    let _ = handler.complete().await;
}
