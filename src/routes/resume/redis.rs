//! Resumable streams across replicas (`RESUME_STORE=redis`): the replica running an
//! answer copies each of its events to a Redis Stream and renews a short ownership
//! lease; any replica serves `GET /agent/streams/{id}` from that stream (replay, then
//! blocking reads until the end), and `DELETE` reaches the owner through a flag it
//! reads with every renewal.
//!
//! Keys, all hash-tagged by the stream id so that each pipeline touches one slot of a
//! Redis Cluster: `<prefix>{<id>}:e` the events (fields `n` sequence, `i` event id,
//! `b` the framed bytes, `end` on the last), `:m` who started it, its framing and its
//! source, `:o` the owner's lease, `:c` the cancel flag. Everything expires
//! `RESUME_TTL` after the last write.
//!
//! Failure policy, as the rate limiter's: Redis unreachable never touches the answer
//! itself (it goes on, resumable on its own replica from memory); the copy stops,
//! counted and logged once per worker cool-down. An owner that dies (lease expired, no
//! last event) ends every remote reader with `atomic.error` 503 `agent_lost` and
//! `done`; never a hang or a silent end.
//!
//! It must never block a worker, wait on Redis without a deadline, or let one
//! principal read or cancel another's stream.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Value};
use tokio::sync::{Notify, Semaphore};
use ulid::Ulid;

use crate::backend::redis::{RedisFailure, RedisTarget, WorkerConnections};
use crate::http::body::SseBody;
use crate::http::HttpError;
use crate::protocol::events::{write_event, EventBody, Framing};
use crate::protocol::ids;
use crate::protocol::queue::{event_queue, QueueLimits, Resumable};

/// How long an owner's lease lasts without renewal: a replica that dies is noticed
/// this long after its last renewal.
pub const LEASE: Duration = Duration::from_secs(3);

/// How often an owner renews its lease and looks for a cancel flag (the longest a
/// `DELETE` from another replica waits to be seen).
pub const RENEW: Duration = Duration::from_millis(500);

/// How long a remote reader blocks on one read before it checks the owner's lease.
const BLOCK: Duration = Duration::from_millis(1000);

/// Most entries one remote read takes.
const READ_COUNT: usize = 512;

/// How the Redis copy is set up.
#[derive(Clone, Debug)]
pub struct RedisResumeSettings {
    pub target: RedisTarget,
    /// Bound on each round trip (connecting included).
    pub timeout: Duration,
    /// `RESUME_STREAM_EVENTS`: events kept per stream (`XADD MAXLEN ~`).
    pub max_events: usize,
    /// `RESUME_REMOTE_READERS`: remote readers one process serves at once.
    pub remote_readers: usize,
    /// `RESUME_REDIS_PREFIX`.
    pub prefix: String,
}

/// Figures of the Redis copy.
#[derive(Debug, Default)]
pub struct RedisResumeStats {
    /// Round trips that failed (each stops that stream's copy).
    pub errors: AtomicU64,
    /// Resumes served from Redis (the answer ran on another replica).
    pub remote_resumes: AtomicU64,
    /// Remote readers ended with `agent_lost` (the owner died).
    pub agent_lost: AtomicU64,
    /// Remote reads refused because `RESUME_REMOTE_READERS` were busy.
    pub readers_busy: AtomicU64,
}

/// The Redis side of the stream store.
pub struct RedisStreams {
    conns: WorkerConnections,
    settings: RedisResumeSettings,
    ttl: Duration,
    readers: Arc<Semaphore>,
    pub stats: RedisResumeStats,
}

struct Keys {
    events: String,
    meta: String,
    owner: String,
    cancel: String,
}

impl Keys {
    fn new(prefix: &str, id: &str) -> Keys {
        Keys {
            events: format!("{prefix}{{{id}}}:e"),
            meta: format!("{prefix}{{{id}}}:m"),
            owner: format!("{prefix}{{{id}}}:o"),
            cancel: format!("{prefix}{{{id}}}:c"),
        }
    }
}

