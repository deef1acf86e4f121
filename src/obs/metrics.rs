//! Prometheus text exposition (`/metrics`) and the guide's `/stats` JSON.
//!
//! Everything is read from per-worker counters (summed here) and shared atomics; the
//! request path never takes a lock for them. Rendering allocates, on the scrape only.
//! Labels are bounded: route enum, status class, provider name, error kind.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use serde_json::json;

use super::stats::{Histogram, CLASS_LABELS, PROM_BUCKETS, ROUTE_LABELS};
use crate::llm::breaker::BreakerState;
use crate::llm::slots::{Refusal, Slots};
use crate::llm::ErrorKind;
use crate::routes::App;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn hist_lines(
    out: &mut String,
    name: &str,
    labels: &str,
    cumulative: &[u64],
    total: u64,
    sum: f64,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (le, c) in PROM_BUCKETS.iter().zip(cumulative) {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {c}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
}

fn log_hist(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let (cum, total, sum) = h.cumulative();
    hist_lines(out, name, labels, &cum, total, sum);
}

/// The whole exposition.
pub fn render(app: &App) -> String {
    let s = &app.stats;
    let mut out = String::with_capacity(16 * 1024);
    family(
        &mut out,
        "agentd_http_requests_total",
        "counter",
        "HTTP requests finished, by route and status class.",
    );
    for (r, route) in ROUTE_LABELS.iter().enumerate() {
        for (c, class) in CLASS_LABELS.iter().enumerate() {
            let n: u64 = s
                .workers()
                .iter()
                .map(|w| w.by_route[r][c].load(Relaxed))
                .sum();
            if n > 0 {
                let _ = writeln!(
                    out,
                    "agentd_http_requests_total{{route=\"{route}\",status=\"{class}\"}} {n}"
                );
            }
        }
    }
    family(
        &mut out,
        "agentd_http_request_duration_seconds",
        "histogram",
        "Time from request head to the end of the response, by route.",
    );
    for (r, route) in ROUTE_LABELS.iter().enumerate() {
        let mut counts = vec![0u64; PROM_BUCKETS.len() + 1];
        let mut sum_us = 0u64;
        for w in s.workers() {
            let h = &w.latency_by_route[r];
            for (c, a) in counts.iter_mut().zip(h.counts.iter()) {
                *c += a.load(Relaxed);
            }
            sum_us += h.sum_us.load(Relaxed);
        }
        let total: u64 = counts.iter().sum();
        if total == 0 {
            continue;
        }
        let mut cum = Vec::with_capacity(PROM_BUCKETS.len());
        let mut acc = 0;
        for c in &counts[..PROM_BUCKETS.len()] {
            acc += c;
            cum.push(acc);
        }
        hist_lines(
            &mut out,
            "agentd_http_request_duration_seconds",
            &format!("route=\"{route}\""),
            &cum,
            total,
            sum_us as f64 / 1e6,
        );
    }
    let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
        family(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    };
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    };
    gauge(
        &mut out,
        "agentd_requests_in_flight",
        "Requests being handled or streaming.",
        app.shedder.in_flight(),
    );
    let opened = s.sum(|w| &w.connections);
    let closed = s.sum(|w| &w.connections_closed);
    gauge(
        &mut out,
        "agentd_open_connections",
        "Client connections open.",
        opened.saturating_sub(closed),
    );
    let so = s.sum(|w| &w.streams_opened);
    let sc = s.sum(|w| &w.streams_closed);
    gauge(
        &mut out,
        "agentd_open_sse_streams",
        "SSE responses streaming.",
        so.saturating_sub(sc),
    );
    gauge(
        &mut out,
        "agentd_open_websockets",
        "WebSockets open.",
        app.ws_open.load(Relaxed),
    );
    counter(
        &mut out,
        "agentd_sse_events_total",
        "Protocol events sent.",
        s.sum(|w| &w.events_sent),
    );
    counter(
        &mut out,
        "agentd_sse_bytes_total",
        "Bytes of SSE streams sent (before compression).",
        s.sum(|w| &w.bytes_sent),
    );
    counter(
        &mut out,
        "agentd_shed_requests_total",
        "Requests refused under pressure.",
        app.shedder.shed.load(Relaxed),
    );
    counter(
        &mut out,
        "agentd_worker_restarts_total",
        "Workers replaced after a panic.",
        app.server.worker_restarts(),
    );
    if let Some(rate) = &app.rate {
        let r = rate.stats();
        counter(
            &mut out,
            "agentd_rate_limited_total",
            "Requests refused by the rate limiter.",
            r.rejected.load(Relaxed),
        );
        counter(
            &mut out,
            "agentd_rate_limit_redis_errors_total",
            "Redis round trips that failed.",
            r.redis_errors.load(Relaxed),
        );
        family(
            &mut out,
            "agentd_rate_limit_redis_failures_total",
            "counter",
            "Requests decided by the Redis failure policy.",
        );
        let _ = writeln!(
            out,
            "agentd_rate_limit_redis_failures_total{{policy=\"open\"}} {}",
            r.redis_failed_open.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "agentd_rate_limit_redis_failures_total{{policy=\"closed\"}} {}",
            r.redis_failed_closed.load(Relaxed)
        );
    }
    if let Some(router) = app.agent.llm_router() {
        let ps = &router.providers;
        let each = |out: &mut String,
                    name: &str,
                    kind: &str,
                    help: &str,
                    f: &dyn Fn(&crate::llm::provider::Provider) -> u64| {
            family(out, name, kind, help);
            for p in ps {
                let _ = writeln!(out, "{name}{{provider=\"{}\"}} {}", p.name(), f(p));
            }
        };
        each(
            &mut out,
            "agentd_llm_requests_total",
            "counter",
            "Upstream requests sent.",
            &|p| p.stats.requests.load(Relaxed),
        );
        each(
            &mut out,
            "agentd_llm_retries_total",
            "counter",
            "Retries before the first token.",
            &|p| p.stats.retries.load(Relaxed),
        );
        each(
            &mut out,
            "agentd_llm_failovers_total",
            "counter",
            "Requests failed over to this provider.",
            &|p| p.stats.failovers.load(Relaxed),
        );
        each(
            &mut out,
            "agentd_llm_tokens_in_total",
            "counter",
            "Prompt tokens reported by the provider.",
            &|p| p.stats.tokens_in.load(Relaxed),
        );
        each(
            &mut out,
            "agentd_llm_tokens_out_total",
            "counter",
            "Completion tokens reported by the provider.",
            &|p| p.stats.tokens_out.load(Relaxed),
        );
        each(
            &mut out,
            "agentd_llm_healthy",
            "gauge",
            "1 when the last health probe succeeded.",
            &|p| p.is_healthy() as u64,
        );
        each(
            &mut out,
            "agentd_llm_slots_limit",
            "gauge",
            "LLM_CONCURRENT_REQUESTS: requests in flight allowed, for the whole process.",
            &|p| p.slots.limits().limit as u64,
        );
        each(
            &mut out,
            "agentd_llm_slots_in_use",
            "gauge",
            "Requests in flight to the provider now, from every worker.",
            &|p| p.slots.in_use() as u64,
        );
        each(
            &mut out,
            "agentd_llm_queue_waiters",
            "gauge",
            "Requests waiting for a free slot now (at most LLM_QUEUE_MAX).",
            &|p| p.slots.waiters() as u64,
        );
        family(
            &mut out,
            "agentd_llm_saturated_total",
            "counter",
            "Requests the provider refused for lack of a slot (they failed over or ended saturated), by reason.",
        );
        for p in ps {
            for why in [Refusal::QueueFull, Refusal::WaitedTooLong] {
                let _ = writeln!(
                    out,
                    "agentd_llm_saturated_total{{provider=\"{}\",reason=\"{}\"}} {}",
                    p.name(),
                    why.as_str(),
                    p.slots.refused(why)
                );
            }
        }
        family(
            &mut out,
            "agentd_llm_queue_wait_seconds",
            "histogram",
            "Time waited for a free slot (0 when one was free).",
        );
        for p in ps {
            log_hist(
                &mut out,
                "agentd_llm_queue_wait_seconds",
                &format!("provider=\"{}\"", p.name()),
                &p.slots.wait,
            );
        }
        family(
            &mut out,
            "agentd_llm_saturated_requests_total",
            "counter",
            "Requests answered 503 saturated: no provider had a free slot in time.",
        );
        let _ = writeln!(
            out,
            "agentd_llm_saturated_requests_total {}",
            router.saturated.load(Relaxed)
        );
        family(
            &mut out,
            "agentd_llm_errors_total",
            "counter",
            "Upstream failures by kind.",
        );
        for p in ps {
            for k in ErrorKind::ALL {
                let n = p.stats.errors[k.index()].load(Relaxed);
                let _ = writeln!(
                    out,
                    "agentd_llm_errors_total{{provider=\"{}\",kind=\"{}\"}} {n}",
                    p.name(),
                    k.as_str()
                );
            }
        }
        family(
            &mut out,
            "agentd_llm_breaker_state",
            "gauge",
            "1 for the breaker's current state.",
        );
        for p in ps {
            let now = p.breaker.state();
            for st in [
                BreakerState::Closed,
                BreakerState::Open,
                BreakerState::HalfOpen,
            ] {
                let _ = writeln!(
                    out,
                    "agentd_llm_breaker_state{{provider=\"{}\",state=\"{}\"}} {}",
                    p.name(),
                    st.as_str(),
                    (st == now) as u8
                );
            }
        }
        family(
            &mut out,
            "agentd_llm_time_to_first_token_seconds",
            "histogram",
            "From sending the request to the first text delta.",
        );
        for p in ps {
            log_hist(
                &mut out,
                "agentd_llm_time_to_first_token_seconds",
                &format!("provider=\"{}\"", p.name()),
                &p.stats.ttft,
            );
        }
        family(
            &mut out,
            "agentd_llm_overhead_seconds",
            "histogram",
            "agentd's own share of the time to first token: from the agent's start to the first AI_RESPONSE event, minus the provider's time to first token (retries and backoff included).",
        );
        for p in ps {
            log_hist(
                &mut out,
                "agentd_llm_overhead_seconds",
                &format!("provider=\"{}\"", p.name()),
                &p.stats.overhead,
            );
        }
        family(
            &mut out,
            "agentd_llm_stream_duration_seconds",
            "histogram",
            "From sending the request to the end marker.",
        );
        for p in ps {
            log_hist(
                &mut out,
                "agentd_llm_stream_duration_seconds",
                &format!("provider=\"{}\"", p.name()),
                &p.stats.latency,
            );
        }
    }
    out
}

