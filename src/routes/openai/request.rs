//! An OpenAI chat completions request, translated into the agent's `Session` and
//! `Query` (the mapping rules are in README.md, "OpenAI-compatible front door").
//!
//! The last message must come from the user and is the prompt (the same 1 to 10,000
//! character rule as `/agent`); earlier messages become `session.interactions` in the
//! shape of the reference's `Interaction` model (see [`interactions`]); `temperature` and `max_completion_tokens` (or
//! `max_tokens`) become `query.context.preferences` under `/agent`'s ranges; `user` is
//! `query.context.userId`. Unknown fields are ignored; images, audio, files, tools and
//! tool calls are refused with the offending field named. This is a pure function of
//! the body: it must never touch the network, the clock (beyond fresh ids) or the app.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::protocol::request::{check_prompt, Issue, RequestError};
use crate::protocol::{ids, Preferences, Query, QueryContext, Session};

/// What a chat completions request asks for.
#[derive(Debug)]
pub struct ChatRequest {
    pub session: Session,
    pub query: Query,
    /// `stream: true`: answer with `chat.completion.chunk` events.
    pub stream: bool,
    /// `stream_options.include_usage`: send the usage chunk before `[DONE]`.
    pub include_usage: bool,
    /// Characters of every message's text, for the usage estimate.
    pub prompt_chars: usize,
}

/// One earlier message: its role and its text.
pub type Turn<'a> = (&'a str, String);

/// Roles whose text is accepted (anything else is refused).
const TEXT_ROLES: [&str; 4] = ["system", "developer", "user", "assistant"];

/// Parses and translates a chat completions body (`body` is exactly the JSON).
pub fn parse_chat_request(body: &[u8], agent_id: &Arc<str>) -> Result<ChatRequest, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::Empty);
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| RequestError::Malformed(format!("The body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(invalid("", "must be object"));
    };
    let mut issues = Vec::new();
    for key in ["tools", "functions"] {
        if obj.get(key).is_some_and(|v| !is_empty(v)) {
            issues.push(issue(
                format!("/{key}"),
                "tools and function calling are not supported by this agent",
            ));
        }
    }
    if let Some(n) = present(&obj, "n") {
        if n.as_u64() != Some(1) {
            issues.push(issue("/n", "only n = 1 is supported"));
        }
    }
    let stream = match present(&obj, "stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            issues.push(issue("/stream", "must be boolean"));
            false
        }
    };
    let include_usage = match present(&obj, "stream_options") {
        None => false,
        Some(Value::Object(o)) => match present(o, "include_usage") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                issues.push(issue("/stream_options/include_usage", "must be boolean"));
                false
            }
        },
        Some(_) => {
            issues.push(issue("/stream_options", "must be object"));
            false
        }
    };
    let preferences = preferences(&obj, &mut issues);
    let user_id = match present(&obj, "user") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            issues.push(issue("/user", "must be string"));
            None
        }
    };
    let messages = messages(&obj, &mut issues);
    if !issues.is_empty() {
        return Err(RequestError::Invalid(issues));
    }
    let Some((prompt, earlier, prompt_chars)) = messages else {
        return Err(invalid("/messages", "must be a non-empty array"));
    };
    let context = (preferences.is_some() || user_id.is_some()).then_some(QueryContext {
        session_id: None,
        user_id,
        preferences,
    });
    let mut session = Session::synthesized(agent_id);
    session.interactions = interactions(earlier, agent_id);
    Ok(ChatRequest {
        session,
        query: Query {
            id: ids::next_ulid(),
            prompt,
            context,
        },
        stream,
        include_usage,
        prompt_chars,
    })
}

fn issue(path: impl Into<Cow<'static, str>>, message: &'static str) -> Issue {
    Issue {
        path: path.into(),
        message: Cow::Borrowed(message),
    }
}

fn invalid(path: &'static str, message: &'static str) -> RequestError {
    RequestError::Invalid(vec![issue(path, message)])
}

