//! Prometheus text exposition (`/metrics`) and the guide's `/stats` JSON.
//!
//! Everything is read from per-worker counters (summed here) and shared atomics; the
//! request path never takes a lock for them. Rendering allocates, on the scrape only.
//! Labels are bounded: route enum, status class, provider name, upstream URL, error
//! kind. Backend figures come from the agent's dependencies (`Agent::dependencies`).

mod dependencies;

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use serde_json::json;

use crate::agent::DependencyKind;
use crate::obs::stats::{Histogram, CLASS_LABELS, PROM_BUCKETS, ROUTE_LABELS};
use crate::routes::App;
pub use dependencies::slots_json;

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
    if let Some(shared) = app.streams.as_ref().and_then(|s| s.shared()) {
        let r = &shared.stats;
        for (name, help, value) in [
            (
                "agentd_resume_redis_errors_total",
                "Redis round trips of the resume store that failed.",
                &r.errors,
            ),
            (
                "agentd_resume_remote_total",
                "Resumes served from Redis (the answer ran on another replica).",
                &r.remote_resumes,
            ),
            (
                "agentd_resume_agent_lost_total",
                "Remote resumes ended with agent_lost (the owning replica died).",
                &r.agent_lost,
            ),
            (
                "agentd_resume_readers_busy_total",
                "Remote resumes refused: RESUME_REMOTE_READERS were busy.",
                &r.readers_busy,
            ),
        ] {
            counter(&mut out, name, help, value.load(Relaxed));
        }
    }
    dependencies::render(&mut out, &app.agent.dependencies());
    out
}

/// The guide's `/stats`: agent figures, server figures, LLM figures (and, in proxy
/// mode, the upstream agents' figures).
pub fn stats_json(app: &App) -> serde_json::Value {
    let lat = app.stats.agent_latency();
    let (user, system) = crate::obs::process::cpu_seconds();
    let rss = crate::obs::process::rss_bytes().unwrap_or(0);
    let groups = app.agent.dependencies();
    let group = |kind: DependencyKind| groups.iter().find(|g| g.kind == kind);
    let providers = group(DependencyKind::LlmProviders);
    let llm = providers.map(|g| dependencies::endpoints_json(g, dependencies::provider_json));
    let upstreams = group(DependencyKind::UpstreamAgents)
        .map(|g| dependencies::endpoints_json(g, dependencies::upstream_json));
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
        "llmSaturatedRequests": providers.and_then(|g| g.saturated_requests),
        "upstreams": upstreams,
    })
}
