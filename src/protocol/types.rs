//! The request's typed parts as agents see them: [`Query`] and [`Session`].
//!
//! These are owned values built once by the validator; agents read them and never
//! mutate them. Nothing here parses or validates.

use std::sync::Arc;

use serde::Serialize;
use ulid::Ulid;

/// `query`: what the user asked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Query {
    /// The query's id (a ULID).
    pub id: Ulid,
    /// What the user asked (1 to 10,000 characters).
    pub prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Optional context the client sent.
    pub context: Option<QueryContext>,
}

/// `query.context`
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The client's session id, if any.
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The client's user id, if any.
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Generation preferences (temperature, maximum tokens).
    pub preferences: Option<Preferences>,
}

/// `query.context.preferences`
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    /// 0 to 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// 1 to 4000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

/// `session`: who is asking, and the conversation so far.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Session {
    /// Shared, because every event repeats it as `source`.
    pub processor_id: Arc<str>,
    /// The activity (conversation) this query belongs to.
    pub activity_id: Ulid,
    /// This request's id.
    pub request_id: Ulid,
    /// Passed through untouched (a JSON array).
    pub interactions: serde_json::Value,
}

impl Session {
    /// The session agentd makes when a request has none.
    pub fn synthesized(processor_id: &Arc<str>) -> Session {
        Session {
            processor_id: processor_id.clone(),
            activity_id: super::ids::next_ulid(),
            request_id: super::ids::next_ulid(),
            interactions: serde_json::Value::Array(Vec::new()),
        }
    }
}
