//! The agent's dependencies in `/metrics` and `/stats`: the LLM providers' series
//! (`agentd_llm_*`, label `provider`), the upstream agents' equivalents
//! (`agentd_upstream_*`, label `upstream`), and `agentd_dependency_up` for every
//! dependency, custom ones included. Read from the plain data `Agent::dependencies`
//! returns; it never changes a figure, and labels stay bounded (configured names and
//! URLs, error kinds, breaker states).

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use serde_json::json;

use super::{family, log_hist};
use crate::agent::{DependencyGroup, DependencyKind, DependencyState};
use crate::backend::slots::{Refusal, Slots};
use crate::backend::{BreakerState, Endpoint};
use crate::obs::stats::Histogram;

/// Every group's series, then `agentd_dependency_up`.
pub(super) fn render(out: &mut String, groups: &[DependencyGroup]) {
    for g in groups {
        let endpoints: Vec<&Endpoint> = g
            .members
            .iter()
            .filter_map(|m| m.endpoint.as_deref())
            .collect();
        match g.kind {
            DependencyKind::LlmProviders => providers(out, &endpoints, g.saturated_requests),
            DependencyKind::UpstreamAgents => upstreams(out, &endpoints),
            DependencyKind::Other(_) => {}
        }
    }
    dependency_up(out, groups);
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

/// `{name: figures}` for a group's endpoints.
pub(super) fn endpoints_json(
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

pub(super) fn provider_json(p: &Endpoint) -> serde_json::Value {
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

pub(super) fn upstream_json(u: &Endpoint) -> serde_json::Value {
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