/// A member that is present and not `null`.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// `temperature` (0 to 2) and `max_completion_tokens`, else `max_tokens` (1 to 4000),
/// the ranges `/agent` accepts in `query.context.preferences`.
fn preferences(obj: &Map<String, Value>, issues: &mut Vec<Issue>) -> Option<Preferences> {
    let mut prefs = Preferences::default();
    if let Some(t) = present(obj, "temperature") {
        match t.as_f64() {
            None => issues.push(issue("/temperature", "must be number")),
            Some(x) if !(0.0..=2.0).contains(&x) => {
                issues.push(issue("/temperature", "must be >= 0 and <= 2"))
            }
            Some(x) => prefs.temperature = Some(x),
        }
    }
    let max = match present(obj, "max_completion_tokens") {
        Some(v) => Some(("/max_completion_tokens", v)),
        None => present(obj, "max_tokens").map(|v| ("/max_tokens", v)),
    };
    if let Some((path, v)) = max {
        match v.as_u64() {
            None => issues.push(issue(path, "must be integer")),
            Some(n) if !(1..=4000).contains(&n) => {
                issues.push(issue(path, "must be >= 1 and <= 4000"))
            }
            Some(n) => prefs.max_tokens = Some(n as u32),
        }
    }
    (prefs != Preferences::default()).then_some(prefs)
}

/// The earlier messages as `session.interactions`, valid for the reference's
/// `Interaction` model (`{request, responses}`, so a proxied Python agent accepts them):
/// a `user`, `system` or `developer` message opens an interaction,
/// `{"request":{"sender":<role>,"content":<text>},"responses":[]}`; an `assistant`
/// message is a response of the open one (of a new one with an empty request when none
/// is open), `{"sender":"assistant","event":<an atomic.textblock "RESPONSE" event with
/// the text, from source>}`.
pub fn interactions(earlier: Vec<Turn<'_>>, source: &str) -> Value {
    let mut out: Vec<Value> = Vec::new();
    for (role, text) in earlier {
        if role != "assistant" {
            out.push(json!({"request": {"sender": role, "content": text}, "responses": []}));
            continue;
        }
        let mut id = [0u8; ids::ULID_LEN];
        let event = json!({
            "content_type": "atomic.textblock",
            "event_name": "RESPONSE",
            "schema_version": "1.0",
            "id": ids::encode(ids::next_ulid(), &mut id),
            "source": source,
            "metadata": null,
            "content": text,
        });
        let response = json!({"sender": "assistant", "event": event});
        match out.last_mut() {
            Some(Value::Object(last)) => {
                if let Some(Value::Array(r)) = last.get_mut("responses") {
                    r.push(response);
                }
            }
            _ => out.push(json!({"request": {}, "responses": [response]})),
        }
    }
    Value::Array(out)
}

