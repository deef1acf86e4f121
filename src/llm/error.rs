//! [`LlmError`]: what went wrong with an upstream call, who is at fault, and whether
//! trying again could help.
//!
//! Messages here may reach clients (inside `atomic.error`), so they never contain keys,
//! URLs with credentials or upstream bodies verbatim.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request was refused as invalid or unauthorized (4xx other than 408/429).
    Client,
    /// 429.
    RateLimited,
    /// Anthropic 529 / `overloaded_error`, or 503.
    Overloaded,
    /// Other 5xx, or an error event mid-stream.
    Upstream,
    /// Connecting failed or the connection broke.
    Network,
    /// Connect, first byte, idle or total deadline passed.
    Timeout,
    /// The stream was not what the provider's format says.
    Protocol,
    /// The stream ended without its end marker.
    Truncated,
    /// The provider's breaker is open: not tried.
    BreakerOpen,
    /// Every one of the provider's slots was busy and no slot came free in
    /// `LLM_QUEUE_TIMEOUT` (or `LLM_QUEUE_MAX` requests were already waiting): not tried.
    Saturated,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Client,
        ErrorKind::RateLimited,
        ErrorKind::Overloaded,
        ErrorKind::Upstream,
        ErrorKind::Network,
        ErrorKind::Timeout,
        ErrorKind::Protocol,
        ErrorKind::Truncated,
        ErrorKind::BreakerOpen,
        ErrorKind::Saturated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Client => "client",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Network => "network",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Truncated => "truncated",
            ErrorKind::BreakerOpen => "breaker_open",
            ErrorKind::Saturated => "saturated",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{provider}: {message}")]
pub struct LlmError {
    pub kind: ErrorKind,
    /// The provider's configured name.
    pub provider: String,
    /// Safe to show to clients: never the upstream's own words (they may echo keys).
    pub message: String,
    /// The upstream's own explanation, shortened: for logs only.
    pub detail: String,
    pub status: Option<u16>,
    /// What the upstream asked for (`retry-after-ms` or `retry-after`).
    pub retry_after: Option<Duration>,
}

impl LlmError {
    pub fn new(kind: ErrorKind, provider: &str, message: impl Into<String>) -> Self {
        LlmError {
            kind,
            provider: provider.to_owned(),
            message: message.into(),
            detail: String::new(),
            status: None,
            retry_after: None,
        }
    }

    pub fn with_detail(mut self, detail: String) -> Self {
        self.detail = detail;
        self
    }

    /// Whether the same request may succeed if sent again (to this or another provider).
    pub fn is_retryable(&self) -> bool {
        !matches!(self.kind, ErrorKind::Client | ErrorKind::BreakerOpen)
    }

    /// Whether this counts against the provider's health (a client error is the
    /// request's fault, not the provider's; saturation is load, not failure).
    pub fn counts_as_failure(&self) -> bool {
        !matches!(
            self.kind,
            ErrorKind::Client | ErrorKind::BreakerOpen | ErrorKind::Saturated
        )
    }
}
