//! The guide's LLM agent: a quick complexity analysis, the provider's tokens streamed
//! as they arrive, then performance figures.
//!
//! Events: `ANALYSIS` (json: provider, model, complexity, requestId), `AI_RESPONSE`
//! (text stream of the tokens: one event per token, or joined by [`super::coalesce`]
//! when `STREAM_CHUNK_SIZE` is set, the first token always at once), `PERFORMANCE`
//! (json), `done`. A failure before the first token is an error after retries and
//! failover; after it, the text received so far, then `atomic.error` + `done`, never a
//! silently short answer.
//!
//! The SSE head is sent before the agent runs, so even a request refused because every
//! provider is saturated is answered in the stream: `atomic.error` 503 with
//! `details.kind: "saturated"`, then `done`, at once.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::json;

use super::coalesce::{CoalesceSettings, Coalescing, Waited};
use super::{Agent, AgentError, DependencyGroup, DependencyHealth, DependencyKind};
use crate::llm::{ChatRequest, ErrorKind, LlmError, Router};
use crate::protocol::{Query, ResponseHandler, Session};

const SYSTEM_PROMPT: &str = "You are a high-performance AI assistant. Be concise and helpful.";

/// The guide's LLM agent: an analysis block, the provider's tokens as they arrive,
/// then a performance block.
pub struct LlmAgent {
    name: String,
    router: Arc<Router>,
    coalesce: CoalesceSettings,
    requests: AtomicU64,
    total_ms: AtomicU64,
}

impl LlmAgent {
    /// An LLM agent named `name` answering through `router`, its text deltas joined as
    /// `coalesce` says.
    pub fn new(name: impl Into<String>, router: Arc<Router>, coalesce: CoalesceSettings) -> Self {
        LlmAgent {
            name: name.into(),
            router,
            coalesce,
            requests: AtomicU64::new(0),
            total_ms: AtomicU64::new(0),
        }
    }

    /// The providers it asks, in the router's order.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }
}

/// The guide's quick analysis: length, plus keywords that suggest harder work.
pub fn complexity(prompt: &str) -> f64 {
    let length = (prompt.chars().count() as f64 / 500.0).min(1.0);
    let keywords = prompt
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| {
            ["analyze", "create", "explain", "solve", "complex"]
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k))
        })
        .count() as f64
        * 0.2;
    (length + keywords).min(1.0)
}

/// An upstream failure as the client sees it: a safe message and an HTTP-like code.
pub fn agent_error(e: &LlmError) -> AgentError {
    let code = match e.kind {
        ErrorKind::RateLimited => 429,
        ErrorKind::Overloaded | ErrorKind::BreakerOpen | ErrorKind::Saturated => 503,
        ErrorKind::Timeout => 504,
        _ => 502,
    };
    AgentError::new(format!("LLM provider failed: {}", e.message), code)
        .with_details(json!({"provider": e.backend, "kind": e.kind.as_str()}))
}

#[async_trait]
impl Agent for LlmAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn dependencies(&self) -> Vec<DependencyGroup> {
        // Saturation is load, not failure: it never makes the agent unready.
        vec![DependencyGroup {
            kind: DependencyKind::LlmProviders,
            members: self
                .router
                .providers
                .iter()
                .map(|p| DependencyHealth::of_endpoint(&p.endpoint))
                .collect(),
            saturated_requests: Some(self.router.saturated.load(Relaxed)),
        }]
    }

    async fn assist(
        &self,
        session: &Session,
        query: &Query,
        handler: &mut ResponseHandler,
    ) -> Result<(), AgentError> {
        let started = Instant::now();
        let n = self.requests.fetch_add(1, Relaxed) + 1;
        let complexity = complexity(&query.prompt);
        let prefs = query.context.as_ref().and_then(|c| c.preferences);
        let chars = query.prompt.chars().count() as u32;
        let req = ChatRequest {
            system: Some(SYSTEM_PROMPT.to_owned()),
            prompt: query.prompt.clone(),
            temperature: prefs
                .and_then(|p| p.temperature)
                .or(Some(if complexity > 0.5 { 0.7 } else { 0.3 })),
            max_tokens: prefs
                .and_then(|p| p.max_tokens)
                .unwrap_or_else(|| (chars.saturating_mul(2)).clamp(16, 2000)),
        };
        let mut open = self
            .router
            .open(&req, Some(u128::from(session.activity_id)))
            .await
            .map_err(|e| agent_error(&e))?;
        handler
            .emit_json(
                "ANALYSIS",
                &json!({
                    "provider": open.provider.name(),
                    "model": open.provider.spec.model,
                    "complexity": complexity,
                    "requestId": n,
                }),
            )
            .await?;
        let stream = handler.create_text_stream("AI_RESPONSE")?;
        if let Some(first) = open.first.take() {
            let mut coalescing = Coalescing::new(self.coalesce);
            if let Some(text) = coalescing.push(first) {
                handler.emit_chunk(&stream, &text).await?;
            }
            let to_first = started.elapsed();
            open.provider
                .endpoint
                .stats
                .overhead
                .record(to_first.saturating_sub(open.ttft));
            loop {
                // Pending text that falls due leaves while the read goes on.
                let read = {
                    let mut next = std::pin::pin!(open.stream.next_text());
                    loop {
                        match coalescing.read(next.as_mut()).await {
                            Waited::Read(read) => break read,
                            Waited::Due(text) => handler.emit_chunk(&stream, &text).await?,
                        }
                    }
                };
                match read {
                    Ok(Some(t)) => {
                        if let Some(text) = coalescing.push(t) {
                            handler.emit_chunk(&stream, &text).await?;
                        }
                    }
                    Ok(None) => {
                        if let Some(text) = coalescing.take() {
                            handler.emit_chunk(&stream, &text).await?;
                        }
                        open.succeed();
                        break;
                    }
                    Err(e) => {
                        open.fail(&e);
                        tracing::warn!(provider = e.backend, kind = e.kind.as_str(), detail = %e.detail, "LLM stream failed after its first token");
                        // The text received before the failure reaches the client first.
                        if let Some(text) = coalescing.take() {
                            handler.emit_chunk(&stream, &text).await?;
                        }
                        return Err(agent_error(&e));
                    }
                }
            }
        }
        handler.complete_stream(stream).await?;
        let ms = started.elapsed().as_millis() as u64;
        let total = self.total_ms.fetch_add(ms, Relaxed) + ms;
        handler
            .emit_json(
                "PERFORMANCE",
                &json!({
                    "responseTime": ms,
                    "requestCount": n,
                    "avgResponseTime": total / n.max(1),
                    "timeToFirstTokenMs": open.ttft.as_millis() as u64,
                    "provider": open.provider.name(),
                    "tokensIn": open.stream.usage_in,
                    "tokensOut": open.stream.usage_out,
                    "finishReason": open.stream.finish,
                }),
            )
            .await?;
        handler.complete().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complexity_like_the_guide() {
        assert_eq!(complexity("hi"), 2.0 / 500.0);
        assert!((complexity("Please analyze and explain") - (26.0 / 500.0 + 0.4)).abs() < 1e-9);
        assert_eq!(complexity(&"x".repeat(5000)), 1.0);
    }
}
