//! Everything that talks to a backend: an LLM provider (`crate::llm`) or an upstream
//! agent (`crate::agent::proxy`). One [`Endpoint`] per backend holds its live state
//! (breaker, health, requests in flight, concurrency cap, figures); one probe loop
//! keeps the health current; one ordering spreads requests; one failure
//! classification ([`BackendError`]) says what went wrong and what may be tried next;
//! one pooled client per worker sends requests; one reader takes SSE answers apart;
//! one Redis connection per worker serves the state replicas share (`redis`).
//!
//! The wings decide what to send and how to read what comes back; this module never
//! knows about the Sentient protocol, agents, routes or the server, and must never
//! import them. It never logs keys and never waits without a deadline.

pub mod breaker;
pub mod client;
pub mod endpoint;
pub mod error;
pub mod order;
pub mod probe;
pub mod reader;
pub mod redis;
pub mod slots;
pub mod sse;

pub use breaker::{Breaker, BreakerPermit, BreakerState};
pub use client::{HttpClient, PoolConfig};
pub use endpoint::{standing, Endpoint, EndpointState, InFlight, Standing};
pub use error::{BackendError, ErrorKind};
pub use probe::{ProbeLoop, Probed};
