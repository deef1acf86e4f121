//! The A2A front door (protocol 1.0 and 0.3, JSON-RPC binding): the agent card at
//! `GET /.well-known/agent-card.json` (and the older `/.well-known/agent.json`) and
//! JSON-RPC 2.0 at `POST /a2a` (README.md, "A2A front door", has the mapping rules).
//! Each method is served under its 1.0 name and its 0.3 name (`SendMessage` and
//! `message/send`, …); the name says which version's shapes the answer takes
//! ([`wire`]).
//!
//! `SendMessage` and `SendStreamingMessage` translate the message's text parts into the
//! same `Session` and `Query` that `/agent` takes (`contextId` is the session's
//! `activity_id`) and answer through the same lifecycle (`routes::answer`: one `done`,
//! after an error when the agent failed), read back with the OpenAI door's
//! [`EventReader`]: the answer's text is the `answer` artifact (appended chunks, the
//! last one marked), other events are data parts of the `events` artifact,
//! `atomic.error` fails the task, `done` completes it. Tasks are remembered
//! ([`tasks`], bounded) for `GetTask`, `CancelTask` and `SubscribeToTask` (a working
//! task's snapshot, then its updates as its relay publishes them); a cancel wakes the
//! task's relay, which drops (so cancels) the agent, as a client that leaves does. Errors use
//! JSON-RPC's shape ([`error`]); authentication is the OpenAI door's rule
//! ([`super::openai::authorize`]); the card is public.
//!
//! This module must never emit a Sentient event itself nor end an answer another way
//! than `routes::answer` does; a failed answer is never reported as a completed task.

pub(crate) mod error;
pub(crate) mod tasks;
pub(crate) mod wire;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use tokio::sync::Notify;

use self::error::{
    error_object, rpc_error, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND,
    PARSE_ERROR, TASK_NOT_CANCELABLE, TASK_NOT_FOUND, UNSUPPORTED_OPERATION,
};
use self::tasks::{CancelRefused, SubscribeRefused, TaskRecord, TaskState, Update};
use self::wire::{Dialect, FrameWriter};
use super::answer;
use super::openai::stream::{EventReader, SentientEvent};
use super::openai::{next_events, AgentRun};
use crate::http::body::SseBody;
use crate::http::{HttpError, Reply, ResponseBody};
use crate::protocol::events::Framing;
use crate::protocol::queue::{event_queue, Closed, Ending, EventSink, EventSource, Next};
use crate::protocol::request::check_prompt;
use crate::protocol::{ids, Query, Session};
use crate::routes::resume::StreamStore;
use crate::routes::{App, Caller};

/// Initial size of the stream queue's buffer; it grows up to `SSE_QUEUE_BYTES`.
const INITIAL_FRAME_BUFFER: usize = 1024;
/// The `atomic.error` code of an answer that was cancelled.
const CANCELED_CODE: i64 = 499;
/// The protocol versions served, newest first.
const PROTOCOL_VERSIONS: [&str; 2] = ["1.0", "0.3.0"];

/// True for `/a2a`: its errors, routed or not, take JSON-RPC's shape.
pub(crate) fn is_a2a_path(path: &str) -> bool {
    path.split('/').find(|s| !s.is_empty()) == Some("a2a")
}

