//! Reads an upstream's event stream one SSE event at a time, under the proxy's
//! deadlines: the first event by `PROXY_FIRST_EVENT_TIMEOUT` (from the request's
//! start), then no silence longer than `PROXY_IDLE_TIMEOUT` between two reads.
//!
//! The reading itself is the shared [`crate::backend::reader::EventReader`]'s (one
//! event per call, so a relay that waits for a slow client stops reading and the
//! upstream's writes back up); this only sets the deadlines and names the failures.

use std::time::Duration;

use hyper::body::Incoming;
use tokio::time::Instant;

use super::error::{upstream_error, UpstreamError};
use crate::backend::reader::{EventReader, ReadError};
use crate::backend::sse::SseEvent;
use crate::backend::ErrorKind as Kind;

/// Most bytes read after `done` while waiting for the body's end (so the connection can
/// go back to the pool instead of being closed).
const MAX_DRAIN_BYTES: usize = 64 * 1024;
/// Longest wait for the body's end after `done`.
const MAX_DRAIN_WAIT: Duration = Duration::from_secs(1);

pub struct UpstreamReader {
    events: EventReader,
    /// Until the first event: the deadline for it.
    first_deadline: Option<Instant>,
    idle: Duration,
}

impl UpstreamReader {
    pub fn new(body: Incoming, first_deadline: Instant, idle: Duration) -> Self {
        UpstreamReader {
            events: EventReader::new(body),
            first_deadline: Some(first_deadline),
            idle,
        }
    }

    /// The next event; `Ok(None)` when the body ended.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, UpstreamError> {
        let (deadline, what) = match self.first_deadline {
            Some(d) => (d, "no first event in time"),
            None => (Instant::now() + self.idle, "silent past the idle timeout"),
        };
        match self.events.next(deadline).await {
            Ok(Some(ev)) => {
                self.first_deadline = None;
                Ok(Some(ev))
            }
            Ok(None) => Ok(None),
            Err(ReadError::Timeout) => Err(upstream_error(Kind::Timeout, what)),
            Err(ReadError::Broken(e)) => Err(upstream_error(Kind::Network, e)),
            Err(ReadError::Malformed(e)) => Err(upstream_error(Kind::Protocol, e.to_string())),
        }
    }

    /// After `done`: reads on to the body's end (bounded in bytes and time) so the
    /// connection is reused; gives up quietly otherwise (the connection is closed).
    pub async fn drain(self) {
        let deadline = Instant::now() + self.idle.min(MAX_DRAIN_WAIT);
        self.events.drain(MAX_DRAIN_BYTES, deadline).await;
    }
}
