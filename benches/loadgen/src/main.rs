//! loadgen: a small load generator for streamed LLM answers, for `scripts/bench/llm.sh`.
//!
//! It POSTs one fixed body to one URL, reads each answer as a stream and times the first
//! token and the end. Two ways to drive the load:
//!
//! * open loop (`--rate R`): request `i` is due at `start + i / R`, sent by a scheduler
//!   thread that sleeps to the due time (not a tokio timer, whose millisecond steps
//!   would add up to 1 ms to every latency); every latency is measured **from the due
//!   time**, so a server (or a client) that falls behind shows it in the figures instead
//!   of slowing the schedule down (no coordinated omission);
//! * closed loop (`--connections C`): C clients, each sending its next request when the
//!   previous answer has ended, started over `--ramp` seconds (for 10,000 held streams).
//!
//! Answers are understood in two formats: agentd's Sentient SSE (`--format sentient`:
//! `event: NAME` / `data: {...}`, ends with `event: done`) and OpenAI chat-completion
//! chunks (`--format openai`: `data: {...}`, ends with `data: [DONE]`). A token is an
//! occurrence of `--marker` (default `tok `, what the fake upstream's token `i` starts
//! with) in the body; the first token is the first read that brings one, and an answer
//! counts as complete only with status 200, exactly `--tokens` tokens and the end marker
//! (an `atomic.error` event in a Sentient answer is counted as `error_event`).
//!
//! Prints one line `LOADJSON {...}` (what `scripts/bench/measure.py` reads): answers
//! completed, errors by kind, tokens, the measured duration, and percentiles (p50, p90,
//! p99, p99.9) of the total time and of the time to the first token, plus how late the
//! scheduler sent requests.
//!
//! Usage:
//!   loadgen --url http://127.0.0.1:3000/agent --body FILE [--header 'K: V']...
//!           [--format sentient|openai] [--tokens N] [--marker S]
//!           (--rate R | --connections C [--ramp S]) [--duration S] [--timeout S]
//!           [--threads N]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const USAGE: &str = "usage: loadgen --url URL --body FILE [--header 'K: V']... \
[--format sentient|openai] [--tokens N] [--marker S] (--rate R | --connections C [--ramp S]) \
[--duration S] [--timeout S] [--threads N]";

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Sentient,
    OpenAi,
}

enum Mode {
    Open { rate: f64 },
    Closed { connections: usize, ramp: Duration },
}

