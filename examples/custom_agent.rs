//! Serving your own agent through the agentd library.
//!
//! ```sh
//! PORT=3000 cargo run --example custom_agent
//! curl -N -X POST localhost:3000/agent -H 'content-type: application/json' \
//!   -d '{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"hello agent world"}}'
//! ```

use std::sync::Arc;

use agentd::{Agent, AgentError, Config, Query, ResponseHandler, Session};
use async_trait::async_trait;

/// Shouts the prompt back one word at a time, after a small analysis event.
struct ShoutAgent;

#[async_trait]
impl Agent for ShoutAgent {
    fn name(&self) -> &str {
        "shout agent"
    }

    async fn assist(
        &self,
        session: &Session,
        query: &Query,
        handler: &mut ResponseHandler,
    ) -> Result<(), AgentError> {
        let words: Vec<&str> = query.prompt.split_whitespace().collect();
        handler
            .emit_json(
                "ANALYSIS",
                &serde_json::json!({ "words": words.len(), "activity": session.activity_id }),
            )
            .await?;
        if words.is_empty() {
            return Err(AgentError::new("nothing to shout", 400));
        }
        let stream = handler.create_text_stream("SHOUT")?;
        for w in words {
            handler
                .emit_chunk(&stream, &format!("{} ", w.to_uppercase()))
                .await?;
        }
        handler.complete_stream(stream).await?;
        handler.complete().await?;
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    match Config::from_env_and_args(std::env::args_os()) {
        Ok(config) => agentd::run_with_agent(config, Arc::new(ShoutAgent)),
        Err(e) => e.exit(),
    }
}
