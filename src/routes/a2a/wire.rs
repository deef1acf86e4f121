//! A2A's JSON shapes in the two protocol versions served on `/a2a`: 1.0 (ProtoJSON:
//! `TASK_STATE_*` and `ROLE_*` names, parts as `{text}` / `{data}`, a streamed result
//! wrapped as `{task}`, `{artifactUpdate}` or `{statusUpdate}`) and 0.3 (objects tagged
//! by `kind`, lower-case states and roles, `final` on the last status update). The
//! method's name says which a client speaks: `SendMessage` is 1.0, `message/send` 0.3.
//!
//! It only writes what it is given; it must never decide a task's state.

use bytes::{BufMut, BytesMut};
use serde_json::{json, Value};

use super::tasks::{TaskRecord, TaskState};
use crate::protocol::ids;

/// The artifact that holds the answer's text.
pub(crate) const ANSWER_ARTIFACT: &str = "answer";
/// The artifact that holds the answer's other events, as data parts.
pub(crate) const EVENTS_ARTIFACT: &str = "events";

/// The protocol version a request was made in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// A2A 1.0 (`SendMessage`, `SubscribeToTask`, …).
    V1,
    /// A2A 0.3 (`message/send`, `tasks/resubscribe`, …).
    V03,
}

impl Dialect {
    /// A task state's name.
    pub(crate) fn state(self, s: TaskState) -> &'static str {
        match self {
            Dialect::V1 => s.as_str(),
            Dialect::V03 => match s {
                TaskState::Working => "working",
                TaskState::Completed => "completed",
                TaskState::Failed => "failed",
                TaskState::Canceled => "canceled",
            },
        }
    }

    fn text_part(self, text: &str) -> Value {
        match self {
            Dialect::V1 => json!({"text": text}),
            Dialect::V03 => json!({"kind": "text", "text": text}),
        }
    }

    fn data_part(self, data: Value) -> Value {
        match self {
            Dialect::V1 => json!({"data": data, "mediaType": "application/json"}),
            // 0.3's data part holds an object.
            Dialect::V03 => match data {
                Value::Object(_) => json!({"kind": "data", "data": data}),
                other => json!({"kind": "data", "data": {"value": other}}),
            },
        }
    }

    /// An agent message with one text part.
    fn agent_message(self, task_id: &str, context_id: &str, text: &str) -> Value {
        let mut m = json!({
            "messageId": ids::next_ulid().to_string(),
            "taskId": task_id,
            "contextId": context_id,
            "parts": [self.text_part(text)],
        });
        match self {
            Dialect::V1 => m["role"] = json!("ROLE_AGENT"),
            Dialect::V03 => {
                m["role"] = json!("agent");
                m["kind"] = json!("message");
            }
        }
        m
    }

    /// A task's status object.
    fn status(self, id: &str, context_id: &str, state: TaskState, error: Option<&str>) -> Value {
        let mut status = json!({"state": self.state(state)});
        if let Some(e) = error {
            status["message"] = self.agent_message(id, context_id, e);
        }
        status
    }

    /// A task, as `GetTask` returns it: its status, the answer's text so far and
    /// `events` (the answer's other events, when known).
    pub(crate) fn task(self, id: &str, t: &TaskRecord, events: &[Value]) -> Value {
        let mut artifacts = Vec::new();
        if !t.text.is_empty() {
            artifacts.push(
                json!({"artifactId": ANSWER_ARTIFACT, "name": ANSWER_ARTIFACT,
                "parts": [self.text_part(&t.text)]}),
            );
        }
        if !events.is_empty() {
            let parts: Vec<Value> = events.iter().map(|e| self.data_part(e.clone())).collect();
            artifacts.push(
                json!({"artifactId": EVENTS_ARTIFACT, "name": EVENTS_ARTIFACT, "parts": parts}),
            );
        }
        let mut task = json!({
            "id": id,
            "contextId": t.context_id,
            "status": self.status(id, &t.context_id, t.state, t.error.as_deref()),
            "artifacts": artifacts,
        });
        if t.text_dropped {
            task["metadata"] = json!({"textDropped": true});
        }
        if self == Dialect::V03 {
            task["kind"] = json!("task");
        }
        task
    }

    /// `SendMessage`'s result: 1.0 wraps the task, 0.3 returns it.
    pub(crate) fn send_result(self, task: Value) -> Value {
        match self {
            Dialect::V1 => json!({"task": task}),
            Dialect::V03 => task,
        }
    }
}