/// `GET /.well-known/agent-card.json`: the agent card, readable by 1.0 and 0.3
/// clients alike: `supportedInterfaces` lists `/a2a` for both versions (a 1.0 client
/// picks 1.0), and the 0.3 fields (`url`, `protocolVersion`, `preferredTransport`,
/// `security`, each scheme's `type`) sit beside their 1.0 forms. Its URL is built
/// from the request's `Host`.
pub(crate) fn card(app: &App, headers: &HeaderMap) -> Reply {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let agent_id = &*app.settings.agent_id;
    let url = format!("http://{host}/a2a");
    let interfaces: Vec<Value> = PROTOCOL_VERSIONS
        .iter()
        .map(|v| json!({"url": url, "protocolBinding": "JSONRPC", "protocolVersion": v}))
        .collect();
    let mut card = json!({
        "name": agent_id,
        "description": format!("The agentd agent `{}` ({}), served over A2A", agent_id, app.agent.name()),
        "version": env!("CARGO_PKG_VERSION"),
        "supportedInterfaces": interfaces,
        "url": url,
        "protocolVersion": PROTOCOL_VERSIONS[1],
        "preferredTransport": "JSONRPC",
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
            json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "httpAuthSecurityScheme": {"scheme": "bearer", "bearerFormat": "JWT"}}),
        );
    }
    if app.auth.has_api_keys() {
        let description = "an API key sent as the bearer token";
        schemes.insert(
            "apiKey".into(),
            json!({"type": "http", "scheme": "bearer", "description": description,
                "httpAuthSecurityScheme": {"scheme": "bearer", "description": description}}),
        );
    }
    if !schemes.is_empty() {
        let requirements: Vec<Value> = schemes
            .keys()
            .map(|k| json!({"schemes": {k.as_str(): {"list": []}}}))
            .collect();
        let legacy: Vec<Value> = schemes.keys().map(|k| json!({k.as_str(): []})).collect();
        card["securityRequirements"] = Value::Array(requirements);
        card["security"] = Value::Array(legacy);
        card["securitySchemes"] = Value::Object(schemes);
    }
    Reply::json(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&card).unwrap_or_default()),
    )
}

/// `POST /a2a`: one JSON-RPC request, in A2A 1.0's method names or 0.3's.
pub(crate) async fn rpc(
    req: Request<Incoming>,
    headers: &HeaderMap,
    app: &Arc<App>,
    request_id: &HeaderValue,
    caller: Caller,
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
    let (method, dialect) = match method {
        "SendMessage" | "SendStreamingMessage" | "GetTask" | "CancelTask" | "SubscribeToTask" => {
            (method, Dialect::V1)
        }
        "message/send" => ("SendMessage", Dialect::V03),
        "message/stream" => ("SendStreamingMessage", Dialect::V03),
        "tasks/get" => ("GetTask", Dialect::V03),
        "tasks/cancel" => ("CancelTask", Dialect::V03),
        "tasks/resubscribe" => ("SubscribeToTask", Dialect::V03),
        _ => {
            return Ok(rpc_error(
                &id,
                METHOD_NOT_FOUND,
                &format!("Method not found: {method}"),
                "method_not_found",
            ))
        }
    };
    let streamed = matches!(method, "SendStreamingMessage" | "SubscribeToTask");
    let answer = match method {
        "SendMessage" => send(app, dialect, &id, params, request_id, caller).await,
        "SendStreamingMessage" => stream(app, dialect, &id, params, request_id, caller),
        "GetTask" => get(app, dialect, &id, params),
        "CancelTask" => cancel(app, dialect, &id, params),
        _ => subscribe(app, dialect, &id, params, caller.principal.as_deref()).await,
    };
    Ok(match answer {
        Ok(reply) => reply,
        // A 0.3 client reads a streaming method's answer only as SSE: a refusal there
        // is one SSE event holding the JSON-RPC error, as 0.3's reference server sends.
        Err(refusal) if streamed && dialect == Dialect::V03 => sse_once(app, &refusal),
        Err(refusal) => error::error_reply(&refusal),
    })
}

/// A method's answer: its reply, or the JSON-RPC error object it is refused with
/// (rendered by [`rpc`], which knows how the caller reads it).
type Answer = Result<Reply, Value>;

