//! agentd's overhead on the LLM path: the same streamed answers fetched straight from a
//! local fake upstream and through agentd's LLM agent, at the same fixed request rate
//! (open loop), comparing time to first token and total latency, p50 and p99.
//!
//! Run: `cargo bench --bench llm_overhead [-- --rate 50 --seconds 10 --tokens 20 --token-delay-ms 5 --ttft-ms 20]`
//! Prints a Markdown table and writes `bench-out/llm-overhead.json`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fake_llm::{Behaviour, FakeLlm, Options};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

struct Args {
    rate: u64,
    seconds: u64,
    tokens: usize,
    token_delay_ms: u64,
    ttft_ms: u64,
}

fn args() -> Args {
    let mut a = Args {
        rate: 50,
        seconds: 10,
        tokens: 20,
        token_delay_ms: 5,
        ttft_ms: 20,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let val = v.get(i + 1).and_then(|s| s.parse::<u64>().ok());
        match (v[i].as_str(), val) {
            ("--rate", Some(x)) => a.rate = x.max(1),
            ("--seconds", Some(x)) => a.seconds = x.max(1),
            ("--tokens", Some(x)) => a.tokens = x as usize,
            ("--token-delay-ms", Some(x)) => a.token_delay_ms = x,
            ("--ttft-ms", Some(x)) => a.ttft_ms = x,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Sends one request; returns (time to first token, total) once `end` is seen.
async fn one(
    client: &HttpClient,
    req: http::Request<Full<Bytes>>,
    first: &[u8],
    end: &[u8],
) -> Option<(Duration, Duration)> {
    let start = Instant::now();
    let res = client.request(req).await.ok()?;
    if !res.status().is_success() {
        return None;
    }
    let mut body = res.into_body();
    let mut seen = Vec::new();
    let mut ttft = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.ok()?.into_data() else {
            continue;
        };
        seen.extend_from_slice(&data);
        if ttft.is_none() && memchr::memmem::find(&seen, first).is_some() {
            ttft = Some(start.elapsed());
        }
        if memchr::memmem::find(&seen, end).is_some() {
            return Some((ttft?, start.elapsed()));
        }
    }
    None
}

fn pct(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1000.0
}

async fn run(
    name: &str,
    a: &Args,
    make: impl Fn() -> http::Request<Full<Bytes>>,
    first: &'static [u8],
    end: &'static [u8],
) -> (Vec<Duration>, Vec<Duration>, usize) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let n = a.rate * a.seconds;
    let gap = Duration::from_secs_f64(1.0 / a.rate as f64);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        tokio::time::sleep_until(started + gap * i as u32).await;
        let (client, req) = (client.clone(), make());
        tasks.push(tokio::spawn(
            async move { one(&client, req, first, end).await },
        ));
    }
    let (mut ttft, mut total, mut failed) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        match t.await.ok().flatten() {
            Some((f, t)) => {
                ttft.push(f);
                total.push(t);
            }
            None => failed += 1,
        }
    }
    eprintln!("{name}: {} requests, {failed} failed", n);
    (ttft, total, failed)
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fake = FakeLlm::start(Options {
            default: Behaviour {
                tokens: a.tokens,
                token_delay: Duration::from_millis(a.token_delay_ms),
                ttft: Duration::from_millis(a.ttft_ms),
                ..Behaviour::default()
            },
            ..Options::default()
        })
        .await
        .expect("fake upstream");
        fake.set_recording(false);
        let mut c = agentd::Config::defaults();
        c.host = "127.0.0.1".parse().unwrap();
        c.port = 0;
        c.workers = Some(1);
        c.node_env = "production".into();
        c.request_logging = Some(false);
        c.openai_api_key = Some("bench".into());
        c.openai_base_url = fake.openai_base_url();
        c.health_check_interval = 3_600_000;
        let agent = agentd::configured_agent(&c).expect("llm agent");
        let server = agentd::Server::start(c, agent).expect("agentd");
        let agentd_url = format!("http://{}/agent", server.local_addr());
        let direct_url = format!("{}/chat/completions", fake.openai_base_url());
        let direct_body = Bytes::from(
            serde_json::json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Hello Fast Agent!"}], "max_tokens": 2000})
            .to_string(),
        );
        let agent_body = Bytes::from_static(br#"{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"Hello Fast Agent!"}}"#);
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
        let warm = Args { rate: a.rate, seconds: 1, ..a };
        run("warm-up direct", &warm, &direct, b"\"content\":\"tok", b"[DONE]").await;
        run("warm-up agentd", &warm, &via, b"\"AI_RESPONSE\"", b"\"atomic.done\"").await;
        let (mut d_ttft, mut d_total, d_fail) = run("direct", &a, &direct, b"\"content\":\"tok", b"[DONE]").await;
        let (mut v_ttft, mut v_total, v_fail) = run("via agentd", &a, &via, b"\"AI_RESPONSE\"", b"\"atomic.done\"").await;
        let rows = [
            ("time to first token, p50", pct(&mut d_ttft, 0.5), pct(&mut v_ttft, 0.5)),
            ("time to first token, p99", pct(&mut d_ttft, 0.99), pct(&mut v_ttft, 0.99)),
            ("total, p50", pct(&mut d_total, 0.5), pct(&mut v_total, 0.5)),
            ("total, p99", pct(&mut d_total, 0.99), pct(&mut v_total, 0.99)),
        ];
        println!(
            "\nLLM path at {} req/s for {} s; fake upstream: {} tokens, {} ms to first token, {} ms between tokens\n",
            a.rate, a.seconds, a.tokens, a.ttft_ms, a.token_delay_ms
        );
        println!("| figure | direct ms | via agentd ms | added ms |");
        println!("|---|---:|---:|---:|");
        for (name, d, v) in rows {
            println!("| {name} | {d:.2} | {v:.2} | {:.2} |", v - d);
        }
        println!("\nfailures: direct {d_fail}, via agentd {v_fail}");
        let json = serde_json::json!({
            "rate": a.rate, "seconds": a.seconds, "tokens": a.tokens, "ttft_ms": a.ttft_ms, "token_delay_ms": a.token_delay_ms,
            "rows": rows.iter().map(|(n, d, v)| serde_json::json!({"figure": n, "direct_ms": d, "via_agentd_ms": v, "added_ms": v - d})).collect::<Vec<_>>(),
            "failures": {"direct": d_fail, "via_agentd": v_fail},
        });
        let _ = std::fs::create_dir_all("bench-out");
        let _ = std::fs::write("bench-out/llm-overhead.json", serde_json::to_vec_pretty(&json).unwrap());
        server.shutdown();
        let _ = Arc::new(());
    });
}
