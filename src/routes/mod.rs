//! The service: every request's path from head to response.
//!
//! Request id and start time first, then the route, then the handler; every response
//! gets `x-request-id` and `X-Response-Time`, and every error is [`HttpError`] JSON.
//! Finishing a response (or dropping it) records its time and marks the connection
//! idle. Handlers must not block the worker.

pub(crate) mod a2a;
pub mod agent;
mod answer;
mod app;
pub mod health;
mod mcp;
pub mod metrics;
pub mod openai;
pub mod openapi;
mod playground;
pub mod resume;
pub mod ws;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::edge::auth::Authenticator;
use crate::edge::cors::Cors;
use crate::edge::security;
use crate::http::activity::ConnActivity;
use crate::http::body::{RequestDone, RequestLog};
use crate::http::compress;
use crate::http::headers::{self, X_REQUEST_ID, X_RESPONSE_TIME};
use crate::http::{route, HttpError, Reply, ResponseBody, Route, RouteMatch};
pub use app::{App, Compression, Edge, RouteSettings, Routes};

static ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static("Accept-Encoding");
static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Authentication for the agent routes: a bearer token (verified when sent, required
/// with `AUTH_REQUIRED`, its role checked) or, on `/agent-api`, the API key alone (as
/// in the guide, where `/agent-api` is its own context without the JWT hook). On
/// `/stream` and `/ws` the token may come as `?access_token=` (RFC 6750 §2.3), because
/// a browser's EventSource and WebSocket cannot send `Authorization`. The resumable
/// stream routes take either credential. Returns who asked, when a credential named
/// them (what a resumed stream is checked against).
fn authorize(
    route: Route,
    h: &HeaderMap,
    query: Option<&str>,
    app: &App,
) -> Result<Option<Box<str>>, HttpError> {
    use crate::edge::auth::AuthError;
    let map = |e: AuthError| match e {
        AuthError::InvalidToken => HttpError::InvalidToken,
        AuthError::Forbidden => HttpError::Forbidden,
        AuthError::InvalidApiKey => HttpError::InvalidApiKey,
    };
    let header = h.get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
    let api_key = h.get("x-api-key").map(|v| v.as_bytes());
    // Who asked matters only to resumable streams: without a store, neither the
    // string nor a second digest of the API key is made on the request path.
    let named = app.streams.is_some();
    let principal = |c: Option<crate::edge::auth::Claims>| {
        c.and_then(|c| c.sub)
            .filter(|_| named)
            .map(|s| format!("sub:{s}").into_boxed_str())
    };
    let key_principal = |k: Option<&[u8]>| {
        k.filter(|_| named)
            .map(|k| Authenticator::api_key_principal(k).into_boxed_str())
    };
    match route {
        Route::AgentApi => {
            app.auth.check_api_key(api_key).map_err(map)?;
            return Ok(key_principal(api_key));
        }
        Route::StreamResume | Route::StreamCancel if api_key.is_some() && header.is_none() => {
            app.auth.check_api_key(api_key).map_err(map)?;
            return Ok(key_principal(api_key));
        }
        Route::Stream | Route::Ws => {
            let from_query = crate::edge::auth::access_token_param(query);
            match (header, from_query) {
                // RFC 6750 §2: a client must not use more than one method.
                (Some(_), Some(_)) => return Err(HttpError::InvalidToken),
                (None, Some(token)) => {
                    return app
                        .auth
                        .check_token(Some(&token))
                        .map_err(map)
                        .map(principal);
                }
                _ => {}
            }
        }
        Route::Agent | Route::Assist | Route::StreamResume | Route::StreamCancel => {}
        Route::OpenAiModels | Route::OpenAiChat | Route::A2a => {
            return openai::authorize(header, &app.auth)
                .map_err(map)
                .map(|()| None);
        }
        Route::Mcp => {
            // DNS-rebinding protection (MCP transports): checked before the credential.
            if !app.cors.allows_request_origin(h) {
                return Err(HttpError::OriginNotAllowed);
            }
            return openai::authorize(header, &app.auth)
                .map_err(map)
                .map(|()| None);
        }
        _ => return Ok(None),
    }
    app.auth.check_bearer(header).map_err(map).map(principal)
}

/// How often each worker may log that it sheds load: a line per shed request would
/// flood the log exactly when the server is overloaded.
const SHED_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    /// This worker's last shed log line, and the requests shed since.
    static SHED_LOG: std::cell::Cell<(Option<Instant>, u64)> =
        const { std::cell::Cell::new((None, 0)) };
}

