//! The LLM connector: providers (OpenAI and compatible servers, Anthropic), their wire
//! formats, retries and failover, all stream-aware. The machinery shared with the
//! proxy (each provider's endpoint state and breaker, the probe loop, the ordering, the
//! pooled client, the SSE reader) is [`crate::backend`]'s.
//!
//! Configuration comes from the environment (the guide's keys) and, for several
//! providers, models, scores and the strategy, from a TOML file (`LLM_CONFIG`; see
//! [`file`]). Nothing here knows about the Sentient protocol.

pub mod error;
pub mod file;
pub mod provider;
pub mod router;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

pub use error::{ErrorKind, LlmError, PROVIDER_KINDS};

/// Longest wait for one provider probe's answer (shorter when the interval is).
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
pub use router::{OpenStream, Router};

use crate::backend::{client, probe, slots, Breaker};
use crate::config::Config;
use provider::{Provider, ProviderSpec, Scores};
use router::{RetryPolicy, RouterConfig};
use wire::ProviderKind;

/// One chat request, provider-neutral.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub system: Option<String>,
    pub prompt: String,
    pub temperature: Option<f64>,
    pub max_tokens: u32,
}

/// The providers named by the environment and the optional file; empty when none.
pub fn providers_from_config(
    config: &Config,
) -> Result<(Vec<ProviderSpec>, file::LlmFile), String> {
    let file = match &config.llm_config {
        Some(path) => file::load(path)?,
        None => file::LlmFile::default(),
    };
    let mut specs = Vec::new();
    if let Some(key) = config.openai_api_key.as_deref().filter(|k| !k.is_empty()) {
        specs.push(ProviderSpec {
            name: "openai".into(),
            kind: ProviderKind::Openai,
            base_url: config.openai_base_url.clone(),
            api_key: key.to_owned(),
            model: config.openai_model.clone(),
            scores: Scores::default(),
        });
    }
    if let Some(key) = config
        .anthropic_api_key
        .as_deref()
        .filter(|k| !k.is_empty())
    {
        specs.push(ProviderSpec {
            name: "anthropic".into(),
            kind: ProviderKind::Anthropic,
            base_url: config.anthropic_base_url.clone(),
            api_key: key.to_owned(),
            model: config.anthropic_model.clone(),
            scores: Scores::default(),
        });
    }
    for p in &file.providers {
        specs.retain(|s| s.name != p.name);
        specs.push(p.to_spec()?);
    }
    Ok((specs, file))
}

/// Builds the router (and starts its health monitor) when any provider is configured.
pub fn router_from_config(config: &Config) -> Result<Option<Arc<Router>>, String> {
    let (specs, file) = providers_from_config(config)?;
    if specs.is_empty() {
        return Ok(None);
    }
    let ms = Duration::from_millis;
    // One cap for the whole process, whatever WORKERS is: what the guide's single Node
    // process means by it.
    let slots = slots::SlotLimits {
        limit: config.llm_concurrent_requests as usize,
        queue_max: config.llm_queue_max as usize,
        queue_timeout: ms(config.llm_queue_timeout),
    };
    let providers = specs
        .into_iter()
        .map(|s| {
            Arc::new(Provider::new(
                s,
                Breaker::new(config.llm_breaker_threshold, ms(config.llm_breaker_reset)),
                slots,
            ))
        })
        .collect();
    let rc = RouterConfig {
        strategy: file.strategy.unwrap_or(config.llm_strategy),
        weights: file.weights.unwrap_or_default(),
        sticky: file.sticky.unwrap_or(config.llm_sticky),
        max_attempts: file
            .max_attempts
            .unwrap_or(config.llm_max_attempts as usize),
        retry: RetryPolicy {
            max_retries: config.llm_max_retries,
            base_delay: ms(config.llm_retry_base_delay),
            max_delay: ms(config.llm_retry_max_delay),
        },
        timeout: ms(config.llm_timeout),
        first_byte_timeout: ms(config.llm_first_byte_timeout),
        idle_timeout: ms(config.llm_idle_timeout),
        pool: client::PoolConfig {
            connect_timeout: ms(config.llm_connect_timeout),
            idle_timeout: ms(config.llm_pool_idle_timeout),
            max_idle_per_host: config.llm_concurrent_requests as usize,
        },
    };
    let router = Arc::new(Router::new(providers, rc));
    // The providers' health: a cheap probe (list models) of every provider at once,
    // then every HEALTH_CHECK_INTERVAL; it stops when the router is dropped.
    let interval = ms(config.health_check_interval);
    let monitor = probe::spawn(
        "agentd-llm-health",
        router.providers.clone(),
        interval,
        interval.min(MAX_PROBE_TIMEOUT),
        router.config.pool,
    )
    .map_err(|e| format!("cannot start the health monitor: {e}"))?;
    router.keep_monitor(monitor);
    Ok(Some(router))
}
