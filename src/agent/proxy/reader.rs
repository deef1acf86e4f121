//! Reads an upstream's event stream one SSE event at a time, under deadlines: the
//! first event by `PROXY_FIRST_EVENT_TIMEOUT` (from the request's start), then no
//! silence longer than `PROXY_IDLE_TIMEOUT` between two reads.
//!
//! Framing is the shared upstream SSE parser's (`llm::sse`: any split, LF/CRLF/CR,
//! comments and unknown fields ignored, events bounded). It reads the body only when
//! asked for the next event, so a relay that waits for a slow client stops reading
//! and the upstream's writes back up (hyper buffers at most one read).

use std::collections::VecDeque;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::error::{UpstreamError, UpstreamErrorKind as Kind};
use crate::llm::sse::{SseEvent, SseParser};

/// Most bytes read after `done` while waiting for the body's end (so the connection can
/// go back to the pool instead of being closed).
const MAX_DRAIN_BYTES: usize = 64 * 1024;
/// Longest wait for the body's end after `done`.
const MAX_DRAIN_WAIT: Duration = Duration::from_secs(1);

pub struct EventReader {
    body: Incoming,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
    /// Until the first event: the deadline for it.
    first_deadline: Option<Instant>,
    idle: Duration,
}

impl EventReader {
    pub fn new(body: Incoming, first_deadline: Instant, idle: Duration) -> Self {
        EventReader {
            body,
            parser: SseParser::new(),
            pending: VecDeque::new(),
            first_deadline: Some(first_deadline),
            idle,
        }
    }

    /// The next event; `Ok(None)` when the body ended.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, UpstreamError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                self.first_deadline = None;
                return Ok(Some(ev));
            }
            let (deadline, what) = match self.first_deadline {
                Some(d) => (d, "no first event in time"),
                None => (Instant::now() + self.idle, "silent past the idle timeout"),
            };
            let frame = match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return Err(UpstreamError::new(Kind::Timeout, what)),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(UpstreamError::new(Kind::Network, e.to_string())),
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let pending = &mut self.pending;
            self.parser
                .feed(&data, &mut |ev| pending.push_back(ev))
                .map_err(|e| UpstreamError::new(Kind::Protocol, e.to_string()))?;
        }
    }

    /// After `done`: reads on to the body's end (bounded in bytes and time) so the
    /// connection is reused; gives up quietly otherwise (the connection is closed).
    pub async fn drain(mut self) {
        let deadline = Instant::now() + self.idle.min(MAX_DRAIN_WAIT);
        let mut read = 0usize;
        while read <= MAX_DRAIN_BYTES {
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Ok(Some(Ok(f))) => read += f.data_ref().map_or(0, |d| d.len()),
                _ => return,
            }
        }
    }
}
