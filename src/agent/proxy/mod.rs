//! Proxy mode (`AGENT=proxy`): agentd as the edge in front of existing agents (the
//! Python `sentient-agent-framework` DefaultServer, Node agents) listed in
//! `AGENT_UPSTREAMS`.
//!
//! Everything at the edge applies unchanged (validation, session synthesis, auth, rate
//! limits, shedding, metrics, `AGENT_TIMEOUT`, slow-reader cut-off): the proxy is just
//! an [`Agent`]. Per request it picks upstreams (`balance`), sends `{query, session}`
//! over this worker's pooled keep-alive client (`request`), reads the event stream
//! (`reader`), checks each event (`event`) and re-emits it through the handler
//! (`relay`), which keeps agentd's guarantees. Before the first event a failing
//! upstream is skipped for the next one (bounded by `PROXY_MAX_ATTEMPTS`); after it, a
//! failure ends the answer with `atomic.error` + `done`. Each upstream is a
//! [`crate::backend::Endpoint`] (breaker, health check, requests in flight, figures
//! shown by `/metrics` and `/stats`), ordered, probed and called through
//! [`crate::backend`] like the LLM providers. Dropping the answer (the client left) drops the upstream
//! request, which closes its connection.
//!
//! There is no concurrency cap per upstream here (unlike the LLM providers'
//! `LLM_CONCURRENT_REQUESTS`): requests in flight are bounded by the edge
//! (`MAX_IN_FLIGHT`, rate limits) and `least-inflight` balancing spreads them.

pub mod balance;
pub mod error;
pub mod event;
pub mod json;
pub mod reader;
pub mod relay;
pub mod request;
pub mod settings;
pub mod upstream;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use std::sync::atomic::Ordering::Relaxed;

use super::{Agent, AgentError, DependencyGroup, DependencyHealth, DependencyKind};
use crate::backend::client::{self, HttpClient};
use crate::backend::{BreakerPermit, ErrorKind, InFlight, ProbeLoop};
use crate::protocol::{Query, ResponseHandler, Session};
pub use balance::Balance;
use error::{agent_error, upstream_error, UpstreamError};
use event::UpstreamEvent;
use reader::UpstreamReader;
use relay::{Flow, Relay, RelayError};
pub use settings::ProxySettings;
use upstream::{Upstream, UpstreamPool};

/// The proxy agent.
pub struct ProxyAgent {
    name: String,
    settings: ProxySettings,
    pool: Arc<UpstreamPool>,
    /// The health checks; they stop when the agent is dropped.
    _monitor: Option<ProbeLoop>,
}

/// An upstream answer that has produced its first (valid) event.
struct Opened<'a> {
    upstream: &'a Upstream,
    reader: UpstreamReader,
    first: UpstreamEvent,
    permit: BreakerPermit,
    in_flight: InFlight,
    started: Instant,
}

impl ProxyAgent {
    /// A proxy over `settings.upstreams` with its health checks running.
    pub fn start(name: String, settings: ProxySettings) -> Result<ProxyAgent, String> {
        let mut agent = ProxyAgent::new(name, settings);
        let monitor = agent
            .pool
            .spawn_health_checks(agent.settings.health_check_interval, agent.settings.pool)
            .map_err(|e| format!("cannot start the upstream health checks: {e}"))?;
        agent._monitor = Some(monitor);
        Ok(agent)
    }

    /// A proxy over `settings.upstreams`, without health checks.
    pub fn new(name: String, settings: ProxySettings) -> ProxyAgent {
        let pool = Arc::new(UpstreamPool::new(
            settings.upstreams.clone(),
            settings.balance,
            settings.breaker_threshold,
            settings.breaker_reset,
        ));
        ProxyAgent {
            name,
            settings,
            pool,
            _monitor: None,
        }
    }

    /// The upstreams and their live state.
    pub fn pool(&self) -> &Arc<UpstreamPool> {
        &self.pool
    }

