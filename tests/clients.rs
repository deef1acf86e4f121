//! What real clients send: HEAD from uptime checkers, `EventSource` reconnecting after
//! `done`, Python's `None` as `null`, a byte order mark before the body.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// `GET /stream?prompt=x`, with `Last-Event-ID` when given.
async fn get_stream(server: &TestServer, last_event_id: Option<&str>) -> reqwest::Response {
    let mut req = client().get(server.url("/stream?prompt=x"));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn head_never_runs_the_agent() {
    let agent = Arc::new(SlowStreamAgent::new(1, Duration::from_millis(1)));
    let started = agent.started.clone();
    let server = start(config(), agent);
    for _ in 0..3 {
        let res = client()
            .head(server.url("/stream?prompt=x"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "text/event-stream; charset=utf-8"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(started.load(Ordering::SeqCst), 0, "HEAD ran the agent");
    // GET still runs it.
    let evs = events(get_stream(&server, None).await).await;
    assert_eq!(evs.last().unwrap().data["event_name"], "done");
    assert_eq!(started.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn event_source_gets_ids_and_a_reconnect_after_done_gets_204() {
    let agent = Arc::new(SlowStreamAgent::new(2, Duration::from_millis(1)));
    let started = agent.started.clone();
    let server = start(config(), agent);
    let evs = events(get_stream(&server, None).await).await;
    assert!(evs.len() >= 3);
    for e in &evs {
        assert_eq!(
            e.id,
            e.data["id"].as_str().unwrap(),
            "the SSE id is the event's id"
        );
    }
    let done_id = evs.last().unwrap().id.clone();
    let first_id = evs[0].id.clone();
    // What a browser does after the stream closes: the same URL, Last-Event-ID.
    let res = get_stream(&server, Some(&done_id)).await;
    assert_eq!(res.status(), 204);
    assert_eq!(started.load(Ordering::SeqCst), 1, "the agent ran again");
    // An id that is not a finished answer's end is not a reason to refuse.
    let res = get_stream(&server, Some(&first_id)).await;
    assert_eq!(res.status(), 200);
    let _ = events(res).await;
    // 0 remembers nothing.
    let mut c = config();
    c.stream_done_memory = 0;
    let server = start_echo_with(c);
    let evs = events(get_stream(&server, None).await).await;
    let res = get_stream(&server, Some(&evs.last().unwrap().id)).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn null_for_optional_objects_and_a_byte_order_mark_are_accepted() {
    let server = start_echo();
    for b in [
        format!(r#"{{"query":{{"id":"{ID}","prompt":"hi"}},"session":null}}"#),
        format!(r#"{{"query":{{"id":"{ID}","prompt":"hi","context":null}}}}"#),
        format!("\u{feff}{}", body("hi")),
    ] {
        let res = post_json(&server, "/agent", b.clone()).await;
        assert_eq!(res.status(), 200, "{b}");
        let evs = events(res).await;
        assert_well_formed(&evs);
    }
    let res = post_json(&server, "/agent", "\u{feff}{\"query\":".into()).await;
    assert_eq!(res.status(), 400);
    let j: serde_json::Value = res.json().await.unwrap();
    let msg = j.to_string();
    assert!(msg.contains("not valid JSON"), "{msg}");
    assert!(!msg.contains("InternalError"), "{msg}");
}
