//! Agent health as data: a custom agent reports its own dependency, and readiness,
//! `/health/detailed` and `/metrics` follow what it reports.

mod support;

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

use agentd::agent::{DependencyGroup, DependencyHealth, DependencyKind, DependencyState};
use agentd::{Agent, AgentError, Query, ResponseHandler, Session};
use async_trait::async_trait;
use support::*;

/// An agent that depends on a database whose state the test sets.
struct WithDatabase {
    state: Arc<AtomicU8>,
}

#[async_trait]
impl Agent for WithDatabase {
    fn name(&self) -> &str {
        "with a database"
    }

    fn dependencies(&self) -> Vec<DependencyGroup> {
        let state = match self.state.load(Relaxed) {
            0 => DependencyState::Unknown,
            1 => DependencyState::Up,
            _ => DependencyState::Down,
        };
        vec![DependencyGroup::new(
            DependencyKind::Other("database".into()),
            vec![DependencyHealth::new("primary", state)],
        )]
    }

    async fn assist(
        &self,
        _: &Session,
        _: &Query,
        handler: &mut ResponseHandler,
    ) -> Result<(), AgentError> {
        handler.complete().await?;
        Ok(())
    }
}

async fn json_of(server: &TestServer, path: &str) -> (u16, serde_json::Value) {
    let res = client().get(server.url(path)).send().await.unwrap();
    let code = res.status().as_u16();
    (code, res.json().await.unwrap())
}

#[tokio::test]
async fn a_custom_agent_reports_its_own_dependency() {
    let state = Arc::new(AtomicU8::new(2));
    let mut c = config();
    c.enable_metrics = true;
    let server = start(
        c,
        Arc::new(WithDatabase {
            state: state.clone(),
        }),
    );
    let (code, ready) = json_of(&server, "/health/ready").await;
    assert_eq!(code, 503);
    assert_eq!(
        ready,
        serde_json::json!({"status": "not ready", "reason": "no database is usable"})
    );
    let (code, detailed) = json_of(&server, "/health/detailed").await;
    assert_eq!(code, 503);
    assert_eq!(detailed["status"], "unhealthy");
    assert_eq!(
        detailed["checks"]["database"],
        serde_json::json!({"status": "down", "usable": 0, "total": 1})
    );
    // Not checked yet: starting, derived from the data alone.
    state.store(0, Relaxed);
    let (code, ready) = json_of(&server, "/health/ready").await;
    assert_eq!(code, 503);
    assert_eq!(ready["status"], "starting");
    assert_eq!(
        ready["reason"],
        "waiting for the first health check of database"
    );
    let (_, detailed) = json_of(&server, "/health/detailed").await;
    assert_eq!(detailed["status"], "starting");
    // Up: ready, healthy, and the gauge says so.
    state.store(1, Relaxed);
    assert_eq!(get_status(&server, "/health/ready").await, 200);
    let (code, detailed) = json_of(&server, "/health/detailed").await;
    assert_eq!(
        (code, &detailed["status"]),
        (200, &serde_json::json!("healthy"))
    );
    let m = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("agentd_dependency_up{group=\"database\",name=\"primary\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn an_agent_without_dependencies_is_ready() {
    let server = start_echo();
    assert_eq!(get_status(&server, "/health/ready").await, 200);
    assert!(start_echo_dependencies_are_empty());
}

fn start_echo_dependencies_are_empty() -> bool {
    agentd::EchoAgent::new("e").dependencies().is_empty()
}
