//! `/health`, `/health/live`, `/health/ready`, `/health/detailed`.
//!
//! `/health/live` is a constant. `/health` is rendered at most every
//! [`HEALTH_REFRESH`] per worker and served as shared bytes in between, so a load
//! balancer hammering it costs no allocation. None of these may block, and none may
//! open a connection of its own: Redis is asked through the rate limiter's connection
//! and cached answer.

use std::borrow::Cow;
use std::cell::RefCell;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, StatusCode};
use serde::Serialize;

use crate::agent::health::{readiness, DependencyGroup, DependencyKind};
use crate::backend::Standing;
use crate::http::Reply;
use crate::obs::stats::Latency;
use crate::routes::App;
use crate::server::shutdown::Phase;

/// How stale `/health` figures may be.
pub const HEALTH_REFRESH: Duration = Duration::from_millis(250);

thread_local! {
    static CACHED: RefCell<Option<(Instant, Bytes)>> = const { RefCell::new(None) };
}

pub fn live() -> Reply {
    Reply::json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
}

pub async fn ready(app: &App) -> Reply {
    let refusal: Option<(&str, Cow<'static, str>)> = match *app.phase.borrow() {
        Phase::Running => match app.shedder.any_pressure() {
            Some(p) => Some(("not ready", p.as_str().into())),
            None => match readiness(&app.agent.dependencies()) {
                Err((Standing::Starting, reason)) => Some(("starting", reason)),
                Err((_, reason)) => Some(("not ready", reason)),
                Ok(()) => None,
            },
        },
        _ => Some(("not ready", "shutting down".into())),
    };
    let (status, reason) = match refusal {
        Some(r) => r,
        None if !rate_limit_store_down(app).await => {
            return Reply::json(StatusCode::OK, Bytes::from_static(br#"{"status":"ready"}"#))
        }
        // Every limited request would get 503 `rate_limit_unavailable`: send the load
        // balancer's traffic elsewhere until Redis answers again.
        None => ("not ready", "rate limit store unavailable".into()),
    };
    let body = serde_json::to_vec(&serde_json::json!({"status": status, "reason": reason}))
        .unwrap_or_default();
    Reply::json(StatusCode::SERVICE_UNAVAILABLE, body.into())
        .with_header(header::RETRY_AFTER, http::HeaderValue::from_static("1"))
}

/// True while the rate limit's Redis is failing under the `closed` policy (so limited
/// requests are being refused); the answer is cached (`rate_redis::HEALTH_CACHE`).
async fn rate_limit_store_down(app: &App) -> bool {
    match &app.rate {
        Some(l) if l.redis_policy() == Some(crate::edge::rate::FailurePolicy::Closed) => {
            // Boxed: only this configuration pays for the PING future's size.
            Box::pin(l.redis_up()).await == Some(false)
        }
        _ => false,
    }
}

pub fn health(app: &App) -> Reply {
    let body = CACHED.with(|c| {
        let mut c = c.borrow_mut();
        match &*c {
            Some((at, b)) if at.elapsed() < HEALTH_REFRESH => b.clone(),
            _ => {
                let b = render(app);
                *c = Some((Instant::now(), b.clone()));
                b
            }
        }
    });
    Reply::json(StatusCode::OK, body)
}

#[derive(Serialize)]
struct Memory {
    rss: u64,
    #[serde(rename = "rssMB")]
    rss_mb: f64,
}

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
    agent: &'a str,
    uptime: f64,
    memory: Memory,
    requests: u64,
    /// Response times in milliseconds.
    latency: Latency,
    workers: usize,
}

fn render(app: &App) -> Bytes {
    let rss = crate::obs::process::rss_bytes().unwrap_or(0);
    let h = Health {
        status: "healthy",
        agent: app.agent.name(),
        uptime: app.started.elapsed().as_secs_f64(),
        memory: Memory {
            rss,
            rss_mb: (rss as f64 / 1_048_576.0 * 10.0).round() / 10.0,
        },
        requests: app.stats.requests(),
        latency: app.stats.latency(),
        workers: app.workers(),
    };
    Bytes::from(serde_json::to_vec(&h).unwrap_or_default())
}

/// `/health/detailed`: the guide's aggregate checks, one per group of the agent's
/// dependencies. 503 when a required part is down (a group with no usable member, Redis
/// down with the `closed` policy) or load is being shed.
pub async fn detailed(app: &App) -> Reply {
    use serde_json::json;
    let mut unhealthy = false;
    let mut degraded = false;
    let rss = crate::obs::process::rss_bytes().unwrap_or(0);
    let pressure = app.shedder.any_pressure();
    unhealthy |= pressure.is_some();
    let mut checks = serde_json::Map::new();
    checks.insert(
        "memory".into(),
        json!({"status": if pressure == Some(crate::edge::shed::Pressure::Memory) { "down" } else { "up" },
               "rss": rss, "limit": app.shedder.config().max_rss}),
    );
    checks.insert(
        "runtime".into(),
        json!({"status": if pressure == Some(crate::edge::shed::Pressure::SchedulingDelay) { "down" } else { "up" },
               "maxDelayMs": app.shedder.config().max_delay.as_millis() as u64}),
    );
    // Until the first health probes answer, "usable" would be a guess: say so.
    let groups = app.agent.dependencies();
    let starting = matches!(readiness(&groups), Err((Standing::Starting, _)));
    for g in &groups {
        let usable = g.usable();
        let total = g.members.len();
        unhealthy |= usable == 0;
        degraded |= usable < total;
        let status = if usable > 0 {
            "up"
        } else if starting {
            "starting"
        } else {
            "down"
        };
        let (key, check) = dependency_check(g, status, usable, total);
        checks.insert(key, check);
    }
    // The rate limiter's own connection and cached state: never a new connection.
    if let Some(limiter) = &app.rate {
        if let Some(up) = limiter.redis_up().await {
            if !up {
                if limiter.redis_policy() == Some(crate::edge::rate::FailurePolicy::Closed) {
                    unhealthy = true;
                } else {
                    degraded = true;
                }
            }
            checks.insert(
                "redis".into(),
                json!({"status": if up { "up" } else { "down" }}),
            );
        }
    }
    let status = if starting && pressure.is_none() {
        "starting"
    } else if unhealthy {
        "unhealthy"
    } else if degraded {
        "degraded"
    } else {
        "healthy"
    };
    let body = json!({
        "status": status,
        "agent": app.agent.name(),
        "uptime": app.started.elapsed().as_secs_f64(),
        "checks": checks,
    });
    let code = if unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Reply::json(code, serde_json::to_vec(&body).unwrap_or_default().into())
}

/// One group's entry in `/health/detailed`'s `checks`.
fn dependency_check(
    g: &DependencyGroup,
    status: &str,
    usable: usize,
    total: usize,
) -> (String, serde_json::Value) {
    use serde_json::json;
    match &g.kind {
        DependencyKind::LlmProviders => {
            // Saturation is load, not failure: shown, never counted against health.
            let concurrency: serde_json::Map<String, serde_json::Value> = g
                .members
                .iter()
                .filter_map(|m| {
                    let slots = m.endpoint.as_ref()?.slots.as_ref()?;
                    Some((m.name.clone(), crate::routes::metrics::slots_json(slots)))
                })
                .collect();
            (
                "providers".into(),
                json!({"status": status, "usable": usable, "total": total,
                       "concurrency": concurrency}),
            )
        }
        DependencyKind::UpstreamAgents => (
            "upstreams".into(),
            json!({"status": status, "usable": usable, "total": total}),
        ),
        DependencyKind::Other(name) => (
            name.to_string(),
            json!({"status": status, "usable": usable, "total": total}),
        ),
    }
}
