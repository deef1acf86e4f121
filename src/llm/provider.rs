//! One configured provider: how to call it (its URLs, keys and wire format), with its
//! live state in a [`crate::backend::Endpoint`] (breaker, health, slots, figures).
//! `open` sends one streaming request and returns an [`LlmStream`] once the response
//! head arrived; the stream applies the idle and total deadlines.
//!
//! It never logs keys and never waits without a deadline.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;

use super::error::{ErrorKind, LlmError, PROVIDER_KINDS};
use super::wire::{self, ProviderKind, StreamItem};
use super::ChatRequest;
use crate::backend::client::{self, HttpClient, SendError};
use crate::backend::probe::{self, ProbeState, Probed};
use crate::backend::reader::{EventReader, ReadError};
use crate::backend::slots::SlotLimits;
use crate::backend::{Breaker, Endpoint};

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

/// One provider: how to call it, and its live state.
pub struct Provider {
    pub spec: ProviderSpec,
    /// Breaker, health, slots (`LLM_CONCURRENT_REQUESTS`, for the whole process: the
    /// guide's `maxSockets`) and figures.
    pub endpoint: Arc<Endpoint>,
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
        let endpoint = Endpoint::new(
            spec.name.clone(),
            spec.base_url.clone(),
            breaker,
            Some(slots),
            &PROVIDER_KINDS,
        );
        Provider {
            spec,
            endpoint: Arc::new(endpoint),
            completions_url,
            models_url,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
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
        self.endpoint.stats.requests.fetch_add(1, Relaxed);
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
        let res = match client::send(client, request, head_deadline).await {
            Err(SendError::Timeout) => {
                return Err(self.err(ErrorKind::Timeout, "no response from the provider in time"))
            }
            Err(SendError::Failed(e)) => {
                let what = if e.is_connect() {
                    "cannot connect to the provider"
                } else {
                    "the connection to the provider failed"
                };
                return Err(self
                    .err(ErrorKind::Network, what)
                    .with_detail(e.to_string()));
            }
            Ok(res) => res,
        };
        let status = res.status();
        if !status.is_success() {
            let retry_after = retry_after(res.headers());
            let body = client::read_bounded(res.into_body(), MAX_ERROR_BODY, head_deadline).await;
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
            reader: EventReader::new(res.into_body()),
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
        let deadline = Instant::now() + timeout;
        match client::send(client, request, deadline).await {
            Ok(res) => {
                let ok = res.status().is_success();
                client::discard(res.into_body(), MAX_ERROR_BODY, deadline).await;
                ok
            }
            Err(_) => false,
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

impl probe::Target for Provider {
    fn probe<'a>(
        &'a self,
        client: &'a HttpClient,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = bool> + 'a>> {
        Box::pin(Provider::probe(self, client, timeout))
    }

    fn probe_state(&self) -> &ProbeState {
        &self.endpoint.health
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
    reader: EventReader,
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
            let ev = match self.reader.next(wait_until).await {
                Err(ReadError::Timeout) => {
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
                Err(ReadError::Broken(e)) => {
                    return Err(self
                        .err(ErrorKind::Network, "the connection to the provider broke")
                        .with_detail(e))
                }
                Err(ReadError::Malformed(e)) => {
                    self.failure = Some(
                        self.err(ErrorKind::Protocol, "malformed stream")
                            .with_detail(e.to_string()),
                    );
                    continue;
                }
                Ok(Some(ev)) => ev,
            };
            let mut items = Vec::new();
            let r = match self.kind {
                ProviderKind::Openai => wire::decode_openai(&self.provider, &ev, &mut items),
                ProviderKind::Anthropic => wire::decode_anthropic(&self.provider, &ev, &mut items),
            };
            match r {
                Ok(()) => self.pending.extend(items),
                Err(e) => self.failure = Some(e),
            }
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
