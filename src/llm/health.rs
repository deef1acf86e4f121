//! Health monitoring: every `HEALTH_CHECK_INTERVAL` each provider gets a cheap probe
//! (list models); a failed probe marks it unhealthy until one succeeds.
//!
//! Runs on its own thread with its own runtime and client, so it never competes with
//! request handling, and stops when the router is dropped.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::client;
use super::router::Router;

/// Starts the monitor for `router`, probing every `interval`.
pub fn spawn(router: &Arc<Router>, interval: Duration) -> std::io::Result<()> {
    let weak: Weak<Router> = Arc::downgrade(router);
    std::thread::Builder::new()
        .name("agentd-llm-health".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Some(c) = weak.upgrade().map(|r| client::build(r.config.pool)) else {
                    return;
                };
                loop {
                    // Providers start out healthy; the first probe comes one interval in.
                    tokio::time::sleep(interval).await;
                    let Some(router) = weak.upgrade() else { return };
                    let timeout = interval.min(Duration::from_secs(10));
                    for p in &router.providers {
                        let ok = p.probe(&c, timeout).await;
                        let was = p.healthy.swap(ok, Relaxed);
                        if was != ok {
                            if ok {
                                tracing::info!(provider = p.name(), "provider healthy again");
                            } else {
                                tracing::warn!(provider = p.name(), "provider health probe failed");
                            }
                        }
                    }
                }
            });
        })?;
    Ok(())
}
