//! Token coalescing (`STREAM_CHUNK_SIZE`, `STREAM_BUFFER_TIMEOUT`): consecutive text
//! deltas of one stream are joined into one `chunked.text` event, for the LLM agent's
//! provider tokens and the proxy's upstream text streams alike.
//!
//! Joined text leaves when it reaches the chunk size (in characters) or when the
//! buffer timeout has passed since its first delta, whichever comes first; the first
//! delta of an answer always leaves at once, so the time to the first token does not
//! change. The caller flushes what is pending before anything else it emits (another
//! event, another stream's chunk, the stream's completion, an error) and when the
//! upstream ends, so order is kept.
//!
//! It must never split a delta (so never a UTF-8 character or a grapheme cluster the
//! upstream sent whole), never reorder or drop text, never hold text past the timeout,
//! and never wait on anything but the caller's read and one timer per answer
//! ([`Coalescing`]: one `tokio::time::Sleep`, reset once per batch, never polled when
//! nothing is pending). [`Coalescer`] is the pure logic, its clock passed in.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How text deltas are joined; `chunk_size` 0 is off (one event per delta).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoalesceSettings {
    /// Characters (Unicode scalar values) at which joined text leaves; 0 = off.
    pub chunk_size: usize,
    /// Longest wait of the first pending delta before the joined text leaves.
    pub buffer_timeout: Duration,
}

impl CoalesceSettings {
    /// One event per delta, as without coalescing.
    pub const OFF: CoalesceSettings = CoalesceSettings {
        chunk_size: 0,
        buffer_timeout: Duration::ZERO,
    };

    /// True when deltas are joined (a chunk size is set).
    pub fn is_on(&self) -> bool {
        self.chunk_size > 0
    }
}

impl Default for CoalesceSettings {
    fn default() -> Self {
        CoalesceSettings::OFF
    }
}

/// The pure coalescer of one answer: pending text, its size and since when it waits.
/// Pending text stays under the chunk size plus one delta (`STREAM_CHUNK_SIZE` is at
/// most 65,536; a delta is bounded by the SSE reader's event limit).
#[derive(Debug)]
pub struct Coalescer {
    settings: CoalesceSettings,
    pending: String,
    pending_chars: usize,
    /// When the first pending delta arrived; `None` when nothing is pending.
    pending_since: Option<Instant>,
    /// Whether the answer's first (non-empty) delta has left.
    first_sent: bool,
}

impl Coalescer {
    /// A coalescer with nothing pending.
    pub fn new(settings: CoalesceSettings) -> Self {
        Coalescer {
            settings,
            pending: String::new(),
            pending_chars: 0,
            pending_since: None,
            first_sent: false,
        }
    }

    /// Takes one delta that arrived at `now`; returns the text to emit now, if any.
    /// Off, every delta is returned as it is. On, an empty delta adds nothing.
    pub fn push(&mut self, delta: String, now: Instant) -> Option<String> {
        if !self.settings.is_on() {
            return Some(delta);
        }
        if delta.is_empty() {
            return None;
        }
        if !self.first_sent {
            // Nothing can be pending before the first delta.
            self.first_sent = true;
            return Some(delta);
        }
        let chars = delta.chars().count();
        if self.pending.is_empty() {
            if chars >= self.settings.chunk_size {
                return Some(delta);
            }
            self.pending = delta;
            self.pending_chars = chars;
            self.pending_since = Some(now);
            return None;
        }
        self.pending.push_str(&delta);
        self.pending_chars += chars;
        if self.pending_chars >= self.settings.chunk_size {
            return self.take();
        }
        None
    }

    /// The pending text, if any, to emit now (before another event, at the end, on an
    /// error, at the deadline).
    pub fn take(&mut self) -> Option<String> {
        self.pending_since = None;
        self.pending_chars = 0;
        if self.pending.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.pending))
        }
    }

    /// When the pending text must leave; `None` when nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending_since
            .map(|since| since + self.settings.buffer_timeout)
    }

    /// True while joined text waits to be sent.
    pub fn has_pending(&self) -> bool {
        self.pending_since.is_some()
    }
}

/// What [`Coalescing::read`] got first.
#[derive(Debug)]
pub enum Waited<T> {
    /// The caller's read finished.
    Read(T),
    /// The buffer timeout passed: this pending text must be emitted now.
    Due(String),
}

