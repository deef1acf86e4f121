//! The proxy's settings, taken once from the configuration: the upstream URLs (validated at
//! start, so a typo stops the process with exit code 2 instead of failing every
//! request), the balancing strategy, deadlines, breaker and pool limits.
//!
//! Pure: it never connects to anything.

use std::time::Duration;

use http::Uri;

use super::balance::Balance;
use crate::agent::coalesce::CoalesceSettings;
use crate::backend::client::PoolConfig;

/// Most upstreams one proxy may front.
pub const MAX_UPSTREAMS: usize = 256;

/// Everything the proxy needs from the configuration.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    pub upstreams: Vec<Uri>,
    pub balance: Balance,
    pub first_event_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_attempts: usize,
    pub breaker_threshold: u32,
    pub breaker_reset: Duration,
    pub health_check_interval: Duration,
    /// How upstream text deltas are joined before they are relayed.
    pub coalesce: CoalesceSettings,
    pub pool: PoolConfig,
}

/// Parses `AGENT_UPSTREAMS`: comma-separated absolute http(s) URLs, at least one, at
/// most [`MAX_UPSTREAMS`], no duplicates. Blanks around commas are ignored.
pub fn parse_upstreams(list: &str) -> Result<Vec<Uri>, String> {
    let mut out: Vec<Uri> = Vec::new();
    for raw in list.split(',').map(str::trim) {
        if raw.is_empty() {
            return Err(format!(
                "AGENT_UPSTREAMS: empty entry in {list:?} (a comma list of http(s) URLs)"
            ));
        }
        let uri: Uri = raw
            .parse()
            .map_err(|e| format!("AGENT_UPSTREAMS: {raw:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => {
                return Err(format!(
                    "AGENT_UPSTREAMS: {raw:?} must start with http:// or https://"
                ))
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("AGENT_UPSTREAMS: {raw:?} has no host"));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(format!(
                "AGENT_UPSTREAMS: {raw:?} carries credentials; they would be logged"
            ));
        }
        if out.contains(&uri) {
            return Err(format!("AGENT_UPSTREAMS: {raw:?} is listed twice"));
        }
        out.push(uri);
    }
    if out.len() > MAX_UPSTREAMS {
        return Err(format!(
            "AGENT_UPSTREAMS: {} upstreams, at most {MAX_UPSTREAMS}",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_lists() {
        let u = parse_upstreams("http://127.0.0.1:8000/assist, https://a.example/x").unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].path(), "/assist");
        for bad in [
            "",
            "http://a,,http://b",
            "127.0.0.1:8000",
            "ftp://h/x",
            "http:///x",
            "http://user:pw@h/x",
            "http://h/x,http://h/x",
            "not a url",
        ] {
            let e = parse_upstreams(bad).unwrap_err();
            assert!(e.starts_with("AGENT_UPSTREAMS"), "{bad:?}: {e}");
        }
        let list: Vec<String> = (0..=MAX_UPSTREAMS)
            .map(|i| format!("http://127.0.0.1:{}/", 1000 + i))
            .collect();
        assert!(parse_upstreams(&list.join(",")).is_err());
    }
}
