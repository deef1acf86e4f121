//! The start-up line: what this process serves and with what, in one log line an
//! operator can read to check a deployment (agent kind, providers or upstreams, Redis,
//! TLS, workers, `.env` keys that name no setting).
//!
//! It must never show a secret: API keys and JWT secrets are left out, and a Redis URL
//! has its user and password masked.

use crate::agent::{Agent, DependencyKind};
use crate::config::Config;

/// What the start-up line says.
#[derive(Debug)]
pub(crate) struct Summary {
    pub agent: String,
    /// `name=base_url` per provider, or each upstream URL (from the agent's
    /// dependencies).
    pub backends: Vec<String>,
    pub redis: Option<String>,
    pub tls: bool,
    pub workers: usize,
    pub unknown_dotenv_keys: Vec<String>,
}

impl Summary {
    /// `kind` is what the configuration chose (`echo`, `llm`, `proxy`) or `custom`.
    pub(crate) fn new(config: &Config, agent: &dyn Agent, kind: &str) -> Summary {
        let backends = agent
            .dependencies()
            .iter()
            .flat_map(|g| {
                g.members.iter().filter_map(move |m| {
                    let address = m.endpoint.as_ref()?.address();
                    Some(match g.kind {
                        DependencyKind::LlmProviders => format!("{}={address}", m.name),
                        _ => address.to_owned(),
                    })
                })
            })
            .collect();
        Summary {
            agent: format!("{kind} ({})", agent.name()),
            backends,
            redis: config
                .redis_url
                .as_deref()
                .filter(|u| !u.is_empty())
                .map(mask_credentials),
            tls: config.tls_cert.is_some(),
            workers: config.worker_count(),
            unknown_dotenv_keys: config.unknown_dotenv_keys.clone(),
        }
    }

    /// Writes the line (and a warning per unrecognised `.env` key).
    pub(crate) fn log(&self, addr: std::net::SocketAddr) {
        tracing::info!(
            addr = %addr,
            agent = %self.agent,
            backends = %self.backends.join(","),
            redis = self.redis.as_deref().unwrap_or("none"),
            tls = self.tls,
            workers = self.workers,
            unknown_env = %self.unknown_dotenv_keys.join(","),
            "agentd listening"
        );
        for key in &self.unknown_dotenv_keys {
            tracing::warn!(
                key = %key,
                ".env sets a variable agentd does not use (misspelt, or a setting agentd does not have)"
            );
        }
    }
}

/// `redis://user:secret@host:6379/0` → `redis://***@host:6379/0`.
pub(crate) fn mask_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked() {
        assert_eq!(
            mask_credentials("redis://user:pa@ss@h:6379/0"),
            "redis://***@h:6379/0"
        );
        assert_eq!(mask_credentials("redis://:pw@h"), "redis://***@h");
        assert_eq!(mask_credentials("redis://h:6379"), "redis://h:6379");
        assert_eq!(mask_credentials("unix:///tmp/r.sock"), "unix:///tmp/r.sock");
    }
}
