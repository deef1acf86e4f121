//! The A2A tasks this process remembers, so that `GetTask` and `CancelTask` work after
//! (or while) a task runs.
//!
//! Bounded twice: at most `A2A_TASKS_MAX` tasks (the oldest is forgotten first), and a
//! task's remembered text at most `A2A_TASK_MAX_BYTES` (beyond it the artifact is
//! dropped from the record and `text_dropped` says so; the stream itself is not cut).
//! It must never hold an agent's run nor block: one short mutex section per call.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// A task's state, as A2A 1.0 names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TaskState {
    Working,
    Completed,
    Failed,
    Canceled,
}

impl TaskState {
    /// The protocol's JSON name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TaskState::Working => "TASK_STATE_WORKING",
            TaskState::Completed => "TASK_STATE_COMPLETED",
            TaskState::Failed => "TASK_STATE_FAILED",
            TaskState::Canceled => "TASK_STATE_CANCELED",
        }
    }

    /// True once the task can change no more.
    pub(crate) fn is_terminal(self) -> bool {
        self != TaskState::Working
    }
}

/// What is remembered of one task.
#[derive(Clone, Debug)]
pub(crate) struct TaskRecord {
    pub(crate) context_id: String,
    pub(crate) state: TaskState,
    /// The answer's text so far (empty once `text_dropped`).
    pub(crate) text: String,
    /// The text outgrew `A2A_TASK_MAX_BYTES` and is not remembered.
    pub(crate) text_dropped: bool,
    /// The failure's message, for a failed task.
    pub(crate) error: Option<String>,
    /// Wakes the task's relay to cancel its agent.
    pub(crate) cancel: Arc<Notify>,
}

/// The remembered tasks (see the module's documentation for its bounds).
pub(crate) struct TaskStore {
    max_tasks: usize,
    max_text_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    tasks: HashMap<String, TaskRecord>,
    order: VecDeque<String>,
}

/// Why a cancel was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CancelRefused {
    NotFound,
    NotCancelable,
}

impl TaskStore {
    /// An empty store holding at most `max_tasks` tasks of at most `max_text_bytes` text.
    pub(crate) fn new(max_tasks: usize, max_text_bytes: usize) -> TaskStore {
        TaskStore {
            max_tasks: max_tasks.max(1),
            max_text_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a new working task; returns the notifier that cancels it.
    pub(crate) fn insert(&self, id: &str, context_id: &str) -> Arc<Notify> {
        let cancel = Arc::new(Notify::new());
        let mut inner = self.lock();
        while inner.order.len() >= self.max_tasks {
            if let Some(old) = inner.order.pop_front() {
                inner.tasks.remove(&old);
            }
        }
        inner.order.push_back(id.to_owned());
        inner.tasks.insert(
            id.to_owned(),
            TaskRecord {
                context_id: context_id.to_owned(),
                state: TaskState::Working,
                text: String::new(),
                text_dropped: false,
                error: None,
                cancel: cancel.clone(),
            },
        );
        cancel
    }

    /// Appends answer text to a task's record, within the text bound.
    pub(crate) fn append_text(&self, id: &str, text: &str) {
        let mut inner = self.lock();
        if let Some(t) = inner.tasks.get_mut(id) {
            if t.text_dropped {
                return;
            }
            if t.text.len() + text.len() > self.max_text_bytes {
                t.text = String::new();
                t.text_dropped = true;
            } else {
                t.text.push_str(text);
            }
        }
    }

    /// Ends a working task (a task already canceled stays canceled).
    pub(crate) fn finish(&self, id: &str, state: TaskState, error: Option<String>) {
        let mut inner = self.lock();
        if let Some(t) = inner.tasks.get_mut(id) {
            if !t.state.is_terminal() {
                t.state = state;
                t.error = error;
            }
        }
    }

    /// A copy of a task's record.
    pub(crate) fn get(&self, id: &str) -> Option<TaskRecord> {
        self.lock().tasks.get(id).cloned()
    }

    /// Marks a working task canceled and wakes its relay, which cancels the agent.
    pub(crate) fn cancel(&self, id: &str) -> Result<TaskRecord, CancelRefused> {
        let mut inner = self.lock();
        let t = inner.tasks.get_mut(id).ok_or(CancelRefused::NotFound)?;
        if t.state.is_terminal() {
            return Err(CancelRefused::NotCancelable);
        }
        t.state = TaskState::Canceled;
        t.cancel.notify_one();
        Ok(t.clone())
    }

    /// How many tasks are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_task_is_forgotten_beyond_the_limit() {
        let s = TaskStore::new(2, 100);
        s.insert("a", "c");
        s.insert("b", "c");
        s.insert("c", "c");
        assert_eq!(s.len(), 2);
        assert!(s.get("a").is_none());
        assert!(s.get("c").is_some());
    }

    #[test]
    fn text_beyond_the_limit_is_dropped_not_cut() {
        let s = TaskStore::new(2, 5);
        s.insert("a", "c");
        s.append_text("a", "abc");
        assert_eq!(s.get("a").unwrap().text, "abc");
        s.append_text("a", "def");
        let t = s.get("a").unwrap();
        assert!(t.text_dropped && t.text.is_empty());
    }

    #[test]
    fn only_a_working_task_is_canceled() {
        let s = TaskStore::new(2, 5);
        s.insert("a", "c");
        assert_eq!(s.cancel("a").unwrap().state, TaskState::Canceled);
        s.finish("a", TaskState::Completed, None);
        assert_eq!(s.get("a").unwrap().state, TaskState::Canceled);
        assert_eq!(s.cancel("a").unwrap_err(), CancelRefused::NotCancelable);
        assert_eq!(s.cancel("x").unwrap_err(), CancelRefused::NotFound);
    }
}
