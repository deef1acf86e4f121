//! Prometheus text exposition (`/metrics`) and the guide's `/stats` JSON.
//!
//! Everything is read from per-worker counters (summed here) and shared atomics; the
//! request path never takes a lock for them. Rendering allocates, on the scrape only.
//! Labels are bounded: route enum, status class, provider name, upstream URL, error
//! kind. Backend figures come from the agent's dependencies (`Agent::dependencies`).

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use serde_json::json;

use super::stats::{Histogram, CLASS_LABELS, PROM_BUCKETS, ROUTE_LABELS};
use crate::agent::{DependencyGroup, DependencyKind, DependencyState};
use crate::backend::slots::{Refusal, Slots};
use crate::backend::{BreakerState, Endpoint};
use crate::server::App;

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
        app.restarts.load(Relaxed),
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
    let groups = app.agent.dependencies();
    for g in &groups {
        let endpoints: Vec<&Endpoint> = g
            .members
            .iter()
            .filter_map(|m| m.endpoint.as_deref())
            .collect();
        match g.kind {
            DependencyKind::LlmProviders => providers(&mut out, &endpoints, g.saturated_requests),
            DependencyKind::UpstreamAgents => upstreams(&mut out, &endpoints),
            DependencyKind::Other(_) => {}
        }
    }
    dependency_up(&mut out, &groups);
    out
}

/// One series per endpoint: `{name}{{{label}="…"}} value`.
fn each(
    out: &mut String,
    endpoints: &[&Endpoint],
    label: &str,
    (name, kind, help): (&str, &str, &str),
    f: &dyn Fn(&Endpoint) -> u64,
) {
    family(out, name, kind, help);
    for e in endpoints {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {}", e.name(), f(e));
    }
}

/// Failures by kind, one series per endpoint and kind it can fail with.
fn errors(out: &mut String, endpoints: &[&Endpoint], label: &str, name: &str, help: &str) {
    family(out, name, "counter", help);
    for e in endpoints {
        for k in e.kinds() {
            let _ = writeln!(
                out,
                "{name}{{{label}=\"{}\",kind=\"{}\"}} {}",
                e.name(),
                k.as_str(),
                e.errors(*k)
            );
        }
    }
}

/// 1 for each endpoint's breaker's current state.
fn breakers(out: &mut String, endpoints: &[&Endpoint], label: &str, name: &str) {
    family(out, name, "gauge", "1 for the breaker's current state.");
    for e in endpoints {
        let now = e.breaker.state();
        for st in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            let _ = writeln!(
                out,
                "{name}{{{label}=\"{}\",state=\"{}\"}} {}",
                e.name(),
                st.as_str(),
                (st == now) as u8
            );
        }
    }
}

/// One histogram per endpoint.
fn histograms(
    out: &mut String,
    endpoints: &[&Endpoint],
    label: &str,
    (name, help): (&str, &str),
    h: &dyn Fn(&Endpoint) -> &Histogram,
) {
    family(out, name, "histogram", help);
    for e in endpoints {
        log_hist(out, name, &format!("{label}=\"{}\"", e.name()), h(e));
    }
}