/// What a replica needs to know of a stream it did not run.
struct Meta {
    principal: Option<String>,
    framing: Framing,
    source: String,
    /// The A2A task's `contextId`, for an answer that is one.
    context: Option<String>,
}

fn framing_code(f: Framing) -> &'static str {
    match f {
        Framing::Named => "named",
        Framing::DataOnly => "data",
        Framing::Lines => "lines",
    }
}

fn parse_framing(s: &str) -> Framing {
    match s {
        "data" => Framing::DataOnly,
        "lines" => Framing::Lines,
        _ => Framing::Named,
    }
}

/// One stream entry as the owner wrote it.
struct Entry {
    /// The Redis entry id (where the next read starts).
    at: String,
    n: u64,
    id: Option<Ulid>,
    bytes: Bytes,
    end: bool,
}

fn entry(id: &redis::streams::StreamId) -> Entry {
    let field = |k: &str| id.map.get(k);
    let text = |k: &str| match field(k) {
        Some(Value::BulkString(b)) => std::str::from_utf8(b).ok().map(str::to_owned),
        Some(Value::SimpleString(s)) => Some(s.clone()),
        _ => None,
    };
    Entry {
        at: id.id.clone(),
        n: text("n").and_then(|n| n.parse().ok()).unwrap_or(u64::MAX),
        id: text("i").and_then(|i| ids::parse_canonical_ulid(&i)),
        bytes: match field("b") {
            Some(Value::BulkString(b)) => Bytes::copy_from_slice(b),
            _ => Bytes::new(),
        },
        end: field("end").is_some(),
    }
}

/// A stream another replica ran, opened for reading ([`RedisStreams::open`]).
pub struct RemoteStream {
    pub source: crate::protocol::queue::EventSource,
    /// The task following the owner's copy (none when the answer had ended).
    pub follow: Option<tokio::task::AbortHandle>,
    /// The A2A task's `contextId`, when the answer is one.
    pub context: Option<String>,
}

/// What the owner copies, one answer.
pub struct Copy {
    pub id: String,
    pub queue: Resumable,
    pub principal: Option<Box<str>>,
    pub framing: Framing,
    pub source: Arc<str>,
    pub cancel: Arc<Notify>,
    /// The A2A task's `contextId`, for an answer that is one (a replica that
    /// resubscribes to the task names it).
    pub context: Option<Box<str>>,
    /// The slot of the connection that started the answer, held until the copy ends,
    /// so that a drain waits for the answer's last events to reach Redis.
    pub hold: Option<crate::http::activity::ConnHold>,
}

impl RedisStreams {
    pub fn new(settings: RedisResumeSettings, ttl: Duration) -> RedisStreams {
        RedisStreams {
            conns: WorkerConnections::new(settings.target.clone(), settings.timeout),
            readers: Arc::new(Semaphore::new(settings.remote_readers)),
            settings,
            ttl,
            stats: RedisResumeStats::default(),
        }
    }

    fn keys(&self, id: &str) -> Keys {
        Keys::new(&self.settings.prefix, id)
    }

    fn ttl_ms(&self) -> u64 {
        (self.ttl + LEASE).as_millis() as u64
    }

    fn failed(&self, what: &str, f: &RedisFailure) {
        if f.tried() {
            self.stats.errors.fetch_add(1, Relaxed);
        }
        if let RedisFailure::Lost(error) = f {
            // The error, never the URL (it may carry a password).
            tracing::warn!(%error, "resume: Redis failed ({what}); streams stay resumable on their own replica only");
        }
    }

