//! One configured provider: how to call it, and its live state (breaker, health,
//! latency, figures). `open` sends one streaming request and returns an [`LlmStream`]
//! once the response head arrived; the stream applies the idle and total deadlines.
//!
//! It never logs keys and never waits without a deadline.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::breaker::Breaker;
use super::client::HttpClient;
use super::error::{ErrorKind, LlmError};
use super::probe_loop::{ProbeState, Probed};
use super::slots::{SlotLimits, Slots};
use super::sse::SseParser;
use super::wire::{self, ProviderKind, StreamItem};
use super::ChatRequest;
use crate::obs::stats::Histogram;

/// Largest error body read from an upstream.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Longest wait a provider may ask for (`retry-after`, `retry-after-ms`): a day, so
/// that adding it to an instant can never overflow. The router never waits past the
/// request's deadline anyway; past that it fails over.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// Static scores for the weighted strategy, each 0 to 1.
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scores {
    pub performance: f64,
    pub cost: f64,
    pub reliability: f64,
    pub quality: f64,
}

impl Default for Scores {
    fn default() -> Self {
        Scores {
            performance: 1.0,
            cost: 1.0,
            reliability: 1.0,
            quality: 1.0,
        }
    }
}

/// How to reach a provider.
#[derive(Clone, Debug)]
pub struct ProviderSpec {
    pub name: String,
    pub kind: ProviderKind,
    /// As the SDKs take it: OpenAI's includes `/v1`, Anthropic's does not.
    pub base_url: String,
    pub api_key: String,
    pub model: String,
    pub scores: Scores,
}

/// Per-provider figures (read by `/stats` and `/metrics`).
#[derive(Debug, Default)]
pub struct ProviderStats {
    pub requests: AtomicU64,
    pub errors: [AtomicU64; ErrorKind::ALL.len()],
    pub retries: AtomicU64,
    pub failovers: AtomicU64,
    pub tokens_in: AtomicU64,
    pub tokens_out: AtomicU64,
    pub completed: AtomicU64,
    pub ttft: Histogram,
    pub latency: Histogram,
    /// agentd's own share of the time to first token (see `LlmAgent`).
    pub overhead: Histogram,
}

pub struct Provider {
    pub spec: ProviderSpec,
    pub breaker: Arc<Breaker>,
    /// Set by the health monitor; unknown until its first probe answers.
    pub health: ProbeState,
    /// EWMA of time to first token, in microseconds (f64 bits); 0 = unknown.
    ttft_ewma: AtomicU64,
    pub stats: ProviderStats,
    /// Concurrent requests allowed, for the whole process (the guide's `maxSockets`).
    pub slots: Slots,
    completions_url: String,
    models_url: String,
}

/// Deadlines for one call.
#[derive(Clone, Copy, Debug)]
pub struct CallLimits {
    pub first_byte: Duration,
    pub idle: Duration,
    pub deadline: Instant,
}