/// Writes one task's SSE frames, each a JSON-RPC response whose result is one streamed
/// event in the request's dialect.
pub(crate) struct FrameWriter {
    pub(crate) dialect: Dialect,
    pub(crate) rpc_id: Value,
    pub(crate) task_id: String,
    pub(crate) context_id: String,
    /// The `answer` artifact has been started (the next text chunk appends).
    pub(crate) answer_started: bool,
    /// The `events` artifact has been started.
    pub(crate) events_started: bool,
}

impl FrameWriter {
    /// A writer for a task's stream, nothing sent yet.
    pub(crate) fn new(
        dialect: Dialect,
        rpc_id: Value,
        task_id: String,
        context_id: String,
    ) -> Self {
        FrameWriter {
            dialect,
            rpc_id,
            task_id,
            context_id,
            answer_started: false,
            events_started: false,
        }
    }

    fn frame(&self, out: &mut BytesMut, result: Value) {
        let body = json!({"jsonrpc": "2.0", "id": self.rpc_id, "result": result});
        put_data(out, &body);
    }

    /// A JSON-RPC error as the stream's last frame.
    pub(crate) fn error(&self, out: &mut BytesMut, code: i64, message: &str, data_code: &str) {
        put_data(
            out,
            &super::error::error_object(&self.rpc_id, code, message, data_code),
        );
    }

    /// The task as the stream's first frame.
    pub(crate) fn task(&self, out: &mut BytesMut, task: Value) {
        let result = match self.dialect {
            Dialect::V1 => json!({"task": task}),
            Dialect::V03 => task,
        };
        self.frame(out, result);
    }

    /// A new working task, as `SendStreamingMessage`'s first frame.
    pub(crate) fn working(&self, out: &mut BytesMut) {
        let mut task = json!({"id": self.task_id, "contextId": self.context_id,
            "status": {"state": self.dialect.state(TaskState::Working)}});
        if self.dialect == Dialect::V03 {
            task["kind"] = json!("task");
        }
        self.task(out, task);
    }

    fn artifact(&self, out: &mut BytesMut, artifact: &str, part: Value, append: bool, last: bool) {
        let update = json!({
            "taskId": self.task_id, "contextId": self.context_id,
            "artifact": {"artifactId": artifact, "name": artifact, "parts": [part]},
            "append": append, "lastChunk": last,
        });
        let result = match self.dialect {
            Dialect::V1 => json!({"artifactUpdate": update}),
            Dialect::V03 => {
                let mut u = update;
                u["kind"] = json!("artifact-update");
                u
            }
        };
        self.frame(out, result);
    }

    /// More of the answer's text.
    pub(crate) fn text(&mut self, out: &mut BytesMut, text: &str) {
        let append = std::mem::replace(&mut self.answer_started, true);
        let part = self.dialect.text_part(text);
        self.artifact(out, ANSWER_ARTIFACT, part, append, false);
    }

    /// One of the answer's other events.
    pub(crate) fn data(&mut self, out: &mut BytesMut, data: Value) {
        let append = std::mem::replace(&mut self.events_started, true);
        let part = self.dialect.data_part(data);
        self.artifact(out, EVENTS_ARTIFACT, part, append, false);
    }

    /// The task's final status (after the answer's last, empty chunk when it
    /// completed).
    pub(crate) fn status(&mut self, out: &mut BytesMut, state: TaskState, error: Option<&str>) {
        if self.answer_started && state == TaskState::Completed {
            let part = self.dialect.text_part("");
            self.artifact(out, ANSWER_ARTIFACT, part, true, true);
        }
        let status = self
            .dialect
            .status(&self.task_id, &self.context_id, state, error);
        let update = json!({"taskId": self.task_id, "contextId": self.context_id,
            "status": status});
        let result = match self.dialect {
            Dialect::V1 => json!({"statusUpdate": update}),
            Dialect::V03 => {
                let mut u = update;
                u["kind"] = json!("status-update");
                u["final"] = json!(state.is_terminal());
                u
            }
        };
        self.frame(out, result);
    }
}

