//! [`EventReader`]: reads a backend's SSE answer one event at a time, each read under
//! the caller's deadline, for the LLM streams and the proxy's upstream answers alike.
//!
//! Framing is [`super::sse`]'s (any split, LF/CRLF/CR, comments and unknown fields
//! ignored, events bounded). It reads the body only when asked for the next event, so
//! a caller that waits for a slow client stops reading and the backend's writes back
//! up (hyper buffers at most one read). It never decodes what an event means (the
//! wings do) and never waits past the deadline it is given.

use std::collections::VecDeque;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::sse::{SseError, SseEvent, SseParser};

/// Why no next event came.
#[derive(Debug)]
pub enum ReadError {
    /// The deadline passed.
    Timeout,
    /// The connection broke (hyper's words, for logs).
    Broken(String),
    /// The bytes are not a valid event stream (after the events before them).
    Malformed(SseError),
}

/// An SSE body being read.
pub struct EventReader {
    body: Incoming,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
    /// A framing error met after events still pending: reported once they are taken.
    malformed: Option<SseError>,
}

impl EventReader {
    pub fn new(body: Incoming) -> Self {
        EventReader {
            body,
            parser: SseParser::new(),
            pending: VecDeque::new(),
            malformed: None,
        }
    }

    /// The next event, read before `deadline`; `Ok(None)` when the body ended.
    pub async fn next(&mut self, deadline: Instant) -> Result<Option<SseEvent>, ReadError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(Some(ev));
            }
            if let Some(e) = self.malformed.take() {
                return Err(ReadError::Malformed(e));
            }
            let frame = match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return Err(ReadError::Timeout),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(ReadError::Broken(e.to_string())),
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let pending = &mut self.pending;
            if let Err(e) = self.parser.feed(&data, &mut |ev| pending.push_back(ev)) {
                self.malformed = Some(e);
            }
        }
    }

    /// After the answer's end marker: reads on to the body's end (at most `max` bytes,
    /// until `deadline`) so the connection is reused; gives up quietly otherwise.
    pub async fn drain(self, max: usize, deadline: Instant) {
        super::client::discard(self.body, max, deadline).await;
    }
}
