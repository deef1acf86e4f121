//! Edge policies, applied before handlers: CORS, security headers (and, as they are
//! added, authentication, rate limiting, compression and load shedding).
//!
//! Each gate is a plain function or a shared value built once at start; none may block
//! a worker or allocate on the happy path.

pub mod auth;
pub mod compress;
pub mod cors;
pub mod rate;
pub mod rate_redis;
pub mod security;
pub mod shed;
