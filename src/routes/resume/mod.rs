//! Resumable streams (`RESUME_STORE=memory` or `redis`): every agent answer gets an unguessable
//! stream id (`x-stream-id`); `GET /agent/streams/{id}` replays what was sent after the
//! client's last event (`Last-Event-ID` or `?after=`) byte for byte, then follows the
//! live events; `DELETE /agent/streams/{id}` cancels a running answer.
//!
//! One shard per worker, holding that worker's answers: a worker takes only its own
//! shard's lock on the `/agent` path, and another worker takes it only to resume or
//! cancel one of its streams. Each answer's events are bounded by its journal
//! (`RESUME_BUFFER_BYTES`); finished answers stay for `RESUME_TTL`, and every second
//! each worker drops its expired ones and, while the process keeps more than
//! `RESUME_MEMORY_BYTES`, its oldest finished ones. With `RESUME_STORE=redis` each
//! answer is also copied to Redis ([`redis`]), so that any replica can resume or
//! cancel it; a stream this process holds is always served from memory. It must never
//! let one principal resume another's stream, and never hold a shard lock across an
//! await.

pub mod redis;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::sync::Notify;

use crate::http::body::SseBody;
use crate::http::{HttpError, Reply, ResponseBody};
use crate::protocol::ids;
use crate::protocol::journal::ReplayError;
use crate::protocol::queue::Resumable;
use crate::routes::App;

/// How resumable streams are kept.
#[derive(Clone, Debug)]
pub struct ResumeSettings {
    /// How long an answer whose client left keeps running for a resume.
    pub grace: Duration,
    /// How long a finished answer stays resumable.
    pub ttl: Duration,
    /// Bytes of events kept per answer.
    pub buffer_bytes: usize,
    /// Bytes of events kept by the whole process.
    pub memory_bytes: usize,
    /// `RESUME_STORE=redis`: where answers are copied for other replicas.
    pub redis: Option<redis::RedisResumeSettings>,
}

/// How often each worker drops its expired streams.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Hex digits of a stream id: the worker (2) and 128 random bits (32).
const ID_LEN: usize = 34;

/// What the store keeps of one answer.
#[derive(Clone)]
struct Kept {
    queue: Resumable,
    /// Who started it (`None` without authentication).
    principal: Option<Box<str>>,
    cancel: Arc<Notify>,
}

#[derive(Default)]
struct Shard {
    streams: HashMap<u128, Kept>,
    /// Ids in the order they were kept (oldest first), for expiry and eviction.
    order: VecDeque<u128>,
}

/// Every resumable answer of the process.
pub struct StreamStore {
    settings: ResumeSettings,
    shards: Box<[Mutex<Shard>]>,
    /// Journal bytes of every shard at its last sweep.
    kept_bytes: Box<[AtomicUsize]>,
    /// `RESUME_STORE=redis`.
    shared: Option<Arc<redis::RedisStreams>>,
}

