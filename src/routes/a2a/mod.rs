//! The A2A front door (protocol 1.0, JSON-RPC binding): the agent card at
//! `GET /.well-known/agent-card.json` (and the older `/.well-known/agent.json`) and
//! JSON-RPC 2.0 at `POST /a2a` (README.md, "A2A front door", has the mapping rules).
//!
//! `SendMessage` and `SendStreamingMessage` translate the message's text parts into the
//! same `Session` and `Query` that `/agent` takes (`contextId` is the session's
//! `activity_id`) and answer through the same lifecycle (`routes::answer`: one `done`,
//! after an error when the agent failed), read back with the OpenAI door's
//! [`EventReader`]: the answer's text is the `answer` artifact (appended chunks, the
//! last one marked), other events are data parts of the `events` artifact,
//! `atomic.error` fails the task, `done` completes it. Tasks are remembered
//! ([`tasks`], bounded) for `GetTask` and `CancelTask`; a cancel wakes the task's relay,
//! which drops (so cancels) the agent, as a client that leaves does. Errors use
//! JSON-RPC's shape ([`error`]); authentication is the OpenAI door's rule
//! ([`super::openai::authorize`]); the card is public.
//!
//! This module must never emit a Sentient event itself nor end an answer another way
//! than `routes::answer` does; a failed answer is never reported as a completed task.

pub(crate) mod error;
pub(crate) mod tasks;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use tokio::sync::Notify;

use self::error::{
    rpc_error, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, TASK_NOT_CANCELABLE,
    TASK_NOT_FOUND, UNSUPPORTED_OPERATION,
};
use self::tasks::{CancelRefused, TaskRecord, TaskState};
use super::answer;
use super::openai::stream::{EventReader, SentientEvent};
use super::openai::{next_events, AgentRun};
use crate::http::body::SseBody;
use crate::http::{HttpError, Reply, ResponseBody};
use crate::protocol::events::Framing;
use crate::protocol::queue::{event_queue, Closed, Ending, EventSink, EventSource, Next};
use crate::protocol::request::check_prompt;
use crate::protocol::{ids, Query, Session};
use crate::routes::App;

/// Initial size of the stream queue's buffer; it grows up to `SSE_QUEUE_BYTES`.
const INITIAL_FRAME_BUFFER: usize = 1024;
/// The protocol version served.
const PROTOCOL_VERSION: &str = "1.0";
/// The artifact that holds the answer's text.
const ANSWER_ARTIFACT: &str = "answer";
/// The artifact that holds the answer's other events, as data parts.
const EVENTS_ARTIFACT: &str = "events";

/// True for `/a2a`: its errors, routed or not, take JSON-RPC's shape.
pub(crate) fn is_a2a_path(path: &str) -> bool {
    path.split('/').find(|s| !s.is_empty()) == Some("a2a")
}

/// `GET /.well-known/agent-card.json`: the agent card. Its URL is built from the
/// request's `Host`.
pub(crate) fn card(app: &App, headers: &HeaderMap) -> Reply {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let agent_id = &*app.settings.agent_id;
    let mut card = json!({
        "name": agent_id,
        "description": format!("The agentd agent `{}` ({}), served over A2A", agent_id, app.agent.name()),
        "version": env!("CARGO_PKG_VERSION"),
        "supportedInterfaces": [{
            "url": format!("http://{host}/a2a"),
            "protocolBinding": "JSONRPC",
            "protocolVersion": PROTOCOL_VERSION,
        }],
        "capabilities": {"streaming": true, "pushNotifications": false},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain", "application/json"],
        "skills": [{
            "id": agent_id,
            "name": agent_id,
            "description": "Answers a text prompt, streaming its answer",
            "tags": ["agent", "sentient"],
        }],
    });
    let mut schemes = Map::new();
    if app.auth.is_jwt_configured() {
        schemes.insert(
            "bearer".into(),
            json!({"httpAuthSecurityScheme": {"scheme": "bearer", "bearerFormat": "JWT"}}),
        );
    }
    if app.auth.has_api_keys() {
        schemes.insert(
            "apiKey".into(),
            json!({"httpAuthSecurityScheme": {"scheme": "bearer",
                "description": "an API key sent as the bearer token"}}),
        );
    }
    if !schemes.is_empty() {
        let requirements: Vec<Value> = schemes
            .keys()
            .map(|k| json!({"schemes": {k.as_str(): {"list": []}}}))
            .collect();
        card["securityRequirements"] = Value::Array(requirements);
        card["securitySchemes"] = Value::Object(schemes);
    }
    Reply::json(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&card).unwrap_or_default()),
    )
}

