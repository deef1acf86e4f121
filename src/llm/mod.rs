//! The LLM connector: providers (OpenAI and compatible servers, Anthropic), their wire
//! formats, retries and failover, all stream-aware. The machinery shared with the
//! proxy (each provider's endpoint state and breaker, the probe loop, the ordering, the
//! pooled client, the SSE reader) is [`crate::backend`]'s.
//!
//! It takes typed settings (built from the guide's keys and, for several providers,
//! models, scores and the strategy, the TOML file `LLM_CONFIG` read by [`file`], in
//! `serve::agents`) and never reads the configuration. Nothing here knows about the
//! Sentient protocol.

pub mod error;
pub mod file;
pub mod provider;
pub mod router;
pub mod wire;

use std::time::Duration;

pub use error::{ErrorKind, LlmError, PROVIDER_KINDS};

/// Longest wait for one provider probe's answer (shorter when the interval is).
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
pub use router::{OpenStream, Router};

/// One chat request, provider-neutral.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub system: Option<String>,
    pub prompt: String,
    pub temperature: Option<f64>,
    pub max_tokens: u32,
}