    /// Tries upstreams in the balancer's order until one answers with a valid first
    /// event; at most `PROXY_MAX_ATTEMPTS` tries, upstreams whose breaker is open are
    /// skipped without a try.
    async fn open(&self, client: &HttpClient, body: Bytes) -> Result<Opened<'_>, UpstreamError> {
        let order = self.pool.order();
        let n = order.len();
        let max = self.settings.max_attempts;
        let mut tries = 0;
        let mut last = None;
        for k in 0..n * max {
            if tries == max {
                break;
            }
            let upstream = &self.pool.upstreams[order[k % n]];
            let endpoint = &upstream.endpoint;
            let Some(permit) = endpoint.breaker.try_acquire() else {
                let e = upstream_error(ErrorKind::BreakerOpen, "every upstream's breaker is open");
                if k < n {
                    // Once per request, however many rounds skip it.
                    endpoint.record_error(&e);
                }
                last.get_or_insert(e);
                continue;
            };
            if tries > 0 {
                endpoint.stats.failovers.fetch_add(1, Relaxed);
            }
            tries += 1;
            let in_flight = endpoint.begin();
            let started = Instant::now();
            let first_deadline = started + self.settings.first_event_timeout;
            let attempt = async {
                let body = request::send(client, upstream, body.clone(), first_deadline).await?;
                let mut reader =
                    UpstreamReader::new(body, first_deadline, self.settings.idle_timeout);
                let first = match reader.next().await? {
                    Some(ev) => event::decode(&ev.data)
                        .map_err(|d| upstream_error(ErrorKind::Protocol, d))?,
                    None => {
                        return Err(upstream_error(
                            ErrorKind::Truncated,
                            "the stream ended before its first event",
                        ))
                    }
                };
                Ok((reader, first))
            };
            match attempt.await {
                Ok((reader, first)) => {
                    endpoint.record_ttft(started.elapsed());
                    return Ok(Opened {
                        upstream,
                        reader,
                        first,
                        permit,
                        in_flight,
                        started,
                    });
                }
                Err(e) => {
                    endpoint.record_error(&e);
                    log_failure(upstream, &e, false);
                    if e.counts_as_failure() {
                        permit.fail();
                    }
                    let retryable = e.is_retryable();
                    last = Some(e);
                    if !retryable {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| upstream_error(ErrorKind::BreakerOpen, "no upstream to try")))
    }
}

fn log_failure(upstream: &Upstream, e: &UpstreamError, after_first_event: bool) {
    tracing::warn!(
        upstream = %upstream.url,
        kind = e.kind.as_str(),
        detail = %e.detail,
        after_first_event,
        "upstream agent failed"
    );
}

#[async_trait]
impl Agent for ProxyAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn dependencies(&self) -> Vec<DependencyGroup> {
        vec![DependencyGroup::new(
            DependencyKind::UpstreamAgents,
            self.pool
                .upstreams
                .iter()
                .map(|u| DependencyHealth::of_endpoint(&u.endpoint))
                .collect(),
        )]
    }

    async fn assist(
        &self,
        session: &Session,
        query: &Query,
        handler: &mut ResponseHandler,
    ) -> Result<(), AgentError> {
        let client = client::for_this_thread(self.settings.pool);
        let body = request::request_body(session, query);
        let Opened {
            upstream,
            mut reader,
            first,
            permit,
            in_flight,
            started,
        } = self
            .open(&client, body)
            .await
            .map_err(|e| agent_error(&e))?;
        let endpoint = &upstream.endpoint;
        let mut relay = Relay::new(handler, self.settings.coalesce);
        let mut next = first;
        let failure = loop {
            match relay.forward(next).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Done) => {
                    endpoint.stats.completed.fetch_add(1, Relaxed);
                    endpoint.stats.latency.record(started.elapsed());
                    permit.succeed();
                    // The upstream's answer is over: it no longer counts as busy while
                    // the body's end is read.
                    drop(in_flight);
                    reader.drain().await;
                    return Ok(());
                }
                // The client is gone: the upstream is not at fault (the permit is
                // dropped unsettled) and dropping the reader closes its connection.
                Err(RelayError::Client(e)) => return Err(e.into()),
                Err(RelayError::Upstream(e)) => break e,
            }
            let read = match relay.read(reader.next()).await {
                Ok(read) => read,
                Err(RelayError::Client(e)) => return Err(e.into()),
                Err(RelayError::Upstream(e)) => break e,
            };
            next = match read {
                Ok(Some(ev)) => match event::decode(&ev.data) {
                    Ok(ev) => ev,
                    Err(d) => break upstream_error(ErrorKind::Protocol, d),
                },
                Ok(None) => {
                    break upstream_error(ErrorKind::Truncated, "the stream ended without done")
                }
                Err(e) => break e,
            };
        };
        // The text relayed before the failure reaches the client first.
        if let Err(RelayError::Client(e)) = relay.flush().await {
            return Err(e.into());
        }
        endpoint.record_error(&failure);
        log_failure(upstream, &failure, true);
        if failure.counts_as_failure() {
            permit.fail();
        }
        // The server sends this as `atomic.error`, closes open streams and sends `done`.
        Err(agent_error(&failure))
    }
}
