//! agentd: a thread-per-core server for agents speaking the Sentient Agent Framework
//! protocol (Sentient Chat events over Server-Sent Events).
//!
//! Serve your own agent by implementing [`Agent`] and calling [`Server::start`]; the
//! `agentd` binary serves the built-in [`EchoAgent`] (see [`run`]).

pub mod agent;
pub mod backend;
pub mod config;
pub mod edge;
pub mod http;
pub mod llm;
pub mod obs;
pub mod protocol;
pub mod routes;
pub mod serve;
pub mod server;

pub use agent::{Agent, AgentError, EchoAgent};
pub use config::Config;
pub use protocol::{ProtocolError, Query, ResponseHandler, Session, TextStream};
pub use serve::{configured_agent, run, run_with_agent, Server};
pub use server::ServerHandle;
