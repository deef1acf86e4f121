//! The LLM configuration file (`LLM_CONFIG`, TOML): several providers, their models and
//! scores, and the routing strategy. Every key is optional except each provider's
//! `name`, `kind` and `model`; unknown keys are refused, and a bad file stops the start
//! with its line and the reason.
//!
//! ```toml
//! strategy = "weighted"        # round-robin | weighted | least-latency (LLM_STRATEGY)
//! sticky = true                # same provider for one session.activity_id (LLM_STICKY)
//! max_attempts = 2             # providers tried per request (LLM_MAX_ATTEMPTS)
//!
//! [weights]                    # the guide's weights (these are the defaults)
//! performance = 0.6
//! cost = 0.1
//! reliability = 0.2
//! quality = 0.1
//!
//! [[providers]]
//! name = "local"               # unique; "openai"/"anthropic" replace the env-made ones
//! kind = "openai"              # openai (and compatible servers) | anthropic
//! base_url = "http://127.0.0.1:8080/v1"   # as the SDKs take it; default: the vendor's
//! api_key_env = "LOCAL_KEY"    # where the key is; or api_key = "…" (avoid in files)
//! model = "smollm2"
//! scores = { performance = 1.0, cost = 1.0, reliability = 0.9, quality = 0.5 }
//! ```

use serde::Deserialize;

use super::provider::{ProviderSpec, Scores};
use super::router::{Strategy, Weights};
use super::wire::ProviderKind;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmFile {
    pub strategy: Option<Strategy>,
    pub sticky: Option<bool>,
    pub max_attempts: Option<usize>,
    pub weights: Option<Weights>,
    #[serde(default)]
    pub providers: Vec<ProviderEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub api_key_env: Option<String>,
    pub model: String,
    #[serde(default)]
    pub scores: Scores,
}

pub const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com/v1";
pub const ANTHROPIC_DEFAULT_BASE: &str = "https://api.anthropic.com";

impl ProviderEntry {
    pub fn to_spec(&self) -> Result<ProviderSpec, String> {
        let api_key = match (&self.api_key, &self.api_key_env) {
            (Some(k), _) => k.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                format!(
                    "provider {:?}: environment variable {var} is not set",
                    self.name
                )
            })?,
            (None, None) => String::new(),
        };
        let base_url = self.base_url.clone().unwrap_or_else(|| {
            match self.kind {
                ProviderKind::Openai => OPENAI_DEFAULT_BASE,
                ProviderKind::Anthropic => ANTHROPIC_DEFAULT_BASE,
            }
            .to_owned()
        });
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(format!(
                "provider {:?}: base_url must start with http:// or https://",
                self.name
            ));
        }
        Ok(ProviderSpec {
            name: self.name.clone(),
            kind: self.kind,
            base_url,
            api_key,
            model: self.model.clone(),
            scores: self.scores,
        })
    }
}

/// Reads and checks the file at `path`.
pub fn load(path: &std::path::Path) -> Result<LlmFile, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("LLM_CONFIG {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("LLM_CONFIG {}: {e}", path.display()))
}

/// Parses file contents; errors name the line.
pub fn parse(text: &str) -> Result<LlmFile, String> {
    let file: LlmFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(l) => format!("line {l}: {}", e.message()),
            None => e.message().to_owned(),
        }
    })?;
    let mut names = std::collections::HashSet::new();
    for p in &file.providers {
        if !names.insert(p.name.as_str()) {
            return Err(format!("provider {:?} is defined twice", p.name));
        }
    }
    if file.max_attempts == Some(0) {
        return Err("max_attempts must be at least 1".into());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file() {
        let f = parse(
            r#"
strategy = "least-latency"
sticky = true
max_attempts = 3
[weights]
performance = 1.0
[[providers]]
name = "local"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
api_key = "k"
model = "m"
scores = { quality = 0.5 }
"#,
        )
        .unwrap();
        assert_eq!(f.strategy, Some(Strategy::LeastLatency));
        assert_eq!(f.weights.unwrap().cost, 0.1);
        let spec = f.providers[0].to_spec().unwrap();
        assert_eq!(spec.scores.quality, 0.5);
        assert_eq!(spec.scores.cost, 1.0);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("strategy = \"fastest\"\n").unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
        let e = parse("sticky = true\n\n[[providers]]\nname = \"a\"\nkind = \"openai\"\nmodel = \"m\"\ncolour = 1\n").unwrap_err();
        assert!(e.contains("line 7") || e.contains("line 3"), "{e}");
        assert!(e.contains("colour"), "{e}");
        let e = parse("[[providers]]\nname=\"a\"\nkind=\"openai\"\nmodel=\"m\"\n[[providers]]\nname=\"a\"\nkind=\"openai\"\nmodel=\"m\"\n").unwrap_err();
        assert!(e.contains("twice"));
    }
}
