//! [`ResponseHandler`]: the only way an agent emits events.
//!
//! It enforces the protocol: ids strictly increase (one monotonic generator per worker),
//! event names cannot break framing, a text stream takes chunks until it is completed
//! (completion consumes the handle, so a closed stream cannot be written), completing
//! the response closes every open stream in creation order and sends exactly one
//! `done`, and nothing follows `done`. It must never emit anything the official
//! client's `ResponseEventAdapter` would refuse.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::BytesMut;
use serde::Serialize;
use smallvec::SmallVec;

use super::events::{
    is_valid_event_name, write_event, write_json_value, EventBody, Framing, JsonContentError,
};
use super::ids::next_ulid;
use super::queue::{Closed, EventSink};

/// Most text streams one response may open.
pub const MAX_STREAMS_PER_RESPONSE: usize = 1024;

/// Why an emit was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("the response is already complete")]
    /// `done` was sent: nothing more may be emitted.
    Completed,
    #[error("invalid event name (1 to 256 bytes, no control characters)")]
    /// The event name breaks the protocol's rule.
    InvalidEventName,
    #[error("{0}")]
    /// The content breaks the protocol's rule (the message says how).
    InvalidContent(String),
    #[error("too many text streams in one response (limit {MAX_STREAMS_PER_RESPONSE})")]
    /// More text streams than one response may open.
    TooManyStreams,
    #[error("the client disconnected")]
    /// The client left.
    Disconnected,
    #[error("the client read too slowly and was disconnected")]
    /// The client read too slowly and was cut off.
    SlowReader,
}

impl From<Closed> for ProtocolError {
    fn from(c: Closed) -> Self {
        match c {
            Closed::Disconnected => ProtocolError::Disconnected,
            Closed::SlowReader => ProtocolError::SlowReader,
        }
    }
}

impl From<JsonContentError> for ProtocolError {
    fn from(e: JsonContentError) -> Self {
        ProtocolError::InvalidContent(e.to_string())
    }
}

/// A text stream opened by [`ResponseHandler::create_text_stream`]. Completing it
/// consumes it.
#[derive(Debug)]
pub struct TextStream {
    index: usize,
}

#[derive(Debug)]
struct StreamSlot {
    id: [u8; 10],
    event_name: Cow<'static, str>,
    open: bool,
}

impl StreamSlot {
    fn id(&self) -> &str {
        // Only ASCII alphanumerics are ever written.
        std::str::from_utf8(&self.id).unwrap_or("")
    }
}

/// Emits one response's events.
#[derive(Debug)]
pub struct ResponseHandler {
    sink: EventSink,
    framing: Framing,
    source: Arc<str>,
    streams: SmallVec<[StreamSlot; 2]>,
    stream_prefix: [u8; 6],
    complete: bool,
    done_id: Option<ulid::Ulid>,
}

const ALNUM: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

impl ResponseHandler {
    /// A handler writing events whose `source` is `source` into `sink`.
    pub fn new(sink: EventSink, framing: Framing, source: Arc<str>) -> Self {
        let mut stream_prefix = [0u8; 6];
        for b in &mut stream_prefix {
            *b = ALNUM[fastrand::usize(..ALNUM.len())];
        }
        ResponseHandler {
            sink,
            framing,
            source,
            streams: SmallVec::new(),
            stream_prefix,
            complete: false,
            done_id: None,
        }
    }

    /// True once `done` was sent.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// True once the client is gone; emitting then fails.
    /// Records how this response ends, for the request log (the default is `Done`).
    pub fn set_ending(&self, ending: crate::protocol::queue::Ending) {
        self.sink.set_ending(ending);
    }

    /// How this response's events are framed.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The id of the `done` event, once sent.
    pub fn done_id(&self) -> Option<ulid::Ulid> {
        self.done_id
    }

    /// True once the client is gone (and the answer is not kept for a resume).
    pub fn is_disconnected(&self) -> bool {
        self.sink.is_closed()
    }

    fn check_name(&self, name: &str) -> Result<(), ProtocolError> {
        if self.complete {
            return Err(ProtocolError::Completed);
        }
        if !is_valid_event_name(name) {
            return Err(ProtocolError::InvalidEventName);
        }
        Ok(())
    }

    async fn emit(
        &mut self,
        name: &str,
        body: EventBody<'_>,
        finish: bool,
    ) -> Result<(), ProtocolError> {
        self.sink.ready().await?;
        let (framing, source) = (self.framing, &self.source);
        let id = next_ulid();
        self.sink
            .push_event(Some(id), finish, |buf: &mut BytesMut| {
                write_event(buf, framing, name, id, source, &body)
            })?;
        if finish {
            self.done_id = Some(id);
        }
        Ok(())
    }