/// Logs a shed request: the first on this worker at once, then at most one line per
/// `SHED_LOG_INTERVAL` with how many were shed since (`/metrics` counts every one).
fn log_shed(pressure: crate::edge::shed::Pressure, request_id: &HeaderValue) {
    SHED_LOG.with(|log| {
        let (last, count) = log.get();
        let count = count + 1;
        if last.is_none_or(|t| t.elapsed() >= SHED_LOG_INTERVAL) {
            tracing::warn!(
                request_id = ?request_id,
                reason = pressure.as_str(),
                shed = count,
                "requests shed (at most one line per second per worker)"
            );
            log.set((Some(Instant::now()), 0));
        } else {
            log.set((last, count));
        }
    });
}

/// Who is asking: the worker serving the request and, when a credential named them,
/// the principal.
pub struct Caller {
    pub worker: usize,
    pub principal: Option<Box<str>>,
    /// The connection's slot (its `MAX_CONNECTIONS` permit and drain token), when
    /// answers are resumable: an answer that outlives its connection holds it while it
    /// runs, so that a drain waits for it as for a connection.
    pub hold: Option<crate::http::activity::ConnHold>,
}

/// Handles one request.
pub async fn handle(
    mut req: Request<Incoming>,
    app: Arc<App>,
    activity: Arc<ConnActivity>,
    worker: usize,
    peer: IpAddr,
) -> Result<Response<ResponseBody>, Infallible> {
    let start = Instant::now();
    // Measured before this request counts itself in flight.
    let pressure = app.shedder.pressure(worker);
    // From here on, however this future ends (even dropped by an HTTP/2 reset), the
    // request leaves the in-flight count.
    let mut done = RequestDone::begin(activity, app.stats.clone(), worker, start);
    let request_id = headers::request_id(req.headers());
    // The request's header map becomes the response's (see `Reply`).
    let mut header_map = std::mem::take(req.headers_mut());
    if app.settings.request_logging {
        done.log = Some(Box::new(RequestLog {
            method: req.method().clone(),
            url: crate::edge::auth::redacted_uri(req.uri()).to_string(),
            request_id: request_id.clone(),
        }));
    }
    // Only requests that carry an `Origin` pay for CORS.
    let origin = if header_map.contains_key(http::header::ORIGIN) {
        app.cors.allowed_origin(&header_map)
    } else {
        None
    };
    let encoding = match header_map.get(http::header::ACCEPT_ENCODING) {
        Some(v) if app.settings.compression.is_some() => compress::negotiate(v.as_bytes()),
        _ => None,
    };
    if Cors::is_preflight(req.method(), &header_map) {
        let requested = header_map
            .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned();
        header_map.clear();
        let mut res = Reply::empty(StatusCode::NO_CONTENT).into_response(header_map);
        let h = res.headers_mut();
        app.cors.apply_preflight(origin, requested, h);
        return Ok(finish(res, &app, request_id, start, done));
    }
    let mut limit = None;
    let routed = route(req.method(), req.uri().path());
    let openai_errors = openai::is_openai_path(req.uri().path());
    let mcp_errors = mcp::is_mcp_path(req.uri().path());
    let a2a_errors = a2a::is_a2a_path(req.uri().path());
    if routed == RouteMatch::Found(Route::Ws) {
        // An upgraded socket keeps its connection counted until it closes.
        if let Some(hold) = done.activity().hold.clone() {
            req.extensions_mut().insert(ws::Hold(hold));
        }
    }
    if let RouteMatch::Found(r) = routed {
        done.route = r.label();
        done.agent = r.is_agent();
    }
    let mut caller = Caller {
        worker,
        principal: None,
        hold: match &app.streams {
            Some(_) if done.agent => done.activity().hold.clone(),
            _ => None,
        },
    };
    let result = match routed {
        RouteMatch::Found(r) => match pressure {
            _ if r.is_probe() => dispatch(r, req, &header_map, &app, &request_id, caller).await,
            Some(p) => {
                app.shedder
                    .shed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log_shed(p, &request_id);
                Err(HttpError::UnderPressure {
                    retry_after: app.settings.shed_retry_after,
                })
            }
            None => match authorize(r, &header_map, req.uri().query(), &app) {
                Err(e) => Err(e),
                Ok(principal) => match &app.rate {
                    _ if r.is_rate_exempt() => {
                        caller.principal = principal;
                        dispatch(r, req, &header_map, &app, &request_id, caller).await
                    }
                    None => {
                        caller.principal = principal;
                        dispatch(r, req, &header_map, &app, &request_id, caller).await
                    }
                    Some(limiter) => {
                        let ip = app.settings.trust_proxy.client_ip(&header_map, peer);
                        let d = Box::pin(limiter.check(ip)).await;
                        let reset_ms = d.reset_after.as_millis() as u64;
                        let reset_secs = reset_ms.div_ceil(1000);
                        if d.allowed {
                            limit = Some((d, reset_secs));
                            caller.principal = principal;
                            dispatch(r, req, &header_map, &app, &request_id, caller).await
                        } else if d.unavailable {
                            // No count to report: the store did not answer.
                            Err(HttpError::RateLimitUnavailable {
                                retry_after: reset_secs.max(1),
                            })
                        } else {
                            limit = Some((d, reset_secs));
                            Err(HttpError::RateLimited {
                                ip,
                                reset_secs,
                                reset_ms,
                            })
                        }
                    }
                },
            },
        },
        RouteMatch::MethodNotAllowed(allow) => Err(HttpError::MethodNotAllowed { allow }),
        RouteMatch::NotFound => Err(HttpError::NotFound),
    };
    let reply = result.unwrap_or_else(|e| {
        if e.logged() {
            tracing::error!(request_id = ?request_id, code = e.code(), "{e}");
        }
        if openai_errors {
            openai::error::http_error_reply(e, &request_id)
        } else if mcp_errors {
            mcp::error::http_error_reply(e, &request_id)
        } else if a2a_errors {
            a2a::error::http_error_reply(e, &request_id)
        } else {
            e.into_reply(&request_id)
        }
    });
    header_map.clear();
    let mut res = reply.into_response(header_map);
    app.cors.apply(origin, res.headers_mut());
    if let Some((d, reset_secs)) = limit {
        let h = res.headers_mut();
        h.insert(X_RATELIMIT_LIMIT.clone(), headers::number(d.limit));
        h.insert(X_RATELIMIT_REMAINING.clone(), headers::number(d.remaining));
        h.insert(X_RATELIMIT_RESET.clone(), headers::number(reset_secs));
    }
    if let (Some(enc), Some(c)) = (encoding, app.settings.compression) {
        if res.body_mut().compress(enc, c.level, c.threshold) {
            let h = res.headers_mut();
            h.insert(http::header::CONTENT_ENCODING, enc.header_value());
            h.append(http::header::VARY, ACCEPT_ENCODING.clone());
        }
    }
    Ok(finish(res, &app, request_id, start, done))
}

