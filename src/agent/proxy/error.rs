//! The proxy's failures: [`crate::backend::BackendError`] of the kinds an upstream
//! attempt or relay can end with ([`UPSTREAM_KINDS`]), and what the client is told.
//!
//! The client sees a safe message, an HTTP-like code and `details: {"kind": …}`; the
//! upstream's own words (status lines, bodies, I/O errors) stay in `detail`, for logs.
//! Nothing here may put an upstream URL or body into a client-facing message.

use serde_json::json;

use crate::agent::AgentError;
use crate::backend::{BackendError, ErrorKind};

/// One upstream failure (`backend` names the upstream when it is known).
pub type UpstreamError = BackendError;

/// The kinds an upstream attempt or relay can fail with, in the order `/metrics` lists
/// them.
pub const UPSTREAM_KINDS: [ErrorKind; 9] = [
    ErrorKind::Connect,
    ErrorKind::Network,
    ErrorKind::Timeout,
    ErrorKind::Status,
    ErrorKind::Refused,
    ErrorKind::NotSse,
    ErrorKind::Protocol,
    ErrorKind::Truncated,
    ErrorKind::BreakerOpen,
];

/// The safe message and code the client gets for `kind`.
fn client_message(kind: ErrorKind) -> (&'static str, i64) {
    match kind {
        ErrorKind::Timeout => ("The upstream agent did not answer in time", 504),
        ErrorKind::BreakerOpen => ("No upstream agent is available", 503),
        ErrorKind::Truncated => ("The upstream agent ended its answer early", 502),
        ErrorKind::Protocol => ("The upstream agent sent an invalid event", 502),
        ErrorKind::Refused => ("The upstream agent refused the request", 502),
        _ => ("The upstream agent failed", 502),
    }
}

/// An upstream failure of `kind`; `detail` (for logs only) may quote the upstream.
pub fn upstream_error(kind: ErrorKind, detail: impl Into<String>) -> UpstreamError {
    BackendError::new(kind, "upstream agent", client_message(kind).0).with_detail(detail.into())
}

/// What the client is told: a safe message and code, and the kind.
pub fn agent_error(e: &UpstreamError) -> AgentError {
    let (message, code) = client_message(e.kind);
    AgentError::new(message, code).with_details(json!({"kind": e.kind.as_str()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_never_carry_the_detail() {
        let e = upstream_error(ErrorKind::Status, "500 from http://secret:8000/x");
        let a = agent_error(&e);
        assert_eq!(a.code, 502);
        assert!(!a.message.contains("secret"));
        assert_eq!(a.details, Some(json!({"kind": "status"})));
        assert!(e.is_retryable() && e.counts_as_failure());
        let refused = upstream_error(ErrorKind::Refused, "422");
        assert!(!refused.is_retryable() && !refused.counts_as_failure());
        assert_eq!(
            agent_error(&upstream_error(ErrorKind::Timeout, "")).code,
            504
        );
        assert!(!e.to_string().contains("secret"), "Display shows no detail");
    }
}
