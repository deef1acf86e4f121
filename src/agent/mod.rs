//! The [`Agent`] trait agents implement, and the error they may return.
//!
//! An agent gets the session, the query and a [`ResponseHandler`]; everything it says
//! goes through the handler. It must not assume it runs to the end: the server drops it
//! when the client leaves, at `AGENT_TIMEOUT`, or at the shutdown deadline. It reports
//! its dependencies' health as data ([`Agent::dependencies`]); the server derives
//! readiness from that.

pub mod coalesce;
pub mod echo;
pub mod health;
pub mod llm;
#[doc(hidden)]
pub mod proxy;

use async_trait::async_trait;

pub use crate::protocol::{ProtocolError, Query, ResponseHandler, Session, TextStream};
pub use coalesce::CoalesceSettings;
pub use echo::EchoAgent;
pub use health::{DependencyGroup, DependencyHealth, DependencyKind, DependencyState};
pub use llm::LlmAgent;
pub use proxy::ProxyAgent;

/// An agent serving the Sentient protocol.
#[async_trait]
pub trait Agent: Send + Sync + 'static {
    /// A human-readable name (shown by `/health`).
    fn name(&self) -> &str;

    /// What the agent depends on and how each dependency stands now (none by
    /// default). `/health/ready` is 503 while a group has no usable member (`starting`
    /// while some have not answered a check yet), and `/health/detailed`, `/stats` and
    /// `/metrics` show each group; see [`health`].
    fn dependencies(&self) -> Vec<DependencyGroup> {
        Vec::new()
    }

    /// Answers one query. Returning without completing the response is fine: the
    /// server closes open streams and sends `done`. An `Err` is sent to the client as
    /// `atomic.error` (its message and code are shown, so keep them safe), then `done`.
    async fn assist(
        &self,
        session: &Session,
        query: &Query,
        handler: &mut ResponseHandler,
    ) -> Result<(), AgentError>;
}

/// A failure an agent reports. Its message and code reach the client.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentError {
    /// Shown to the client in `atomic.error`.
    pub message: String,
    /// The error code (HTTP-like: 4xx the request's fault, 5xx the agent's).
    pub code: i64,
    /// Extra fields for `atomic.error` (a JSON object).
    pub details: Option<serde_json::Value>,
}

impl AgentError {
    /// An error with `message` and an HTTP-like `code`.
    pub fn new(message: impl Into<String>, code: i64) -> Self {
        AgentError {
            message: message.into(),
            code,
            details: None,
        }
    }

    /// Adds a JSON object of details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for AgentError {}

impl From<ProtocolError> for AgentError {
    fn from(e: ProtocolError) -> Self {
        AgentError::new(e.to_string(), 500)
    }
}