/// An SSE stream of one event holding `body` (a JSON-RPC response).
fn sse_once(app: &App, body: &Value) -> Reply {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let (sink, source) = event_queue(app.settings.queue, body.len() + 8);
    let _ = sink.push(true, |b| {
        b.put_slice(b"data: ");
        b.put_slice(&body);
        b.put_slice(b"\n\n");
    });
    Reply::sse(ResponseBody::sse(SseBody::new(
        source,
        None,
        app.settings.heartbeat,
    )))
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

/// `params.message`: its text parts (`{text}` in 1.0, `{kind: "text", text}` in 0.3),
/// joined by newlines, are the prompt (the same 1 to 10,000-character rule as
/// `/agent`); other parts are refused.
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

/// Marks its task canceled when dropped before the task ended (the client left, so
/// the agent was cancelled).
struct TaskGuard {
    app: Arc<App>,
    id: String,
    /// The answer is copied to Redis (`RESUME_STORE=redis`): a cancel goes through its
    /// stream, so that the copy ends as the task does.
    shared: bool,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let ended_here = self
            .app
            .a2a_tasks
            .finish(&self.id, TaskState::Canceled, None);
        if ended_here && self.shared {
            // The answer runs on its own: end it through its stream.
            cancel_run(self);
        }
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

/// Starts a task: begins the agent's answer and remembers it. With
/// `RESUME_STORE=redis` the answer is a resumable stream copied to Redis, the task's id
/// is the stream's (so that any replica can follow it: `SubscribeToTask`), and the
/// answer runs as a task of its own, ended through its stream (CancelTask, or its
/// client leaving) so that its copy ends as the task does; else the id is the query's
/// and the answer's run is returned, to be polled (and dropped to cancel it) by its
/// relay.
fn start(
    app: &Arc<App>,
    params: &Value,
    request_id: &HeaderValue,
    caller: Caller,
) -> Result<Started, String> {
    let new = parse_message(params, &app.settings.agent_id)?;
    let shared = app.streams.as_ref().is_some_and(|s| s.shared().is_some());
    let (id, run, events): (String, Option<AgentRun>, EventSource) = if shared {
        let context = Some(new.context_id.clone().into_boxed_str());
        let (run, events, stream) = answer::begin_resumable(
            app,
            new.session,
            new.query,
            Framing::Lines,
            request_id,
            caller,
            context,
        );
        let id = stream
            .and_then(|s| s.to_str().ok().map(str::to_owned))
            .unwrap_or_default();
        let _ = answer::run_inline_then_spawn(Box::pin(run));
        (id, None, events)
    } else {
        let id = new.query.id.to_string();
        let (run, events) = answer::begin(app, new.session, new.query, Framing::Lines, request_id);
        (id, Some(Box::pin(run)), events)
    };
    let cancel = app.a2a_tasks.insert(&id, &new.context_id);
    let guard = TaskGuard {
        app: app.clone(),
        id,
        shared,
    };
    Ok(Started {
        guard,
        cancel,
        context_id: new.context_id,
        run,
        events,
    })
}

/// A started task: its guard, its cancel, its `contextId`, the answer's run (when the
/// relay polls it) and its events.
struct Started {
    guard: TaskGuard,
    cancel: Arc<Notify>,
    context_id: String,
    run: Option<AgentRun>,
    events: EventSource,
}

/// A task's cancel: through its stream when it is copied to Redis (the answer then
/// ends with `atomic.error` 499 and `done`, which the caller reads on to, and so do
/// other replicas' subscribers); true when the caller must instead drop the run.
fn cancel_run(guard: &TaskGuard) -> bool {
    let through_stream = guard.shared
        && guard
            .app
            .streams
            .as_ref()
            .is_some_and(|s| s.cancel_local(&guard.id));
    !through_stream
}

/// The JSON-RPC error for a message that cannot start a task.
fn invalid_params(id: &Value, why: &str) -> Value {
    error_object(
        id,
        INVALID_PARAMS,
        &format!("Invalid params: {why}"),
        "validation_failed",
    )
}

/// The JSON-RPC error for a task this process does not know.
fn task_not_found(id: &Value) -> Value {
    error_object(id, TASK_NOT_FOUND, "Task not found", "task_not_found")
}

/// True when the caller asked not to wait for the task's end (1.0:
/// `configuration.returnImmediately`, 0.3: `configuration.blocking: false`).
fn returns_immediately(params: &Value) -> bool {
    let c = &params["configuration"];
    c["returnImmediately"] == Value::Bool(true) || c["blocking"] == Value::Bool(false)
}

/// `SendMessage`: runs the task to its end and returns it; or, when asked to return
/// at once, returns the working task and runs it on, detached, until it ends or is
/// canceled (`GetTask` and `SubscribeToTask` follow it).
async fn send(
    app: &Arc<App>,
    dialect: Dialect,
    id: &Value,
    params: &Value,
    request_id: &HeaderValue,
    caller: Caller,
) -> Answer {
    let store = &app.a2a_tasks;
    let slot =
        match returns_immediately(params) {
            false => None,
            true => match store.detach() {
                Some(slot) => Some(slot),
                None => return Err(error_object(
                    id,
                    INTERNAL_ERROR,
                    "Too many tasks run detached (A2A_TASKS_MAX); retry, or wait for the answer",
                    "saturated",
                )),
            },
        };
    let Started {
        guard,
        cancel,
        run,
        events,
        ..
    } = match start(app, params, request_id, caller) {
        Ok(t) => t,
        Err(m) => return Err(invalid_params(id, &m)),
    };
    if let Some(slot) = slot {
        let task = store
            .get(&guard.id)
            .map(|t| dialect.task(&guard.id, &t, &[]));
        let detached = Box::pin(async move {
            collect(guard, cancel, run, events).await;
            drop(slot);
        });
        let _ = answer::run_inline_then_spawn(detached);
        return match task {
            Some(t) => Ok(result_reply(id, dialect.send_result(t))),
            None => Err(task_not_found(id)),
        };
    }
    let task_id = guard.id.clone();
    let extensions = collect(guard, cancel, run, events).await;
    match store.get(&task_id) {
        Some(t) => Ok(result_reply(
            id,
            dialect.send_result(dialect.task(&task_id, &t, &extensions)),
        )),
        None => Err(task_not_found(id)),
    }
}

/// Runs a non-streamed task to its end (or cancel) into its record; returns its other
/// events (within `A2A_TASK_MAX_BYTES`: beyond it the task fails and the agent is
/// cancelled).
async fn collect(
    guard: TaskGuard,
    cancel: Arc<Notify>,
    run: Option<AgentRun>,
    mut events: EventSource,
) -> Vec<Value> {
    let store = &guard.app.a2a_tasks;
    let limit = guard.app.settings.a2a_task_max_bytes;
    let mut agent = run;
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
            // The record is canceled already; the answer ends on its own.
            Step::Canceled if !cancel_run(&guard) => continue,
            Step::Canceled => break,
        };
        let mut finished = false;
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match reader.read(line) {
                SentientEvent::Text(t) => store.append_text(&guard.id, &t),
                SentientEvent::Extension(ev) => {
                    extension_bytes += ev.len();
                    let data = serde_json::from_slice(ev).unwrap_or(Value::Null);
                    store.publish_data(&guard.id, &data);
                    if extension_bytes <= limit {
                        extensions.push(data);
                    }
                }
                SentientEvent::Error { message, .. } => failure = Some(message),
                SentientEvent::Done => finished = true,
                SentientEvent::Skip => {}
            }
        }
        let dropped = store.text_dropped(&guard.id);
        if dropped || extension_bytes > limit {
            // Dropping the run cancels the agent (one that runs on its own is ended
            // through its stream).
            if guard.shared {
                cancel_run(&guard);
            }
            store.finish(
                &guard.id,
                TaskState::Failed,
                Some("The agent's answer is larger than this server returns without streaming; use SendStreamingMessage".into()),
            );
            break;
        }
        if finished {
            let _ = match failure.take() {
                Some(m) => store.finish(&guard.id, TaskState::Failed, Some(m)),
                None => store.finish(&guard.id, TaskState::Completed, None),
            };
            break;
        }
    }
    extensions
}