/// `POST /a2a`: one JSON-RPC request.
pub(crate) async fn rpc(
    req: Request<Incoming>,
    headers: &HeaderMap,
    app: &Arc<App>,
    request_id: &HeaderValue,
) -> Result<Reply, HttpError> {
    let body = super::agent::read_json_body(req, headers, app).await?;
    let parsed = serde_json::from_slice::<Value>(&body.buf[..body.len]);
    drop(body);
    let Ok(call) = parsed else {
        return Ok(rpc_error(
            &Value::Null,
            PARSE_ERROR,
            "Parse error: the body is not JSON",
            "invalid_json",
        ));
    };
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let method = match (&call["jsonrpc"], &call["method"]) {
        (Value::String(v), Value::String(m)) if v == "2.0" => m.as_str(),
        _ => {
            return Ok(rpc_error(
                &id,
                INVALID_REQUEST,
                "Invalid request: a JSON-RPC 2.0 request object is expected",
                "invalid_request",
            ))
        }
    };
    let params = &call["params"];
    match method {
        "SendMessage" => Ok(send(app, &id, params, request_id).await),
        "SendStreamingMessage" => Ok(stream(app, &id, params, request_id)),
        "GetTask" => Ok(get(app, &id, params)),
        "CancelTask" => Ok(cancel(app, &id, params)),
        "SubscribeToTask" => Ok(rpc_error(
            &id,
            UNSUPPORTED_OPERATION,
            "Resubscribing to a task is not supported",
            "unsupported_operation",
        )),
        _ => Ok(rpc_error(
            &id,
            METHOD_NOT_FOUND,
            &format!("Method not found: {method}"),
            "method_not_found",
        )),
    }
}

