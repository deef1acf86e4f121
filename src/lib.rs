//! agentd: a thread-per-core server for agents speaking the Sentient Agent Framework
//! protocol (Sentient Chat events over Server-Sent Events).
//!
//! Serve your own agent by implementing [`Agent`] and calling [`Server::start`]; the
//! `agentd` binary serves the built-in [`EchoAgent`] (see [`run`]).

// The documented API (agent, config, protocol, server) says what every item is;
// internals are `#[doc(hidden)]`. What is not reachable from outside says so.
#![warn(missing_docs, unreachable_pub)]

// The library's API: the agent trait and its types, the protocol a custom agent
// emits through, the configuration, and starting a server.
pub mod agent;
pub mod config;
pub mod protocol;
pub mod server;

// Internals: public only so that the fuzz targets, the integration tests and the
// benchmarks can drive them directly. Not a stable API, left out of the docs.
#[doc(hidden)]
pub mod backend;
#[doc(hidden)]
pub mod edge;
#[doc(hidden)]
pub mod http;
#[doc(hidden)]
pub mod llm;
#[doc(hidden)]
pub mod obs;
#[doc(hidden)]
pub mod routes;
mod serve;

pub use agent::{Agent, AgentError, EchoAgent};
pub use config::Config;
pub use protocol::{ProtocolError, Query, ResponseHandler, Session, TextStream};
pub use serve::{configured_agent, run, run_with_agent, Server};
pub use server::ServerHandle;