/// One SSE `data:` frame holding `body`.
fn put_data(out: &mut BytesMut, body: &Value) {
    out.put_slice(b"data: ");
    out.put_slice(&serde_json::to_vec(body).unwrap_or_default());
    out.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: TaskState, text: &str) -> TaskRecord {
        let store = super::super::tasks::TaskStore::new(1, 1000, 16);
        store.insert("t", "c");
        store.append_text("t", text);
        if state.is_terminal() {
            store.finish("t", state, Some("boom".into()));
        }
        store.get("t").unwrap()
    }

    #[test]
    fn tasks_in_each_dialect() {
        let t = record(TaskState::Failed, "hi");
        let v1 = Dialect::V1.task("t", &t, &[json!({"a": 1})]);
        assert_eq!(v1["status"]["state"], "TASK_STATE_FAILED");
        assert_eq!(v1["status"]["message"]["role"], "ROLE_AGENT");
        assert_eq!(v1["artifacts"][0]["parts"][0], json!({"text": "hi"}));
        assert_eq!(v1["artifacts"][1]["parts"][0]["data"], json!({"a": 1}));
        assert!(v1.get("kind").is_none());
        let v03 = Dialect::V03.task("t", &t, &[json!(3)]);
        assert_eq!(v03["kind"], "task");
        assert_eq!(v03["status"]["state"], "failed");
        assert_eq!(v03["status"]["message"]["role"], "agent");
        assert_eq!(v03["status"]["message"]["kind"], "message");
        assert_eq!(
            v03["artifacts"][0]["parts"][0],
            json!({"kind": "text", "text": "hi"})
        );
        assert_eq!(
            v03["artifacts"][1]["parts"][0],
            json!({"kind": "data", "data": {"value": 3}})
        );
    }

    fn frames(out: &BytesMut) -> Vec<Value> {
        std::str::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| serde_json::from_str(f.strip_prefix("data: ").unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn streamed_events_in_each_dialect() {
        for dialect in [Dialect::V1, Dialect::V03] {
            let mut w = FrameWriter::new(dialect, json!(7), "t".into(), "c".into());
            let mut out = BytesMut::new();
            w.working(&mut out);
            w.text(&mut out, "a");
            w.text(&mut out, "b");
            w.status(&mut out, TaskState::Completed, None);
            let f = frames(&out);
            assert_eq!(f.len(), 5);
            assert!(f.iter().all(|f| f["id"] == 7 && f["jsonrpc"] == "2.0"));
            let r: Vec<&Value> = f.iter().map(|f| &f["result"]).collect();
            match dialect {
                Dialect::V1 => {
                    assert_eq!(r[0]["task"]["status"]["state"], "TASK_STATE_WORKING");
                    assert_eq!(r[1]["artifactUpdate"]["append"], false);
                    assert_eq!(r[2]["artifactUpdate"]["append"], true);
                    assert_eq!(r[3]["artifactUpdate"]["lastChunk"], true);
                    assert_eq!(
                        r[4]["statusUpdate"]["status"]["state"],
                        "TASK_STATE_COMPLETED"
                    );
                }
                Dialect::V03 => {
                    assert_eq!(r[0]["kind"], "task");
                    assert_eq!(r[0]["status"]["state"], "working");
                    assert_eq!(r[1]["kind"], "artifact-update");
                    assert_eq!(r[1]["artifact"]["parts"][0]["kind"], "text");
                    assert_eq!(r[2]["append"], true);
                    assert_eq!(r[3]["lastChunk"], true);
                    assert_eq!(r[4]["kind"], "status-update");
                    assert_eq!(r[4]["status"]["state"], "completed");
                    assert_eq!(r[4]["final"], true);
                }
            }
        }
    }
}