impl Provider {
    pub fn new(spec: ProviderSpec, breaker: Breaker, slots: SlotLimits) -> Provider {
        let base = spec.base_url.trim_end_matches('/');
        let (completions_url, models_url) = match spec.kind {
            ProviderKind::Openai => (format!("{base}/chat/completions"), format!("{base}/models")),
            ProviderKind::Anthropic => (format!("{base}/v1/messages"), format!("{base}/v1/models")),
        };
        Provider {
            spec,
            breaker: Arc::new(breaker),
            health: ProbeState::default(),
            ttft_ewma: AtomicU64::new(0),
            stats: ProviderStats::default(),
            slots: Slots::new(slots),
            completions_url,
            models_url,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Worth trying now: not found unhealthy by a probe, and its breaker not open.
    pub fn is_usable(&self) -> bool {
        self.health.get() != Probed::Unhealthy && self.breaker_allows()
    }

    /// Known usable: its last probe answered healthy and its breaker is not open
    /// (what readiness counts).
    pub fn is_ready(&self) -> bool {
        self.is_healthy() && self.breaker_allows()
    }

    /// Its last probe answered healthy.
    pub fn is_healthy(&self) -> bool {
        self.health.get() == Probed::Healthy
    }

    fn breaker_allows(&self) -> bool {
        self.breaker.state() != super::breaker::BreakerState::Open
    }

    /// EWMA of time to first token; `None` until measured.
    pub fn ttft_ewma(&self) -> Option<Duration> {
        let v = f64::from_bits(self.ttft_ewma.load(Relaxed));
        (v > 0.0).then(|| Duration::from_micros(v as u64))
    }

    pub fn record_ttft(&self, ttft: Duration) {
        self.stats.ttft.record(ttft);
        let us = ttft.as_micros() as f64;
        let old = f64::from_bits(self.ttft_ewma.load(Relaxed));
        let new = if old == 0.0 { us } else { old * 0.8 + us * 0.2 };
        self.ttft_ewma.store(new.to_bits(), Relaxed);
    }

    pub fn record_error(&self, e: &LlmError) {
        self.stats.errors[e.kind.index()].fetch_add(1, Relaxed);
    }

    fn authorize(&self, req: &mut http::request::Builder) -> Option<()> {
        let h = req.headers_mut()?;
        match self.spec.kind {
            ProviderKind::Openai => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", self.spec.api_key)).ok()?;
                v.set_sensitive(true);
                h.insert(header::AUTHORIZATION, v);
            }
            ProviderKind::Anthropic => {
                let mut v = HeaderValue::from_str(&self.spec.api_key).ok()?;
                v.set_sensitive(true);
                h.insert("x-api-key", v);
                h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
            }
        }
        Some(())
    }

    fn err(&self, kind: ErrorKind, message: impl Into<String>) -> LlmError {
        LlmError::new(kind, &self.spec.name, message)
    }

    /// Sends one streaming request; returns once the response head arrived.
    pub async fn open(
        &self,
        client: &HttpClient,
        req: &ChatRequest,
        limits: CallLimits,
    ) -> Result<LlmStream, LlmError> {
        self.stats.requests.fetch_add(1, Relaxed);
        let body = wire::request_body(self.spec.kind, &self.spec.model, req);
        let mut builder = Request::post(&self.completions_url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "text/event-stream");
        self.authorize(&mut builder).ok_or_else(|| {
            self.err(ErrorKind::Client, "the API key is not a valid header value")
        })?;
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| self.err(ErrorKind::Client, "the base URL is not a valid URL"))?;
        let head_deadline = limits.deadline.min(Instant::now() + limits.first_byte);
        let res = match tokio::time::timeout_at(head_deadline, client.request(request)).await {
            Err(_) => {
                return Err(self.err(ErrorKind::Timeout, "no response from the provider in time"))
            }
            Ok(Err(e)) => {
                let what = if e.is_connect() {
                    "cannot connect to the provider"
                } else {
                    "the connection to the provider failed"
                };
                return Err(self
                    .err(ErrorKind::Network, what)
                    .with_detail(e.to_string()));
            }
            Ok(Ok(res)) => res,
        };
        let status = res.status();
        if !status.is_success() {
            let retry_after = retry_after(res.headers());
            let body = read_bounded(res.into_body(), head_deadline).await;
            let mut e = wire::status_error(&self.spec.name, status.as_u16(), &body);
            e.retry_after = retry_after;
            return Err(e);
        }
        if status != StatusCode::OK {
            return Err(self.err(
                ErrorKind::Protocol,
                format!("unexpected status {}", status.as_u16()),
            ));
        }
        Ok(LlmStream {
            provider: self.spec.name.clone(),
            kind: self.spec.kind,
            body: res.into_body(),
            parser: SseParser::new(),
            pending: VecDeque::new(),
            idle: limits.idle,
            deadline: limits.deadline,
            done: false,
            failure: None,
            usage_in: None,
            usage_out: None,
            finish: None,
        })
    }

