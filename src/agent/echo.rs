//! The default agent: echoes the prompt like the guide's quick-integration agent.
//!
//! It needs no keys and no network, and must stay that way: it is what `agentd` serves
//! out of the box and what the benchmarks measure.

use async_trait::async_trait;

use super::{Agent, AgentError};
use crate::protocol::{Query, ResponseHandler, Session};

/// One text stream `RESPONSE` with one chunk, then completion.
#[derive(Debug, Clone)]
pub struct EchoAgent {
    name: String,
}

impl EchoAgent {
    /// An echo agent that calls itself `name`.
    pub fn new(name: impl Into<String>) -> Self {
        EchoAgent { name: name.into() }
    }
}

/// The text the echo agent answers with, before the prompt.
pub const ECHO_PREFIX: &str = "⚡ High-speed response to: ";

#[async_trait]
impl Agent for EchoAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn assist(
        &self,
        _session: &Session,
        query: &Query,
        handler: &mut ResponseHandler,
    ) -> Result<(), AgentError> {
        let stream = handler.create_text_stream("RESPONSE")?;
        let mut text = String::with_capacity(ECHO_PREFIX.len() + query.prompt.len());
        text.push_str(ECHO_PREFIX);
        text.push_str(&query.prompt);
        handler.emit_chunk(&stream, &text).await?;
        handler.complete_stream(stream).await?;
        handler.complete().await?;
        Ok(())
    }
}
