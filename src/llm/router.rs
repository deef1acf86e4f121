//! The router: picks providers, retries and fails over, until one stream delivers its
//! first token.
//!
//! Order of candidates: the strategy's (round-robin, weighted by the guide's
//! performance/cost/reliability/quality scores, or least EWMA time-to-first-token),
//! with the sticky provider (by `session.activity_id`) first when stickiness is on.
//! Each candidate gets up to `1 + max_retries` tries with exponential backoff and
//! jitter (or what `retry-after` asks), then the next candidate, up to `max_attempts`
//! providers, all within the request's deadline. Once a token has been returned nothing
//! here retries: a later failure belongs to the caller.
//!
//! The order itself, the breakers, the slots and the client are
//! [`crate::backend`]'s, shared with the proxy. A provider whose slots are all busy
//! (see [`crate::backend::slots`]) is waited for at most
//! `LLM_QUEUE_TIMEOUT`, then skipped like a failing one; when no candidate had room the
//! request fails at once as `saturated`, never queued behind the load.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use smallvec::SmallVec;
use tokio::time::Instant;

use super::error::{ErrorKind, LlmError};
use super::provider::{CallLimits, LlmStream, Provider};
use super::ChatRequest;
use crate::backend::client::{self, PoolConfig};
use crate::backend::order::{self, Candidate, Policy, Rotation};
use crate::backend::probe::ProbeLoop;
use crate::backend::slots::Slot;
use crate::backend::{BreakerPermit, InFlight};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    RoundRobin,
    Weighted,
    LeastLatency,
}

impl Strategy {
    fn policy(self) -> Policy {
        match self {
            Strategy::RoundRobin => Policy::RoundRobin,
            Strategy::Weighted => Policy::Weighted,
            Strategy::LeastLatency => Policy::LeastLatency,
        }
    }
}

/// The guide's load-balancing weights.
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    pub performance: f64,
    pub cost: f64,
    pub reliability: f64,
    pub quality: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            performance: 0.6,
            cost: 0.1,
            reliability: 0.2,
            quality: 0.1,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Delay before retry number `n` (0-based): exponential, capped, with equal jitter
    /// (half fixed, half random) so synchronized clients spread out.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
            .min(self.max_delay);
        let half = exp / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[derive(Clone, Debug)]
pub struct RouterConfig {
    pub strategy: Strategy,
    pub weights: Weights,
    pub sticky: bool,
    pub max_attempts: usize,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub pool: PoolConfig,
}

pub struct Router {
    pub providers: Vec<Arc<Provider>>,
    pub config: RouterConfig,
    rotation: Rotation,
    /// Requests that ended `saturated`: no candidate had a slot in time.
    pub saturated: AtomicU64,
    /// The providers' health probes; they stop when the router is dropped.
    monitor: OnceLock<ProbeLoop>,
}

/// A stream that has produced its first token.
pub struct OpenStream {
    pub provider: Arc<Provider>,
    pub stream: LlmStream,
    /// The first text delta (empty if the answer was empty).
    pub first: Option<String>,
    pub started: Instant,
    pub ttft: Duration,
    permit: Option<BreakerPermit>,
    _slot: Option<Slot>,
    _in_flight: InFlight,
}

impl OpenStream {
    /// The stream ended with its end marker.
    pub fn succeed(&mut self) {
        let p = &self.provider.endpoint;
        p.stats.completed.fetch_add(1, Relaxed);
        p.stats.latency.record(self.started.elapsed());
        if let Some(u) = self.stream.usage_in {
            p.stats.tokens_in.fetch_add(u, Relaxed);
        }
        if let Some(u) = self.stream.usage_out {
            p.stats.tokens_out.fetch_add(u, Relaxed);
        }
        if let Some(permit) = self.permit.take() {
            permit.succeed();
        }
    }

    /// The stream failed after its first token.
    pub fn fail(&mut self, e: &LlmError) {
        self.provider.endpoint.record_error(e);
        if let Some(permit) = self.permit.take() {
            if e.counts_as_failure() {
                permit.fail();
            }
        }
    }
}

impl Router {
    pub fn new(providers: Vec<Arc<Provider>>, config: RouterConfig) -> Router {
        Router {
            providers,
            config,
            rotation: Rotation::default(),
            saturated: AtomicU64::new(0),
            monitor: OnceLock::new(),
        }
    }

    /// Keeps the providers' health probes running for as long as the router lives.
    pub fn keep_monitor(&self, monitor: ProbeLoop) {
        let _ = self.monitor.set(monitor);
    }

    /// True when at least one provider is usable.
    pub fn any_usable(&self) -> bool {
        self.providers.iter().any(|p| p.endpoint.is_usable())
    }