    /// A cheap probe: lists models. Used by the health monitor.
    pub async fn probe(&self, client: &HttpClient, timeout: Duration) -> bool {
        let mut builder = Request::get(&self.models_url);
        if self.authorize(&mut builder).is_none() {
            return false;
        }
        let Ok(request) = builder.body(Full::new(Bytes::new())) else {
            return false;
        };
        match tokio::time::timeout(timeout, client.request(request)).await {
            Ok(Ok(res)) => {
                let ok = res.status().is_success();
                let _ = read_bounded(res.into_body(), Instant::now() + timeout).await;
                ok
            }
            _ => false,
        }
    }
}

/// `retry-after-ms` (milliseconds) or `retry-after` (seconds); dates are ignored.
pub fn retry_after(h: &http::HeaderMap) -> Option<Duration> {
    parse_retry_after(
        h.get("retry-after-ms").map(|v| v.as_bytes()),
        h.get("retry-after").map(|v| v.as_bytes()),
    )
}

/// The wait asked by `retry-after-ms` (milliseconds, preferred) or else `retry-after`
/// (seconds), at most [`MAX_RETRY_AFTER`]; `None` for anything that is not a finite,
/// non-negative number. Whatever the bytes, it never panics.
pub fn parse_retry_after(ms: Option<&[u8]>, secs: Option<&[u8]>) -> Option<Duration> {
    let number = |v: Option<&[u8]>| {
        std::str::from_utf8(v?)
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    // Clamped before the conversion: `Duration::from_secs_f64` panics past u64 seconds.
    let max = MAX_RETRY_AFTER.as_secs_f64();
    if let Some(ms) = number(ms) {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(max)));
    }
    number(secs).map(|s| Duration::from_secs_f64(s.min(max)))
}

async fn read_bounded(mut body: Incoming, deadline: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < MAX_ERROR_BODY {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    let room = MAX_ERROR_BODY - out.len();
                    out.extend_from_slice(&d[..d.len().min(room)]);
                }
            }
            _ => break,
        }
    }
    out
}

impl super::probe_loop::Target for Provider {
    fn probe<'a>(
        &'a self,
        client: &'a HttpClient,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = bool> + 'a>> {
        Box::pin(Provider::probe(self, client, timeout))
    }

    fn probe_state(&self) -> &ProbeState {
        &self.health
    }

    fn log_change(&self, _was: Probed, now_ok: bool) {
        if now_ok {
            tracing::info!(provider = self.name(), "provider healthy again");
        } else {
            tracing::warn!(provider = self.name(), "provider health probe failed");
        }
    }
}

/// An open upstream stream of text deltas.
pub struct LlmStream {
    provider: String,
    kind: ProviderKind,
    body: Incoming,
    parser: SseParser,
    pending: VecDeque<StreamItem>,
    idle: Duration,
    deadline: Instant,
    done: bool,
    /// A failure decoded after events still pending: reported once they are taken.
    failure: Option<LlmError>,
    pub usage_in: Option<u64>,
    pub usage_out: Option<u64>,
    pub finish: Option<String>,
}

impl LlmStream {
    fn err(&self, kind: ErrorKind, message: &str) -> LlmError {
        LlmError::new(kind, &self.provider, message)
    }

