//! MCP's JSON-RPC 2.0 messages on `POST /mcp`: one body parsed into a request, a
//! notification or a response ([`parse_message`]); the protocol version negotiated
//! ([`negotiate`]); the results of `initialize` and `tools/list`; a `tools/call`
//! translated into the agent's `Session` and `Query` ([`parse_tool_call`]); and the
//! frames written back (a response, an error, a progress notification).
//!
//! The agent is offered as one tool, [`TOOL_NAME`], whose arguments are `prompt` (the
//! same 1 to 10,000 character rule as `/agent`) and an optional `context` in the shape
//! of `/agent`'s `query.context`. Batches (JSON arrays) are refused: MCP 2025-06-18
//! removed them and a stateless server cannot tell which version a client negotiated.
//! Pure: it must never touch the network, the clock (beyond fresh ids) or the app.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use serde_json::{json, Map, Value};

use crate::protocol::request::{check_prompt, Issue};
use crate::protocol::{ids, Preferences, Query, QueryContext, Session};

/// The protocol versions this server speaks, newest first.
pub(crate) const SUPPORTED_VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];

/// The one tool: the agent.
pub(crate) const TOOL_NAME: &str = "ask_agent";

/// JSON-RPC: the body is not JSON.
pub(crate) const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: the body is JSON but not a valid request.
pub(crate) const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: no such method.
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: the method's params are invalid.
pub(crate) const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: the server failed.
pub(crate) const INTERNAL_ERROR: i64 = -32603;

/// A JSON-RPC error object.
#[derive(Debug, PartialEq)]
pub(crate) struct RpcError {
    pub(crate) code: i64,
    pub(crate) message: String,
    pub(crate) data: Option<Value>,
}

impl RpcError {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }
}

/// One message a client posted.
#[derive(Debug, PartialEq)]
pub(crate) enum Message {
    /// A request: it gets a response.
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    /// A notification, or a response to a server's request: accepted, no body.
    Accepted,
}

/// Parses one posted body.
pub(crate) fn parse_message(body: &[u8]) -> Result<Message, RpcError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RpcError::new(PARSE_ERROR, "Parse error: the body is empty"));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| RpcError::new(PARSE_ERROR, format!("Parse error: {e}")))?;
    let mut obj = match value {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(RpcError::new(
                INVALID_REQUEST,
                "Invalid Request: JSON-RPC batches are not supported (MCP 2025-06-18 removed \
                 them); send one message per POST",
            ))
        }
        _ => {
            return Err(RpcError::new(
                INVALID_REQUEST,
                "Invalid Request: a message must be a JSON object",
            ))
        }
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(RpcError::new(
            INVALID_REQUEST,
            "Invalid Request: \"jsonrpc\" must be \"2.0\"",
        ));
    }
    let id = obj.remove("id");
    if let Some(id) = &id {
        if !(id.is_string() || id.is_i64() || id.is_u64()) {
            return Err(RpcError::new(
                INVALID_REQUEST,
                "Invalid Request: \"id\" must be a string or an integer",
            ));
        }
    }
    match (obj.remove("method"), id) {
        (Some(Value::String(method)), Some(id)) => {
            let params = obj.remove("params").unwrap_or(Value::Object(Map::new()));
            if !params.is_object() {
                return Err(RpcError::new(
                    INVALID_REQUEST,
                    "Invalid Request: \"params\" must be an object",
                ));
            }
            Ok(Message::Request { id, method, params })
        }
        (Some(Value::String(_)), None) => Ok(Message::Accepted),
        (Some(_), _) => Err(RpcError::new(
            INVALID_REQUEST,
            "Invalid Request: \"method\" must be a string",
        )),
        (None, Some(_)) if obj.contains_key("result") || obj.contains_key("error") => {
            Ok(Message::Accepted)
        }
        (None, _) => Err(RpcError::new(
            INVALID_REQUEST,
            "Invalid Request: not a request, a notification or a response",
        )),
    }
}

