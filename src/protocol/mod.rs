//! The Sentient agent protocol: request validation, event encoding, ids, and the
//! response handler agents emit through.
//!
//! This module knows nothing about HTTP: it turns request bytes into typed values and
//! typed events into bytes.

#[doc(hidden)]
pub mod events;
#[doc(hidden)]
pub mod finished;
pub mod handler;
#[doc(hidden)]
pub mod ids;
#[doc(hidden)]
pub mod journal;
#[doc(hidden)]
pub mod queue;
#[doc(hidden)]
pub mod request;
pub mod types;

pub use handler::{ProtocolError, ResponseHandler, TextStream};
pub use types::{Preferences, Query, QueryContext, Session};