/// The guide's `/stats`: agent figures, server figures, LLM figures.
pub fn stats_json(app: &App) -> serde_json::Value {
    let lat = app.stats.agent_latency();
    let (user, system) = super::process::cpu_seconds();
    let rss = super::process::rss_bytes().unwrap_or(0);
    let llm = app.agent.llm_router().map(|r| {
        r.providers
            .iter()
            .map(|p| {
                let s = &p.stats;
                let errors: serde_json::Map<String, serde_json::Value> = ErrorKind::ALL
                    .iter()
                    .map(|k| {
                        (
                            k.as_str().to_owned(),
                            json!(s.errors[k.index()].load(Relaxed)),
                        )
                    })
                    .collect();
                (
                    p.name().to_owned(),
                    json!({
                        "requests": s.requests.load(Relaxed),
                        "completed": s.completed.load(Relaxed),
                        "errors": errors,
                        "retries": s.retries.load(Relaxed),
                        "failovers": s.failovers.load(Relaxed),
                        "tokensIn": s.tokens_in.load(Relaxed),
                        "tokensOut": s.tokens_out.load(Relaxed),
                        "breaker": p.breaker.state().as_str(),
                        "healthy": p.is_healthy(),
                        "concurrency": slots_json(&p.slots),
                        "timeToFirstTokenMs": s.ttft.latency(),
                        "streamMs": s.latency.latency(),
                    }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
    });
    json!({
        "agent": {
            "name": app.agent.name(),
            "requestCount": app.stats.agent_requests(),
            "averageResponseTime": lat.mean,
            "p95ResponseTime": lat.p95,
            "p99ResponseTime": lat.p99,
        },
        "server": {
            "uptime": app.started.elapsed().as_secs_f64(),
            "memory": {"rss": rss},
            "cpu": {"user": user, "system": system},
            "workers": app.workers(),
            "inFlight": app.shedder.in_flight(),
        },
        "llm": llm,
        "llmSaturatedRequests": app.agent.llm_router().map(|r| r.saturated.load(Relaxed)),
    })
}

/// One provider's concurrency figures, for `/stats` and `/health/detailed`.
pub fn slots_json(s: &Slots) -> serde_json::Value {
    json!({
        "limit": s.limits().limit,
        "inUse": s.in_use(),
        "waiters": s.waiters(),
        "queueMax": s.limits().queue_max,
        "queueTimeoutMs": s.limits().queue_timeout.as_millis() as u64,
        "waitMs": s.wait.latency(),
        "saturated": s.refused(Refusal::QueueFull) + s.refused(Refusal::WaitedTooLong),
    })
}
