//! Resumable streams (`RESUME_STORE=memory`): a client that leaves mid-answer resumes
//! with `Last-Event-ID` and gets the rest byte for byte; unknown ids, positions and
//! other principals are refused; `DELETE` cancels; a stream nobody resumes is cancelled
//! after `RESUME_GRACE`; a stream over `RESUME_BUFFER_BYTES` says it cannot be resumed
//! from its start.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use support::*;

fn resumable() -> agentd::Config {
    let mut c = config();
    c.resume_store = agentd::config::ResumeStore::Memory;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_resumes_the_rest_byte_for_byte() {
    let agent = Arc::new(SlowStreamAgent::new(12, Duration::from_millis(40)));
    let server = start(resumable(), agent.clone());
    let res = post_json(&server, "/agent", body("hello")).await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-stream-id"].to_str().unwrap().to_owned();
    assert!(id.len() >= 32, "at least 128 bits: {id}");
    let (seen, last) = first_events(res, 3).await;
    // The client's connection drops here; the agent goes on.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(agent.dropped.load(Ordering::SeqCst), 0, "not cancelled");

    let res = get(
        &server,
        &format!("/agent/streams/{id}"),
        &[("last-event-id", &last)],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(res.headers()["x-stream-id"], id.as_str());
    let rest = res.bytes().await.unwrap();

    // The whole answer as first sent, from the start (the answer has finished).
    let whole = get(&server, &format!("/agent/streams/{id}"), &[]).await;
    assert_eq!(whole.status(), 200);
    let whole = whole.bytes().await.unwrap();
    let mut joined = seen.clone();
    joined.extend_from_slice(&rest);
    assert_eq!(
        joined,
        whole.to_vec(),
        "what was seen + the resume = the answer"
    );

    // And the answer is a well-formed one: 12 chunks, the stream closed, one done.
    let evs = events(get(&server, &format!("/agent/streams/{id}"), &[]).await).await;
    assert_well_formed(&evs);
    assert_eq!(
        evs.iter()
            .filter(|e| e.data["content_type"] == "chunked.text")
            .count(),
        13
    );
    // `?after=` is the same as the header.
    let after = get(&server, &format!("/agent/streams/{id}?after={last}"), &[]).await;
    assert_eq!(after.bytes().await.unwrap(), rest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_streams_and_positions_are_refused_with_json() {
    let server = start_echo_with(resumable());
    for path in [
        "/agent/streams/nope",
        "/agent/streams/00000000000000000000000000000000000",
        "/agent/streams/0000000000000000000000000000000000",
    ] {
        let res = get(&server, path, &[]).await;
        assert_eq!(res.status(), 404, "{path}");
        let v: serde_json::Value = res.json().await.unwrap();
        assert_eq!(v["code"], "stream_not_found");
    }
    let res = post_json(&server, "/agent", body("hi")).await;
    let id = res.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let _ = res.bytes().await.unwrap();
    let res = get(
        &server,
        &format!("/agent/streams/{id}"),
        &[("last-event-id", "not-an-id")],
    )
    .await;
    assert_eq!(res.status(), 400);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["code"], "unknown_position");
    let res = get(
        &server,
        &format!("/agent/streams/{id}"),
        &[("last-event-id", ID)],
    )
    .await;
    assert_eq!(res.status(), 400);
    let res = client()
        .put(server.url(&format!("/agent/streams/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD, DELETE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_by_default_no_stream_id_and_a_leaving_client_cancels() {
    let agent = Arc::new(SlowStreamAgent::new(50, Duration::from_millis(20)));
    let server = start(config(), agent.clone());
    let res = post_json(&server, "/agent", body("hi")).await;
    assert!(res.headers().get("x-stream-id").is_none());
    let _ = first_events(res, 2).await;
    assert!(
        agent.has_dropped(1).await,
        "the agent is cancelled when its client leaves"
    );
    let res = get(
        &server,
        "/agent/streams/00aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        &[],
    )
    .await;
    assert_eq!(res.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_cancels_a_running_answer_with_error_then_done() {
    let agent = Arc::new(SlowStreamAgent::new(200, Duration::from_millis(20)));
    let server = start(resumable(), agent.clone());
    let res = post_json(&server, "/agent", body("hi")).await;
    let id = res.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let reader = tokio::spawn(events(res));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let del = client()
        .delete(server.url(&format!("/agent/streams/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 202);
    let evs = reader.await.unwrap();
    assert_well_formed(&evs);
    let err = evs
        .iter()
        .find(|e| e.event == "error")
        .expect("an error event");
    assert_eq!(err.data["content"]["error_code"], 499);
    assert!(evs.len() < 100, "cut short: {} events", evs.len());
    // Finished now: a second DELETE says so.
    let del = client()
        .delete(server.url(&format!("/agent/streams/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    assert_eq!(del.text().await.unwrap(), r#"{"status":"finished"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_nobody_resumes_is_cancelled_after_the_grace() {
    let mut c = resumable();
    c.resume_grace = 600;
    let agent = Arc::new(SlowStreamAgent::new(500, Duration::from_millis(20)));
    let server = start(c, agent.clone());
    let res = post_json(&server, "/agent", body("hi")).await;
    let id = res.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let _ = first_events(res, 2).await;
    assert!(
        agent.has_dropped(1).await,
        "cancelled once the grace passed"
    );
    // Its end is kept: error (the client left) then done.
    let evs = events(get(&server, &format!("/agent/streams/{id}"), &[]).await).await;
    assert_well_formed(&evs);
    let err = evs
        .iter()
        .find(|e| e.event == "error")
        .expect("an error event");
    assert_eq!(err.data["content"]["error_code"], 499);
    assert!(evs.len() < 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_key_that_started_a_stream_may_resume_or_cancel_it() {
    let mut c = resumable();
    c.api_key_secret = Some("key-one,key-two".into());
    let server = start_echo_with(c);
    let res = post_agent_api(&server, "key-one", body("hi")).await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let first = res.bytes().await.unwrap();
    let path = format!("/agent/streams/{id}");
    let other = get(&server, &path, &[("x-api-key", "key-two")]).await;
    assert_eq!(other.status(), 403);
    let none = get(&server, &path, &[]).await;
    assert_eq!(none.status(), 403);
    let bad = get(&server, &path, &[("x-api-key", "nope")]).await;
    assert_eq!(bad.status(), 401);
    let own = get(&server, &path, &[("x-api-key", "key-one")]).await;
    assert_eq!(own.status(), 200);
    assert_eq!(own.bytes().await.unwrap(), first);
    let del = client()
        .delete(server.url(&path))
        .header("x-api-key", "key-two")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_over_its_buffer_cannot_be_resumed_from_its_start() {
    let mut c = resumable();
    c.resume_buffer_bytes = 1024;
    let agent = Arc::new(SlowStreamAgent::new(40, Duration::from_millis(1)));
    let server = start(c, agent);
    let res = post_json(&server, "/agent", body("hi")).await;
    let id = res.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let all = events(res).await;
    assert_well_formed(&all);
    let from_start = get(&server, &format!("/agent/streams/{id}"), &[]).await;
    assert_eq!(from_start.status(), 410);
    let v: serde_json::Value = from_start.json().await.unwrap();
    assert_eq!(v["code"], "stream_truncated");
    // The tail is still there.
    let near_end = &all[all.len() - 3].data["id"];
    let tail = get(
        &server,
        &format!("/agent/streams/{id}"),
        &[("last-event-id", near_end.as_str().unwrap())],
    )
    .await;
    assert_eq!(tail.status(), 200);
    let tail = events(tail).await;
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[1].event, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eventsource_reconnect_to_stream_resumes_the_same_answer() {
    let mut c = resumable();
    c.stream_done_memory = 0;
    let agent = Arc::new(SlowStreamAgent::new(10, Duration::from_millis(40)));
    let server = start(c, agent.clone());
    let res = get(&server, "/stream?prompt=hello", &[]).await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let (seen, _) = first_events(res, 3).await;
    // What EventSource sends back: the SSE `id:` of the last event it saw.
    let last = String::from_utf8(seen.clone())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .unwrap()
        .to_owned();
    let again = get(&server, "/stream?prompt=hello", &[("last-event-id", &last)]).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["x-stream-id"], id.as_str());
    let rest = again.bytes().await.unwrap();
    let whole = get(&server, &format!("/agent/streams/{id}"), &[]).await;
    let mut joined = seen;
    joined.extend_from_slice(&rest);
    assert_eq!(joined, whole.bytes().await.unwrap().to_vec());
    assert_eq!(
        agent.started.load(Ordering::SeqCst),
        1,
        "the agent ran once"
    );
    // After `done`, the reconnect gets 204 (EventSource stops).
    let done = String::from_utf8(joined)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .unwrap()
        .to_owned();
    let end = get(&server, "/stream?prompt=hello", &[("last-event-id", &done)]).await;
    assert_eq!(end.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_answers_hold_no_connection_slot_and_do_not_delay_a_drain() {
    let mut c = resumable();
    c.max_connections = 3;
    c.workers = Some(1);
    c.shutdown_timeout = 20_000;
    let server = start_echo_with(c);
    // More finished (and kept) answers than MAX_CONNECTIONS, each on its own
    // connection: every one is served.
    for i in 0..6 {
        let res = tokio::time::timeout(
            Duration::from_secs(5),
            client()
                .post(server.url("/agent"))
                .header("content-type", "application/json")
                .header("connection", "close")
                .body(body(&format!("hi {i}")))
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} was served"))
        .unwrap();
        assert_eq!(res.status(), 200);
        assert_well_formed(&events(res).await);
    }
    // The kept answers do not keep the drain waiting for their connections.
    let took = server.stop().await;
    assert!(took < Duration::from_secs(10), "drained in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_for_an_answer_whose_client_left() {
    let mut c = resumable();
    c.shutdown_timeout = 20_000;
    let agent = Arc::new(SlowStreamAgent::new(10, Duration::from_millis(80)));
    let server = start(c, agent.clone());
    let res = post_json(&server, "/agent", body("hi")).await;
    let _ = first_events(res, 2).await;
    // The client is gone; its answer runs on for a resume. SIGTERM now: the drain lets
    // it finish instead of dropping it with the process.
    let took = server.stop().await;
    assert_eq!(
        agent.finished.load(Ordering::SeqCst),
        1,
        "the answer ran to its end"
    );
    assert!(took < Duration::from_secs(10), "drained in {took:?}");
}