/// A [`Coalescer`] with its timer: one `Sleep` for the answer, created on the first
/// pending delta and reset once per batch.
pub struct Coalescing {
    coalescer: Coalescer,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Coalescing {
    /// Joining for one answer, its timer not yet armed.
    pub fn new(settings: CoalesceSettings) -> Self {
        Coalescing {
            coalescer: Coalescer::new(settings),
            timer: None,
        }
    }

    /// Takes one delta; returns the text to emit now, if any.
    pub fn push(&mut self, delta: String) -> Option<String> {
        let was_pending = self.coalescer.has_pending();
        let out = self.coalescer.push(delta, Instant::now());
        if !was_pending {
            if let Some(deadline) = self.coalescer.deadline() {
                match &mut self.timer {
                    Some(timer) => timer.as_mut().reset(deadline),
                    None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
            }
        }
        out
    }

    /// The pending text, if any: to emit before anything else.
    pub fn take(&mut self) -> Option<String> {
        self.coalescer.take()
    }

    /// Awaits `read`, unless pending text falls due first: then the text is returned
    /// and `read` is left unfinished (pass a pinned `&mut` future to resume it after
    /// emitting the text, so no read is ever restarted). With nothing pending it is
    /// `read` alone.
    pub async fn read<F: Future>(&mut self, read: F) -> Waited<F::Output> {
        match (&mut self.timer, self.coalescer.has_pending()) {
            (Some(timer), true) => {
                tokio::select! {
                    biased;
                    () = timer.as_mut() => {
                        Waited::Due(self.coalescer.take().unwrap_or_default())
                    }
                    out = read => Waited::Read(out),
                }
            }
            _ => Waited::Read(read.await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn on(chunk_size: usize) -> CoalesceSettings {
        CoalesceSettings {
            chunk_size,
            buffer_timeout: 50 * MS,
        }
    }

    /// Pushes every delta at `now`; returns the events emitted, the rest flushed last.
    fn run(settings: CoalesceSettings, deltas: &[&str]) -> Vec<String> {
        let mut c = Coalescer::new(settings);
        let now = Instant::now();
        let mut out: Vec<String> = deltas
            .iter()
            .filter_map(|d| c.push((*d).to_owned(), now))
            .collect();
        out.extend(c.take());
        out
    }

    #[test]
    fn off_is_one_event_per_delta() {
        let deltas = ["a", "", "bc", "d"];
        assert_eq!(run(CoalesceSettings::OFF, &deltas), deltas);
        assert!(!CoalesceSettings::default().is_on());
    }

    #[test]
    fn the_first_delta_leaves_at_once_then_deltas_join_up_to_the_size() {
        let mut c = Coalescer::new(on(5));
        let now = Instant::now();
        assert_eq!(c.push("ab".into(), now).as_deref(), Some("ab"));
        assert!(!c.has_pending());
        assert_eq!(c.push("cd".into(), now), None);
        assert_eq!(c.deadline(), Some(now + 50 * MS));
        assert_eq!(c.push("e".into(), now + MS), None);
        // The deadline runs from the first pending delta.
        assert_eq!(c.deadline(), Some(now + 50 * MS));
        // Reaching the size exactly emits.
        assert_eq!(c.push("fg".into(), now).as_deref(), Some("cdefg"));
        assert!(!c.has_pending());
        assert_eq!(c.deadline(), None);
        assert_eq!(c.take(), None);
    }

    #[test]
    fn boundaries_never_split_a_delta() {
        // Crossing the size emits the whole delta that crossed it.
        assert_eq!(
            run(on(4), &["x", "ab", "cdefg", "h"]),
            ["x", "abcdefg", "h"]
        );
        // A delta alone at or over the size leaves at once, nothing pending before it.
        assert_eq!(run(on(3), &["x", "abc", "d"]), ["x", "abc", "d"]);
        // Size 1: every delta leaves at once.
        assert_eq!(run(on(1), &["a", "b", "c"]), ["a", "b", "c"]);
        // Empty deltas add nothing and do not count as the first.
        assert_eq!(run(on(10), &["", "a", "", "b", ""]), ["a", "b"]);
    }

    #[test]
    fn the_size_counts_characters_and_multi_byte_text_stays_whole() {
        // 4 characters of 2, 3 and 4 bytes: 4 characters, not 12 bytes.
        let deltas = ["é", "é", "⚡", "😀", "👍🏽", "e\u{301}", "👩\u{200d}💻", "z"];
        let out = run(on(4), &deltas);
        assert_eq!(out.concat(), deltas.concat());
        // "é" first; then "é⚡😀" (3) + "👍🏽" (2 scalars) = 5 ≥ 4; then "é" (2) + "👩‍💻" (3).
        assert_eq!(
            out,
            ["é", "é⚡😀👍🏽", "e\u{301}👩\u{200d}💻", "z"],
            "emitted at delta boundaries only"
        );
    }

    #[test]
    fn take_flushes_what_is_pending_in_order() {
        let mut c = Coalescer::new(on(100));
        let now = Instant::now();
        let mut out: Vec<String> = ["one ", "two ", "three"]
            .iter()
            .filter_map(|d| c.push((*d).to_owned(), now))
            .collect();
        // Another event (or the end, or an error) comes: the pending text leaves first.
        out.extend(c.take());
        out.extend(c.push("four".into(), now));
        assert_eq!(out, ["one ", "two three"]);
        assert_eq!(c.take().as_deref(), Some("four"));
    }

    #[tokio::test(start_paused = true)]
    async fn pending_text_falls_due_at_the_timeout_from_its_first_delta() {
        let mut c = Coalescing::new(on(100));
        assert_eq!(c.push("first".into()).as_deref(), Some("first"));
        let started = Instant::now();
        assert_eq!(c.push("a".into()), None);
        tokio::time::advance(20 * MS).await;
        assert_eq!(c.push("b".into()), None);
        // A read that never finishes: the timer wins at 50 ms after "a".
        let never = std::future::pending::<()>();
        match c.read(never).await {
            Waited::Due(text) => assert_eq!(text, "ab"),
            Waited::Read(()) => panic!("the read cannot finish"),
        }
        assert_eq!(started.elapsed(), 50 * MS);
        // Nothing pending: a read is awaited alone, however long it takes.
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            7
        };
        assert!(matches!(c.read(slow).await, Waited::Read(7)));
        // A new batch gets a new deadline from its own first delta.
        assert_eq!(c.push("c".into()), None);
        let batch = Instant::now();
        match c.read(std::future::pending::<()>()).await {
            Waited::Due(text) => assert_eq!(text, "c"),
            Waited::Read(()) => unreachable!(),
        }
        assert_eq!(batch.elapsed(), 50 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_finishes_first_wins_and_the_text_stays_pending() {
        let mut c = Coalescing::new(on(100));
        c.push("first".into());
        c.push("a".into());
        let quick = async {
            tokio::time::sleep(10 * MS).await;
            "b"
        };
        assert!(matches!(c.read(quick).await, Waited::Read("b")));
        assert_eq!(c.take().as_deref(), Some("a"));
    }
}