    /// Copies one answer's events to Redis until its end, renewing the lease and
    /// watching for a cancel flag. Ends at the answer's end or at the first failure.
    pub async fn copy(self: Arc<Self>, c: Copy) {
        let keys = self.keys(&c.id);
        let ttl_ms = self.ttl_ms();
        let lease_ms = LEASE.as_millis() as u64;
        let mut after: Option<Ulid> = None;
        let mut n: u64 = 0;
        let mut first = true;
        loop {
            let batch = tokio::select! {
                b = c.queue.next_batch(after) => match b {
                    Ok(b) => Some(b),
                    // Fell more than RESUME_BUFFER_BYTES behind: the copy has a gap
                    // and stops; remote readers see the lease end.
                    Err(_) => return,
                },
                _ = tokio::time::sleep(RENEW) => None,
            };
            let mut pipe = redis::pipe();
            if first {
                let principal = c.principal.as_deref().unwrap_or("");
                let mut fields = vec![
                    ("p", principal),
                    ("f", framing_code(c.framing)),
                    ("s", &c.source),
                ];
                if let Some(context) = &c.context {
                    fields.push(("x", context));
                }
                pipe.hset_multiple(&keys.meta, &fields).ignore();
            }
            let (mut finished, mut stopped) = (false, false);
            if let Some(b) = &batch {
                finished = b.finished;
                stopped = b.stopped;
                let last = b.events.len().saturating_sub(1);
                for (i, (eid, bytes)) in b.events.iter().enumerate() {
                    let mut xadd = redis::cmd("XADD");
                    xadd.arg(&keys.events)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(self.settings.max_events)
                        .arg("*")
                        .arg("n")
                        .arg(n)
                        .arg("i")
                        .arg(eid.to_string())
                        .arg("b")
                        .arg(&bytes[..]);
                    if finished && i == last {
                        xadd.arg("end").arg(1);
                    }
                    pipe.add_command(xadd).ignore();
                    n += 1;
                    after = Some(*eid);
                }
            }
            for key in [&keys.events, &keys.meta] {
                pipe.pexpire(key, ttl_ms as i64).ignore();
            }
            if finished || stopped {
                pipe.del(&keys.owner).ignore();
            } else {
                pipe.set_options(
                    &keys.owner,
                    1,
                    redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(lease_ms)),
                )
                .ignore();
            }
            pipe.exists(&keys.cancel);
            let sent = self
                .conns
                .run(|mut conn| async move { pipe.query_async::<(bool,)>(&mut conn).await })
                .await;
            match sent {
                Ok((cancelled,)) => {
                    if cancelled && !finished {
                        c.cancel.notify_one();
                    }
                }
                Err(f) => {
                    self.failed("copying a stream", &f);
                    return;
                }
            }
            first = false;
            if finished || stopped {
                return;
            }
        }
    }

    /// Reads what Redis holds of a stream another replica ran.
    async fn meta(&self, keys: &Keys) -> Result<Option<Meta>, HttpError> {
        let meta = keys.meta.clone();
        let got = self
            .conns
            .run(|mut conn| async move {
                conn.hgetall::<_, std::collections::HashMap<String, String>>(meta)
                    .await
            })
            .await;
        let map = got.map_err(|f| {
            self.failed("reading a stream", &f);
            HttpError::ResumeUnavailable
        })?;
        if map.is_empty() {
            return Ok(None);
        }
        Ok(Some(Meta {
            principal: map.get("p").filter(|p| !p.is_empty()).cloned(),
            framing: parse_framing(map.get("f").map_or("", String::as_str)),
            source: map.get("s").cloned().unwrap_or_default(),
            context: map.get("x").cloned(),
        }))
    }

    async fn check(&self, keys: &Keys, principal: Option<&str>) -> Result<Meta, HttpError> {
        let meta = self.meta(keys).await?.ok_or(HttpError::StreamNotFound)?;
        match meta.principal.as_deref() {
            Some(owner) if Some(owner) != principal => Err(HttpError::Forbidden),
            _ => Ok(meta),
        }
    }

    /// `GET /agent/streams/{id}` for a stream another replica ran: what Redis holds
    /// after `after`, then the events as the owner copies them, until its end.
    pub async fn resume(
        self: &Arc<Self>,
        id: &str,
        after: Option<Ulid>,
        principal: Option<&str>,
        limits: QueueLimits,
        heartbeat: Option<Duration>,
    ) -> Result<SseBody, HttpError> {
        let r = self.open(id, after, principal, limits).await?;
        Ok(SseBody::new(r.source, r.follow, heartbeat))
    }

    /// A stream another replica ran, opened for reading: its first batch is what
    /// Redis holds after `after` (the whole replay, at once), then the events as the
    /// owner copies them (followed in a task, which the returned handle aborts).
    pub async fn open(
        self: &Arc<Self>,
        id: &str,
        after: Option<Ulid>,
        principal: Option<&str>,
        limits: QueueLimits,
    ) -> Result<RemoteStream, HttpError> {
        let keys = self.keys(id);
        let meta = self.check(&keys, principal).await?;
        let events = keys.events.clone();
        let kept = self
            .conns
            .run(|mut conn| async move { conn.xrange_all::<_, StreamRangeReply>(events).await })
            .await
            .map_err(|f| {
                self.failed("reading a stream", &f);
                HttpError::ResumeUnavailable
            })?;
        let entries: Vec<Entry> = kept.ids.iter().map(entry).collect();
        let replay = replay_after(&entries, after)?;
        let permit = self.readers.clone().try_acquire_owned().map_err(|_| {
            self.stats.readers_busy.fetch_add(1, Relaxed);
            HttpError::ResumeUnavailable
        })?;
        self.stats.remote_resumes.fetch_add(1, Relaxed);
        let (sink, source) = event_queue(limits, replay.bytes.len().max(1024));
        sink.push(replay.ended, |b| b.extend_from_slice(&replay.bytes))
            .map_err(|_| HttpError::StreamNotFound)?;
        let context = meta.context.clone();
        if replay.ended {
            return Ok(RemoteStream {
                source,
                follow: None,
                context,
            });
        }
        let this = self.clone();
        let follow = tokio::spawn(async move {
            let _permit = permit;
            this.follow(keys, replay.at, replay.skip_until, meta, sink)
                .await;
        });
        Ok(RemoteStream {
            source,
            follow: Some(follow.abort_handle()),
            context,
        })
    }

    /// Blocking reads after `at` into `sink` (from the event after `skip_until`, when
    /// given) until the last event, the reader leaves, or the owner's lease ends
    /// without one (then `agent_lost`).
    async fn follow(
        &self,
        keys: Keys,
        mut at: String,
        mut skip_until: Option<Ulid>,
        meta: Meta,
        sink: crate::protocol::queue::EventSink,
    ) {
        let timeout = self.settings.timeout;
        let conn = self
            .settings
            .target
            .dedicated(timeout, BLOCK + timeout)
            .await;
        let Ok(mut conn) = conn else {
            self.lost(&meta, &sink, "Redis is unreachable").await;
            return;
        };
        let opts = StreamReadOptions::default()
            .block(BLOCK.as_millis() as usize)
            .count(READ_COUNT);
        let mut owner_gone = false;
        loop {
            let read = tokio::time::timeout(
                BLOCK + timeout,
                conn.xread_options::<_, _, Option<StreamReadReply>>(&[&keys.events], &[&at], &opts),
            )
            .await;
            let reply = match read {
                Ok(Ok(r)) => r,
                _ => {
                    self.lost(&meta, &sink, "Redis is unreachable").await;
                    return;
                }
            };
            let entries: Vec<Entry> = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>())
                .unwrap_or_default()
                .iter()
                .map(entry)
                .collect();
            if sink.ready().await.is_err() {
                return;
            }
            let mut ended = false;
            let mut out = BytesMut::new();
            for e in &entries {
                at.clone_from(&e.at);
                ended |= e.end;
                match skip_until {
                    Some(p) if e.id == Some(p) => skip_until = None,
                    Some(p) if e.id > Some(p) || e.end => {
                        // Passed it: the position was never an event of this stream.
                        self.end_with(&meta, &sink, EndWith::UnknownPosition).await;
                        return;
                    }
                    Some(_) => {}
                    None => out.extend_from_slice(&e.bytes),
                }
            }
            if !out.is_empty() || ended {
                let pushed = sink.push(ended, |b| b.extend_from_slice(&out));
                if pushed.is_err() || ended {
                    return;
                }
            }
            if entries.is_empty() {
                if owner_gone {
                    // A read after the lease ended found nothing more: the owner died.
                    self.stats.agent_lost.fetch_add(1, Relaxed);
                    self.lost(&meta, &sink, "The replica running this answer stopped")
                        .await;
                    return;
                }
                let alive =
                    tokio::time::timeout(timeout, conn.exists::<_, bool>(&keys.owner)).await;
                match alive {
                    Ok(Ok(true)) => {}
                    // One more read: what the owner wrote before its lease ended.
                    Ok(Ok(false)) => owner_gone = true,
                    _ => {
                        self.lost(&meta, &sink, "Redis is unreachable").await;
                        return;
                    }
                }
            }
        }
    }

    /// Ends a remote reader that cannot go on: `atomic.error` 503 and `done`.
    async fn lost(&self, meta: &Meta, sink: &crate::protocol::queue::EventSink, why: &str) {
        self.end_with(meta, sink, EndWith::Lost(why)).await;
    }

    /// Ends a remote reader with `atomic.error` and `done`.
    async fn end_with(
        &self,
        meta: &Meta,
        sink: &crate::protocol::queue::EventSink,
        why: EndWith<'_>,
    ) {
        if sink.ready().await.is_err() {
            return;
        }
        let (message, code, details): (&str, i64, &[u8]) = match why {
            EndWith::Lost(why) => (why, 503, br#"{"reason":"agent_lost"}"#),
            EndWith::UnknownPosition => (
                "Last-Event-ID is not an event of this stream",
                400,
                br#"{"reason":"unknown_position"}"#,
            ),
        };
        let _ = sink.push(true, |b| {
            write_event(
                b,
                meta.framing,
                "error",
                ids::next_ulid(),
                &meta.source,
                &EventBody::Error {
                    message,
                    code,
                    details: Some(details),
                },
            );
            write_event(
                b,
                meta.framing,
                "done",
                ids::next_ulid(),
                &meta.source,
                &EventBody::Done,
            );
        });
    }

    /// `DELETE /agent/streams/{id}` for a stream another replica runs: sets the
    /// cancel flag its owner reads with its next renewal. `Ok(true)` when it was
    /// running, `Ok(false)` when it had ended.
    pub async fn cancel(&self, id: &str, principal: Option<&str>) -> Result<bool, HttpError> {
        let keys = self.keys(id);
        self.check(&keys, principal).await?;
        let mut pipe = redis::pipe();
        pipe.exists(&keys.owner)
            .set_options(
                &keys.cancel,
                1,
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(self.ttl_ms())),
            )
            .ignore();
        let running = self
            .conns
            .run(|mut conn| async move { pipe.query_async::<(bool,)>(&mut conn).await })
            .await
            .map_err(|f| {
                self.failed("cancelling a stream", &f);
                HttpError::ResumeUnavailable
            })?;
        Ok(running.0)
    }
}

