//! The ids of the `done` events of recently finished `/stream` answers.
//!
//! A browser's `EventSource` reconnects by itself when a stream ends, sending the id of
//! the last event it saw (`Last-Event-ID`). When that id is a `done` this process sent,
//! the answer is complete and the reconnect is told so (204, which makes `EventSource`
//! stop) instead of running the agent again. Bounded: the oldest ids are forgotten
//! first, so a reconnect that comes after `capacity` newer answers runs the agent as
//! before. Shared by every worker (a reconnect may reach any of them) behind one short
//! lock, taken once per finished `/stream` answer and once per reconnect, never by
//! `/agent`. It must never grow past its capacity nor hold its lock across an await.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use ulid::Ulid;

/// Remembered `done` ids, at most `capacity` of them.
pub struct FinishedStreams {
    capacity: usize,
    ids: Mutex<Ids>,
}

#[derive(Default)]
struct Ids {
    order: VecDeque<u128>,
    set: HashSet<u128>,
}

impl FinishedStreams {
    /// `capacity` 0 remembers nothing.
    pub fn new(capacity: usize) -> FinishedStreams {
        FinishedStreams {
            capacity,
            ids: Mutex::new(Ids::default()),
        }
    }

    /// Remembers `done_id`, forgetting the oldest id when full.
    pub fn insert(&self, done_id: Ulid) {
        if self.capacity == 0 {
            return;
        }
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if !ids.set.insert(done_id.0) {
            return;
        }
        ids.order.push_back(done_id.0);
        while ids.order.len() > self.capacity {
            if let Some(old) = ids.order.pop_front() {
                ids.set.remove(&old);
            }
        }
    }

    /// True when `id` is the `done` of a remembered answer.
    pub fn contains(&self, id: Ulid) -> bool {
        self.capacity != 0
            && self
                .ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set
                .contains(&id.0)
    }

    pub fn len(&self) -> usize {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .order
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_at_most_its_capacity_oldest_forgotten_first() {
        let f = FinishedStreams::new(3);
        let ids: Vec<Ulid> = (0..5u128).map(Ulid).collect();
        for id in &ids {
            f.insert(*id);
        }
        assert_eq!(f.len(), 3);
        assert!(!f.contains(ids[0]) && !f.contains(ids[1]));
        assert!(ids[2..].iter().all(|id| f.contains(*id)));
        f.insert(ids[4]);
        assert_eq!(f.len(), 3, "a repeated id takes no second place");
        let off = FinishedStreams::new(0);
        off.insert(ids[0]);
        assert!(!off.contains(ids[0]) && off.is_empty());
    }
}