    /// Candidates in the order to try them.
    pub fn order(&self, sticky_key: Option<u128>) -> Vec<Arc<Provider>> {
        let policy = self.config.strategy.policy();
        let candidates: SmallVec<[Candidate; 8]> = self
            .providers
            .iter()
            .map(|p| Candidate {
                usable: p.endpoint.is_usable(),
                in_flight: p.endpoint.in_flight(),
                ttft: p.endpoint.ttft_ewma(),
                weight: if policy == Policy::Weighted {
                    self.score(p)
                } else {
                    0.0
                },
            })
            .collect();
        let sticky = sticky_key.filter(|_| self.config.sticky);
        order::order(policy, self.rotation.turn(policy), &candidates, sticky)
            .into_iter()
            .map(|i| self.providers[i].clone())
            .collect()
    }

    /// The weighted strategy's score: static scores, with performance scaled down by
    /// measured latency and reliability by health.
    fn score(&self, p: &Provider) -> f64 {
        let w = self.config.weights;
        let s = p.spec.scores;
        let perf = match p.endpoint.ttft_ewma() {
            Some(t) => s.performance / (1.0 + t.as_secs_f64()),
            None => s.performance,
        };
        let rel = if p.endpoint.is_usable() {
            s.reliability
        } else {
            0.0
        };
        (w.performance * perf + w.cost * s.cost + w.reliability * rel + w.quality * s.quality)
            .max(1e-6)
    }

    /// Opens a stream and waits for its first token, retrying and failing over.
    pub async fn open(
        &self,
        req: &ChatRequest,
        sticky_key: Option<u128>,
    ) -> Result<OpenStream, LlmError> {
        let started = Instant::now();
        let deadline = started + self.config.timeout;
        let client = client::for_this_thread(self.config.pool);
        let mut last: Option<LlmError> = None;
        let candidates = self.order(sticky_key);
        for (n, provider) in candidates
            .iter()
            .take(self.config.max_attempts.max(1))
            .enumerate()
        {
            let endpoint = &provider.endpoint;
            if n > 0 {
                endpoint.stats.failovers.fetch_add(1, Relaxed);
            }
            let mut tries = 0u32;
            loop {
                let Some(permit) = endpoint.breaker.try_acquire() else {
                    let e = LlmError::new(
                        ErrorKind::BreakerOpen,
                        provider.name(),
                        "the provider is failing; not tried",
                    );
                    endpoint.record_error(&e);
                    last = Some(e);
                    break;
                };
                let slot = match endpoint.acquire_slot(deadline).await {
                    Ok(slot) => slot,
                    Err(why) => {
                        let e = LlmError::new(
                            ErrorKind::Saturated,
                            provider.name(),
                            "the provider has no free slot",
                        )
                        .with_detail(why.as_str().to_owned());
                        endpoint.record_error(&e);
                        last = Some(e);
                        break;
                    }
                };
                let limits = CallLimits {
                    first_byte: self.config.first_byte_timeout,
                    idle: self.config.idle_timeout,
                    deadline,
                };
                let in_flight = endpoint.begin();
                let attempt_start = Instant::now();
                let result = match provider.open(&client, req, limits).await {
                    Ok(mut stream) => stream.next_text().await.map(|first| (stream, first)),
                    Err(e) => Err(e),
                };
                match result {
                    Ok((stream, first)) => {
                        let ttft = attempt_start.elapsed();
                        endpoint.record_ttft(ttft);
                        let mut open = OpenStream {
                            provider: provider.clone(),
                            stream,
                            first,
                            started: attempt_start,
                            ttft,
                            permit: Some(permit),
                            _slot: slot,
                            _in_flight: in_flight,
                        };
                        if open.first.is_none() {
                            open.succeed();
                        }
                        return Ok(open);
                    }
                    Err(e) => {
                        endpoint.record_error(&e);
                        if e.counts_as_failure() {
                            permit.fail();
                        }
                        tracing::warn!(provider = provider.name(), kind = e.kind.as_str(), detail = %e.detail, "LLM call failed");
                        let retryable = e.is_retryable();
                        let delay = e
                            .retry_after
                            .unwrap_or_else(|| self.config.retry.backoff(tries));
                        last = Some(e);
                        if !retryable || tries >= self.config.retry.max_retries {
                            break;
                        }
                        // `delay` is bounded (`MAX_RETRY_AFTER`); checked all the same, so a
                        // wait past any instant fails over rather than panics.
                        if Instant::now()
                            .checked_add(delay)
                            .is_none_or(|resume| resume >= deadline)
                        {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        tries += 1;
                        endpoint.stats.retries.fetch_add(1, Relaxed);
                    }
                }
            }
            if last
                .as_ref()
                .is_some_and(|e| !e.is_retryable() && e.kind != ErrorKind::BreakerOpen)
            {
                // The request itself is at fault: another provider would refuse it too.
                break;
            }
        }
        let e = last.unwrap_or_else(|| {
            LlmError::new(
                ErrorKind::BreakerOpen,
                "router",
                "no LLM provider is configured",
            )
        });
        if e.kind == ErrorKind::Saturated {
            self.saturated.fetch_add(1, Relaxed);
        }
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Breaker;
    use crate::llm::provider::{ProviderSpec, Scores};
    use crate::llm::wire::ProviderKind;

    fn router(strategy: Strategy, sticky: bool, scores: &[Scores]) -> Router {
        let providers = scores
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Arc::new(Provider::new(
                    ProviderSpec {
                        name: format!("p{i}"),
                        kind: ProviderKind::Openai,
                        base_url: "http://127.0.0.1:9/v1".into(),
                        api_key: "k".into(),
                        model: "m".into(),
                        scores: *s,
                    },
                    Breaker::new(1, Duration::from_secs(60)),
                    crate::backend::slots::SlotLimits {
                        limit: 1,
                        queue_max: 0,
                        queue_timeout: Duration::ZERO,
                    },
                ))
            })
            .collect();
        Router::new(
            providers,
            RouterConfig {
                strategy,
                weights: Weights::default(),
                sticky,
                max_attempts: 2,
                retry: RetryPolicy {
                    max_retries: 0,
                    base_delay: Duration::ZERO,
                    max_delay: Duration::ZERO,
                },
                timeout: Duration::from_secs(1),
                first_byte_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
                pool: PoolConfig {
                    connect_timeout: Duration::from_secs(1),
                    idle_timeout: Duration::from_secs(1),
                    max_idle_per_host: 1,
                },
            },
        )
    }

