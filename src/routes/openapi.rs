//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, written by hand next to
//! the code (request schemas with the validators' real limits, the error shapes, the
//! event schema, the authentication schemes) and served as static bytes.
//!
//! The tests below hold it to the router: every route the router knows is in the
//! document and every path in the document is routed. It must never be built per
//! request.

use bytes::Bytes;
use http::StatusCode;

use crate::http::Reply;

/// The document, as served.
pub const DOCUMENT: &[u8] = include_bytes!("openapi.json");

/// `GET /openapi.json`.
pub fn document() -> Reply {
    Reply::json(StatusCode::OK, Bytes::from_static(DOCUMENT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{route, Route, RouteMatch};
    use http::Method;

    /// A path and method for every route: a new route that is not listed here does not
    /// compile, and one listed here must be in the document.
    fn example(r: Route) -> (&'static str, Method) {
        match r {
            Route::Agent => ("/agent", Method::POST),
            Route::AgentApi => ("/agent-api", Method::POST),
            Route::Assist => ("/assist", Method::POST),
            Route::Stream => ("/stream", Method::GET),
            Route::Ws => ("/ws", Method::GET),
            Route::Health => ("/health", Method::GET),
            Route::HealthLive => ("/health/live", Method::GET),
            Route::HealthReady => ("/health/ready", Method::GET),
            Route::HealthDetailed => ("/health/detailed", Method::GET),
            Route::Metrics => ("/metrics", Method::GET),
            Route::Stats => ("/stats", Method::GET),
            Route::StreamResume => ("/agent/streams/{id}", Method::GET),
            Route::StreamCancel => ("/agent/streams/{id}", Method::DELETE),
            Route::OpenAiModels => ("/v1/models", Method::GET),
            Route::OpenAiChat => ("/v1/chat/completions", Method::POST),
            Route::OpenApi => ("/openapi.json", Method::GET),
            Route::Playground => ("/playground", Method::GET),
            Route::Mcp => ("/mcp", Method::POST),
            Route::A2aCard => ("/.well-known/agent-card.json", Method::GET),
            Route::A2a => ("/a2a", Method::POST),
        }
    }

    const ALL: [Route; 20] = [
        Route::Agent,
        Route::AgentApi,
        Route::Assist,
        Route::Stream,
        Route::Ws,
        Route::Health,
        Route::HealthLive,
        Route::HealthReady,
        Route::HealthDetailed,
        Route::Metrics,
        Route::Stats,
        Route::StreamResume,
        Route::StreamCancel,
        Route::OpenAiModels,
        Route::OpenAiChat,
        Route::OpenApi,
        Route::Playground,
        Route::Mcp,
        Route::A2aCard,
        Route::A2a,
    ];

    fn doc() -> serde_json::Value {
        serde_json::from_slice(DOCUMENT).expect("the document is JSON")
    }

    #[test]
    fn every_route_is_documented() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        for r in ALL {
            let (path, method) = example(r);
            let op = &doc["paths"][path][method.as_str().to_ascii_lowercase()];
            assert!(
                op.is_object(),
                "{method} {path} ({r:?}) is not in openapi.json"
            );
            assert_eq!(
                route(&method, &path.replace("{id}", "00ab")),
                RouteMatch::Found(r)
            );
        }
    }

    #[test]
    fn every_documented_path_is_routed() {
        let doc = doc();
        let methods = ["get", "post", "delete", "put", "patch", "head", "options"];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (name, _) in item.as_object().unwrap() {
                if name == "parameters" {
                    continue;
                }
                assert!(methods.contains(&name.as_str()), "{path}: {name}");
                let method = Method::from_bytes(name.to_ascii_uppercase().as_bytes()).unwrap();
                let concrete = path.replace("{id}", "00ab");
                assert!(
                    matches!(route(&method, &concrete), RouteMatch::Found(_)),
                    "{name} {path} is documented but not routed"
                );
            }
        }
    }

    #[test]
    fn the_documented_limits_are_the_validators() {
        let doc = doc();
        let prompt = &doc["components"]["schemas"]["AgentRequest"]["properties"]["query"]
            ["properties"]["prompt"];
        assert_eq!(
            prompt["maxLength"],
            crate::protocol::request::MAX_PROMPT_CHARS
        );
    }
}