/// A newly kept answer: its id (the header value) and what its run needs.
pub struct KeptStream {
    pub id: HeaderValue,
    pub cancel: Arc<Notify>,
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Every critical section is a few map operations: a panic cannot tear it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StreamStore {
    pub fn new(settings: ResumeSettings, workers: usize) -> StreamStore {
        let shared = settings
            .redis
            .clone()
            .map(|r| Arc::new(redis::RedisStreams::new(r, settings.ttl)));
        StreamStore {
            shared,
            settings,
            shards: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
            kept_bytes: (0..workers.max(1)).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    pub fn settings(&self) -> &ResumeSettings {
        &self.settings
    }

    /// The Redis side, with `RESUME_STORE=redis`.
    pub fn shared(&self) -> Option<&Arc<redis::RedisStreams>> {
        self.shared.as_ref()
    }

    /// With `RESUME_STORE=redis`, copies an answer to Redis (what `copy` describes,
    /// made only then), in a task of its own on this worker, until its end.
    pub fn copy_to_shared(&self, copy: impl FnOnce() -> redis::Copy) {
        if let Some(shared) = &self.shared {
            tokio::spawn(shared.clone().copy(copy()));
        }
    }

    /// Keeps an answer started on `worker`.
    pub fn keep(&self, worker: usize, queue: Resumable, principal: Option<Box<str>>) -> KeptStream {
        let worker = worker.min(self.shards.len() - 1);
        let mut random = [0u8; 16];
        // aws-lc's DRBG: unguessable ids. It cannot fail short of a broken platform, in
        // which case the id is still unique but the answer is not resumable by guessing.
        let _ = aws_lc_rs::rand::fill(&mut random);
        let key = u128::from_be_bytes(random);
        let cancel = Arc::new(Notify::new());
        let text = format!("{:02x}{key:032x}", worker as u8);
        let id = HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""));
        let kept = Kept {
            queue,
            principal,
            cancel: cancel.clone(),
        };
        let mut shard = lock(&self.shards[worker]);
        shard.streams.insert(key, kept);
        shard.order.push_back(key);
        KeptStream { id, cancel }
    }

    /// Cancels a running answer this process keeps (as `DELETE` does); false when it
    /// keeps no such answer.
    pub fn cancel_local(&self, id: &str) -> bool {
        match self.find(id) {
            Some(kept) => {
                kept.cancel.notify_one();
                true
            }
            None => false,
        }
    }

    /// True for a well-formed stream id (what may be looked up in Redis).
    pub fn is_stream_id(id: &str) -> bool {
        is_stream_id(id)
    }

    fn find(&self, id: &str) -> Option<Kept> {
        if !is_stream_id(id) {
            return None;
        }
        let worker = usize::from_str_radix(&id[..2], 16).ok()?;
        let key = u128::from_str_radix(&id[2..], 16).ok()?;
        let shard = lock(self.shards.get(worker)?);
        let kept = shard.streams.get(&key)?;
        if kept
            .queue
            .finished_at()
            .is_some_and(|t| t.elapsed() > self.settings.ttl)
        {
            return None;
        }
        Some(kept.clone())
    }

    /// The kept answer that sent the event `event` (a browser's `EventSource`
    /// reconnecting to `/stream` names only its last event). Looks through every
    /// shard: reconnects are rare, and each shard's lock is held for its own scan only.
    fn find_by_event(&self, event: ulid::Ulid) -> Option<(String, Kept)> {
        for (worker, m) in self.shards.iter().enumerate() {
            let shard = lock(m);
            let found = shard.streams.iter().find(|(_, k)| k.queue.holds(event));
            if let Some((key, kept)) = found {
                if kept
                    .queue
                    .finished_at()
                    .is_some_and(|t| t.elapsed() > self.settings.ttl)
                {
                    return None;
                }
                return Some((format!("{:02x}{key:032x}", worker as u8), kept.clone()));
            }
        }
        None
    }

    /// Drops `worker`'s expired answers, then its oldest finished ones while the
    /// process keeps more than `RESUME_MEMORY_BYTES`.
    pub fn sweep(&self, worker: usize) {
        let Some(m) = self.shards.get(worker) else {
            return;
        };
        let mut shard = lock(m);
        let ttl = self.settings.ttl;
        let Shard { streams, order } = &mut *shard;
        streams.retain(|_, k| k.queue.finished_at().is_none_or(|t| t.elapsed() <= ttl));
        let mut mine: usize = streams.values().map(|k| k.queue.kept_bytes()).sum();
        let others: usize = self
            .kept_bytes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != worker)
            .map(|(_, b)| b.load(Relaxed))
            .sum();
        let mut i = 0;
        while others + mine > self.settings.memory_bytes && i < order.len() {
            let key = order[i];
            match streams.get(&key) {
                Some(k) if k.queue.finished_at().is_some() => {
                    mine -= k.queue.kept_bytes().min(mine);
                    streams.remove(&key);
                    order.remove(i);
                }
                Some(_) => i += 1,
                None => {
                    order.remove(i);
                }
            }
        }
        order.retain(|k| streams.contains_key(k));
        self.kept_bytes[worker].store(mine, Relaxed);
    }

    /// Sweeps `worker`'s shard every second, for as long as the worker serves.
    pub async fn sweep_forever(&self, worker: usize) {
        loop {
            tokio::time::sleep(SWEEP_INTERVAL).await;
            self.sweep(worker);
        }
    }
}