/// A JSON-RPC success response.
fn result_reply(id: &Value, result: Value) -> Reply {
    let body = json!({"jsonrpc": "2.0", "id": id, "result": result});
    Reply::json(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

/// A message's parameters, translated.
struct NewTask {
    session: Session,
    query: Query,
    context_id: String,
}

/// `params.message`: its text parts, joined by newlines, are the prompt (the same 1 to
/// 10,000-character rule as `/agent`); other parts are refused.
fn parse_message(params: &Value, agent_id: &Arc<str>) -> Result<NewTask, String> {
    let message = &params["message"];
    let Some(parts) = message["parts"].as_array() else {
        return Err("params.message.parts must be an array".into());
    };
    let mut prompt = String::new();
    for (i, part) in parts.iter().enumerate() {
        match part["text"].as_str() {
            Some(t) => {
                if !prompt.is_empty() {
                    prompt.push('\n');
                }
                prompt.push_str(t);
            }
            None => {
                return Err(format!(
                    "params.message.parts[{i}]: only text parts are accepted"
                ))
            }
        }
    }
    check_prompt(&prompt).map_err(|m| format!("params.message.parts: the text {m}"))?;
    let mut session = Session::synthesized(agent_id);
    let context_id = match message["contextId"].as_str() {
        Some(c) if !c.is_empty() => {
            if let Ok(u) = c.parse() {
                session.activity_id = u;
            }
            c.to_owned()
        }
        _ => session.activity_id.to_string(),
    };
    Ok(NewTask {
        session,
        query: Query {
            id: ids::next_ulid(),
            prompt,
            context: None,
        },
        context_id,
    })
}

/// An agent message with one text part.
fn agent_message(task_id: &str, context_id: &str, text: &str) -> Value {
    json!({
        "messageId": ids::next_ulid().to_string(),
        "taskId": task_id,
        "contextId": context_id,
        "role": "ROLE_AGENT",
        "parts": [{"text": text}],
    })
}

/// A task's status object.
fn status_json(id: &str, context_id: &str, state: TaskState, error: Option<&str>) -> Value {
    let mut status = json!({"state": state.as_str()});
    if let Some(e) = error {
        status["message"] = agent_message(id, context_id, e);
    }
    status
}

/// A task, as `GetTask` and `SendMessage` return it.
fn task_json(id: &str, t: &TaskRecord, events: &[Value]) -> Value {
    let mut artifacts = Vec::new();
    if !t.text.is_empty() {
        artifacts.push(
            json!({"artifactId": ANSWER_ARTIFACT, "name": ANSWER_ARTIFACT,
            "parts": [{"text": t.text}]}),
        );
    }
    if !events.is_empty() {
        let parts: Vec<Value> = events
            .iter()
            .map(|e| json!({"data": e, "mediaType": "application/json"}))
            .collect();
        artifacts
            .push(json!({"artifactId": EVENTS_ARTIFACT, "name": EVENTS_ARTIFACT, "parts": parts}));
    }
    let mut task = json!({
        "id": id,
        "contextId": t.context_id,
        "status": status_json(id, &t.context_id, t.state, t.error.as_deref()),
        "artifacts": artifacts,
    });
    if t.text_dropped {
        task["metadata"] = json!({"textDropped": true});
    }
    task
}

/// Marks its task canceled when dropped before the task ended (the client left, so
/// the agent was cancelled).
struct TaskGuard {
    app: Arc<App>,
    id: String,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.app
            .a2a_tasks
            .finish(&self.id, TaskState::Canceled, None);
    }
}

/// One step of a task's run: events, or a cancel.
enum Step {
    Events(Next),
    Canceled,
}

/// The answer's next events, or the task's cancel (which wins when both are ready).
async fn next_step(
    agent: &mut Option<AgentRun>,
    events: &mut EventSource,
    cancel: &Notify,
) -> Step {
    tokio::select! {
        biased;
        () = cancel.notified() => Step::Canceled,
        n = next_events(agent, events) => Step::Events(n),
    }
}

/// Starts a task: remembers it and begins the agent's answer.
fn start(
    app: &Arc<App>,
    params: &Value,
    request_id: &HeaderValue,
) -> Result<(TaskGuard, Arc<Notify>, String, AgentRun, EventSource), String> {
    let new = parse_message(params, &app.settings.agent_id)?;
    let id = new.query.id.to_string();
    let cancel = app.a2a_tasks.insert(&id, &new.context_id);
    let guard = TaskGuard {
        app: app.clone(),
        id,
    };
    let (run, events) = answer::begin(app, new.session, new.query, Framing::Lines, request_id);
    Ok((guard, cancel, new.context_id, Box::pin(run), events))
}

/// The JSON-RPC error for a message that cannot start a task.
fn invalid_params(id: &Value, why: &str) -> Reply {
    rpc_error(
        id,
        INVALID_PARAMS,
        &format!("Invalid params: {why}"),
        "validation_failed",
    )
}

/// `SendMessage`: runs the task to its end and returns it.
async fn send(app: &Arc<App>, id: &Value, params: &Value, request_id: &HeaderValue) -> Reply {
    let (guard, cancel, _context, run, mut events) = match start(app, params, request_id) {
        Ok(t) => t,
        Err(m) => return invalid_params(id, &m),
    };
    let store = &app.a2a_tasks;
    let limit = app.settings.a2a_task_max_bytes;
    let mut agent = Some(run);
    let mut reader = EventReader::default();
    let mut extensions: Vec<Value> = Vec::new();
    let mut extension_bytes = 0;
    let mut failure: Option<String> = None;
    loop {
        let data = match next_step(&mut agent, &mut events, &cancel).await {
            Step::Events(Next::Data(data)) => data,
            Step::Events(Next::End | Next::Aborted(_)) => {
                store.finish(
                    &guard.id,
                    TaskState::Failed,
                    Some("The answer ended unexpectedly".into()),
                );
                break;
            }
            Step::Canceled => break,
        };
        let mut finished = false;
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match reader.read(line) {
                SentientEvent::Text(t) => store.append_text(&guard.id, &t),
                SentientEvent::Extension(ev) => {
                    extension_bytes += ev.len();
                    if extension_bytes <= limit {
                        extensions.push(serde_json::from_slice(ev).unwrap_or(Value::Null));
                    }
                }
                SentientEvent::Error { message, .. } => failure = Some(message),
                SentientEvent::Done => finished = true,
                SentientEvent::Skip => {}
            }
        }
        let dropped = store.get(&guard.id).is_none_or(|t| t.text_dropped);
        if dropped || extension_bytes > limit {
            // Dropping the run cancels the agent.
            store.finish(
                &guard.id,
                TaskState::Failed,
                Some("The agent's answer is larger than this server returns without streaming; use SendStreamingMessage".into()),
            );
            break;
        }
        if finished {
            match failure.take() {
                Some(m) => store.finish(&guard.id, TaskState::Failed, Some(m)),
                None => store.finish(&guard.id, TaskState::Completed, None),
            }
            break;
        }
    }
    drop(agent);
    match store.get(&guard.id) {
        Some(t) => result_reply(id, json!({"task": task_json(&guard.id, &t, &extensions)})),
        None => rpc_error(id, TASK_NOT_FOUND, "Task not found", "task_not_found"),
    }
}

