//! The LLM connector's failures: [`crate::backend::BackendError`], of the kinds a
//! provider call can end with ([`PROVIDER_KINDS`], the labels `/metrics` and `/stats`
//! show per provider).
//!
//! Messages may reach clients (inside `atomic.error`), so they never contain keys,
//! URLs with credentials or upstream bodies verbatim.

pub use crate::backend::error::ErrorKind;

/// A failed call to an LLM provider (`backend` is the provider's configured name).
pub type LlmError = crate::backend::BackendError;

/// The kinds a provider call can fail with, in the order `/metrics` lists them.
pub const PROVIDER_KINDS: [ErrorKind; 10] = [
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