    /// The next text delta; `Ok(None)` once the end marker arrived. EOF without it, an
    /// error event, a broken connection or a passed deadline is an error.
    pub async fn next_text(&mut self) -> Result<Option<String>, LlmError> {
        loop {
            while let Some(item) = self.pending.pop_front() {
                match item {
                    StreamItem::Text(t) => return Ok(Some(t)),
                    StreamItem::Usage { input, output } => {
                        self.usage_in = input.or(self.usage_in);
                        self.usage_out = output.or(self.usage_out);
                    }
                    StreamItem::Finish(r) => self.finish = Some(r),
                    StreamItem::Done => {
                        self.done = true;
                        self.pending.clear();
                    }
                }
            }
            if let Some(e) = self.failure.take() {
                self.done = true;
                return Err(e);
            }
            if self.done {
                return Ok(None);
            }
            let wait_until = self.deadline.min(Instant::now() + self.idle);
            let frame = match tokio::time::timeout_at(wait_until, self.body.frame()).await {
                Err(_) => {
                    let what = if Instant::now() >= self.deadline {
                        "the provider did not finish in time"
                    } else {
                        "the provider stalled mid-stream"
                    };
                    return Err(self.err(ErrorKind::Timeout, what));
                }
                Ok(None) => {
                    return Err(self.err(ErrorKind::Truncated, "the provider's stream ended early"))
                }
                Ok(Some(Err(e))) => {
                    return Err(self
                        .err(ErrorKind::Network, "the connection to the provider broke")
                        .with_detail(e.to_string()))
                }
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let mut failure = None;
            let (kind, provider, pending) = (self.kind, &self.provider, &mut self.pending);
            let fed = self.parser.feed(&data, &mut |ev| {
                if failure.is_some() {
                    return;
                }
                let mut items = Vec::new();
                let r = match kind {
                    ProviderKind::Openai => wire::decode_openai(provider, &ev, &mut items),
                    ProviderKind::Anthropic => wire::decode_anthropic(provider, &ev, &mut items),
                };
                match r {
                    Ok(()) => pending.extend(items),
                    Err(e) => failure = Some(e),
                }
            });
            if let Err(e) = fed {
                failure.get_or_insert(
                    self.err(ErrorKind::Protocol, "malformed stream")
                        .with_detail(e.to_string()),
                );
            }
            self.failure = failure;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(ms: Option<&str>, secs: Option<&str>) -> Option<Duration> {
        parse_retry_after(ms.map(str::as_bytes), secs.map(str::as_bytes))
    }

    #[test]
    fn retry_after_ms_is_preferred_and_read_in_milliseconds() {
        assert_eq!(
            parse(Some("1500"), Some("9")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse(Some(" 0.5 "), None), Some(Duration::from_micros(500)));
        assert_eq!(parse(None, Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(parse(Some("0"), None), Some(Duration::ZERO));
        assert_eq!(parse(None, None), None);
    }

    #[test]
    fn huge_values_are_clamped_to_a_day_not_panics() {
        for v in [
            "1e300",
            "1e22",
            "1.7976931348623157e308",
            "18446744073709551616000",
        ] {
            assert_eq!(
                parse(Some(v), None),
                Some(MAX_RETRY_AFTER),
                "retry-after-ms {v}"
            );
            assert_eq!(
                parse(None, Some(v)),
                Some(MAX_RETRY_AFTER),
                "retry-after {v}"
            );
        }
        assert_eq!(parse(Some("86400001"), None), Some(MAX_RETRY_AFTER));
        // Adding the longest wait to now stays representable.
        assert!(Instant::now().checked_add(MAX_RETRY_AFTER).is_some());
    }

    #[test]
    fn nan_infinite_negative_and_garbage_are_ignored() {
        for v in [
            "NaN", "nan", "inf", "-inf", "infinity", "-1", "-0.001", "", "soon", "1s", "\u{ff}",
        ] {
            assert_eq!(parse(Some(v), None), None, "retry-after-ms {v:?}");
            assert_eq!(parse(None, Some(v)), None, "retry-after {v:?}");
        }
        // An unusable retry-after-ms falls back to retry-after.
        assert_eq!(parse(Some("NaN"), Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(Some(&[0xff, 0xfe]), Some(b"1")),
            Some(Duration::from_secs(1))
        );
        // Dates are not numbers.
        assert_eq!(parse(None, Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }

    #[test]
    fn random_bytes_never_panic_and_stay_bounded() {
        let mut rng = fastrand::Rng::with_seed(17);
        let alphabet = b"0123456789.eE+-naifNAIF x\xff";
        for _ in 0..20_000 {
            let v = |rng: &mut fastrand::Rng| -> Vec<u8> {
                (0..rng.usize(0..24))
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect()
            };
            let (a, b) = (v(&mut rng), v(&mut rng));
            if let Some(d) = parse_retry_after(Some(&a), Some(&b)) {
                assert!(d <= MAX_RETRY_AFTER, "{a:?} {b:?}: {d:?}");
            }
        }
    }
}
