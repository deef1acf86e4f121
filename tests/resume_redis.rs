//! Resumable streams across replicas (`RESUME_STORE=redis`), against a real
//! `redis-server` (and, in `redis_cluster.rs`, a real Redis Cluster): two agentd
//! servers share one Redis; an answer started on one is resumed byte for byte, and
//! cancelled, from the other; an owner that died ends remote readers with
//! `agent_lost` and `done`; principals hold across replicas; Redis unreachable leaves
//! the answers themselves untouched.
//!
//! Needs `redis-server` on the PATH (`apt-get install -y redis-server`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::redis::{redis_replica, Redis};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_started_on_one_replica_resumes_on_another_byte_for_byte() {
    let redis = Redis::start();
    let agent = Arc::new(SlowStreamAgent::new(15, Duration::from_millis(60)));
    let a = start(redis_replica(&redis.url()), agent.clone());
    let b = start_echo_with(redis_replica(&redis.url()));
    // On the other replica, mid-answer: what was copied so far, then live events; the
    // owner's own copy of the whole answer and the other replica's all equal.
    let (id, _) = resumes_whole_across(&a, &b, 3).await;

    // Positions and ids the other replica does not know are refused, as on the owner.
    let bad = get(
        &b,
        &format!("/agent/streams/{id}"),
        &[("last-event-id", "01ARZ3NDEKTSV4RRFFQ69G5FAV")],
    )
    .await;
    assert_eq!(bad.status(), 400);
    let unknown = get(&b, &format!("/agent/streams/{}", "ab".repeat(17)), &[]).await;
    assert_eq!(unknown.status(), 404);
    let m = client().get(b.url("/metrics")).send().await.unwrap();
    let m = m.text().await.unwrap();
    assert!(m.contains("agentd_resume_remote_total 3"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_and_proxy_answers_resume_across_replicas() {
    let redis = Redis::start();
    // The LLM agent on a fake OpenAI upstream, tokens 30 ms apart.
    let fake = fake_llm::FakeLlm::start(fake_llm::Options {
        default: fake_llm::Behaviour {
            tokens: 12,
            token_delay: Duration::from_millis(30),
            ..fake_llm::Behaviour::default()
        },
        ..fake_llm::Options::default()
    })
    .await
    .unwrap();
    let mut c = redis_replica(&redis.url());
    c.openai_api_key = Some("sk-test-key".into());
    c.openai_base_url = fake.openai_base_url();
    c.openai_model = "fake-gpt".into();
    c.health_check_interval = 60_000;
    let llm = start(c.clone(), agentd::configured_agent(&c).expect("llm agent"));
    let b = start_echo_with(redis_replica(&redis.url()));
    let (_, evs) = resumes_whole_across(&llm, &b, 3).await;
    let text: String = evs
        .iter()
        .filter(|e| e.data["content_type"] == "chunked.text")
        .filter_map(|e| e.data["content"].as_str())
        .collect();
    assert!(text.contains("tok 0") && text.contains("tok 11"), "{text}");

    // The proxy agent relaying an upstream agent's slow stream.
    let upstream =
        support::upstream_agent::UpstreamAgent::start(support::upstream_agent::Mode::Slow {
            events: 10,
            delay: Duration::from_millis(40),
        })
        .await;
    let mut c = redis_replica(&redis.url());
    c.agent = Some(agentd::config::AgentKind::Proxy);
    c.agent_upstreams = Some(upstream.url());
    c.health_check_interval = 60_000;
    let proxy = start(
        c.clone(),
        agentd::configured_agent(&c).expect("proxy agent"),
    );
    resumes_whole_across(&proxy, &b, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_on_another_replica_cancels_the_running_answer() {
    let redis = Redis::start();
    let agent = Arc::new(SlowStreamAgent::new(400, Duration::from_millis(20)));
    let a = start(redis_replica(&redis.url()), agent.clone());
    let b = start_echo_with(redis_replica(&redis.url()));
    let (id, _, last) = start_and_leave(&a, 2).await;
    let path = format!("/agent/streams/{id}");
    let follower = get(&b, &path, &[("last-event-id", &last)]).await;
    assert_eq!(follower.status(), 200);
    let del = delete(&b, &path, &[]).await;
    assert_eq!(del.status(), 202);
    assert!(agent.has_dropped(1).await, "the owner cancelled the agent");
    // The follower on the other replica gets the owner's end: error 499, then done.
    let evs = tokio::time::timeout(Duration::from_secs(20), events(follower))
        .await
        .expect("the follower ends");
    let err = evs.iter().find(|e| e.event == "error").expect("an error");
    assert_eq!(err.data["content"]["error_code"], 499);
    assert_eq!(evs.last().unwrap().event, "done");
    // Once ended, DELETE says so.
    let again = delete(&b, &path, &[]).await;
    assert_eq!(again.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_died_ends_remote_readers_with_agent_lost() {
    let redis = Redis::start();
    let b = start_echo_with(redis_replica(&redis.url()));
    // What a replica SIGKILLed mid-answer leaves in Redis: its events so far and a
    // lease that nobody renews.
    let id = "cd".repeat(17);
    let first = "event: x\ndata: {}\n\n";
    redis.cli(&[
        "hset",
        &format!("agentd:stream:{{{id}}}:m"),
        "p",
        "",
        "f",
        "named",
        "s",
        "agent-1",
    ]);
    redis.cli(&[
        "xadd",
        &format!("agentd:stream:{{{id}}}:e"),
        "*",
        "n",
        "0",
        "i",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "b",
        first,
    ]);
    redis.cli(&[
        "set",
        &format!("agentd:stream:{{{id}}}:o"),
        "1",
        "px",
        "800",
    ]);
    let started = std::time::Instant::now();
    let res = get(&b, &format!("/agent/streams/{id}"), &[]).await;
    assert_eq!(res.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), res.bytes())
        .await
        .expect("never a hang")
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.starts_with(first), "{text}");
    assert!(text.contains("\"error_code\":503"), "{text}");
    assert!(text.contains("agent_lost"), "{text}");
    assert!(
        text.ends_with("\"metadata\":null}\n\n") && text.contains("event: done"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    let m = client().get(b.url("/metrics")).send().await.unwrap();
    assert!(m
        .text()
        .await
        .unwrap()
        .contains("agentd_resume_agent_lost_total 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_key_that_started_a_stream_may_resume_it_on_any_replica() {
    let redis = Redis::start();
    let keyed = || {
        let mut c = redis_replica(&redis.url());
        c.api_key_secret = Some("key-one,key-two".into());
        c
    };
    let a = start_echo_with(keyed());
    let b = start_echo_with(keyed());
    let res = post_agent_api(&a, "key-one", body("hi")).await;
    let id = res.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let first = res.bytes().await.unwrap();
    let path = format!("/agent/streams/{id}");
    // The copy is written by a task of its own: wait until the other replica sees it.
    let mut own = get(&b, &path, &[("x-api-key", "key-one")]).await;
    for _ in 0..50 {
        if own.status() != 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        own = get(&b, &path, &[("x-api-key", "key-one")]).await;
    }
    assert_eq!(own.status(), 200);
    assert_eq!(own.bytes().await.unwrap(), first);
    assert_eq!(
        get(&b, &path, &[("x-api-key", "key-two")]).await.status(),
        403
    );
    assert_eq!(get(&b, &path, &[]).await.status(), 403);
    assert_eq!(
        delete(&b, &path, &[("x-api-key", "key-two")])
            .await
            .status(),
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_leaves_answers_whole_and_resumable_on_their_replica() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let agent = Arc::new(SlowStreamAgent::new(6, Duration::from_millis(20)));
    let a = start(redis_replica(&url), agent);
    let b = start_echo_with(redis_replica(&url));
    let res = post_json(&a, "/agent", body("hello")).await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let evs = events(res).await;
    assert_well_formed(&evs);
    assert!(evs.iter().all(|e| e.event != "error"));
    // Its own replica still resumes it from memory.
    let own = get(&a, &format!("/agent/streams/{id}"), &[]).await;
    assert_eq!(own.status(), 200);
    // Another replica cannot reach the copy: a clear 503, not a hang or a 404.
    let other = get(&b, &format!("/agent/streams/{id}"), &[]).await;
    assert_eq!(other.status(), 503);
    let v: serde_json::Value = other.json().await.unwrap();
    assert_eq!(v["code"], "resume_unavailable");
    let m = client().get(a.url("/metrics")).send().await.unwrap();
    let m = m.text().await.unwrap();
    assert!(!m.contains("agentd_resume_redis_errors_total 0"), "{m}");
    assert_eq!(get_status(&a, "/health/ready").await, 200);
}

#[test]
fn resume_store_redis_needs_redis_url() {
    let mut c = config();
    c.resume_store = agentd::config::ResumeStore::Redis;
    let agent = agentd::configured_agent(&c).expect("agent");
    let e = agentd::Server::start(c, agent).err().expect("refused");
    assert!(e.to_string().contains("REDIS_URL"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_the_copy_has_not_reached_yet_is_waited_for() {
    let redis = Redis::start();
    let b = start_echo_with(redis_replica(&redis.url()));
    // A running answer whose copy holds one event; the client saw a second one already.
    let id = "ef".repeat(17);
    let key = |k: &str| format!("agentd:stream:{{{id}}}:{k}");
    let (first, second, third) = (
        "01ARZ3NDEKTSV4RRFFQ69G5FA0",
        "01ARZ3NDEKTSV4RRFFQ69G5FA1",
        "01ARZ3NDEKTSV4RRFFQ69G5FA2",
    );
    redis.cli(&["hset", &key("m"), "p", "", "f", "named", "s", "agent-1"]);
    redis.cli(&[
        "xadd",
        &key("e"),
        "*",
        "n",
        "0",
        "i",
        first,
        "b",
        "event: a\ndata: {}\n\n",
    ]);
    redis.cli(&["set", &key("o"), "1", "px", "10000"]);
    let res = get(
        &b,
        &format!("/agent/streams/{id}"),
        &[("last-event-id", second)],
    )
    .await;
    assert_eq!(res.status(), 200);
    let reading = tokio::spawn(async move { res.bytes().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.cli(&[
        "xadd",
        &key("e"),
        "*",
        "n",
        "1",
        "i",
        second,
        "b",
        "event: b\ndata: {}\n\n",
    ]);
    redis.cli(&[
        "xadd",
        &key("e"),
        "*",
        "n",
        "2",
        "i",
        third,
        "b",
        "event: done\ndata: {}\n\n",
        "end",
        "1",
    ]);
    let body = tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("ends")
        .unwrap();
    assert_eq!(
        &body[..],
        b"event: done\ndata: {}\n\n",
        "only what came after it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_remote_readers_bounds_the_streams_followed_from_redis() {
    let redis = Redis::start();
    let agent = Arc::new(SlowStreamAgent::new(100, Duration::from_millis(30)));
    let a = start(redis_replica(&redis.url()), agent);
    let mut c = redis_replica(&redis.url());
    c.resume_remote_readers = 1;
    let b = start_echo_with(c);
    let (id, _, last) = start_and_leave(&a, 2).await;
    let path = format!("/agent/streams/{id}");
    let first = get(&b, &path, &[("last-event-id", &last)]).await;
    assert_eq!(first.status(), 200);
    let second = get(&b, &path, &[("last-event-id", &last)]).await;
    assert_eq!(second.status(), 503);
    let v: serde_json::Value = second.json().await.unwrap();
    assert_eq!(v["code"], "resume_unavailable");
    let m = client().get(b.url("/metrics")).send().await.unwrap();
    assert!(m
        .text()
        .await
        .unwrap()
        .contains("agentd_resume_readers_busy_total 1"));
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_stream_events_caps_what_redis_keeps_of_a_stream() {
    let redis = Redis::start();
    let mut c = redis_replica(&redis.url());
    c.resume_stream_events = 16;
    let agent = Arc::new(SlowStreamAgent::new(400, Duration::ZERO));
    let a = start(c, agent);
    let b = start_echo_with(redis_replica(&redis.url()));
    let res = post_json(&a, "/agent", body("many")).await;
    let id = res.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let all = events(res).await;
    assert_well_formed(&all);
    let path = format!("/agent/streams/{id}");
    // Redis trims whole nodes of its stream (`MAXLEN ~`): far fewer than 400 are kept.
    let mut status = 0;
    for _ in 0..100 {
        status = get(&b, &path, &[]).await.status().as_u16();
        if status != 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 410, "the start was trimmed from Redis");
    let kept = redis.cli(&["xlen", &format!("agentd:stream:{{{id}}}:e")]);
    assert!(
        kept.parse::<usize>().unwrap() < all.len(),
        "{kept} of {}",
        all.len()
    );
    // The tail is still there, and the owner's memory still has the whole answer.
    let near_end = all[all.len() - 3].data["id"].as_str().unwrap().to_owned();
    let tail = get(&b, &path, &[("last-event-id", &near_end)]).await;
    assert_eq!(tail.status(), 200);
    assert_eq!(events(tail).await.len(), 2);
    assert_eq!(get(&a, &path, &[]).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_redis_timeout_bounds_a_silent_redis() {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for s in silent.incoming().flatten().take(8) {
            conns.push(s);
        }
    });
    let mut c = redis_replica(&url);
    c.resume_redis_timeout = 200;
    let b = start_echo_with(c);
    let started = std::time::Instant::now();
    let res = get(&b, &format!("/agent/streams/{}", "ab".repeat(17)), &[]).await;
    assert_eq!(res.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_a2a_task_is_followed_and_its_cancel_seen_from_another_replica() {
    use serde_json::json;
    use support::a2a::*;
    let redis = Redis::start();
    let agent = Arc::new(SlowStreamAgent::new(30, Duration::from_millis(30)));
    let a = start(redis_replica(&redis.url()), agent.clone());
    let b = start(redis_replica(&redis.url()), agent.clone());
    let (id, original) = start_stream(&a, &call("SendStreamingMessage", message("x"))).await;
    has_text(&a, &id).await;
    // Let the owner's copy catch up with what GetTask showed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The snapshot holds the text copied so far (none if the copy had not reached Redis).
    let (sub, so_far) = subscribe_whole(&b, &id).await;
    let original = original.await.unwrap();
    assert_eq!(
        sub[0]["task"]["contextId"],
        original[0]["task"]["contextId"]
    );
    assert_eq!(
        format!("{so_far}{}", answer_text(&sub[1..])),
        answer_text(&original)
    );
    for results in [&sub, &original] {
        assert_eq!(
            results.last().unwrap()["statusUpdate"]["status"]["state"],
            "TASK_STATE_COMPLETED"
        );
    }
    for replica in [&a, &b] {
        let v = rpc(replica, &call("SubscribeToTask", json!({"id": id}))).await;
        assert_eq!(v["error"]["code"], -32004, "{v}");
    }
    let unknown = "ab".repeat(17);
    let v = rpc(&b, &call("SubscribeToTask", json!({"id": unknown}))).await;
    assert_eq!(v["error"]["code"], -32001);

    // A cancel on the owner ends the other replica's subscriber canceled (0.3 names).
    let (id, original) = start_stream(&a, &call("message/stream", message_v03("x"))).await;
    has_text(&a, &id).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, sub) = start_stream(&b, &call("tasks/resubscribe", json!({"id": id}))).await;
    let v = rpc(&a, &call("tasks/cancel", json!({"id": id}))).await;
    assert_eq!(v["result"]["status"]["state"], "canceled");
    for results in [sub.await.unwrap(), original.await.unwrap()] {
        let last = results.last().unwrap();
        assert_eq!(last["kind"], "status-update", "{last}");
        assert_eq!(last["status"]["state"], "canceled");
        assert_eq!(last["final"], true);
    }
    assert!(agent.has_dropped(2).await, "both agents ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_a2a_client_that_leaves_ends_the_task_canceled_for_other_replicas() {
    use serde_json::json;
    use support::a2a::*;
    let redis = Redis::start();
    let agent = Arc::new(SlowStreamAgent::new(1000, Duration::from_millis(20)));
    let a = start(redis_replica(&redis.url()), agent.clone());
    let b = start(redis_replica(&redis.url()), agent.clone());
    let (id, original) = start_stream(&a, &call("SendStreamingMessage", message("x"))).await;
    has_text(&a, &id).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, sub) = start_stream(&b, &call("SubscribeToTask", json!({"id": id}))).await;
    original.abort();
    let sub = sub.await.unwrap();
    let last = sub.last().unwrap();
    assert_eq!(
        last["statusUpdate"]["status"]["state"], "TASK_STATE_CANCELED",
        "{last}"
    );
    assert!(agent.has_dropped(1).await, "the agent is cancelled");
    let v = rpc(&a, &call("GetTask", json!({"id": id}))).await;
    assert_eq!(v["result"]["status"]["state"], "TASK_STATE_CANCELED");
}