/// The LLM providers' series (`agentd_llm_*`, label `provider`).
fn providers(out: &mut String, ps: &[&Endpoint], saturated_requests: Option<u64>) {
    let l = "provider";
    let slots = |e: &Endpoint, f: &dyn Fn(&Slots) -> u64| e.slots.as_ref().map_or(0, f);
    let requests = (
        "agentd_llm_requests_total",
        "counter",
        "Upstream requests sent.",
    );
    each(out, ps, l, requests, &|e| e.stats.requests.load(Relaxed));
    let retries = (
        "agentd_llm_retries_total",
        "counter",
        "Retries before the first token.",
    );
    each(out, ps, l, retries, &|e| e.stats.retries.load(Relaxed));
    let failovers = (
        "agentd_llm_failovers_total",
        "counter",
        "Requests failed over to this provider.",
    );
    each(out, ps, l, failovers, &|e| e.stats.failovers.load(Relaxed));
    let tokens_in = (
        "agentd_llm_tokens_in_total",
        "counter",
        "Prompt tokens reported by the provider.",
    );
    each(out, ps, l, tokens_in, &|e| e.stats.tokens_in.load(Relaxed));
    let tokens_out = (
        "agentd_llm_tokens_out_total",
        "counter",
        "Completion tokens reported by the provider.",
    );
    each(out, ps, l, tokens_out, &|e| {
        e.stats.tokens_out.load(Relaxed)
    });
    let healthy = (
        "agentd_llm_healthy",
        "gauge",
        "1 when the last health probe succeeded.",
    );
    each(out, ps, l, healthy, &|e| e.is_healthy() as u64);
    let limit = (
        "agentd_llm_slots_limit",
        "gauge",
        "LLM_CONCURRENT_REQUESTS: requests in flight allowed, for the whole process.",
    );
    each(out, ps, l, limit, &|e| {
        slots(e, &|s| s.limits().limit as u64)
    });
    let in_use = (
        "agentd_llm_slots_in_use",
        "gauge",
        "Requests in flight to the provider now, from every worker.",
    );
    each(out, ps, l, in_use, &|e| slots(e, &|s| s.in_use() as u64));
    let waiters = (
        "agentd_llm_queue_waiters",
        "gauge",
        "Requests waiting for a free slot now (at most LLM_QUEUE_MAX).",
    );
    each(out, ps, l, waiters, &|e| slots(e, &|s| s.waiters() as u64));
    family(
        out,
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
                slots(p, &|s| s.refused(why) as u64)
            );
        }
    }
    family(
        out,
        "agentd_llm_queue_wait_seconds",
        "histogram",
        "Time waited for a free slot (0 when one was free).",
    );
    for p in ps {
        if let Some(s) = &p.slots {
            let labels = format!("provider=\"{}\"", p.name());
            log_hist(out, "agentd_llm_queue_wait_seconds", &labels, &s.wait);
        }
    }
    family(
        out,
        "agentd_llm_saturated_requests_total",
        "counter",
        "Requests answered 503 saturated: no provider had a free slot in time.",
    );
    let _ = writeln!(
        out,
        "agentd_llm_saturated_requests_total {}",
        saturated_requests.unwrap_or(0)
    );
    errors(
        out,
        ps,
        l,
        "agentd_llm_errors_total",
        "Upstream failures by kind.",
    );
    breakers(out, ps, l, "agentd_llm_breaker_state");
    let ttft = (
        "agentd_llm_time_to_first_token_seconds",
        "From sending the request to the first text delta.",
    );
    histograms(out, ps, l, ttft, &|e| &e.stats.ttft);
    let overhead = (
        "agentd_llm_overhead_seconds",
        "agentd's own share of the time to first token: from the agent's start to the first AI_RESPONSE event, minus the provider's time to first token (retries and backoff included).",
    );
    histograms(out, ps, l, overhead, &|e| &e.stats.overhead);
    let stream = (
        "agentd_llm_stream_duration_seconds",
        "From sending the request to the end marker.",
    );
    histograms(out, ps, l, stream, &|e| &e.stats.latency);
}

/// The proxy's upstream agents' series (`agentd_upstream_*`, label `upstream`): the
/// providers' equivalents.
fn upstreams(out: &mut String, us: &[&Endpoint]) {
    let l = "upstream";
    let requests = (
        "agentd_upstream_requests_total",
        "counter",
        "Requests sent to the upstream agent.",
    );
    each(out, us, l, requests, &|e| e.stats.requests.load(Relaxed));
    let completed = (
        "agentd_upstream_completed_total",
        "counter",
        "Upstream answers relayed to their done.",
    );
    each(out, us, l, completed, &|e| e.stats.completed.load(Relaxed));
    let failovers = (
        "agentd_upstream_failovers_total",
        "counter",
        "Requests failed over to this upstream agent.",
    );
    each(out, us, l, failovers, &|e| e.stats.failovers.load(Relaxed));
    let healthy = (
        "agentd_upstream_healthy",
        "gauge",
        "1 when the last health check succeeded.",
    );
    each(out, us, l, healthy, &|e| e.is_healthy() as u64);
    let in_flight = (
        "agentd_upstream_in_flight",
        "gauge",
        "Requests in flight to the upstream agent now, from every worker.",
    );
    each(out, us, l, in_flight, &|e| e.in_flight() as u64);
    errors(
        out,
        us,
        l,
        "agentd_upstream_errors_total",
        "Upstream agent failures by kind.",
    );
    breakers(out, us, l, "agentd_upstream_breaker_state");
    let first = (
        "agentd_upstream_time_to_first_event_seconds",
        "From sending the request to the first event.",
    );
    histograms(out, us, l, first, &|e| &e.stats.ttft);
    let stream = (
        "agentd_upstream_stream_duration_seconds",
        "From sending the request to the upstream's done.",
    );
    histograms(out, us, l, stream, &|e| &e.stats.latency);
}

