//! Observability: per-worker statistics and logging.

pub mod log;
pub mod process;
pub mod stats;
