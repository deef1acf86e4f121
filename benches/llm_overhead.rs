//! agentd's overhead on the LLM path: the same streamed answers fetched straight from a
//! local fake upstream and through agentd's LLM agent, at the same fixed request rate
//! (open loop), comparing time to first token and total latency, p50 and p99.
//!
//! Run: `cargo bench --bench llm_overhead [-- --rate 50 --seconds 10 --tokens 20
//! --token-delay-ms 5 --ttft-ms 20 --pin --fake-threads 1]`
//! Prints a Markdown table and writes `bench-out/llm-overhead.json`.
//!
//! Three parts run in this one process, each on its own threads so that none can starve
//! another's event loop: agentd (one worker), the fake upstream (`bench-fake`, its own
//! runtime) and the load generator (`bench-client`, a current-thread runtime). `--pin`
//! gives agentd a CPU of its own (CPU 1) and puts the fake upstream and the client on the
//! others (with two CPUs they share CPU 0), as `taskset` would; on two CPUs that crowds
//! the client and the fake upstream onto one core, whose queueing then shows in the p99,
//! so the default leaves placement to the scheduler.
//!
//! The figures are only as good as the load generator: it reports how late it sent
//! requests against the schedule (if the client is late, the rate was not driven), the CPU
//! each part used (a part near 100% of a core is the bottleneck), and every failure by
//! kind (connect error, status and error code, `atomic.error` kind, early end).

// A test process, not a worker: it may block its own threads, and signal or limit the
// processes it starts.
#![allow(clippy::disallowed_methods, unsafe_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fake_llm::{Behaviour, FakeLlm, Options};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Clone, Copy)]
struct Args {
    rate: u64,
    seconds: u64,
    tokens: usize,
    token_delay_ms: u64,
    ttft_ms: u64,
    pin: bool,
    fake_threads: usize,
    /// The fake upstream on the client's thread (the layout of earlier versions of this
    /// bench), to show what sharing a thread does to the figures.
    shared_thread: bool,
}

