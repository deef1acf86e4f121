//! The agent the configuration names, built once at start: the echo agent, the LLM
//! agent over its providers (`OPENAI_*`, `ANTHROPIC_*`, `LLM_CONFIG`), or the proxy
//! over `AGENT_UPSTREAMS`. The LLM and proxy modules take typed settings and never see
//! the configuration; every conversion (and its error naming the variable) is here.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::proxy::settings::{self, ProxySettings};
use crate::agent::{self, Agent, CoalesceSettings, EchoAgent};
use crate::backend::{client, probe, slots, Breaker};
use crate::config::{self, Config, DEFAULT_AGENT_NAME};
use crate::llm;
use crate::llm::provider::{Provider, ProviderSpec, Scores};
use crate::llm::router::{RetryPolicy, Router, RouterConfig};
use crate::llm::wire::ProviderKind;

/// The agent named by the configuration: `AGENT`, else the proxy when
/// `AGENT_UPSTREAMS` is set, else the LLM agent when a provider is configured, else the
/// echo agent. Fails on a bad LLM or proxy configuration.
pub fn configured_agent(config: &Config) -> Result<Arc<dyn Agent>, String> {
    if config.agent == Some(config::AgentKind::Proxy)
        || (config.agent.is_none() && config.agent_upstreams.is_some())
    {
        return proxy_agent(config);
    }
    let router = llm_router(config)?;
    let kind = config.agent.unwrap_or(if router.is_some() {
        config::AgentKind::Llm
    } else {
        config::AgentKind::Echo
    });
    Ok(match (kind, router) {
        (config::AgentKind::Echo, _) => Arc::new(EchoAgent::new(config.agent_name.clone())),
        (config::AgentKind::Llm, Some(router)) => Arc::new(agent::LlmAgent::new(
            name(config, "agentd LLM agent"),
            router,
            coalesce_settings(config),
        )),
        (config::AgentKind::Proxy, _) => return proxy_agent(config),
        (config::AgentKind::Llm, None) => {
            return Err(
                "AGENT=llm needs a provider: set OPENAI_API_KEY, ANTHROPIC_API_KEY or LLM_CONFIG"
                    .into(),
            )
        }
    })
}

/// `AGENT_NAME`, or `default` for an agent other than the echo agent when it is unset.
fn name(config: &Config, default: &str) -> String {
    if config.agent_name == DEFAULT_AGENT_NAME {
        default.to_owned()
    } else {
        config.agent_name.clone()
    }
}

/// The proxy, its health checks started. Fails (naming the variable) without valid
/// `AGENT_UPSTREAMS`.
fn proxy_agent(config: &Config) -> Result<Arc<dyn Agent>, String> {
    let settings = proxy_settings(config)?;
    Ok(Arc::new(agent::ProxyAgent::start(
        name(config, "agentd proxy"),
        settings,
    )?))
}

/// How text deltas are joined (`STREAM_CHUNK_SIZE`, `STREAM_BUFFER_TIMEOUT`), for the
/// LLM agent and the proxy alike.
pub(crate) fn coalesce_settings(c: &Config) -> CoalesceSettings {
    CoalesceSettings {
        chunk_size: c.stream_chunk_size as usize,
        buffer_timeout: Duration::from_millis(c.stream_buffer_timeout),
    }
}

/// The proxy's settings; fails with a message naming the variable.
pub(crate) fn proxy_settings(c: &Config) -> Result<ProxySettings, String> {
    let list = c.agent_upstreams.as_deref().ok_or(
        "AGENT=proxy needs AGENT_UPSTREAMS: the URLs of the upstream agents, e.g. \
         AGENT_UPSTREAMS=http://127.0.0.1:8000/assist",
    )?;
    let ms = Duration::from_millis;
    Ok(ProxySettings {
        upstreams: settings::parse_upstreams(list)?,
        balance: c.proxy_balance,
        first_event_timeout: ms(c.proxy_first_event_timeout),
        idle_timeout: ms(c.proxy_idle_timeout),
        max_attempts: c.proxy_max_attempts as usize,
        breaker_threshold: c.proxy_breaker_threshold,
        breaker_reset: ms(c.proxy_breaker_reset),
        health_check_interval: ms(c.proxy_health_check_interval),
        coalesce: coalesce_settings(c),
        pool: client::PoolConfig {
            connect_timeout: ms(c.proxy_connect_timeout),
            idle_timeout: ms(c.proxy_pool_idle_timeout),
            max_idle_per_host: c.proxy_pool_max_idle as usize,
        },
    })
}

/// The providers named by the environment and the optional file; empty when none.
pub(crate) fn providers(
    config: &Config,
) -> Result<(Vec<ProviderSpec>, llm::file::LlmFile), String> {
    let file = match &config.llm_config {
        Some(path) => llm::file::load(path)?,
        None => llm::file::LlmFile::default(),
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
pub(crate) fn llm_router(config: &Config) -> Result<Option<Arc<Router>>, String> {
    let (specs, file) = providers(config)?;
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
        interval.min(llm::MAX_PROBE_TIMEOUT),
        router.config.pool,
    )
    .map_err(|e| format!("cannot start the health monitor: {e}"))?;
    router.keep_monitor(monitor);
    Ok(Some(router))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_without_upstreams_names_the_variable() {
        let c = Config::defaults();
        let e = proxy_settings(&c).unwrap_err();
        assert!(e.contains("AGENT_UPSTREAMS"), "{e}");
    }
}