/// The prompt (the last message, a user's), the earlier messages as (role, text), and
/// the characters of all their text. `None` when `messages` is missing or empty.
fn messages<'a>(
    obj: &'a Map<String, Value>,
    issues: &mut Vec<Issue>,
) -> Option<(String, Vec<Turn<'a>>, usize)> {
    let list = match present(obj, "messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => {
            issues.push(issue("/messages", "must be a non-empty array"));
            return None;
        }
    };
    let mut texts = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let Value::Object(m) = m else {
            issues.push(issue(format!("/messages/{i}"), "must be object"));
            continue;
        };
        let role = match present(m, "role") {
            Some(Value::String(r)) if TEXT_ROLES.contains(&r.as_str()) => r.as_str(),
            Some(Value::String(r)) if r == "tool" || r == "function" => {
                issues.push(issue(
                    format!("/messages/{i}/role"),
                    "tool and function messages are not supported by this agent",
                ));
                continue;
            }
            _ => {
                issues.push(issue(
                    format!("/messages/{i}/role"),
                    "must be one of system, developer, user, assistant",
                ));
                continue;
            }
        };
        for key in ["tool_calls", "function_call"] {
            if m.get(key).is_some_and(|v| !is_empty(v)) {
                issues.push(issue(
                    format!("/messages/{i}/{key}"),
                    "tool calls are not supported by this agent",
                ));
            }
        }
        if let Some(text) = message_text(m, i, role, issues) {
            texts.push((role, text));
        }
    }
    if !issues.is_empty() {
        return None;
    }
    let last = list.len() - 1;
    let (role, _) = texts[last];
    if role != "user" {
        issues.push(issue(
            format!("/messages/{last}/role"),
            "the last message must be the user's (it is the prompt)",
        ));
        return None;
    }
    let chars = texts.iter().map(|(_, t)| t.chars().count()).sum();
    let (_, prompt) = texts.pop()?;
    if let Err(message) = check_prompt(&prompt) {
        issues.push(issue(format!("/messages/{last}/content"), message));
        return None;
    }
    Some((prompt, texts, chars))
}

