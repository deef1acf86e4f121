//! Heap allocations made on worker threads per request, counted by a global allocator
//! that only counts on threads the server marks as workers.

// A test process, not a worker: it may block its own threads, and signal or limit the
// processes it starts.
#![allow(clippy::disallowed_methods, unsafe_code)]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static IS_WORKER: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if IS_WORKER.try_with(|w| w.get()).unwrap_or(false) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if IS_WORKER.try_with(|w| w.get()).unwrap_or(false) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn mark_worker() {
    IS_WORKER.with(|w| w.set(true));
}

/// Sends `n` copies of `req` on one keep-alive connection; returns allocations per request.
async fn allocs_per_request(server: &TestServer, req: &[u8], n: u64) -> f64 {
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // Warm up: buffers, caches, the header arena.
    for _ in 0..200 {
        s.write_all(req).await.unwrap();
        read_response(&mut s).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..n {
        s.write_all(req).await.unwrap();
        read_response(&mut s).await;
    }
    (ALLOCS.load(Ordering::Relaxed) - before) as f64 / n as f64
}

#[tokio::test(flavor = "current_thread")]
async fn allocations_per_request_on_workers() {
    agentd::server::set_worker_start_hook(mark_worker);
    let mut cfg = config();
    cfg.workers = Some(1);
    let server = start_echo_with(cfg);

    let live = allocs_per_request(
        &server,
        b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n",
        2000,
    )
    .await;
    let health =
        allocs_per_request(&server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 2000).await;
    let b = body("Hello Fast Agent!");
    let agent_req = raw_agent_request(&b, "");
    let agent = allocs_per_request(&server, agent_req.as_bytes(), 2000).await;
    println!("allocations per request on the worker: /health/live {live:.2}, /health {health:.2}, /agent {agent:.2}");
    // Both /health routes make one allocation in agentd's code, the request's boxed
    // future (hyper keeps room for it in every connection: boxed, that room is a
    // pointer); the 2 others are hyper's HTTP/1 read buffer (a new 8 KiB block and its
    // shared header, because the parsed head is handed out as shared bytes).
    // ARCHITECTURE.md lists what /agent allocates.
    assert!(live <= 3.1, "/health/live: {live}");
    assert!(health <= 3.1, "/health: {health}");
    assert!(agent <= 13.1, "/agent: {agent}");
}