/// The version to answer `initialize` with: the client's when this server speaks it,
/// else the newest this server speaks (the client then decides whether to go on).
pub(crate) fn negotiate(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|r| SUPPORTED_VERSIONS.iter().find(|v| **v == r))
        .copied()
        .unwrap_or(SUPPORTED_VERSIONS[0])
}

/// The result of `initialize`.
pub(crate) fn initialize_result(params: &Value, agent_id: &str) -> Value {
    let requested = params.get("protocolVersion").and_then(Value::as_str);
    json!({
        "protocolVersion": negotiate(requested),
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "agentd", "title": agent_id, "version": env!("CARGO_PKG_VERSION")},
        "instructions": format!(
            "Call the `{TOOL_NAME}` tool with a `prompt` to ask the agent `{agent_id}`; \
             its answer is the tool's text."
        ),
    })
}

/// The result of `tools/list`: the agent as one tool.
pub(crate) fn tools_list_result(agent_id: &str) -> Value {
    json!({"tools": [{
        "name": TOOL_NAME,
        "title": agent_id,
        "description": format!(
            "Ask the agent `{agent_id}`. The result is its answer's text; progress \
             notifications carry the text so far when the call has a progress token."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "prompt": {
                    "type": "string", "minLength": 1, "maxLength": 10000,
                    "description": "What to ask the agent."
                },
                "context": {
                    "type": "object",
                    "description": "Optional: the query's context, as /agent takes it.",
                    "properties": {
                        "sessionId": {"type": "string"},
                        "userId": {"type": "string"},
                        "preferences": {
                            "type": "object",
                            "properties": {
                                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                                "maxTokens": {"type": "integer", "minimum": 1, "maximum": 4000}
                            }
                        }
                    }
                }
            },
            "required": ["prompt"]
        }
    }]})
}

/// A `tools/call`, translated.
#[derive(Debug)]
pub(crate) struct ToolCall {
    pub(crate) session: Session,
    pub(crate) query: Query,
    /// `params._meta.progressToken`: stream progress notifications under it.
    pub(crate) progress_token: Option<Value>,
}

/// Translates `tools/call` params; an invalid one is `INVALID_PARAMS` with each issue
/// (JSON pointer into `params`) under `data.issues`.
pub(crate) fn parse_tool_call(params: &Value, agent_id: &Arc<str>) -> Result<ToolCall, RpcError> {
    match params.get("name").and_then(Value::as_str) {
        Some(TOOL_NAME) => {}
        Some(other) => {
            return Err(RpcError::new(
                INVALID_PARAMS,
                format!("Unknown tool: {other} (this server offers `{TOOL_NAME}`)"),
            ))
        }
        None => {
            return Err(RpcError::new(
                INVALID_PARAMS,
                "Invalid params: name: required",
            ))
        }
    }
    let mut issues = Vec::new();
    let empty = Map::new();
    let args = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => {
            issues.push(issue("/arguments", "must be object"));
            &empty
        }
    };
    let prompt = match args.get("prompt") {
        Some(Value::String(s)) => match check_prompt(s) {
            Ok(p) => Some(p.to_owned()),
            Err(m) => {
                issues.push(issue("/arguments/prompt", m));
                None
            }
        },
        None | Some(Value::Null) => {
            issues.push(issue("/arguments/prompt", "is required"));
            None
        }
        Some(_) => {
            issues.push(issue("/arguments/prompt", "must be string"));
            None
        }
    };
    let context = match args.get("context") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => Some(context(c, &mut issues)),
        Some(_) => {
            issues.push(issue("/arguments/context", "must be object"));
            None
        }
    };
    let progress_token = params
        .get("_meta")
        .and_then(|m| m.get("progressToken"))
        .filter(|t| t.is_string() || t.is_i64() || t.is_u64())
        .cloned();
    let Some(prompt) = prompt.filter(|_| issues.is_empty()) else {
        return Err(invalid_params(issues));
    };
    Ok(ToolCall {
        session: Session::synthesized(agent_id),
        query: Query {
            id: ids::next_ulid(),
            prompt,
            context,
        },
        progress_token,
    })
}