/// A message's text: a string, or the concatenation of `{"type":"text","text"}` parts.
/// Other parts (images, audio, files) are refused. An assistant's `null` content is
/// empty text.
fn message_text(
    m: &Map<String, Value>,
    i: usize,
    role: &str,
    issues: &mut Vec<Issue>,
) -> Option<String> {
    match present(m, "content") {
        Some(Value::String(s)) => Some(s.clone()),
        None if role == "assistant" => Some(String::new()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            let mut ok = true;
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some("text"), None) => {
                        issues.push(issue(
                            format!("/messages/{i}/content/{j}/text"),
                            "must be string",
                        ));
                        ok = false;
                    }
                    _ => {
                        issues.push(issue(
                            format!("/messages/{i}/content/{j}"),
                            "only text content parts are supported by this agent (no images, audio or files)",
                        ));
                        ok = false;
                    }
                }
            }
            ok.then_some(text)
        }
        _ => {
            issues.push(issue(
                format!("/messages/{i}/content"),
                "must be a string or an array of text parts",
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ChatRequest, RequestError> {
        parse_chat_request(v.to_string().as_bytes(), &Arc::from("agentd"))
    }

    fn paths(v: Value) -> Vec<String> {
        match parse(v) {
            Err(RequestError::Invalid(issues)) => {
                issues.into_iter().map(|i| i.path.into_owned()).collect()
            }
            other => panic!("expected issues, got {other:?}"),
        }
    }

    #[test]
    fn the_last_user_message_is_the_prompt_and_earlier_turns_are_interactions() {
        let r = parse(json!({
            "model": "anything", "unknown": {"x": 1},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]},
                {"role": "user", "content": [{"type": "text", "text": "again"}]}
            ],
            "temperature": 0.5, "max_tokens": 99, "user": "u-1",
            "stream": true, "stream_options": {"include_usage": true}
        }))
        .unwrap();
        assert_eq!(r.query.prompt, "again");
        assert!(r.stream && r.include_usage);
        let mut interactions = r.session.interactions.clone();
        let id = interactions[1]["responses"][0]["event"]["id"].take();
        assert!(crate::protocol::ids::parse_canonical_ulid(id.as_str().unwrap()).is_some());
        assert_eq!(
            interactions,
            json!([
                {"request": {"sender": "system", "content": "be brief"}, "responses": []},
                {"request": {"sender": "user", "content": "hi"}, "responses": [
                    {"sender": "assistant", "event": {
                        "content_type": "atomic.textblock", "event_name": "RESPONSE",
                        "schema_version": "1.0", "id": null, "source": "agentd",
                        "metadata": null, "content": "hello"}}]}
            ])
        );
        assert_eq!(&*r.session.processor_id, "agentd");
        let ctx = r.query.context.unwrap();
        assert_eq!(ctx.user_id.as_deref(), Some("u-1"));
        let p = ctx.preferences.unwrap();
        assert_eq!((p.temperature, p.max_tokens), (Some(0.5), Some(99)));
        assert_eq!(r.prompt_chars, 8 + 2 + 5 + 5);
    }

    #[test]
    fn an_answer_with_no_question_before_it_gets_an_empty_request() {
        let v = interactions(
            vec![("assistant", "a".into()), ("assistant", "b".into())],
            "s",
        );
        assert_eq!(v.as_array().unwrap().len(), 1);
        assert_eq!(v[0]["request"], json!({}));
        assert_eq!(v[0]["responses"][1]["event"]["content"], "b");
    }

    #[test]
    fn a_plain_request_has_no_context_and_max_completion_tokens_wins() {
        let r = parse(json!({"messages": [{"role": "user", "content": "x"}]})).unwrap();
        assert!(r.query.context.is_none() && !r.stream && !r.include_usage);
        assert_eq!(r.session.interactions, json!([]));
        let r = parse(json!({"messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 7, "max_tokens": 9000, "temperature": null}))
        .unwrap();
        assert_eq!(
            r.query.context.unwrap().preferences.unwrap().max_tokens,
            Some(7)
        );
    }

    #[test]
    fn images_tools_and_tool_calls_are_refused_by_path() {
        let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
        assert_eq!(
            paths(user(
                json!([{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}])
            )),
            ["/messages/0/content/1"]
        );
        let mut tools = user(json!("a"));
        tools["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
        assert_eq!(paths(tools), ["/tools"]);
        let mut no_tools = user(json!("a"));
        no_tools["tools"] = json!([]);
        assert!(parse(no_tools).is_ok());
        assert_eq!(
            paths(json!({"messages": [
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c"}]},
                {"role": "tool", "content": "r", "tool_call_id": "c"},
                {"role": "user", "content": "a"}]})),
            ["/messages/0/tool_calls", "/messages/1/role"]
        );
    }

    #[test]
    fn prompt_rules_match_the_agent_route() {
        let user = |s: String| json!({"messages": [{"role": "user", "content": s}]});
        assert_eq!(paths(user(String::new())), ["/messages/0/content"]);
        assert!(parse(user("é".repeat(10_000))).is_ok());
        assert_eq!(paths(user("é".repeat(10_001))), ["/messages/0/content"]);
        assert_eq!(
            paths(
                json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
            ),
            ["/messages/1/role"]
        );
        assert_eq!(paths(json!({"messages": []})), ["/messages"]);
        assert_eq!(paths(json!({"model": "m"})), ["/messages"]);
        assert_eq!(
            paths(json!({"messages": [{"role": "user", "content": 3}]})),
            ["/messages/0/content"]
        );
    }

    #[test]
    fn out_of_range_options_are_refused() {
        let with = |k: &str, v: Value| {
            let mut b = json!({"messages": [{"role": "user", "content": "a"}]});
            b[k] = v;
            paths(b)
        };
        assert_eq!(with("temperature", json!(2.5)), ["/temperature"]);
        assert_eq!(with("max_tokens", json!(0)), ["/max_tokens"]);
        assert_eq!(
            with("max_completion_tokens", json!(4001)),
            ["/max_completion_tokens"]
        );
        assert_eq!(with("n", json!(2)), ["/n"]);
        assert_eq!(with("stream", json!("yes")), ["/stream"]);
        assert_eq!(with("user", json!(5)), ["/user"]);
    }

    #[test]
    fn bodies_that_are_not_json_objects() {
        assert_eq!(
            parse_chat_request(b"  ", &Arc::from("a")).unwrap_err(),
            RequestError::Empty
        );
        assert!(matches!(
            parse_chat_request(b"{", &Arc::from("a")),
            Err(RequestError::Malformed(_))
        ));
        assert!(matches!(parse(json!([1])), Err(RequestError::Invalid(_))));
    }
}