fn args() -> Args {
    let mut a = Args {
        rate: 50,
        seconds: 10,
        tokens: 20,
        token_delay_ms: 5,
        ttft_ms: 20,
        pin: false,
        fake_threads: 1,
        shared_thread: false,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        if v[i] == "--pin" || v[i] == "--shared-thread" {
            a.pin |= v[i] == "--pin";
            a.shared_thread |= v[i] == "--shared-thread";
            i += 1;
            continue;
        }
        let val = v.get(i + 1).and_then(|s| s.parse::<u64>().ok());
        match (v[i].as_str(), val) {
            ("--rate", Some(x)) => a.rate = x.max(1),
            ("--seconds", Some(x)) => a.seconds = x.max(1),
            ("--tokens", Some(x)) => a.tokens = x as usize,
            ("--token-delay-ms", Some(x)) => a.token_delay_ms = x,
            ("--ttft-ms", Some(x)) => a.ttft_ms = x,
            ("--fake-threads", Some(x)) => a.fake_threads = (x as usize).max(1),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// How one request ended.
enum Outcome {
    /// Time to first token and total, from the moment the request was sent.
    Ok(Duration, Duration),
    /// Why it failed, as a short kind (counted by kind).
    Failed(String),
}

/// The first `"key":"value"` string value in `hay`, for naming a failure.
fn json_str(hay: &[u8], key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let at = memchr::memmem::find(hay, pat.as_bytes())? + pat.len();
    let len = memchr::memchr(b'"', &hay[at..])?;
    Some(String::from_utf8_lossy(&hay[at..at + len.min(80)]).into_owned())
}

/// An error and its causes on one line (hyper's own message is often just "client error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Sends one request and reads it to `end`.
async fn one(
    client: &HttpClient,
    req: http::Request<Full<Bytes>>,
    first: &[u8],
    end: &[u8],
) -> Outcome {
    let start = Instant::now();
    let res = match client.request(req).await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Outcome::Failed(format!("connect: {}", chain(&e))),
        Err(e) => return Outcome::Failed(format!("request: {}", chain(&e))),
    };
    let status = res.status();
    let mut body = res.into_body();
    let mut seen = Vec::new();
    let mut ttft = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return Outcome::Failed(format!("body: {}", chain(&e))),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        // Only the new bytes and a marker's length before them can hold a new match.
        let from = seen.len().saturating_sub(first.len().max(end.len()));
        seen.extend_from_slice(&data);
        if !status.is_success() {
            if seen.len() > 4096 {
                break;
            }
            continue;
        }
        if ttft.is_none() && memchr::memmem::find(&seen[from..], first).is_some() {
            ttft = Some(start.elapsed());
        }
        if memchr::memmem::find(&seen[from..], end).is_some() {
            break;
        }
    }
    if !status.is_success() {
        let code = json_str(&seen, "code")
            .or_else(|| json_str(&seen, "kind"))
            .unwrap_or_default();
        return Outcome::Failed(format!("status {} {code}", status.as_u16()));
    }
    if let Some(at) = memchr::memmem::find(&seen, b"\"atomic.error\"") {
        let kind = json_str(&seen[at..], "kind").unwrap_or_default();
        return Outcome::Failed(format!("atomic.error {kind}"));
    }
    if memchr::memmem::find(&seen, end).is_none() {
        return Outcome::Failed("ended before its end marker".into());
    }
    match ttft {
        Some(f) => Outcome::Ok(f, start.elapsed()),
        None => Outcome::Failed("no token before the end".into()),
    }
}

fn pct(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1000.0
}

/// One open-loop run's results.
struct RunResult {
    ttft: Vec<Duration>,
    total: Vec<Duration>,
    failed: usize,
    kinds: BTreeMap<String, usize>,
    /// How late each request was sent against its schedule.
    lag: Vec<Duration>,
    /// Per part, over the run: CPU used and time waited for a CPU (fractions of one
    /// core). A part that waits about as long as it runs is starved by its neighbours.
    cpu: BTreeMap<String, (f64, f64)>,
}

/// Per part (thread name prefix): seconds on a CPU and seconds spent runnable but
/// waiting for one (the scheduler's run queue: time another process or thread had the
/// CPU), so far (Linux `/proc/self/task/*/schedstat`; empty elsewhere).
fn cpu_by_part() -> BTreeMap<String, (f64, f64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let Ok(sched) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        let part = if comm.starts_with("agentd") {
            "agentd"
        } else if comm.starts_with("bench-fake") {
            "fake upstream"
        } else if comm.starts_with("bench-client") {
            "client"
        } else {
            "other"
        };
        let mut f = sched
            .split_whitespace()
            .map(|x| x.parse::<f64>().unwrap_or(0.0) / 1e9);
        let (run, wait) = (f.next().unwrap_or(0.0), f.next().unwrap_or(0.0));
        let e = out.entry(part.to_string()).or_insert((0.0, 0.0));
        e.0 += run;
        e.1 += wait;
    }
    out
}

/// agentd's upstream slots in use and requests in flight, as sampled.
type Samples = std::sync::Arc<std::sync::Mutex<Vec<(u64, u64)>>>;

/// agentd's `/stats` as JSON.
async fn stats(client: &HttpClient, url: &str) -> Option<serde_json::Value> {
    let res = client
        .request(http::Request::get(url).body(Full::default()).ok()?)
        .await
        .ok()?;
    let body = res.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// Samples agentd's upstream slots in use and requests in flight every 250 ms until
/// dropped; returns the samples as "in use/in flight" pairs.
fn sample_stats(client: HttpClient, url: String) -> (tokio::task::JoinHandle<()>, Samples) {
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = samples.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Some(s) = stats(&client, &url).await {
                let in_use = s["llm"]["openai"]["concurrency"]["inUse"].as_u64();
                let in_flight = s["server"]["inFlight"].as_u64();
                if let Ok(mut v) = out.lock() {
                    v.push((in_use.unwrap_or(0), in_flight.unwrap_or(0)));
                }
            }
        }
    });
    (task, samples)
}