fn issue(path: &'static str, message: &'static str) -> Issue {
    Issue {
        path: path.into(),
        message: message.into(),
    }
}

fn invalid_params(issues: Vec<Issue>) -> RpcError {
    let mut message = match issues.first() {
        Some(i) => format!("Invalid params: {}: {}", i.path, i.message),
        None => "Invalid params".to_owned(),
    };
    if issues.len() > 1 {
        message.push_str(&format!(" (and {} more)", issues.len() - 1));
    }
    let list: Vec<Value> = issues
        .iter()
        .map(|i| json!({"path": &*i.path, "message": &*i.message}))
        .collect();
    RpcError {
        code: INVALID_PARAMS,
        message,
        data: Some(json!({ "issues": list })),
    }
}

/// `arguments.context`, under `/agent`'s rules for `query.context`.
fn context(c: &Map<String, Value>, issues: &mut Vec<Issue>) -> QueryContext {
    let mut string = |key: &str, path: &'static str| match c.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            issues.push(issue(path, "must be string"));
            None
        }
    };
    let session_id = string("sessionId", "/arguments/context/sessionId");
    let user_id = string("userId", "/arguments/context/userId");
    let preferences = match c.get("preferences") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => {
            let temperature = match p.get("temperature") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_f64() {
                    Some(t) if (0.0..=2.0).contains(&t) => Some(t),
                    _ => {
                        issues.push(issue(
                            "/arguments/context/preferences/temperature",
                            "must be a number >= 0 and <= 2",
                        ));
                        None
                    }
                },
            };
            let max_tokens = match p.get("maxTokens") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_u64() {
                    Some(n @ 1..=4000) => Some(n as u32),
                    _ => {
                        issues.push(issue(
                            "/arguments/context/preferences/maxTokens",
                            "must be an integer >= 1 and <= 4000",
                        ));
                        None
                    }
                },
            };
            Some(Preferences {
                temperature,
                max_tokens,
            })
        }
        Some(_) => {
            issues.push(issue("/arguments/context/preferences", "must be object"));
            None
        }
    };
    QueryContext {
        session_id,
        user_id,
        preferences,
    }
}