/// Why a remote reader ends early.
enum EndWith<'a> {
    /// The owner died or Redis cannot be read.
    Lost(&'a str),
    /// The position it waited for went by without appearing.
    UnknownPosition,
}

/// Where a remote resume starts.
#[derive(Debug)]
struct Replay {
    /// The events after the position that Redis holds.
    bytes: BytesMut,
    /// The entry id to read on from.
    at: String,
    /// The last event is among them.
    ended: bool,
    /// The position is later than every event the copy holds yet (the client saw it
    /// before the owner's copy reached Redis): skip events until it comes by.
    skip_until: Option<Ulid>,
}

/// What to send first for a resume after `after` from the entries Redis holds.
fn replay_after(entries: &[Entry], after: Option<Ulid>) -> Result<Replay, HttpError> {
    let trimmed = entries.first().is_some_and(|e| e.n != 0);
    let at = entries
        .last()
        .map_or_else(|| "0-0".to_owned(), |e| e.at.clone());
    let ended = entries.last().is_some_and(|e| e.end);
    let start = match after {
        None if trimmed => return Err(HttpError::StreamTruncated),
        None => 0,
        Some(p) => match entries.iter().position(|e| e.id == Some(p)) {
            Some(i) => i + 1,
            None if trimmed => return Err(HttpError::StreamTruncated),
            // Ids increase: one later than the last copied may still come.
            None if !ended && entries.last().is_none_or(|e| e.id < Some(p)) => {
                return Ok(Replay {
                    bytes: BytesMut::new(),
                    at,
                    ended,
                    skip_until: Some(p),
                })
            }
            None => return Err(HttpError::UnknownPosition),
        },
    };
    let rest = &entries[start..];
    // Entries are numbered by the owner: a hole means the copy lost some.
    let contiguous = rest.windows(2).all(|w| w[1].n == w[0].n + 1);
    if !contiguous {
        return Err(HttpError::StreamTruncated);
    }
    let mut bytes = BytesMut::with_capacity(rest.iter().map(|e| e.bytes.len()).sum());
    for e in rest {
        bytes.extend_from_slice(&e.bytes);
    }
    Ok(Replay {
        bytes,
        at,
        ended,
        skip_until: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(n: u64, id: u64, bytes: &'static [u8], end: bool) -> Entry {
        Entry {
            at: format!("1-{n}"),
            n,
            id: Some(Ulid::from_parts(id, 0)),
            bytes: Bytes::from_static(bytes),
            end,
        }
    }

    #[test]
    fn replays_after_a_position_and_refuses_what_was_trimmed() {
        let all = [
            e(0, 10, b"a", false),
            e(1, 11, b"b", false),
            e(2, 12, b"c", true),
        ];
        let r = replay_after(&all, None).unwrap();
        assert_eq!(
            (&r.bytes[..], r.at.as_str(), r.ended),
            (&b"abc"[..], "1-2", true)
        );
        let r = replay_after(&all, Some(Ulid::from_parts(11, 0))).unwrap();
        assert_eq!(&r.bytes[..], b"c");
        assert!(matches!(
            replay_after(&all, Some(Ulid::from_parts(99, 0))),
            Err(HttpError::UnknownPosition)
        ));
        let trimmed = [e(5, 15, b"f", false), e(6, 16, b"g", false)];
        assert!(matches!(
            replay_after(&trimmed, None),
            Err(HttpError::StreamTruncated)
        ));
        assert!(matches!(
            replay_after(&trimmed, Some(Ulid::from_parts(1, 0))),
            Err(HttpError::StreamTruncated)
        ));
        let holed = [e(0, 10, b"a", false), e(2, 12, b"c", false)];
        assert!(matches!(
            replay_after(&holed, None),
            Err(HttpError::StreamTruncated)
        ));
        let r = replay_after(&[], None).unwrap();
        assert_eq!(
            (&r.bytes[..], r.at.as_str(), r.ended),
            (&b""[..], "0-0", false)
        );
        // A position later than the copy so far, on a running stream: wait for it.
        let running = [e(0, 10, b"a", false)];
        let r = replay_after(&running, Some(Ulid::from_parts(20, 0))).unwrap();
        assert_eq!(r.skip_until, Some(Ulid::from_parts(20, 0)));
        assert_eq!((&r.bytes[..], r.at.as_str()), (&b""[..], "1-0"));
        // Earlier than the last copied but not among them: never an event of it.
        assert!(matches!(
            replay_after(&running, Some(Ulid::from_parts(5, 0))),
            Err(HttpError::UnknownPosition)
        ));
    }

    #[test]
    fn keys_of_one_stream_share_a_hash_slot() {
        let k = Keys::new("agentd:stream:", "01abc");
        for key in [&k.events, &k.meta, &k.owner, &k.cancel] {
            assert!(key.contains("{01abc}"), "{key}");
        }
    }
}