    /// Emits an `atomic.textblock` event.
    pub async fn emit_text_block(
        &mut self,
        event_name: &str,
        content: &str,
    ) -> Result<(), ProtocolError> {
        self.check_name(event_name)?;
        self.emit(event_name, EventBody::TextBlock(content), false)
            .await
    }

    /// Emits an `atomic.json` event; `content` must serialize to a JSON object.
    pub async fn emit_json<T: Serialize + ?Sized>(
        &mut self,
        event_name: &str,
        content: &T,
    ) -> Result<(), ProtocolError> {
        self.check_name(event_name)?;
        let mut json = BytesMut::new();
        write_json_value(&mut json, content, true)?;
        self.emit(event_name, EventBody::Json(&json), false).await
    }

    /// Emits an `atomic.error` event. It does not complete the response.
    pub async fn emit_error(
        &mut self,
        message: &str,
        code: i64,
        details: Option<&serde_json::Value>,
    ) -> Result<(), ProtocolError> {
        self.check_name("error")?;
        let mut json = BytesMut::new();
        if let Some(d) = details {
            write_json_value(&mut json, d, true)?;
        }
        let details = details.map(|_| &json[..]);
        self.emit(
            "error",
            EventBody::Error {
                message,
                code,
                details,
            },
            false,
        )
        .await?;
        self.sink
            .set_ending(crate::protocol::queue::Ending::Error(code));
        Ok(())
    }

    /// Opens a text stream named `event_name`. No event is sent until its first chunk.
    pub fn create_text_stream(
        &mut self,
        event_name: impl Into<Cow<'static, str>>,
    ) -> Result<TextStream, ProtocolError> {
        let event_name = event_name.into();
        self.check_name(&event_name)?;
        let index = self.streams.len();
        if index >= MAX_STREAMS_PER_RESPONSE {
            return Err(ProtocolError::TooManyStreams);
        }
        // Random prefix + per-response counter: unique within the response.
        let mut id = [0u8; 10];
        id[..6].copy_from_slice(&self.stream_prefix);
        let mut n = index;
        for b in id[6..].iter_mut().rev() {
            *b = ALNUM[n % 36];
            n /= 36;
        }
        self.streams.push(StreamSlot {
            id,
            event_name,
            open: true,
        });
        Ok(TextStream { index })
    }

    /// The `stream_id` the client sees for `stream`.
    pub fn stream_id(&self, stream: &TextStream) -> &str {
        self.streams[stream.index].id()
    }

    async fn emit_stream_event(
        &mut self,
        index: usize,
        is_complete: bool,
        content: &str,
    ) -> Result<(), ProtocolError> {
        if self.complete {
            return Err(ProtocolError::Completed);
        }
        self.sink.ready().await?;
        let (framing, source) = (self.framing, &self.source);
        let slot = &self.streams[index];
        let id = next_ulid();
        self.sink
            .push_event(Some(id), false, |buf: &mut BytesMut| {
                write_event(
                    buf,
                    framing,
                    &slot.event_name,
                    id,
                    source,
                    &EventBody::Chunk {
                        stream_id: slot.id(),
                        is_complete,
                        content,
                    },
                )
            })?;
        Ok(())
    }

    /// Emits one `chunked.text` event on `stream`.
    pub async fn emit_chunk(
        &mut self,
        stream: &TextStream,
        chunk: &str,
    ) -> Result<(), ProtocolError> {
        self.emit_stream_event(stream.index, false, chunk).await
    }

    /// Completes `stream`: its last event has `is_complete: true` and content `" "`.
    pub async fn complete_stream(&mut self, stream: TextStream) -> Result<(), ProtocolError> {
        self.close_stream(stream.index).await
    }

    async fn close_stream(&mut self, index: usize) -> Result<(), ProtocolError> {
        self.emit_stream_event(index, true, " ").await?;
        self.streams[index].open = false;
        Ok(())
    }

    /// Closes every open stream in creation order, then sends `done`. Nothing can be
    /// emitted afterwards.
    pub async fn complete(&mut self) -> Result<(), ProtocolError> {
        if self.complete {
            return Err(ProtocolError::Completed);
        }
        for i in 0..self.streams.len() {
            if self.streams[i].open {
                self.close_stream(i).await?;
            }
        }
        self.emit("done", EventBody::Done, true).await?;
        self.complete = true;
        Ok(())
    }

    /// Emits one text block and completes the response.
    pub async fn respond_text(
        &mut self,
        event_name: &str,
        content: &str,
    ) -> Result<(), ProtocolError> {
        self.emit_text_block(event_name, content).await?;
        self.complete().await
    }

    /// Emits one JSON object and completes the response.
    pub async fn respond_json<T: Serialize + ?Sized>(
        &mut self,
        event_name: &str,
        content: &T,
    ) -> Result<(), ProtocolError> {
        self.emit_json(event_name, content).await?;
        self.complete().await
    }
}
