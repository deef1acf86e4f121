//! [`BackendError`]: the one failure classification for every call to a backend (an
//! LLM provider or an upstream agent): what went wrong, whether another try (on this
//! backend or another) could help, and whether it counts against the backend's breaker.
//!
//! The LLM connector and the proxy both report failures as this type; each wing only
//! decides which kinds it produces and what the client is told. Messages here may reach
//! clients, so they must never contain keys, URLs with credentials or upstream bodies
//! verbatim: the upstream's own words go in `detail`, for logs only.

use std::time::Duration;

/// Why one call to a backend failed. Each kind has one stable label (metrics, logs,
/// `details.kind` in errors sent to clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An LLM provider refused the request as invalid or unauthorized (4xx other than
    /// 408/429).
    Client,
    /// 429.
    RateLimited,
    /// Anthropic 529 / `overloaded_error`, or 503.
    Overloaded,
    /// Other 5xx from an LLM provider, or an error event mid-stream.
    Upstream,
    /// Connecting failed or the connection broke.
    Network,
    /// Connect, first byte, idle or total deadline passed.
    Timeout,
    /// The stream was not what the backend's format says.
    Protocol,
    /// The stream ended without its end marker.
    Truncated,
    /// The backend's breaker is open: not tried.
    BreakerOpen,
    /// Every one of the provider's slots was busy and no slot came free in
    /// `LLM_QUEUE_TIMEOUT` (or `LLM_QUEUE_MAX` requests were already waiting): not tried.
    Saturated,
    /// Connecting to an upstream agent failed (refused, unreachable, connect timeout).
    Connect,
    /// An upstream agent answered 5xx or 429.
    Status,
    /// An upstream agent answered 4xx other than 429: the request itself was refused,
    /// and another replica would refuse it too.
    Refused,
    /// An upstream agent answered 200 without `text/event-stream`.
    NotSse,
}

impl ErrorKind {
    /// Every kind, in index order.
    pub const ALL: [ErrorKind; 14] = [
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
        ErrorKind::Connect,
        ErrorKind::Status,
        ErrorKind::Refused,
        ErrorKind::NotSse,
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
            ErrorKind::Connect => "connect",
            ErrorKind::Status => "status",
            ErrorKind::Refused => "refused",
            ErrorKind::NotSse => "not_sse",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One failed call to a backend.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{backend}: {message}")]
pub struct BackendError {
    pub kind: ErrorKind,
    /// The backend's name (a provider's configured name; an upstream's URL).
    pub backend: String,
    /// Safe to show to clients: never the upstream's own words (they may echo keys).
    pub message: String,
    /// The upstream's own explanation, shortened: for logs only.
    pub detail: String,
    pub status: Option<u16>,
    /// What the upstream asked for (`retry-after-ms` or `retry-after`).
    pub retry_after: Option<Duration>,
}

impl BackendError {
    pub fn new(kind: ErrorKind, backend: &str, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            backend: backend.to_owned(),
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

    /// Whether the same request may succeed if sent again (to this or another backend).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self.kind,
            ErrorKind::Client | ErrorKind::Refused | ErrorKind::BreakerOpen
        )
    }

    /// Whether this counts against the backend's breaker (a refused request is the
    /// request's fault, not the backend's; saturation is load, not failure; a backend
    /// not tried did not fail).
    pub fn counts_as_failure(&self) -> bool {
        !matches!(
            self.kind,
            ErrorKind::Client | ErrorKind::Refused | ErrorKind::BreakerOpen | ErrorKind::Saturated
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_indices_match() {
        let mut seen = std::collections::HashSet::new();
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
            assert!(seen.insert(k.as_str()), "{}", k.as_str());
        }
    }

    #[test]
    fn the_request_s_fault_is_neither_retried_nor_counted() {
        for k in [ErrorKind::Client, ErrorKind::Refused] {
            let e = BackendError::new(k, "b", "m");
            assert!(!e.is_retryable() && !e.counts_as_failure());
        }
        let saturated = BackendError::new(ErrorKind::Saturated, "b", "m");
        assert!(saturated.is_retryable() && !saturated.counts_as_failure());
        let status = BackendError::new(ErrorKind::Status, "b", "m");
        assert!(status.is_retryable() && status.counts_as_failure());
    }
}