/// The result of a `tools/call`: the answer's text, or the agent's failure.
pub(crate) fn tool_result(text: &str, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

/// Appends `{"jsonrpc":"2.0","id":…,"result":…}`.
pub(crate) fn write_result(out: &mut BytesMut, id: &Value, result: &Value) {
    let msg = json!({"jsonrpc": "2.0", "id": id, "result": result});
    write_json(out, &msg);
}

/// Appends `{"jsonrpc":"2.0","id":…,"error":{"code","message"[,"data"]}}`.
pub(crate) fn write_error(out: &mut BytesMut, id: &Value, e: &RpcError) {
    let mut error = json!({"code": e.code, "message": e.message});
    if let Some(d) = &e.data {
        error["data"] = d.clone();
    }
    write_json(out, &json!({"jsonrpc": "2.0", "id": id, "error": error}));
}

/// Appends a `notifications/progress` message: `progress` (the text's length so far
/// in characters, so it increases) and the text so far as `message`.
pub(crate) fn write_progress(out: &mut BytesMut, token: &Value, progress: usize, text: &str) {
    let msg = json!({
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": token, "progress": progress, "message": text},
    });
    write_json(out, &msg);
}

/// Appends one message as an SSE event (`event: message`, one `data:` line: compact
/// JSON has no newline).
pub(crate) fn write_sse(out: &mut BytesMut, write: impl FnOnce(&mut BytesMut)) {
    out.put_slice(b"event: message\ndata: ");
    write(out);
    out.put_slice(b"\n\n");
}

fn write_json(out: &mut BytesMut, v: &Value) {
    // Serializing a `Value` to memory cannot fail.
    let _ = serde_json::to_writer(out.writer(), v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Arc<str> {
        Arc::from("agent-x")
    }

    #[test]
    fn messages() {
        let m = parse_message(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
        assert_eq!(
            m,
            Message::Request {
                id: json!(1),
                method: "ping".into(),
                params: json!({})
            }
        );
        assert_eq!(
            parse_message(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Message::Accepted)
        );
        assert_eq!(
            parse_message(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Message::Accepted)
        );
        assert_eq!(parse_message(b"{").unwrap_err().code, PARSE_ERROR);
        assert_eq!(parse_message(b"  ").unwrap_err().code, PARSE_ERROR);
        assert_eq!(parse_message(b"[]").unwrap_err().code, INVALID_REQUEST);
        assert_eq!(
            parse_message(br#"{"id":1,"method":"ping"}"#)
                .unwrap_err()
                .code,
            INVALID_REQUEST
        );
        assert_eq!(
            parse_message(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#)
                .unwrap_err()
                .code,
            INVALID_REQUEST
        );
        assert_eq!(
            parse_message(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#)
                .unwrap_err()
                .code,
            INVALID_REQUEST
        );
    }

    #[test]
    fn versions() {
        assert_eq!(negotiate(Some("2025-03-26")), "2025-03-26");
        assert_eq!(negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate(Some("1999-01-01")), "2025-06-18");
        assert_eq!(negotiate(None), "2025-06-18");
        let r = initialize_result(&json!({"protocolVersion": "2024-11-05"}), "a");
        assert_eq!(r["protocolVersion"], "2024-11-05");
        assert_eq!(r["capabilities"], json!({"tools": {}}));
    }

    #[test]
    fn tool_calls() {
        let c = parse_tool_call(
            &json!({"name": TOOL_NAME, "arguments": {"prompt": "hi",
                "context": {"userId": "u", "preferences": {"maxTokens": 5}}},
                "_meta": {"progressToken": 7}}),
            &agent(),
        )
        .unwrap();
        assert_eq!(c.query.prompt, "hi");
        assert_eq!(c.progress_token, Some(json!(7)));
        let ctx = c.query.context.unwrap();
        assert_eq!(ctx.user_id.as_deref(), Some("u"));
        assert_eq!(ctx.preferences.unwrap().max_tokens, Some(5));
        let e = parse_tool_call(&json!({"name": "other"}), &agent()).unwrap_err();
        assert_eq!(e.code, INVALID_PARAMS);
        let e = parse_tool_call(
            &json!({"name": TOOL_NAME, "arguments": {"prompt": ""}}),
            &agent(),
        )
        .unwrap_err();
        assert_eq!(e.code, INVALID_PARAMS);
        assert_eq!(e.data.unwrap()["issues"][0]["path"], "/arguments/prompt");
        let long = "x".repeat(10_001);
        let e = parse_tool_call(
            &json!({"name": TOOL_NAME, "arguments": {"prompt": long,
                "context": {"preferences": {"temperature": 3}}}}),
            &agent(),
        )
        .unwrap_err();
        assert!(e.message.contains("(and 1 more)"), "{}", e.message);
        let e = parse_tool_call(&json!({"name": TOOL_NAME}), &agent()).unwrap_err();
        assert_eq!(e.message, "Invalid params: /arguments/prompt: is required");
    }

    #[test]
    fn frames() {
        let mut out = BytesMut::new();
        write_sse(&mut out, |b| write_progress(b, &json!("t"), 3, "a\nb"));
        let s = std::str::from_utf8(&out).unwrap();
        assert!(s.starts_with("event: message\ndata: {"));
        assert!(s.ends_with("}\n\n"));
        assert_eq!(s.matches('\n').count(), 3);
        let mut out = BytesMut::new();
        write_error(
            &mut out,
            &Value::Null,
            &RpcError::new(METHOD_NOT_FOUND, "x"),
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32601,"message":"x"}})
        );
    }
}
