//! The Sentient agent protocol: request validation, event encoding, ids, and the
//! response handler agents emit through.
//!
//! This module knows nothing about HTTP: it turns request bytes into typed values and
//! typed events into bytes.

pub mod events;
pub mod finished;
pub mod handler;
pub mod ids;
pub mod journal;
pub mod queue;
pub mod request;
pub mod types;

pub use handler::{ProtocolError, ResponseHandler, TextStream};
pub use types::{Preferences, Query, QueryContext, Session};