/// The stream id in `/agent/streams/{id}`.
fn stream_id(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

fn check_principal(kept: &Kept, principal: Option<&str>) -> Result<(), HttpError> {
    match kept.principal.as_deref() {
        Some(owner) if Some(owner) != principal => Err(HttpError::Forbidden),
        _ => Ok(()),
    }
}

/// `GET /agent/streams/{id}`: the events after the client's last one, then the live
/// ones until `done`; from Redis when another replica ran the answer.
pub async fn resume(
    app: &App,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    principal: Option<&str>,
) -> Result<Reply, HttpError> {
    let store = app.streams.as_ref().ok_or(HttpError::StreamNotFound)?;
    let id = stream_id(path);
    let after = resume_position(headers, query)?;
    let Some(kept) = store.find(id) else {
        if !is_stream_id(id) {
            return Err(HttpError::StreamNotFound);
        }
        let shared = store.shared().ok_or(HttpError::StreamNotFound)?;
        let body = shared
            .resume(
                id,
                after,
                principal,
                app.settings.queue,
                app.settings.heartbeat,
            )
            .await?;
        let id = HeaderValue::from_str(id).map_err(|_| HttpError::StreamNotFound)?;
        return Ok(Reply::sse(ResponseBody::sse(body)).with_header(X_STREAM_ID.clone(), id));
    };
    check_principal(&kept, principal)?;
    let source = kept.queue.attach(after).map_err(|e| match e {
        ReplayError::Truncated => HttpError::StreamTruncated,
        ReplayError::UnknownPosition => HttpError::UnknownPosition,
    })?;
    let body = SseBody::new(source, None, app.settings.heartbeat);
    let id = HeaderValue::from_str(id).map_err(|_| HttpError::StreamNotFound)?;
    Ok(Reply::sse(ResponseBody::sse(body)).with_header(X_STREAM_ID.clone(), id))
}

/// Where a resume starts: `Last-Event-ID`, else `?after=`, else the beginning.
fn resume_position(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<ulid::Ulid>, HttpError> {
    let position = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_param(query, "after"));
    let after = match position.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => Some(ids::parse_canonical_ulid(p).ok_or(HttpError::UnknownPosition)?),
    };
    Ok(after)
}

