//! Edge policies, applied around handlers in this order: CORS preflight, load shedding,
//! authentication, rate limiting; then security headers and CORS headers on the
//! response (compression is the HTTP module's: `http::compress`).
//!
//! Each gate is a plain function or a shared value built once at start; none may block
//! a worker. The happy path allocates nothing, except verifying a bearer token (inside
//! jsonwebtoken, only for requests that carry one).

pub mod auth;
pub mod cors;
pub mod forwarded;
pub mod rate;
pub mod rate_redis;
pub mod security;
pub mod shed;