struct Args {
    url: Uri,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    format: Format,
    tokens: usize,
    marker: Vec<u8>,
    mode: Mode,
    duration: Duration,
    timeout: Duration,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut body = None;
    let mut headers = Vec::new();
    let mut format = Format::Sentient;
    let mut tokens = 20;
    let mut marker = b"tok ".to_vec();
    let mut rate = None;
    let mut connections = None;
    let mut ramp = 0.0;
    let mut duration = 10.0;
    let mut timeout = 60.0;
    let mut threads = 1;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--url" => url = Some(v.parse::<Uri>().map_err(|e| format!("--url {v}: {e}"))?),
            "--body" => {
                body = Some(Bytes::from(
                    std::fs::read(&v).map_err(|e| format!("--body {v}: {e}"))?,
                ))
            }
            "--header" => {
                let (k, val) = v.split_once(':').ok_or(format!("--header {v}: no ':'"))?;
                let k = HeaderName::try_from(k.trim()).map_err(|e| format!("{v}: {e}"))?;
                let val = HeaderValue::try_from(val.trim()).map_err(|e| format!("{v}: {e}"))?;
                headers.push((k, val));
            }
            "--format" => {
                format = match v.as_str() {
                    "sentient" => Format::Sentient,
                    "openai" => Format::OpenAi,
                    _ => return Err(format!("--format {v}: sentient or openai")),
                }
            }
            "--tokens" => tokens = num(&v)? as usize,
            "--marker" => marker = v.into_bytes(),
            "--rate" => rate = Some(num(&v)?),
            "--connections" => connections = Some(num(&v)? as usize),
            "--ramp" => ramp = num(&v)?,
            "--duration" => duration = num(&v)?,
            "--timeout" => timeout = num(&v)?,
            "--threads" => threads = (num(&v)? as usize).max(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let mode = match (rate, connections) {
        (Some(r), None) if r > 0.0 => Mode::Open { rate: r },
        (None, Some(c)) if c > 0 => Mode::Closed {
            connections: c,
            ramp: Duration::from_secs_f64(ramp.max(0.0)),
        },
        _ => return Err("one of --rate R (> 0) or --connections C (> 0)".into()),
    };
    if marker.is_empty() {
        return Err("--marker must not be empty".into());
    }
    Ok(Args {
        url: url.ok_or("--url is required")?,
        body: body.ok_or("--body is required")?,
        headers,
        format,
        tokens,
        marker,
        mode,
        duration: Duration::from_secs_f64(duration.max(0.001)),
        timeout: Duration::from_secs_f64(timeout.max(0.001)),
        threads,
    })
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// How one request ended.
enum Outcome {
    /// Time to the first token and to the end, from the request's due time; tokens seen.
    Ok { ttft: Duration, total: Duration },
    /// Why it failed, as a short kind.
    Failed(&'static str),
}

/// Counts `pat` in `buf`, only the matches that end after `old` (the bytes carried over
/// from the previous read, already searched).
fn count_new(buf: &[u8], old: usize, pat: &[u8]) -> usize {
    memchr::memmem::find_iter(buf, pat)
        .filter(|&at| at + pat.len() > old)
        .count()
}

struct Shared {
    client: HttpClient,
    args: Args,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    results: Mutex<Results>,
}

#[derive(Default)]
struct Results {
    ttft_us: Vec<u64>,
    total_us: Vec<u64>,
    tokens: u64,
    errors: BTreeMap<&'static str, u64>,
    last_end: Option<Instant>,
}

/// Sends one request due at `due` and reads its answer to the end.
async fn one(sh: &Shared, due: Instant) -> (Outcome, u64) {
    let a = &sh.args;
    let mut req = Request::post(a.url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(a.body.clone()))
        .expect("request");
    for (k, v) in &a.headers {
        req.headers_mut().insert(k.clone(), v.clone());
    }
    let now = sh.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    sh.max_in_flight.fetch_max(now, Ordering::Relaxed);
    let out = tokio::time::timeout(a.timeout, read_answer(sh, req, due)).await;
    sh.in_flight.fetch_sub(1, Ordering::Relaxed);
    out.unwrap_or((Outcome::Failed("timeout"), 0))
}

async fn read_answer(sh: &Shared, req: Request<Full<Bytes>>, due: Instant) -> (Outcome, u64) {
    let a = &sh.args;
    let res = match sh.client.request(req).await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return (Outcome::Failed("connect"), 0),
        Err(_) => return (Outcome::Failed("request"), 0),
    };
    if res.status() != StatusCode::OK {
        return (Outcome::Failed("status"), 0);
    }
    let end: &[u8] = match a.format {
        Format::Sentient => b"event: done\n",
        Format::OpenAi => b"data: [DONE]",
    };
    // agentd's error event (a shed or failed answer), counted apart from a short answer.
    let error_event: &[u8] = b"atomic.error";
    let keep = a.marker.len().max(end.len()).max(error_event.len()) - 1;
    let mut body = res.into_body();
    let mut carry: Vec<u8> = Vec::with_capacity(4096);
    let (mut tokens, mut ended, mut failed, mut ttft) = (0usize, false, false, None);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return (Outcome::Failed("read"), tokens as u64);
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let old = carry.len();
        carry.extend_from_slice(&data);
        let n = count_new(&carry, old, &a.marker);
        if n > 0 && tokens == 0 {
            ttft = Some(due.elapsed());
        }
        tokens += n;
        ended |= count_new(&carry, old, end) > 0;
        failed |= a.format == Format::Sentient && count_new(&carry, old, error_event) > 0;
        if carry.len() > keep {
            carry.drain(..carry.len() - keep);
        }
    }
    let total = due.elapsed();
    match ttft {
        _ if failed => (Outcome::Failed("error_event"), tokens as u64),
        Some(ttft) if ended && tokens == a.tokens => (Outcome::Ok { ttft, total }, tokens as u64),
        _ => (Outcome::Failed("bad_body"), tokens as u64),
    }
}

fn record(sh: &Shared, (out, tokens): (Outcome, u64)) {
    let mut r = sh.results.lock().expect("results");
    r.tokens += tokens;
    r.last_end = Some(Instant::now());
    match out {
        Outcome::Ok { ttft, total } => {
            r.ttft_us.push(ttft.as_micros() as u64);
            r.total_us.push(total.as_micros() as u64);
        }
        Outcome::Failed(kind) => *r.errors.entry(kind).or_default() += 1,
    }
}

fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("loadgen: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    let client = {
        let _guard = rt.enter();
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(conn)
    };
    let sh = Arc::new(Shared {
        client,
        args,
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        results: Mutex::new(Results::default()),
    });
    let start = Instant::now() + Duration::from_millis(20);
    let mut late_us: Vec<u64> = Vec::new();
    let mut handles = Vec::new();
    match sh.args.mode {
        Mode::Open { rate } => {
            // The scheduler: this thread sleeps to each due time (std's sleep, tens of µs
            // of slack) and hands the request to the runtime.
            let n = (rate * sh.args.duration.as_secs_f64()).round().max(1.0) as u64;
            late_us.reserve(n as usize);
            for i in 0..n {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if due > now {
                    // The scheduler thread, not a runtime worker: it means to block.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(due - now);
                }
                late_us.push(due.elapsed().as_micros() as u64);
                let sh2 = sh.clone();
                handles.push(rt.spawn(async move {
                    let r = one(&sh2, due).await;
                    record(&sh2, r);
                }));
            }
        }
        Mode::Closed { connections, ramp } => {
            let deadline = start + sh.args.duration;
            for k in 0..connections {
                let sh2 = sh.clone();
                let begin = start + ramp.mul_f64(k as f64 / connections as f64);
                handles.push(rt.spawn(async move {
                    tokio::time::sleep_until(begin.into()).await;
                    while Instant::now() < deadline {
                        let r = one(&sh2, Instant::now()).await;
                        record(&sh2, r);
                    }
                }));
            }
        }
    }
    rt.block_on(async {
        for h in handles {
            let _ = h.await;
        }
    });
    let r = sh.results.lock().expect("results");
    let mut ttft = r.ttft_us.clone();
    let mut total = r.total_us.clone();
    ttft.sort_unstable();
    total.sort_unstable();
    late_us.sort_unstable();
    let ok = total.len() as u64;
    let dur = r
        .last_end
        .map_or(Duration::ZERO, |e| e.saturating_duration_since(start));
    let dur_us = dur.as_micros().max(1) as u64;
    let err = |k: &str| r.errors.get(k).copied().unwrap_or(0);
    let kinds: Vec<String> = r
        .errors
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    let mode = match sh.args.mode {
        Mode::Open { rate } => format!("\"mode\":\"open\",\"rate\":{rate}"),
        Mode::Closed { connections, .. } => {
            format!("\"mode\":\"closed\",\"connections\":{connections}")
        }
    };
    println!(
        "LOADJSON {{{mode},\"requests\":{ok},\"errors\":{},\"error_kinds\":{{{}}},\
         \"status_errors\":{},\"bad_body\":{},\"connect_errors\":{},\"read_errors\":{},\
         \"timeout_errors\":{},\"tokens\":{},\"duration_us\":{dur_us},\"rps\":{:.1},\
         \"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"lat_max_us\":{},\
         \"ttft_p50_us\":{},\"ttft_p90_us\":{},\"ttft_p99_us\":{},\"ttft_p999_us\":{},\
         \"late_p50_us\":{},\"late_p99_us\":{},\"late_max_us\":{},\"max_in_flight\":{}}}",
        r.errors.values().sum::<u64>(),
        kinds.join(","),
        err("status"),
        err("bad_body"),
        err("connect"),
        err("read") + err("request"),
        err("timeout"),
        r.tokens,
        ok as f64 * 1e6 / dur_us as f64,
        pct(&total, 0.5),
        pct(&total, 0.9),
        pct(&total, 0.99),
        pct(&total, 0.999),
        total.last().copied().unwrap_or(0),
        pct(&ttft, 0.5),
        pct(&ttft, 0.9),
        pct(&ttft, 0.99),
        pct(&ttft, 0.999),
        pct(&late_us, 0.5),
        pct(&late_us, 0.99),
        late_us.last().copied().unwrap_or(0),
        sh.max_in_flight.load(Ordering::Relaxed),
    );
}