async fn run(
    name: &str,
    a: &Args,
    make: impl Fn() -> http::Request<Full<Bytes>>,
    first: &'static [u8],
    end: &'static [u8],
    stats_url: Option<&str>,
) -> RunResult {
    let mut http = HttpConnector::new();
    // As agentd's own client: small writes go out at once.
    http.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(http);
    let n = a.rate * a.seconds;
    let gap = Duration::from_secs_f64(1.0 / a.rate as f64);
    let sampler = stats_url.map(|u| sample_stats(client.clone(), u.to_owned()));
    let cpu_before = cpu_by_part();
    let wall = Instant::now();
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    let mut i = 0u64;
    while i < n {
        // Send every request that is due, then sleep until the next one: a late wake-up
        // sends the backlog at once instead of drifting off the schedule.
        let now = tokio::time::Instant::now();
        while i < n && started + gap.mul_f64(i as f64) <= now {
            let due = started + gap.mul_f64(i as f64);
            let (client, req) = (client.clone(), make());
            tasks.push(tokio::spawn(async move {
                let lag = tokio::time::Instant::now().saturating_duration_since(due);
                (lag, one(&client, req, first, end).await)
            }));
            i += 1;
        }
        if i < n {
            tokio::time::sleep_until(started + gap.mul_f64(i as f64)).await;
        }
    }
    let mut r = RunResult {
        ttft: Vec::new(),
        total: Vec::new(),
        failed: 0,
        kinds: BTreeMap::new(),
        lag: Vec::new(),
        cpu: BTreeMap::new(),
    };
    for t in tasks {
        match t.await {
            Ok((lag, Outcome::Ok(f, t))) => {
                r.lag.push(lag);
                r.ttft.push(f);
                r.total.push(t);
            }
            Ok((lag, Outcome::Failed(kind))) => {
                r.lag.push(lag);
                r.failed += 1;
                *r.kinds.entry(kind).or_insert(0) += 1;
            }
            Err(e) => {
                r.failed += 1;
                *r.kinds.entry(format!("task: {e}")).or_insert(0) += 1;
            }
        }
    }
    let secs = wall.elapsed().as_secs_f64();
    if let Some((task, samples)) = sampler {
        task.abort();
        let v = samples.lock().map(|v| v.clone()).unwrap_or_default();
        let line: Vec<String> = v.iter().map(|(u, f)| format!("{u}/{f}")).collect();
        eprintln!(
            "  agentd upstream slots in use / requests in flight, every 250 ms: {}",
            line.join(" ")
        );
        if let Some(s) = stats(&client, stats_url.unwrap_or_default()).await {
            eprintln!("  agentd /stats llm: {}", s["llm"]);
            let _ = std::fs::create_dir_all("bench-out");
            let _ = std::fs::write(
                "bench-out/llm-overhead-agentd-stats.json",
                serde_json::to_vec_pretty(&s).unwrap_or_default(),
            );
        }
    }
    for (part, (run, wait)) in cpu_by_part() {
        let (run0, wait0) = cpu_before.get(&part).copied().unwrap_or((0.0, 0.0));
        r.cpu
            .insert(part, ((run - run0) / secs, (wait - wait0) / secs));
    }
    eprintln!("{name}: {n} requests, {} failed", r.failed);
    for (kind, count) in &r.kinds {
        eprintln!("  {count} × {kind}");
    }
    r
}

/// Pins the calling thread (and the threads it starts from now on) to one CPU.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it for
    // cpu < CPU_SETSIZE, which the modulo below guarantees.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % libc::CPU_SETSIZE as usize, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("pin to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
}

/// The CPUs for agentd, the fake upstream and the client under `--pin`.
fn layout(cpus: usize) -> (usize, usize, usize) {
    match cpus {
        0 | 1 => (0, 0, 0),
        2 => (1, 0, 0),
        _ => (1, 2, 0),
    }
}

