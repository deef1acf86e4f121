//! Routing: method and path bytes to a [`Route`], without allocating.
//!
//! Empty path segments are skipped, so trailing and duplicate slashes are ignored (as
//! Fastify's `ignoreTrailingSlash` and `ignoreDuplicateSlashes` do). The query string
//! is not part of the match. It must stay a pure function of (method, path).

use http::Method;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Agent,
    /// `/agent` behind an API key.
    AgentApi,
    Assist,
    Stream,
    /// `GET /ws`: the WebSocket upgrade.
    Ws,
    Health,
    HealthLive,
    HealthReady,
    HealthDetailed,
    Metrics,
    Stats,
    /// `GET /agent/streams/{id}`: resume an answer.
    StreamResume,
    /// `DELETE /agent/streams/{id}`: cancel an answer.
    StreamCancel,
    /// `GET /v1/models` (OpenAI-compatible).
    OpenAiModels,
    /// `POST /v1/chat/completions` (OpenAI-compatible).
    OpenAiChat,
    /// `GET /openapi.json`.
    OpenApi,
    /// `GET /playground` and its script.
    Playground,
    /// `POST /mcp`: the MCP front door (streamable HTTP, stateless).
    Mcp,
    /// `GET /.well-known/agent-card.json` (and `/.well-known/agent.json`): the A2A card.
    A2aCard,
    /// `POST /a2a`: A2A JSON-RPC.
    A2a,
}

impl Route {
    /// Probes and operator endpoints: never shed (they report the pressure instead).
    pub fn is_probe(self) -> bool {
        matches!(
            self,
            Route::HealthLive | Route::HealthReady | Route::HealthDetailed | Route::Metrics
        )
    }

    /// Routes that run the agent over HTTP (counted in `/stats`' agent figures).
    pub fn is_agent(self) -> bool {
        matches!(
            self,
            Route::Agent
                | Route::Assist
                | Route::AgentApi
                | Route::Stream
                | Route::OpenAiChat
                | Route::A2a
        )
    }

    /// Routes the rate limiter leaves alone: probes and operator endpoints.
    pub fn is_rate_exempt(self) -> bool {
        self.is_probe() || matches!(self, Route::Health | Route::Stats)
    }

    /// Index into [`crate::obs::stats::ROUTE_LABELS`].
    pub fn label(self) -> usize {
        match self {
            Route::Agent => 0,
            Route::Assist => 1,
            Route::AgentApi => 2,
            Route::Stream => 3,
            Route::Ws => 4,
            Route::Health => 5,
            Route::HealthLive => 6,
            Route::HealthReady => 7,
            Route::HealthDetailed => 8,
            Route::Metrics => 9,
            Route::Stats => 10,
            Route::StreamResume => 11,
            Route::StreamCancel => 12,
            Route::OpenAiModels => 13,
            Route::OpenAiChat => 14,
            Route::OpenApi => 15,
            Route::Playground => 16,
            Route::Mcp => 17,
            Route::A2aCard => 18,
            Route::A2a => 19,
        }
    }
}