/// Headers every response gets, and the completion hook (which writes the request log
/// line when the response ends).
fn finish(
    mut res: Response<ResponseBody>,
    app: &App,
    request_id: HeaderValue,
    start: Instant,
    mut done: RequestDone,
) -> Response<ResponseBody> {
    let elapsed = start.elapsed();
    done.status = res.status().as_u16();
    done.sse = res.body().is_sse();
    if done.sse {
        app.stats
            .worker(done.worker())
            .streams_opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let h = res.headers_mut();
    if app.settings.security_headers {
        security::apply(h);
    }
    h.insert(X_RESPONSE_TIME.clone(), headers::response_time(elapsed));
    h.insert(X_REQUEST_ID.clone(), request_id);
    res.body_mut().set_completion(done);
    res
}

async fn dispatch(
    route: Route,
    req: Request<Incoming>,
    headers: &HeaderMap,
    app: &Arc<App>,
    request_id: &HeaderValue,
    caller: Caller,
) -> Result<Reply, HttpError> {
    match route {
        Route::Agent | Route::Assist | Route::AgentApi => {
            Box::pin(agent::assist(req, headers, app, request_id, caller)).await
        }
        Route::Stream => agent::stream(req, headers, app, request_id, caller),
        // Boxed, as every route whose future is large: hyper keeps room for the
        // request's future in every connection, idle or not.
        Route::StreamResume => {
            Box::pin(resume::resume(
                app,
                req.uri().path(),
                req.uri().query(),
                headers,
                caller.principal.as_deref(),
            ))
            .await
        }
        Route::StreamCancel => {
            Box::pin(resume::cancel(
                app,
                req.uri().path(),
                caller.principal.as_deref(),
            ))
            .await
        }
        Route::Ws => ws::upgrade(req, headers, app, request_id),
        Route::OpenAiModels => Ok(openai::models(app)),
        Route::OpenAiChat => {
            Box::pin(openai::chat_completions(req, headers, app, request_id)).await
        }
        Route::OpenApi => Ok(openapi::document()),
        Route::Playground => playground::serve(app.settings.playground, req.uri().path()),
        Route::Mcp => Box::pin(mcp::post(req, headers, app, request_id)).await,
        Route::A2aCard => Ok(a2a::card(app, headers)),
        Route::A2a => Box::pin(a2a::rpc(req, headers, app, request_id, caller)).await,
        Route::Health => Ok(health::health(app)),
        Route::HealthLive => Ok(health::live()),
        Route::HealthReady => Ok(Box::pin(health::ready(app)).await),
        Route::HealthDetailed => Ok(Box::pin(health::detailed(app)).await),
        Route::Stats => Ok(Reply::json(
            StatusCode::OK,
            serde_json::to_vec(&crate::routes::metrics::stats_json(app))
                .unwrap_or_default()
                .into(),
        )),
        Route::Metrics if app.settings.metrics => {
            Ok(Reply::prometheus(crate::routes::metrics::render(app)))
        }
        Route::Metrics => Err(HttpError::NotFound),
    }
}