/// What the fake upstream answers.
fn behaviour(a: &Args) -> Behaviour {
    Behaviour {
        tokens: a.tokens,
        token_delay: Duration::from_millis(a.token_delay_ms),
        ttft: Duration::from_millis(a.ttft_ms),
        ..Behaviour::default()
    }
}

/// Starts the fake upstream on the current runtime.
async fn fake(behaviour: Behaviour) -> FakeLlm {
    let fake = FakeLlm::start(Options {
        default: behaviour,
        ..Options::default()
    })
    .await
    .expect("fake upstream");
    fake.set_recording(false);
    fake
}

/// Starts the fake upstream on its own runtime and thread(s); returns its handle's
/// base URL and a sender that stops it.
fn start_fake(a: &Args, cpu: Option<usize>) -> (String, std::sync::mpsc::Sender<()>) {
    let behaviour = behaviour(a);
    let threads = a.fake_threads;
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("bench-fake".into())
        .spawn(move || {
            if let Some(cpu) = cpu {
                pin_to(cpu);
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("bench-fake")
                .enable_all()
                .build()
                .expect("fake runtime");
            rt.block_on(async move {
                let fake = fake(behaviour).await;
                let _ = url_tx.send(fake.openai_base_url());
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                fake.stop().await;
            });
        })
        .expect("fake thread");
    (url_rx.recv().expect("fake upstream url"), stop_tx)
}

fn main() {
    let a = args();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (agentd_cpu, fake_cpu, client_cpu) = layout(cpus);
    let pin = a.pin;
    // The client's thread; with `--shared-thread` it serves the fake upstream too.
    let (url_tx, url_rx) = std::sync::mpsc::channel::<String>();
    let (agentd_tx, agentd_rx) = std::sync::mpsc::channel::<String>();
    let shared = a.shared_thread.then(|| behaviour(&a));
    let client = std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            if pin {
                pin_to(client_cpu);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _fake = shared.map(|b| {
                let fake = rt.block_on(fake(b));
                let _ = url_tx.send(fake.openai_base_url());
                fake
            });
            let Ok(agentd_url) = agentd_rx.recv() else {
                return;
            };
            rt.block_on(measure(a, agentd_url))
        })
        .expect("client thread");
    let (fake_url, _stop_fake) = if a.shared_thread {
        (url_rx.recv().expect("fake upstream url"), None)
    } else {
        let (url, stop) = start_fake(&a, a.pin.then_some(fake_cpu));
        (url, Some(stop))
    };
    let mut c = agentd::Config::defaults();
    c.host = "127.0.0.1".parse().unwrap();
    c.port = 0;
    c.workers = Some(1);
    c.node_env = "production".into();
    c.request_logging = Some(false);
    c.openai_api_key = Some("bench".into());
    c.openai_base_url = fake_url.clone();
    c.health_check_interval = 3_600_000;
    if a.pin {
        // agentd's threads inherit the affinity of the thread that starts them.
        pin_to(agentd_cpu);
    }
    let agent = agentd::configured_agent(&c).expect("llm agent");
    let server = agentd::Server::start(c, agent).expect("agentd");
    let _ = agentd_tx.send(format!(
        "http://{}/agent {fake_url}/chat/completions",
        server.local_addr()
    ));
    let _ = client.join();
    server.shutdown();
}