/// `agentd_dependency_up{group,name}`: 1 for each dependency known usable (every kind,
/// custom ones included).
fn dependency_up(out: &mut String, groups: &[DependencyGroup]) {
    if groups.is_empty() {
        return;
    }
    let name = "agentd_dependency_up";
    family(out, name, "gauge", "1 when the dependency is known usable.");
    for g in groups {
        let group = match &g.kind {
            DependencyKind::LlmProviders => "providers",
            DependencyKind::UpstreamAgents => "upstreams",
            DependencyKind::Other(name) => name.as_ref(),
        };
        for m in &g.members {
            let _ = writeln!(
                out,
                "{name}{{group=\"{}\",name=\"{}\"}} {}",
                escape(group),
                escape(&m.name),
                (m.state == DependencyState::Up) as u8
            );
        }
    }
}

/// A label value as the exposition format wants it.
fn escape(v: &str) -> Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

/// The guide's `/stats`: agent figures, server figures, LLM figures (and, in proxy
/// mode, the upstream agents' figures).
pub fn stats_json(app: &App) -> serde_json::Value {
    let lat = app.stats.agent_latency();
    let (user, system) = super::process::cpu_seconds();
    let rss = super::process::rss_bytes().unwrap_or(0);
    let groups = app.agent.dependencies();
    let group = |kind: DependencyKind| groups.iter().find(|g| g.kind == kind);
    let providers = group(DependencyKind::LlmProviders);
    let llm = providers.map(|g| endpoints_json(g, provider_json));
    let upstreams = group(DependencyKind::UpstreamAgents).map(|g| endpoints_json(g, upstream_json));
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
            "workers": app.config.worker_count(),
            "inFlight": app.shedder.in_flight(),
        },
        "llm": llm,
        "llmSaturatedRequests": providers.and_then(|g| g.saturated_requests),
        "upstreams": upstreams,
    })
}

/// `{name: figures}` for a group's endpoints.
fn endpoints_json(
    g: &DependencyGroup,
    figures: fn(&Endpoint) -> serde_json::Value,
) -> serde_json::Map<String, serde_json::Value> {
    g.members
        .iter()
        .filter_map(|m| m.endpoint.as_deref())
        .map(|e| (e.name().to_owned(), figures(e)))
        .collect()
}

/// Failures by kind, for `/stats`.
fn errors_json(e: &Endpoint) -> serde_json::Map<String, serde_json::Value> {
    e.kinds()
        .iter()
        .map(|k| (k.as_str().to_owned(), json!(e.errors(*k))))
        .collect()
}

fn provider_json(p: &Endpoint) -> serde_json::Value {
    let s = &p.stats;
    json!({
        "requests": s.requests.load(Relaxed),
        "completed": s.completed.load(Relaxed),
        "errors": errors_json(p),
        "retries": s.retries.load(Relaxed),
        "failovers": s.failovers.load(Relaxed),
        "tokensIn": s.tokens_in.load(Relaxed),
        "tokensOut": s.tokens_out.load(Relaxed),
        "breaker": p.breaker.state().as_str(),
        "healthy": p.is_healthy(),
        "concurrency": p.slots.as_ref().map(slots_json),
        "timeToFirstTokenMs": s.ttft.latency(),
        "streamMs": s.latency.latency(),
    })
}

fn upstream_json(u: &Endpoint) -> serde_json::Value {
    let s = &u.stats;
    json!({
        "requests": s.requests.load(Relaxed),
        "completed": s.completed.load(Relaxed),
        "errors": errors_json(u),
        "failovers": s.failovers.load(Relaxed),
        "breaker": u.breaker.state().as_str(),
        "healthy": u.is_healthy(),
        "inFlight": u.in_flight(),
        "timeToFirstEventMs": s.ttft.latency(),
        "streamMs": s.latency.latency(),
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