/// `SendStreamingMessage`: an SSE stream of JSON-RPC responses: the task, artifact
/// updates, then its final status update.
fn stream(app: &Arc<App>, id: &Value, params: &Value, request_id: &HeaderValue) -> Reply {
    let (guard, cancel, context_id, run, events) = match start(app, params, request_id) {
        Ok(t) => t,
        Err(m) => return invalid_params(id, &m),
    };
    let s = &app.settings;
    let (sink, source) = event_queue(s.queue, INITIAL_FRAME_BUFFER);
    let frames = FrameWriter {
        rpc_id: id.clone(),
        task_id: guard.id.clone(),
        context_id,
        answer_started: false,
        events_started: false,
    };
    let relay =
        answer::run_inline_then_spawn(Box::pin(relay(guard, cancel, run, events, sink, frames)));
    Reply::sse(ResponseBody::sse(SseBody::new(source, relay, s.heartbeat)))
}

/// Writes one task's SSE frames (each a JSON-RPC response whose result is a
/// `StreamResponse`).
struct FrameWriter {
    rpc_id: Value,
    task_id: String,
    context_id: String,
    answer_started: bool,
    events_started: bool,
}

impl FrameWriter {
    fn frame(&self, out: &mut BytesMut, result: Value) {
        let body = json!({"jsonrpc": "2.0", "id": self.rpc_id, "result": result});
        out.put_slice(b"data: ");
        out.put_slice(&serde_json::to_vec(&body).unwrap_or_default());
        out.put_slice(b"\n\n");
    }

    fn task(&self, out: &mut BytesMut) {
        let task = json!({"id": self.task_id, "contextId": self.context_id,
            "status": {"state": TaskState::Working.as_str()}});
        self.frame(out, json!({"task": task}));
    }

    fn artifact(&self, out: &mut BytesMut, artifact: &str, part: Value, append: bool, last: bool) {
        self.frame(
            out,
            json!({"artifactUpdate": {
                "taskId": self.task_id, "contextId": self.context_id,
                "artifact": {"artifactId": artifact, "name": artifact, "parts": [part]},
                "append": append, "lastChunk": last,
            }}),
        );
    }

    fn text(&mut self, out: &mut BytesMut, text: &str) {
        let append = std::mem::replace(&mut self.answer_started, true);
        self.artifact(out, ANSWER_ARTIFACT, json!({"text": text}), append, false);
    }

    fn extension(&mut self, out: &mut BytesMut, ev: &[u8]) {
        let append = std::mem::replace(&mut self.events_started, true);
        let data = serde_json::from_slice(ev).unwrap_or(Value::Null);
        self.artifact(
            out,
            EVENTS_ARTIFACT,
            json!({"data": data, "mediaType": "application/json"}),
            append,
            false,
        );
    }

    fn status(&mut self, out: &mut BytesMut, state: TaskState, error: Option<&str>) {
        if self.answer_started && state == TaskState::Completed {
            self.artifact(out, ANSWER_ARTIFACT, json!({"text": ""}), true, true);
        }
        let status = status_json(&self.task_id, &self.context_id, state, error);
        self.frame(
            out,
            json!({"statusUpdate": {"taskId": self.task_id, "contextId": self.context_id,
                "status": status}}),
        );
    }
}

