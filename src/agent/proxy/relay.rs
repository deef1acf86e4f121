//! Re-emits upstream events through the response handler, so every guarantee the
//! handler gives holds for relayed answers too: agentd's own strictly increasing ids,
//! the session's `source`, compact JSON with U+2028/U+2029/U+0085 escaped, text streams
//! closed with `" "`, exactly one `done`, last.
//!
//! Upstream text streams are mapped onto handler streams (agentd's own `stream_id`s) by
//! the upstream's `stream_id`, at most `MAX_STREAMS_PER_RESPONSE` per response (the
//! handler's limit). With `STREAM_CHUNK_SIZE` set, consecutive chunks of one upstream
//! stream are joined ([`crate::agent::coalesce`]); anything else the upstream sends
//! (another event, another stream's chunk, a completion, `done`) and the end of its
//! stream flush the pending text first, so order is kept. It never reads the upstream
//! itself (the caller's read goes through [`Relay::read`], which only adds the
//! coalescing deadline) and never waits except on the client (the handler's bounded
//! queue), which is what carries backpressure upstream.

use std::future::Future;

use super::error::{upstream_error, UpstreamError};
use super::event::UpstreamEvent;
use crate::agent::coalesce::{CoalesceSettings, Coalescing, Waited};
use crate::backend::ErrorKind;
use crate::protocol::{ProtocolError, ResponseHandler, TextStream};

/// What the relay should do after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The upstream's `done` was relayed: the response is complete.
    Done,
}

/// Why an event could not be relayed.
#[derive(Debug)]
pub enum RelayError {
    /// The upstream broke the protocol.
    Upstream(UpstreamError),
    /// The client is gone (disconnected or cut off as a slow reader).
    Client(ProtocolError),
}

impl From<ProtocolError> for RelayError {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::Disconnected | ProtocolError::SlowReader => RelayError::Client(e),
            other => RelayError::Upstream(upstream_error(ErrorKind::Protocol, other.to_string())),
        }
    }
}

/// An upstream stream: open (its handler stream) or completed.
struct Mapped {
    upstream_id: String,
    stream: Option<TextStream>,
}

pub struct Relay<'h> {
    handler: &'h mut ResponseHandler,
    streams: Vec<Mapped>,
    coalescing: Coalescing,
    /// The stream (index into `streams`) whose text is pending in `coalescing`.
    pending_stream: usize,
}

impl<'h> Relay<'h> {
    pub fn new(handler: &'h mut ResponseHandler, coalesce: CoalesceSettings) -> Self {
        Relay {
            handler,
            streams: Vec::new(),
            coalescing: Coalescing::new(coalesce),
            pending_stream: 0,
        }
    }

    /// Awaits the caller's read of the next upstream event, emitting pending text whose
    /// buffer timeout passes meanwhile (the read goes on, it is not restarted).
    pub async fn read<F: Future>(&mut self, read: F) -> Result<F::Output, RelayError> {
        let mut read = std::pin::pin!(read);
        loop {
            match self.coalescing.read(read.as_mut()).await {
                Waited::Read(out) => return Ok(out),
                Waited::Due(text) => self.emit_pending(text).await?,
            }
        }
    }

    /// Emits the pending text, if any: before any other event, and when the upstream
    /// stream ends or fails.
    pub async fn flush(&mut self) -> Result<(), RelayError> {
        match self.coalescing.take() {
            Some(text) => self.emit_pending(text).await,
            None => Ok(()),
        }
    }

    async fn emit_pending(&mut self, text: String) -> Result<(), RelayError> {
        if let Some(stream) = self.streams[self.pending_stream].stream.as_ref() {
            self.handler.emit_chunk(stream, &text).await?;
        }
        Ok(())
    }

    /// Emits one upstream event.
    pub async fn forward(&mut self, ev: UpstreamEvent) -> Result<Flow, RelayError> {
        if !matches!(
            ev,
            UpstreamEvent::Chunk {
                is_complete: false,
                ..
            }
        ) {
            self.flush().await?;
        }
        let h = &mut *self.handler;
        match ev {
            UpstreamEvent::TextBlock { name, content } => {
                h.emit_text_block(&name, &content).await?;
            }
            UpstreamEvent::Json { name, content } => h.emit_json(&name, &content).await?,
            UpstreamEvent::Error {
                message,
                code,
                details,
            } => h.emit_error(&message, code, details.as_ref()).await?,
            UpstreamEvent::Chunk {
                name,
                stream_id,
                is_complete,
                content,
            } => self.chunk(name, stream_id, is_complete, content).await?,
            UpstreamEvent::Done => {
                h.complete().await?;
                return Ok(Flow::Done);
            }
        }
        Ok(Flow::Continue)
    }

    async fn chunk(
        &mut self,
        name: String,
        upstream_id: String,
        is_complete: bool,
        content: String,
    ) -> Result<(), RelayError> {
        let pos = match self
            .streams
            .iter()
            .position(|m| m.upstream_id == upstream_id)
        {
            Some(pos) => pos,
            None => {
                let stream = self.handler.create_text_stream(name)?;
                self.streams.push(Mapped {
                    upstream_id,
                    stream: Some(stream),
                });
                self.streams.len() - 1
            }
        };
        if self.streams[pos].stream.is_none() {
            return Err(RelayError::Upstream(upstream_error(
                ErrorKind::Protocol,
                "a chunk on a completed stream",
            )));
        }
        if is_complete {
            // The protocol's completion content is " "; the handler writes it.
            if let Some(stream) = self.streams[pos].stream.take() {
                self.handler.complete_stream(stream).await?;
            }
        } else {
            if pos != self.pending_stream {
                // Another stream's text is pending: it leaves first.
                self.flush().await?;
                self.pending_stream = pos;
            }
            if let Some(text) = self.coalescing.push(content) {
                self.emit_pending(text).await?;
            }
        }
        Ok(())
    }
}