/// The label of requests that matched no route.
pub const UNROUTED_LABEL: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteMatch {
    Found(Route),
    /// The path exists but not for this method; the value is the `Allow` header.
    MethodNotAllowed(&'static str),
    NotFound,
}

const POST: &str = "POST";
const GET: &str = "GET, HEAD";
const GET_DELETE: &str = "GET, HEAD, DELETE";

/// Matches a request line's method and path.
pub fn route(method: &Method, path: &str) -> RouteMatch {
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    let a = segs.next();
    let b = segs.next();
    let c = segs.next();
    if segs.next().is_some() {
        return RouteMatch::NotFound;
    }
    if let (Some("agent"), Some("streams"), Some(_id)) = (a, b, c) {
        return if method == Method::GET || method == Method::HEAD {
            RouteMatch::Found(Route::StreamResume)
        } else if method == Method::DELETE {
            RouteMatch::Found(Route::StreamCancel)
        } else {
            RouteMatch::MethodNotAllowed(GET_DELETE)
        };
    }
    let (route, allow) = match (a, b) {
        _ if c.is_some() => match (a, b, c) {
            (Some("v1"), Some("chat"), Some("completions")) => (Route::OpenAiChat, POST),
            _ => return RouteMatch::NotFound,
        },
        (Some("agent"), None) => (Route::Agent, POST),
        (Some("assist"), None) => (Route::Assist, POST),
        (Some("agent-api"), None) => (Route::AgentApi, POST),
        (Some("stream"), None) => (Route::Stream, GET),
        (Some("ws"), None) => (Route::Ws, GET),
        (Some("health"), None) => (Route::Health, GET),
        (Some("health"), Some("live")) => (Route::HealthLive, GET),
        (Some("health"), Some("ready")) => (Route::HealthReady, GET),
        (Some("health"), Some("detailed")) => (Route::HealthDetailed, GET),
        (Some("metrics"), None) => (Route::Metrics, GET),
        (Some("stats"), None) => (Route::Stats, GET),
        (Some("openapi.json"), None) => (Route::OpenApi, GET),
        (Some("playground"), None | Some("app.js")) => (Route::Playground, GET),
        (Some("v1"), Some("models")) => (Route::OpenAiModels, GET),
        (Some("mcp"), None) => (Route::Mcp, POST),
        (Some(".well-known"), Some("agent-card.json" | "agent.json")) => (Route::A2aCard, GET),
        (Some("a2a"), None) => (Route::A2a, POST),
        _ => return RouteMatch::NotFound,
    };
    let ok = if allow == POST {
        method == Method::POST
    } else {
        method == Method::GET || method == Method::HEAD
    };
    if ok {
        RouteMatch::Found(route)
    } else {
        RouteMatch::MethodNotAllowed(allow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_slashes() {
        assert_eq!(
            route(&Method::POST, "/agent"),
            RouteMatch::Found(Route::Agent)
        );
        assert_eq!(
            route(&Method::POST, "/agent/"),
            RouteMatch::Found(Route::Agent)
        );
        assert_eq!(
            route(&Method::POST, "//agent//"),
            RouteMatch::Found(Route::Agent)
        );
        assert_eq!(
            route(&Method::POST, "/assist"),
            RouteMatch::Found(Route::Assist)
        );
        assert_eq!(
            route(&Method::GET, "/health//live"),
            RouteMatch::Found(Route::HealthLive)
        );
        assert_eq!(
            route(&Method::HEAD, "/health/ready/"),
            RouteMatch::Found(Route::HealthReady)
        );
        assert_eq!(
            route(&Method::GET, "/stream"),
            RouteMatch::Found(Route::Stream)
        );
        assert_eq!(
            route(&Method::GET, "/agent"),
            RouteMatch::MethodNotAllowed("POST")
        );
        assert_eq!(
            route(&Method::POST, "/health"),
            RouteMatch::MethodNotAllowed("GET, HEAD")
        );
        assert_eq!(route(&Method::GET, "/"), RouteMatch::NotFound);
        assert_eq!(route(&Method::GET, "/health/live/x"), RouteMatch::NotFound);
        assert_eq!(route(&Method::POST, "/Agent"), RouteMatch::NotFound);
        assert_eq!(
            route(&Method::POST, "/v1/chat/completions/"),
            RouteMatch::Found(Route::OpenAiChat)
        );
        assert_eq!(
            route(&Method::GET, "/v1/models"),
            RouteMatch::Found(Route::OpenAiModels)
        );
        assert_eq!(
            route(&Method::GET, "/v1/chat/completions"),
            RouteMatch::MethodNotAllowed("POST")
        );
        assert_eq!(route(&Method::POST, "/v1/chat/x"), RouteMatch::NotFound);
        assert_eq!(route(&Method::POST, "/agent/x/y"), RouteMatch::NotFound);
        assert_eq!(route(&Method::POST, "/mcp"), RouteMatch::Found(Route::Mcp));
        assert_eq!(
            route(&Method::GET, "/mcp"),
            RouteMatch::MethodNotAllowed("POST")
        );
        assert_eq!(
            route(&Method::DELETE, "/mcp"),
            RouteMatch::MethodNotAllowed("POST")
        );
        assert_eq!(
            route(&Method::GET, "/.well-known/agent-card.json"),
            RouteMatch::Found(Route::A2aCard)
        );
        assert_eq!(
            route(&Method::GET, "/.well-known/agent.json"),
            RouteMatch::Found(Route::A2aCard)
        );
        assert_eq!(route(&Method::POST, "/a2a"), RouteMatch::Found(Route::A2a));
        assert_eq!(
            route(&Method::GET, "/a2a"),
            RouteMatch::MethodNotAllowed("POST")
        );
    }
}