/// Streams one task into `sink`, until it ends, is canceled, or the client is gone
/// (returning then drops, so cancels, the agent, and the guard marks the task
/// canceled).
async fn relay(
    guard: TaskGuard,
    cancel: Arc<Notify>,
    run: AgentRun,
    mut events: EventSource,
    sink: EventSink,
    mut frames: FrameWriter,
) {
    let store = &guard.app.a2a_tasks;
    let mut agent = Some(run);
    let mut reader = EventReader::default();
    let mut out = BytesMut::new();
    let mut ending = Ending::Done;
    let mut failure: Option<String> = None;
    frames.task(&mut out);
    loop {
        let mut finished = false;
        match next_step(&mut agent, &mut events, &cancel).await {
            Step::Events(Next::Data(data)) => {
                for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    match reader.read(line) {
                        SentientEvent::Text(t) => {
                            store.append_text(&guard.id, &t);
                            frames.text(&mut out, &t);
                        }
                        SentientEvent::Extension(ev) => frames.extension(&mut out, ev),
                        SentientEvent::Error { message, code } => {
                            failure = Some(message);
                            ending = Ending::Error(code);
                        }
                        SentientEvent::Done => {
                            let state = if failure.is_some() {
                                TaskState::Failed
                            } else {
                                TaskState::Completed
                            };
                            frames.status(&mut out, state, failure.as_deref());
                            store.finish(&guard.id, state, failure.take());
                            finished = true;
                        }
                        SentientEvent::Skip => {}
                    }
                }
            }
            Step::Events(Next::End | Next::Aborted(_)) => {
                sink.abort(Closed::Disconnected);
                return;
            }
            Step::Canceled => {
                // Dropping the run cancels the agent.
                agent = None;
                frames.status(&mut out, TaskState::Canceled, None);
                finished = true;
            }
        }
        if out.is_empty() && !finished {
            continue;
        }
        if sink.ready().await.is_err() {
            return;
        }
        if finished {
            sink.set_ending(ending);
        }
        if sink.push(finished, |b| b.put_slice(&out)).is_err() || finished {
            drop(agent);
            return;
        }
        out.clear();
    }
}

/// `params.id`, the task's id.
fn task_id(params: &Value) -> Option<&str> {
    params["id"].as_str()
}

/// `GetTask`.
fn get(app: &App, id: &Value, params: &Value) -> Reply {
    let Some(task) = task_id(params) else {
        return invalid_params(id, "params.id must be a string");
    };
    match app.a2a_tasks.get(task) {
        Some(t) => result_reply(id, task_json(task, &t, &[])),
        None => rpc_error(id, TASK_NOT_FOUND, "Task not found", "task_not_found"),
    }
}

/// `CancelTask`: cancels a working task's agent.
fn cancel(app: &App, id: &Value, params: &Value) -> Reply {
    let Some(task) = task_id(params) else {
        return invalid_params(id, "params.id must be a string");
    };
    match app.a2a_tasks.cancel(task) {
        Ok(t) => result_reply(id, task_json(task, &t, &[])),
        Err(CancelRefused::NotFound) => {
            rpc_error(id, TASK_NOT_FOUND, "Task not found", "task_not_found")
        }
        Err(CancelRefused::NotCancelable) => rpc_error(
            id,
            TASK_NOT_CANCELABLE,
            "Task cannot be canceled: it has ended",
            "task_not_cancelable",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a2a_paths() {
        assert!(is_a2a_path("/a2a"));
        assert!(is_a2a_path("//a2a/"));
        assert!(!is_a2a_path("/a2ab"));
        assert!(!is_a2a_path("/agent"));
    }

    #[test]
    fn text_parts_are_the_prompt_and_other_parts_are_refused() {
        let agent: Arc<str> = Arc::from("a");
        let t = parse_message(
            &json!({"message": {"parts": [{"text": "one"}, {"text": "two"}], "contextId": "ctx"}}),
            &agent,
        )
        .unwrap();
        assert_eq!(t.query.prompt, "one\ntwo");
        assert_eq!(t.context_id, "ctx");
        assert!(parse_message(&json!({"message": {"parts": [{"data": {}}]}}), &agent).is_err());
        assert!(parse_message(&json!({"message": {"parts": []}}), &agent).is_err());
        assert!(parse_message(&json!({}), &agent).is_err());
    }
}
