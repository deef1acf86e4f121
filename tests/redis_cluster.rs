//! The rate limiter and the resume store against a real Redis Cluster: three masters
//! and three replicas of Debian's `redis-server` on loopback, made with
//! `redis-cli --cluster create`, including the failover of one master.
//!
//! Needs `redis-server` and `redis-cli` on the PATH (`apt-get install -y redis-server`).

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use agentd::edge::rate::{FailurePolicy, RateLimitConfig, RateLimiter};
use support::redis::{redis_replica, RedisCluster};
use support::*;

fn limiter(url: &str, max: u64) -> RateLimiter {
    let mut cfg = RateLimitConfig::new(max, Duration::from_secs(60));
    cfg.redis_url = Some(url.to_owned());
    cfg.redis_failure = FailurePolicy::Open;
    cfg.redis_timeout = Duration::from_millis(500);
    RateLimiter::new(cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_shares_limits_and_streams_and_survives_a_failover() {
    let mut cluster = RedisCluster::start();
    let url = cluster.url();
    // The one-seed form reaches the same cluster.
    let seed = format!("redis+cluster://127.0.0.1:{}", cluster.nodes[3].port);

    // Two limiters (two instances) share one count per client, for clients whose keys
    // live on different masters.
    let one = limiter(&url, 3);
    let two = limiter(&seed, 3);
    let clients: Vec<IpAddr> = (1..=6)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)))
        .collect();
    for ip in &clients {
        let mut allowed = 0;
        for n in 0..5 {
            let l = if n % 2 == 0 { &one } else { &two };
            let d = l.check(*ip).await;
            assert!(!d.unavailable, "Redis Cluster answered");
            allowed += u32::from(d.allowed);
        }
        assert_eq!(allowed, 3, "{ip}: one shared count");
    }
    let masters: std::collections::HashSet<usize> = clients
        .iter()
        .map(|ip| cluster.master_of(&format!("agentd:rl:{ip}")))
        .collect();
    assert!(masters.len() > 1, "the clients' keys spread over masters");

    // Streams across two replicas through the cluster.
    let agent = Arc::new(SlowStreamAgent::new(8, Duration::from_millis(40)));
    let a = start(redis_replica(&url), agent.clone());
    let b = start_echo_with(redis_replica(&seed));
    resumes_whole_across(&a, &b, 2).await;

    // SIGKILL the master holding one client's key; its replica takes over.
    let victim = clients[0];
    cluster.fail_over(&format!("agentd:rl:{victim}"));
    // After the cool-down the limiters reconnect and count again (on the promoted
    // replica the count survived replication, or restarted: either way it counts).
    let fresh = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77));
    let mut counted = false;
    for _ in 0..40 {
        let d = one.check(fresh).await;
        if !d.unavailable {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        counted,
        "the limiter counts in the cluster again after the failover"
    );
    for _ in 0..20 {
        if !one.check(victim).await.unavailable {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        !one.check(victim).await.unavailable,
        "the failed-over slot answers"
    );

    // And streams still resume across replicas, whichever master their slot is on.
    for _ in 0..3 {
        resumes_whole_across(&a, &b, 2).await;
    }

    // DELETE on one replica cancels the answer another runs, through the cluster.
    let slow = Arc::new(SlowStreamAgent::new(400, Duration::from_millis(20)));
    let owner = start(redis_replica(&url), slow.clone());
    let (id, _, _) = start_and_leave(&owner, 2).await;
    let del = delete(&b, &format!("/agent/streams/{id}"), &[]).await;
    assert_eq!(del.status(), 202);
    assert!(slow.has_dropped(1).await, "the owner cancelled the agent");
    assert_eq!(slow.finished.load(std::sync::atomic::Ordering::SeqCst), 0);
}
