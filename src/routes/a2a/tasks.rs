//! The A2A tasks this process remembers, so that `GetTask` and `CancelTask` work after
//! (or while) a task runs.
//!
//! Bounded twice: at most `A2A_TASKS_MAX` tasks (the oldest is forgotten first), and a
//! task's remembered text at most `A2A_TASK_MAX_BYTES` (beyond it the artifact is
//! dropped from the record and `text_dropped` says so; the stream itself is not cut).
//! A task's changes are also published to whoever subscribed to it (`SubscribeToTask`,
//! `tasks/resubscribe`): the channel is made by the first subscriber, so a task nobody
//! follows costs nothing more, and a snapshot and its subscription are taken in one
//! lock section, so a subscriber misses nothing and sees nothing twice. A subscriber
//! more than `A2A_SUBSCRIBER_BACKLOG` updates behind is told it fell behind.
//! It must never hold an agent's run nor block: one short mutex section per call.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{broadcast, Notify};

/// One change of a task, as its subscribers receive it.
#[derive(Clone, Debug)]
pub(crate) enum Update {
    /// More of the answer's text.
    Text(Arc<str>),
    /// One of the answer's other events.
    Data(Arc<Value>),
    /// The task ended in this state (with the failure's message).
    Ended(TaskState, Option<Arc<str>>),
}

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
    /// The task's subscribers (made by the first one).
    updates: Option<broadcast::Sender<Update>>,
}

impl TaskRecord {
    /// A task this process does not run, as another replica's copy shows it.
    pub(crate) fn remote(context_id: String, state: TaskState, text: String) -> TaskRecord {
        TaskRecord {
            context_id,
            state,
            text,
            text_dropped: false,
            error: None,
            cancel: Arc::default(),
            updates: None,
        }
    }

    fn publish(&self, update: impl FnOnce() -> Update) {
        if let Some(tx) = &self.updates {
            if tx.receiver_count() > 0 {
                let _ = tx.send(update());
            }
        }
    }
}

/// The remembered tasks (see the module's documentation for its bounds).
pub(crate) struct TaskStore {
    max_tasks: usize,
    max_text_bytes: usize,
    /// Updates a subscriber may fall behind before its stream ends with an error (it
    /// may subscribe again: the snapshot then holds the text so far).
    backlog: usize,
    inner: Mutex<Inner>,
    /// Tasks running with no client waiting (`returnImmediately`), at most `max_tasks`.
    detached: Arc<AtomicUsize>,
}

/// A detached task's place, given back when it ends.
pub(crate) struct DetachedSlot(Arc<AtomicUsize>);

impl Drop for DetachedSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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

/// Why a subscription was refused.
#[derive(Debug)]
pub(crate) enum SubscribeRefused {
    NotFound,
    /// The task has ended: there is nothing more to follow.
    Ended(TaskState),
}

impl TaskStore {
    /// An empty store holding at most `max_tasks` tasks of at most `max_text_bytes` text,
    /// whose subscribers may fall `backlog` updates behind.
    pub(crate) fn new(max_tasks: usize, max_text_bytes: usize, backlog: usize) -> TaskStore {
        TaskStore {
            max_tasks: max_tasks.max(1),
            max_text_bytes,
            backlog: backlog.max(1),
            inner: Mutex::new(Inner::default()),
            detached: Arc::default(),
        }
    }