async fn measure(a: Args, urls: String) {
    let (agentd_url, direct_url) = urls.split_once(' ').expect("two urls");
    let (agentd_url, direct_url) = (agentd_url.to_owned(), direct_url.to_owned());
    let direct_body = Bytes::from(
        serde_json::json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Hello Fast Agent!"}], "max_tokens": 2000})
        .to_string(),
    );
    let agent_body = Bytes::from_static(
        br#"{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"Hello Fast Agent!"}}"#,
    );
    let direct = {
        let (url, body) = (direct_url.clone(), direct_body.clone());
        move || {
            http::Request::post(&url)
                .header("content-type", "application/json")
                .header("authorization", "Bearer bench")
                .body(Full::new(body.clone()))
                .unwrap()
        }
    };
    let via = {
        let (url, body) = (agentd_url.clone(), agent_body.clone());
        move || {
            http::Request::post(&url)
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .unwrap()
        }
    };
    // Warm both paths (connections, caches).
    let warm = Args { seconds: 1, ..a };
    let direct_marks: (&[u8], &[u8]) = (b"\"content\":\"tok", b"[DONE]");
    let via_marks: (&[u8], &[u8]) = (b"\"AI_RESPONSE\"", b"\"atomic.done\"");
    let stats_url = agentd_url.replace("/agent", "/stats");
    let (dm, vm) = (direct_marks, via_marks);
    run("warm-up direct", &warm, &direct, dm.0, dm.1, None).await;
    run("warm-up agentd", &warm, &via, vm.0, vm.1, None).await;
    let mut d = run("direct", &a, &direct, dm.0, dm.1, None).await;
    let mut v = run("via agentd", &a, &via, vm.0, vm.1, Some(&stats_url)).await;
    let rows = [
        (
            "time to first token, p50",
            pct(&mut d.ttft, 0.5),
            pct(&mut v.ttft, 0.5),
        ),
        (
            "time to first token, p99",
            pct(&mut d.ttft, 0.99),
            pct(&mut v.ttft, 0.99),
        ),
        ("total, p50", pct(&mut d.total, 0.5), pct(&mut v.total, 0.5)),
        (
            "total, p99",
            pct(&mut d.total, 0.99),
            pct(&mut v.total, 0.99),
        ),
        (
            "client send lag, p99",
            pct(&mut d.lag, 0.99),
            pct(&mut v.lag, 0.99),
        ),
    ];
    println!(
        "\nLLM path at {} req/s for {} s; fake upstream: {} tokens, {} ms to first token, {} ms between tokens{}\n",
        a.rate,
        a.seconds,
        a.tokens,
        a.ttft_ms,
        a.token_delay_ms,
        match (a.pin, a.shared_thread) {
            (true, true) => "; pinned; fake upstream on the client's thread",
            (true, false) => "; pinned",
            (false, true) => "; fake upstream on the client's thread",
            (false, false) => "",
        }
    );
    println!("| figure | direct ms | via agentd ms | added ms |");
    println!("|---|---:|---:|---:|");
    for (name, d, v) in rows {
        println!("| {name} | {d:.2} | {v:.2} | {:.2} |", v - d);
    }
    let cpu = |r: &RunResult| {
        r.cpu
            .iter()
            .map(|(k, (run, wait))| {
                format!("{k} {:.0}% (waited {:.0}%)", run * 100.0, wait * 100.0)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("\nfailures: direct {}, via agentd {}", d.failed, v.failed);
    println!(
        "CPU (% of one core; waited: runnable while another thread or process had the CPU): direct run: {}; via agentd run: {}",
        cpu(&d),
        cpu(&v)
    );
    let kinds = |r: &RunResult| serde_json::to_value(&r.kinds).unwrap_or_default();
    let json = serde_json::json!({
        "rate": a.rate, "seconds": a.seconds, "tokens": a.tokens, "ttft_ms": a.ttft_ms,
        "token_delay_ms": a.token_delay_ms, "pinned": a.pin, "shared_thread": a.shared_thread,
        "rows": rows.iter().map(|(n, d, v)| serde_json::json!({"figure": n, "direct_ms": d, "via_agentd_ms": v, "added_ms": v - d})).collect::<Vec<_>>(),
        "failures": {"direct": d.failed, "via_agentd": v.failed},
        "failure_kinds": {"direct": kinds(&d), "via_agentd": kinds(&v)},
        "cpu_cores": {"direct": d.cpu, "via_agentd": v.cpu},
    });
    let _ = std::fs::create_dir_all("bench-out");
    let _ = std::fs::write(
        "bench-out/llm-overhead.json",
        serde_json::to_vec_pretty(&json).unwrap(),
    );
}
