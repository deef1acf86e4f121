//! [`UpstreamError`]: what went wrong with one upstream agent, whether another replica
//! could do better, whether it counts against the upstream's breaker, and what the
//! client is told.
//!
//! The client sees a safe message, an HTTP-like code and `details: {"kind": …}`; the
//! upstream's own words (status lines, bodies, I/O errors) stay in `detail`, for logs.
//! Nothing here may put an upstream URL or body into a client-facing message.

use serde_json::json;

use crate::agent::AgentError;

/// Why an upstream attempt or relay failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// Connecting failed (refused, unreachable, connect timeout).
    Connect,
    /// The connection broke (reset, closed mid-response).
    Network,
    /// No response head or first event before `PROXY_FIRST_EVENT_TIMEOUT`, or silence
    /// past `PROXY_IDLE_TIMEOUT` mid-stream.
    Timeout,
    /// A 5xx or 429 answer.
    Status,
    /// A 4xx answer other than 429: the request itself was refused, and another replica
    /// would refuse it too.
    Refused,
    /// A 200 answer that is not `text/event-stream`.
    NotSse,
    /// An event that breaks the protocol (not JSON, unknown content type, bad name, a
    /// chunk on a completed stream, an event over the size limit).
    Protocol,
    /// The stream ended without `done`.
    Truncated,
    /// Every candidate's breaker is open: nothing was tried.
    BreakerOpen,
}

impl UpstreamErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Network => "network",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Status => "status",
            UpstreamErrorKind::Refused => "refused",
            UpstreamErrorKind::NotSse => "not_sse",
            UpstreamErrorKind::Protocol => "protocol",
            UpstreamErrorKind::Truncated => "truncated",
            UpstreamErrorKind::BreakerOpen => "breaker_open",
        }
    }
}

/// One upstream failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamError {
    pub kind: UpstreamErrorKind,
    /// For logs only: may quote the upstream.
    pub detail: String,
}

impl UpstreamError {
    pub fn new(kind: UpstreamErrorKind, detail: impl Into<String>) -> Self {
        UpstreamError {
            kind,
            detail: detail.into(),
        }
    }

    /// Whether another replica (or the same one again) may answer the same request.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self.kind,
            UpstreamErrorKind::Refused | UpstreamErrorKind::BreakerOpen
        )
    }

    /// Whether this counts against the upstream's breaker (a refused request is the
    /// request's fault, not the upstream's).
    pub fn counts_as_failure(&self) -> bool {
        self.is_retryable()
    }

    /// What the client is told: a safe message and code, and the kind.
    pub fn to_agent_error(&self) -> AgentError {
        let (message, code) = match self.kind {
            UpstreamErrorKind::Timeout => ("The upstream agent did not answer in time", 504),
            UpstreamErrorKind::BreakerOpen => ("No upstream agent is available", 503),
            UpstreamErrorKind::Truncated => ("The upstream agent ended its answer early", 502),
            UpstreamErrorKind::Protocol => ("The upstream agent sent an invalid event", 502),
            UpstreamErrorKind::Refused => ("The upstream agent refused the request", 502),
            _ => ("The upstream agent failed", 502),
        };
        AgentError::new(message, code).with_details(json!({"kind": self.kind.as_str()}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_never_carry_the_detail() {
        let e = UpstreamError::new(UpstreamErrorKind::Status, "500 from http://secret:8000/x");
        let a = e.to_agent_error();
        assert_eq!(a.code, 502);
        assert!(!a.message.contains("secret"));
        assert_eq!(a.details, Some(json!({"kind": "status"})));
        assert!(e.is_retryable() && e.counts_as_failure());
        let refused = UpstreamError::new(UpstreamErrorKind::Refused, "422");
        assert!(!refused.is_retryable() && !refused.counts_as_failure());
        assert_eq!(
            UpstreamError::new(UpstreamErrorKind::Timeout, "")
                .to_agent_error()
                .code,
            504
        );
    }
}