    /// A place for a task that runs with no client waiting; `None` when `A2A_TASKS_MAX`
    /// such tasks run already (more could not all be remembered).
    pub(crate) fn detach(&self) -> Option<DetachedSlot> {
        let taken = self.detached.fetch_add(1, Ordering::Relaxed);
        let slot = DetachedSlot(self.detached.clone());
        (taken < self.max_tasks).then_some(slot)
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
                updates: None,
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
            t.publish(|| Update::Text(text.into()));
            if t.text.len() + text.len() > self.max_text_bytes {
                t.text = String::new();
                t.text_dropped = true;
            } else {
                t.text.push_str(text);
            }
        }
    }

    /// Publishes one of a working task's other events to its subscribers.
    pub(crate) fn publish_data(&self, id: &str, data: &Value) {
        let inner = self.lock();
        if let Some(t) = inner.tasks.get(id) {
            t.publish(|| Update::Data(Arc::new(data.clone())));
        }
    }

    /// A working task's record as it is now, and every change after it.
    pub(crate) fn subscribe(
        &self,
        id: &str,
    ) -> Result<(TaskRecord, broadcast::Receiver<Update>), SubscribeRefused> {
        let mut inner = self.lock();
        let t = inner.tasks.get_mut(id).ok_or(SubscribeRefused::NotFound)?;
        if t.state.is_terminal() {
            return Err(SubscribeRefused::Ended(t.state));
        }
        let rx = match &t.updates {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(self.backlog);
                t.updates = Some(tx);
                rx
            }
        };
        Ok((t.clone(), rx))
    }

    /// Ends a working task (a task already canceled stays canceled); true when this
    /// call ended it.
    pub(crate) fn finish(&self, id: &str, state: TaskState, error: Option<String>) -> bool {
        let mut inner = self.lock();
        match inner.tasks.get_mut(id) {
            Some(t) if !t.state.is_terminal() => {
                t.publish(|| Update::Ended(state, error.as_deref().map(Arc::from)));
                t.state = state;
                t.error = error;
                true
            }
            _ => false,
        }
    }

    /// True when the task's text outgrew `A2A_TASK_MAX_BYTES` (or the task is
    /// forgotten): asked after every batch, so it copies nothing.
    pub(crate) fn text_dropped(&self, id: &str) -> bool {
        self.lock().tasks.get(id).is_none_or(|t| t.text_dropped)
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
        t.publish(|| Update::Ended(TaskState::Canceled, None));
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
        let s = TaskStore::new(2, 100, 16);
        s.insert("a", "c");
        s.insert("b", "c");
        s.insert("c", "c");
        assert_eq!(s.len(), 2);
        assert!(s.get("a").is_none());
        assert!(s.get("c").is_some());
    }

    #[test]
    fn text_beyond_the_limit_is_dropped_not_cut() {
        let s = TaskStore::new(2, 5, 16);
        s.insert("a", "c");
        s.append_text("a", "abc");
        assert_eq!(s.get("a").unwrap().text, "abc");
        s.append_text("a", "def");
        let t = s.get("a").unwrap();
        assert!(t.text_dropped && t.text.is_empty());
    }

    #[test]
    fn only_a_working_task_is_canceled() {
        let s = TaskStore::new(2, 5, 16);
        s.insert("a", "c");
        assert_eq!(s.cancel("a").unwrap().state, TaskState::Canceled);
        s.finish("a", TaskState::Completed, None);
        assert_eq!(s.get("a").unwrap().state, TaskState::Canceled);
        assert_eq!(s.cancel("a").unwrap_err(), CancelRefused::NotCancelable);
        assert_eq!(s.cancel("x").unwrap_err(), CancelRefused::NotFound);
    }

    #[test]
    fn a_subscriber_gets_the_snapshot_then_every_change_once() {
        let s = TaskStore::new(2, 100, 16);
        s.insert("a", "c");
        s.append_text("a", "one ");
        let (snap, mut rx) = s.subscribe("a").unwrap();
        assert_eq!(snap.text, "one ");
        s.append_text("a", "two");
        s.publish_data("a", &serde_json::json!({"k": 1}));
        s.finish("a", TaskState::Completed, None);
        assert!(matches!(rx.try_recv(), Ok(Update::Text(t)) if &*t == "two"));
        assert!(matches!(rx.try_recv(), Ok(Update::Data(d)) if d["k"] == 1));
        assert!(matches!(
            rx.try_recv(),
            Ok(Update::Ended(TaskState::Completed, None))
        ));
        assert!(matches!(
            s.subscribe("a"),
            Err(SubscribeRefused::Ended(TaskState::Completed))
        ));
        assert!(matches!(s.subscribe("x"), Err(SubscribeRefused::NotFound)));
    }

    #[test]
    fn a_subscriber_more_than_the_backlog_behind_is_told() {
        const BACKLOG: usize = 8;
        let s = TaskStore::new(2, usize::MAX, BACKLOG);
        s.insert("a", "c");
        let (_, mut rx) = s.subscribe("a").unwrap();
        for _ in 0..BACKLOG {
            s.append_text("a", "x");
        }
        assert!(matches!(rx.try_recv(), Ok(Update::Text(_))));
        let (_, mut late) = s.subscribe("a").unwrap();
        for _ in 0..=BACKLOG {
            s.append_text("a", "x");
        }
        assert!(matches!(
            late.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(1))
        ));
    }

    #[test]
    fn detached_tasks_are_bounded_by_the_task_limit() {
        let s = TaskStore::new(2, 100, 16);
        let a = s.detach().unwrap();
        let _b = s.detach().unwrap();
        assert!(s.detach().is_none());
        drop(a);
        assert!(s.detach().is_some());
    }

    #[test]
    fn a_canceled_task_tells_its_subscribers() {
        let s = TaskStore::new(2, 100, 16);
        s.insert("a", "c");
        let (_, mut rx) = s.subscribe("a").unwrap();
        s.cancel("a").unwrap();
        assert!(matches!(
            rx.try_recv(),
            Ok(Update::Ended(TaskState::Canceled, None))
        ));
    }
}
