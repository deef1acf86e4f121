//! Hostile clients over real sockets, at scale: slowloris, request smuggling in raw
//! bytes, URI and head size limits, file-descriptor exhaustion of a spawned server, and
//! many SSE readers that never read.
//!
//! Each test is bounded to seconds by small limits set in its own config. Times are
//! asserted only as correctness bounds ("closed by the deadline + 1 s"), never as
//! performance; figures are printed for the record (`cargo test --test hostile --
//! --nocapture`).

// A test process, not a worker: it may block its own threads, and signal or limit the
// processes it starts.
#![allow(clippy::disallowed_methods, unsafe_code)]

mod support;

#[path = "hostile/common.rs"]
mod common;
#[path = "hostile/fd_exhaustion.rs"]
mod fd_exhaustion;
#[path = "hostile/limits.rs"]
mod limits;
#[path = "hostile/slow_readers.rs"]
mod slow_readers;
#[path = "hostile/slowloris.rs"]
mod slowloris;
#[path = "hostile/smuggling.rs"]
mod smuggling;