/// True for a well-formed stream id (what may be looked up in Redis).
fn is_stream_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A `/stream` reconnect (`Last-Event-ID` naming an event of a kept answer, not its
/// end) resumed: the rest of that answer instead of a new run. `None` when no kept
/// answer sent that event, or another principal started it.
pub fn resume_stream_reconnect(
    app: &App,
    last_event: ulid::Ulid,
    principal: Option<&str>,
) -> Option<Reply> {
    let store = app.streams.as_ref()?;
    let (id, kept) = store.find_by_event(last_event)?;
    check_principal(&kept, principal).ok()?;
    if kept.queue.ended_with(last_event) {
        // The browser saw `done`: 204 tells EventSource to stop.
        return Some(Reply::empty(StatusCode::NO_CONTENT));
    }
    let source = kept.queue.attach(Some(last_event)).ok()?;
    let body = SseBody::new(source, None, app.settings.heartbeat);
    let id = HeaderValue::from_str(&id).ok()?;
    Some(Reply::sse(ResponseBody::sse(body)).with_header(X_STREAM_ID.clone(), id))
}

/// `DELETE /agent/streams/{id}`: cancels a running answer (its reader gets
/// `atomic.error` and `done`), through Redis when another replica runs it. 202 when it
/// was running, 200 when it had finished.
pub async fn cancel(app: &App, path: &str, principal: Option<&str>) -> Result<Reply, HttpError> {
    let store = app.streams.as_ref().ok_or(HttpError::StreamNotFound)?;
    let id = stream_id(path);
    let running = match store.find(id) {
        Some(kept) => {
            check_principal(&kept, principal)?;
            let running = kept.queue.finished_at().is_none();
            if running {
                kept.cancel.notify_one();
            }
            running
        }
        None if is_stream_id(id) => match store.shared() {
            Some(shared) => shared.cancel(id, principal).await?,
            None => return Err(HttpError::StreamNotFound),
        },
        None => return Err(HttpError::StreamNotFound),
    };
    let (status, body): (StatusCode, &'static [u8]) = if running {
        (StatusCode::ACCEPTED, br#"{"status":"cancelling"}"#)
    } else {
        (StatusCode::OK, br#"{"status":"finished"}"#)
    };
    Ok(Reply::json(status, bytes::Bytes::from_static(body)))
}

/// The response header naming an answer's stream.
pub static X_STREAM_ID: http::HeaderName = http::HeaderName::from_static("x-stream-id");

/// A query parameter's raw value (resume positions are ULIDs: nothing to decode).
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test that waits on its own thread
mod tests {
    use super::*;
    use crate::protocol::queue::{resumable_event_queue, QueueLimits};

    fn settings(ttl_ms: u64, memory: usize) -> ResumeSettings {
        ResumeSettings {
            grace: Duration::from_millis(100),
            ttl: Duration::from_millis(ttl_ms),
            buffer_bytes: 1 << 20,
            memory_bytes: memory,
            redis: None,
        }
    }

    fn queue() -> (crate::protocol::queue::EventSink, Resumable) {
        let limits = QueueLimits {
            capacity: 1 << 16,
            slow_reader_timeout: Duration::from_secs(1),
        };
        let (sink, source, r) = resumable_event_queue(limits, 64, 1 << 20);
        drop(source);
        (sink, r)
    }

    #[test]
    fn ids_are_unguessable_and_found_only_whole() {
        let store = StreamStore::new(settings(60_000, 1 << 20), 2);
        let (_sink, q) = queue();
        let a = store.keep(1, q.clone(), None);
        let b = store.keep(1, q, None);
        let a = a.id.to_str().unwrap().to_owned();
        assert_eq!(a.len(), ID_LEN);
        assert!(a.starts_with("01"));
        assert_ne!(a, b.id.to_str().unwrap());
        assert!(store.find(&a).is_some());
        assert!(store.find(&a[..ID_LEN - 1]).is_none());
        let mut other = a.clone().into_bytes();
        other[ID_LEN - 1] = if other[ID_LEN - 1] == b'0' {
            b'1'
        } else {
            b'0'
        };
        assert!(store.find(std::str::from_utf8(&other).unwrap()).is_none());
        assert!(store.find("zz").is_none());
    }

    #[test]
    fn finished_streams_expire_and_the_oldest_finished_go_first_over_the_memory_limit() {
        let store = StreamStore::new(settings(60_000, 30), 1);
        let mut ids = Vec::new();
        let mut sinks = Vec::new();
        for _ in 0..3 {
            let (sink, q) = queue();
            sink.push_event(Some(ids::next_ulid()), true, |b| {
                b.extend_from_slice(b"0123456789abcdef")
            })
            .unwrap();
            ids.push(store.keep(0, q, None).id.to_str().unwrap().to_owned());
            sinks.push(sink);
        }
        // 48 bytes kept, 30 allowed: the two oldest go.
        store.sweep(0);
        assert!(store.find(&ids[0]).is_none());
        assert!(store.find(&ids[1]).is_none());
        assert!(store.find(&ids[2]).is_some());
        let short = StreamStore::new(settings(0, 1 << 20), 1);
        let (sink, q) = queue();
        sink.push_event(Some(ids::next_ulid()), true, |b| b.extend_from_slice(b"x"))
            .unwrap();
        let id = short.keep(0, q, None).id.to_str().unwrap().to_owned();
        std::thread::sleep(Duration::from_millis(2));
        assert!(short.find(&id).is_none(), "expired");
    }

    #[test]
    fn only_the_principal_that_started_a_stream_may_touch_it() {
        let (_sink, q) = queue();
        let kept = Kept {
            queue: q,
            principal: Some("sub:alice".into()),
            cancel: Arc::new(Notify::new()),
        };
        assert!(check_principal(&kept, Some("sub:alice")).is_ok());
        assert!(check_principal(&kept, Some("sub:bob")).is_err());
        assert!(check_principal(&kept, None).is_err());
    }
}