    fn names(v: &[Arc<Provider>]) -> Vec<&str> {
        v.iter().map(|p| p.name()).collect()
    }

    #[test]
    fn round_robin_rotates() {
        let r = router(Strategy::RoundRobin, false, &[Scores::default(); 3]);
        assert_eq!(names(&r.order(None)), ["p0", "p1", "p2"]);
        assert_eq!(names(&r.order(None)), ["p1", "p2", "p0"]);
        assert_eq!(names(&r.order(None)), ["p2", "p0", "p1"]);
    }

    #[test]
    fn least_latency_prefers_the_fastest_measured() {
        let r = router(Strategy::LeastLatency, false, &[Scores::default(); 3]);
        r.providers[0]
            .endpoint
            .record_ttft(Duration::from_millis(300));
        r.providers[1]
            .endpoint
            .record_ttft(Duration::from_millis(100));
        // p2 is unmeasured: tried first so it gets measured.
        assert_eq!(names(&r.order(None)), ["p2", "p1", "p0"]);
        r.providers[2]
            .endpoint
            .record_ttft(Duration::from_millis(200));
        assert_eq!(names(&r.order(None)), ["p1", "p2", "p0"]);
    }

    #[test]
    fn weighted_draws_in_proportion_to_scores() {
        let low = Scores {
            performance: 0.1,
            cost: 0.1,
            reliability: 0.1,
            quality: 0.1,
        };
        let r = router(Strategy::Weighted, false, &[Scores::default(), low]);
        let firsts = (0..2000)
            .filter(|_| r.order(None)[0].name() == "p0")
            .count();
        // Scores 1.0 vs 0.1: p0 first about 91% of the time.
        assert!((1700..=1950).contains(&firsts), "{firsts}");
    }

    #[test]
    fn sticky_keys_pin_a_provider_and_unusable_ones_go_last() {
        let r = router(Strategy::RoundRobin, true, &[Scores::default(); 3]);
        for _ in 0..5 {
            assert_eq!(r.order(Some(7))[0].name(), "p1", "7 % 3 = 1");
        }
        r.providers[1]
            .endpoint
            .breaker
            .try_acquire()
            .unwrap()
            .fail();
        assert_eq!(r.order(Some(7)).last().unwrap().name(), "p1");
        assert!(r.any_usable());
        r.providers[0].endpoint.health.set(false);
        r.providers[2].endpoint.health.set(false);
        assert!(!r.any_usable());
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let p = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(5),
        };
        for n in 0..10 {
            let exp = Duration::from_millis(500 * (1u64 << n.min(20))).min(Duration::from_secs(5));
            for _ in 0..100 {
                let d = p.backoff(n);
                assert!(d >= exp / 2 && d <= exp, "retry {n}: {d:?}");
            }
        }
    }
}