/// `SendStreamingMessage`: an SSE stream of JSON-RPC responses: the task, artifact
/// updates, then its final status update.
fn stream(
    app: &Arc<App>,
    dialect: Dialect,
    id: &Value,
    params: &Value,
    request_id: &HeaderValue,
    caller: Caller,
) -> Answer {
    let Started {
        guard,
        cancel,
        context_id,
        run,
        events,
    } = match start(app, params, request_id, caller) {
        Ok(t) => t,
        Err(m) => return Err(invalid_params(id, &m)),
    };
    let s = &app.settings;
    let (sink, source) = event_queue(s.queue, INITIAL_FRAME_BUFFER);
    let frames = FrameWriter::new(dialect, id.clone(), guard.id.clone(), context_id);
    let relay =
        answer::run_inline_then_spawn(Box::pin(relay(guard, cancel, run, events, sink, frames)));
    Ok(Reply::sse(ResponseBody::sse(SseBody::new(
        source,
        relay,
        s.heartbeat,
    ))))
}

/// Streams one task into `sink`, until it ends, is canceled, or the client is gone
/// (returning then drops, so cancels, the agent, and the guard marks the task
/// canceled).
async fn relay(
    guard: TaskGuard,
    cancel: Arc<Notify>,
    run: Option<AgentRun>,
    mut events: EventSource,
    sink: EventSink,
    mut frames: FrameWriter,
) {
    let store = &guard.app.a2a_tasks;
    let mut agent = run;
    let mut reader = EventReader::default();
    let mut out = BytesMut::new();
    let mut ending = Ending::Done;
    let mut failure: Option<String> = None;
    let mut canceling = false;
    frames.working(&mut out);
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
                        SentientEvent::Extension(ev) => {
                            let data = serde_json::from_slice(ev).unwrap_or(Value::Null);
                            store.publish_data(&guard.id, &data);
                            frames.data(&mut out, data);
                        }
                        SentientEvent::Error { message, code } => {
                            failure = Some(message);
                            if !canceling {
                                ending = Ending::Error(code);
                            }
                        }
                        SentientEvent::Done => {
                            let state = match (canceling, &failure) {
                                (true, _) => TaskState::Canceled,
                                (false, Some(_)) => TaskState::Failed,
                                (false, None) => TaskState::Completed,
                            };
                            let error = failure.take().filter(|_| !canceling);
                            frames.status(&mut out, state, error.as_deref());
                            store.finish(&guard.id, state, error);
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
            Step::Canceled if !cancel_run(&guard) => {
                // The answer ends through its stream; its `done` ends the task.
                canceling = true;
                ending = Ending::Error(CANCELED_CODE);
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
fn get(app: &App, dialect: Dialect, id: &Value, params: &Value) -> Answer {
    let Some(task) = task_id(params) else {
        return Err(invalid_params(id, "params.id must be a string"));
    };
    match app.a2a_tasks.get(task) {
        Some(t) => Ok(result_reply(id, dialect.task(task, &t, &[]))),
        None => Err(task_not_found(id)),
    }
}

/// `CancelTask`: cancels a working task's agent.
fn cancel(app: &App, dialect: Dialect, id: &Value, params: &Value) -> Answer {
    let Some(task) = task_id(params) else {
        return Err(invalid_params(id, "params.id must be a string"));
    };
    match app.a2a_tasks.cancel(task) {
        Ok(t) => Ok(result_reply(id, dialect.task(task, &t, &[]))),
        Err(CancelRefused::NotFound) => Err(task_not_found(id)),
        Err(CancelRefused::NotCancelable) => Err(error_object(
            id,
            TASK_NOT_CANCELABLE,
            "Task cannot be canceled: it has ended",
            "task_not_cancelable",
        )),
    }
}

/// `SubscribeToTask` (0.3: `tasks/resubscribe`): for a working task, an SSE stream of
/// the task as it is now (the answer's text so far), then its updates from there on
/// until its final status. Following a task never cancels it; a task that has ended
/// is refused (`UnsupportedOperation`), as A2A says. A task another replica runs is
/// followed through its Redis copy (`RESUME_STORE=redis`).
async fn subscribe(
    app: &Arc<App>,
    dialect: Dialect,
    id: &Value,
    params: &Value,
    principal: Option<&str>,
) -> Answer {
    let Some(task) = task_id(params) else {
        return Err(invalid_params(id, "params.id must be a string"));
    };
    let (snapshot, updates) = match app.a2a_tasks.subscribe(task) {
        Ok(s) => s,
        Err(SubscribeRefused::NotFound) => {
            return Box::pin(subscribe_remote(app, dialect, id, task, principal)).await
        }
        Err(SubscribeRefused::Ended(state)) => return Err(task_ended(id, dialect, task, state)),
    };
    let s = &app.settings;
    let (sink, source) = event_queue(s.queue, INITIAL_FRAME_BUFFER);
    let mut frames = FrameWriter::new(
        dialect,
        id.clone(),
        task.to_owned(),
        snapshot.context_id.clone(),
    );
    frames.answer_started = !snapshot.text.is_empty() || snapshot.text_dropped;
    let mut first = BytesMut::new();
    frames.task(&mut first, dialect.task(task, &snapshot, &[]));
    let follow = answer::run_inline_then_spawn(Box::pin(follow(updates, sink, frames, first)));
    Ok(Reply::sse(ResponseBody::sse(SseBody::new(
        source,
        follow,
        s.heartbeat,
    ))))
}

/// The refusal to subscribe to a task that has ended.
fn task_ended(id: &Value, dialect: Dialect, task: &str, state: TaskState) -> Value {
    error_object(
        id,
        UNSUPPORTED_OPERATION,
        &format!(
            "Task {task} has ended ({}): there is nothing to subscribe to; GetTask returns it",
            dialect.state(state)
        ),
        "task_ended",
    )
}

/// What an answer's Sentient events say of its task, read in order.
#[derive(Default)]
struct AnswerState {
    reader: EventReader,
    failure: Option<(String, i64)>,
    ended: Option<TaskState>,
}

impl AnswerState {
    /// Reads one batch of events, writing each into `frames` (when given) and the
    /// answer's text into `text`.
    fn read(
        &mut self,
        data: &[u8],
        text: &mut String,
        mut frames: Option<(&mut FrameWriter, &mut BytesMut)>,
    ) {
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match self.reader.read(line) {
                SentientEvent::Text(t) => {
                    text.push_str(&t);
                    if let Some((f, out)) = frames.as_mut() {
                        f.text(out, &t);
                    }
                }
                SentientEvent::Extension(ev) => {
                    if let Some((f, out)) = frames.as_mut() {
                        f.data(out, serde_json::from_slice(ev).unwrap_or(Value::Null));
                    }
                }
                SentientEvent::Error { message, code } => self.failure = Some((message, code)),
                SentientEvent::Done => {
                    let state = match &self.failure {
                        Some((_, CANCELED_CODE)) => TaskState::Canceled,
                        Some(_) => TaskState::Failed,
                        None => TaskState::Completed,
                    };
                    self.ended = Some(state);
                    if let Some((f, out)) = frames.as_mut() {
                        let error = self.failure.as_ref().map(|(m, _)| m.as_str());
                        let error = error.filter(|_| state == TaskState::Failed);
                        f.status(out, state, error);
                    }
                }
                SentientEvent::Skip => {}
            }
        }
    }
}

/// [`subscribe`] for a task another replica runs: its answer's Redis copy, replayed
/// into the snapshot, then followed.
async fn subscribe_remote(
    app: &Arc<App>,
    dialect: Dialect,
    id: &Value,
    task: &str,
    principal: Option<&str>,
) -> Answer {
    let shared = app.streams.as_ref().and_then(|s| s.shared());
    let Some(shared) = shared.filter(|_| StreamStore::is_stream_id(task)) else {
        return Err(task_not_found(id));
    };
    let remote = match shared.open(task, None, principal, app.settings.queue).await {
        Ok(r) => r,
        Err(HttpError::StreamNotFound) => return Err(task_not_found(id)),
        Err(e) => {
            return Err(error_object(
                id,
                error::rpc_code(&e),
                &e.to_string(),
                e.code(),
            ))
        }
    };
    // An answer that is no A2A task is not one to subscribe to.
    let Some(context_id) = remote.context else {
        return Err(task_not_found(id));
    };
    let mut events = remote.source;
    let mut state = AnswerState::default();
    let mut text = String::new();
    // The first batch is everything copied so far.
    match next_events(&mut None, &mut events).await {
        Next::Data(data) => state.read(&data, &mut text, None),
        Next::End | Next::Aborted(_) => return Err(task_not_found(id)),
    }
    if let Some(ended) = state.ended {
        return Err(task_ended(id, dialect, task, ended));
    }
    let snapshot = TaskRecord::remote(context_id.clone(), TaskState::Working, text);
    let mut frames = FrameWriter::new(dialect, id.clone(), task.to_owned(), context_id);
    frames.answer_started = !snapshot.text.is_empty();
    let mut first = BytesMut::new();
    frames.task(&mut first, dialect.task(task, &snapshot, &[]));
    let s = &app.settings;
    let (sink, source) = event_queue(s.queue, INITIAL_FRAME_BUFFER);
    let relay = Box::pin(follow_remote(events, state, sink, frames, first));
    let relay = answer::run_inline_then_spawn(relay);
    Ok(Reply::sse(ResponseBody::sse(SseBody::new(
        source,
        relay,
        s.heartbeat,
    ))))
}

/// Translates a remote answer's events into a subscriber's frames (`out` holds what
/// goes first) until the answer's `done` or the subscriber leaves.
async fn follow_remote(
    mut events: EventSource,
    mut state: AnswerState,
    sink: EventSink,
    mut frames: FrameWriter,
    mut out: BytesMut,
) {
    let mut text = String::new();
    loop {
        let finished = match next_events(&mut None, &mut events).await {
            Next::Data(data) => {
                state.read(&data, &mut text, Some((&mut frames, &mut out)));
                text.clear();
                state.ended.is_some()
            }
            Next::End | Next::Aborted(_) => {
                frames.error(
                    &mut out,
                    INTERNAL_ERROR,
                    "The task's stream ended before the task did",
                    "stream_broken",
                );
                true
            }
        };
        if out.is_empty() && !finished {
            continue;
        }
        if sink.ready().await.is_err() {
            return;
        }
        if sink.push(finished, |b| b.put_slice(&out)).is_err() || finished {
            return;
        }
        out.clear();
    }
}

/// Writes a subscriber's frames into `sink` (`out` holds what goes first) until the
/// task ends, the subscriber falls too far behind, or it leaves.
async fn follow(
    mut updates: broadcast::Receiver<Update>,
    sink: EventSink,
    mut frames: FrameWriter,
    mut out: BytesMut,
) {
    loop {
        let mut finished = false;
        let mut next = Some(updates.recv().await);
        while let Some(got) = next.take() {
            match got {
                Ok(Update::Text(t)) => frames.text(&mut out, &t),
                Ok(Update::Data(d)) => frames.data(&mut out, (*d).clone()),
                Ok(Update::Ended(state, error)) => {
                    frames.status(&mut out, state, error.as_deref());
                    finished = true;
                }
                Err(RecvError::Lagged(_)) => {
                    frames.error(
                        &mut out,
                        INTERNAL_ERROR,
                        "This subscriber fell behind the task; subscribe again to get it as it is now",
                        "subscriber_behind",
                    );
                    finished = true;
                }
                Err(RecvError::Closed) => {
                    frames.error(
                        &mut out,
                        TASK_NOT_FOUND,
                        "The task is no longer remembered (A2A_TASKS_MAX)",
                        "task_not_found",
                    );
                    finished = true;
                }
            }
            if !finished {
                // Everything already published goes in the same write.
                next = match updates.try_recv() {
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                    Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                    Ok(u) => Some(Ok(u)),
                };
            }
        }
        if sink.ready().await.is_err() {
            return;
        }
        if sink.push(finished, |b| b.put_slice(&out)).is_err() || finished {
            return;
        }
        out.clear();
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
