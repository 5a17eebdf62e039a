//! Nodes sharing a real Redis Cluster (three masters, a replica each) through
//! `RedisStore::cluster`: entries spread over every master, a fill on one node is a hit on
//! another, an invalidation on one reaches the other, and a master's failure costs misses, never
//! a 5xx or an invalidated body.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use cache_actix::{Cache, MemoryStore, RedisStore};
use cache_actix_tests::cluster_shop::{eventually, node, PROPAGATION};
use cache_actix_tests::redis::{until_propagated, wait_in_sync};
use cache_actix_tests::shop::{app, Db};
use cache_actix_tests::{get_path as get, redis_cluster::RedisCluster};

#[actix_web::test]
async fn entries_spread_over_every_master_and_nodes_share_them_and_their_invalidation() {
    let cluster = RedisCluster::start();
    let db = Arc::new(Db::default());
    let (cache_a, cache_b) = (node(&cluster, true), node(&cluster, false));
    wait_in_sync(&cache_a).await;
    wait_in_sync(&cache_b).await;
    let a = app(cache_a.clone(), db.clone()).await;
    let b = app(cache_b.clone(), db.clone()).await;

    // The first fill may race the cluster client's first connection; it is a miss either way.
    eventually(
        Duration::from_secs(5),
        "A stores into the cluster",
        || async {
            let reply = get(&a, "/p/0").await;
            let again = get(&b, "/p/0").await;
            (again.x_cache() == "HIT" && again.text() == "0:v0")
                .then_some(())
                .ok_or_else(|| format!("A {:?}, B {:?}", reply.summary(), again.summary()))
        },
    )
    .await;

    const FILLS: u32 = 600;
    for id in 1..=FILLS {
        let reply = get(&a, &format!("/p/{id}")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), format!("{id}:v0"));
    }
    let calls = db.calls.load(Ordering::SeqCst);
    for id in 1..=FILLS {
        let reply = get(&b, &format!("/p/{id}")).await;
        assert_eq!(
            reply.summary(),
            (StatusCode::OK, "HIT".into(), format!("{id}:v0")),
            "B shares A's entry {id}"
        );
    }
    assert_eq!(db.calls.load(Ordering::SeqCst), calls, "B ran no handler");

    let per_master = cluster.keys_per_master("ca:*:r:*");
    let total: u64 = per_master.iter().map(|(_, n)| n).sum();
    assert!(total > u64::from(FILLS), "records stored: {per_master:?}");
    let mean = total as f64 / per_master.len() as f64;
    for (port, n) in &per_master {
        // 600 records hashed onto three masters: each within a quarter of the mean (a
        // namespace-wide hash tag would put every one on a single master).
        assert!(
            (*n as f64 - mean).abs() < mean * 0.25,
            "master {port} holds {n} of {total}: {per_master:?}"
        );
    }

    db.version.store(1, Ordering::SeqCst);
    cache_a
        .invalidate_tag("products")
        .await
        .unwrap_or_else(|e| panic!("invalidate: {e}"));
    // B has no L1: its next read is checked against the clocks; A's own L1 is dropped at once.
    assert_eq!(get(&a, "/p/7").await.text(), "7:v1");
    eventually(
        Duration::from_secs(2),
        "B sees the invalidation",
        || async {
            let reply = get(&b, "/p/8").await;
            (reply.text() == "8:v1")
                .then_some(())
                .ok_or_else(|| format!("{:?}", reply.summary()))
        },
    )
    .await;
}

#[actix_web::test]
async fn a_master_failure_costs_misses_never_a_5xx_or_an_invalidated_body() {
    let mut cluster = RedisCluster::start();
    let db = Arc::new(Db::default());
    let (cache_a, cache_b) = (node(&cluster, true), node(&cluster, true));
    wait_in_sync(&cache_a).await;
    wait_in_sync(&cache_b).await;
    let a = app(cache_a.clone(), db.clone()).await;
    let b = app(cache_b.clone(), db.clone()).await;

    let victim = cluster.masters()[0];
    let mut killed = false;
    let mut invalidated_at = None;
    let started = Instant::now();
    let mut round = 0u32;
    while started.elapsed() < Duration::from_secs(12) {
        round += 1;
        if round == 40 {
            cluster.kill(victim);
            killed = true;
        }
        if round == 80 {
            // The version the handler serves from now on; once the invalidation returned Ok,
            // no node may answer with the old one.
            db.version.store(1, Ordering::SeqCst);
            let mut tries = 0;
            loop {
                tries += 1;
                match cache_a.invalidate_tag("products").await {
                    Ok(()) => break,
                    Err(err) => {
                        assert!(tries < 200, "the invalidation never went through: {err}");
                        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            invalidated_at = Some(round);
        }
        for (name, node) in [("A", &a), ("B", &b)] {
            let id = round % 20;
            let reply = get(node, &format!("/p/{id}")).await;
            assert!(
                !reply.status.is_server_error(),
                "{name} round {round}: {:?}",
                reply.summary()
            );
            let version = reply.text().rsplit('v').next().unwrap_or("").to_string();
            assert!(
                reply.text().starts_with(&format!("{id}:v")),
                "{name} round {round}: a wrong body {:?}",
                reply.summary()
            );
            if invalidated_at.is_some() {
                // B learns of A's invalidation through the subscription (or, while it is down,
                // does not use its L1); A knows at once.
                if name == "A" {
                    assert_eq!(version, "1", "A round {round}: {:?}", reply.summary());
                }
            }
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        killed && invalidated_at.is_some(),
        "the loop reached both faults"
    );
    let new_master = cluster.wait_failover(victim, Duration::from_secs(10));
    assert_ne!(new_master, victim);
    // After the failover every node serves the new version, and the cluster serves hits again.
    for node in [&a, &b] {
        eventually(
            Duration::from_secs(5),
            "hits after the failover",
            || async {
                let first = get(node, "/p/99").await;
                let second = get(node, "/p/99").await;
                (second.x_cache() == "HIT" && second.text() == "99:v1")
                    .then_some(())
                    .ok_or_else(|| format!("{:?} then {:?}", first.summary(), second.summary()))
            },
        )
        .await;
    }
    for id in 0..20 {
        assert_eq!(
            get(&b, &format!("/p/{id}")).await.text(),
            format!("{id}:v1")
        );
    }
}

#[actix_web::test]
async fn a_cluster_over_tls_shares_fills_and_invalidations() {
    let cluster = RedisCluster::start_tls();
    let Some(pki) = cluster.pki() else {
        panic!("start_tls gave no certificates");
    };
    let ca = pki.ca_pem();
    let tls_node = |l1: bool| {
        let store = RedisStore::cluster(cluster.urls())
            .and_then(|s| s.tls_root_ca_pem(ca.clone()))
            .map(|s| s.timeout(Duration::from_secs(1)))
            .unwrap_or_else(|e| panic!("cluster over TLS: {e}"));
        let builder = Cache::builder().l2(store).namespace("shop");
        if l1 {
            builder.l1(MemoryStore::new()).build()
        } else {
            builder.build()
        }
    };
    assert!(cluster.urls().iter().all(|u| u.starts_with("rediss://")));
    let db = Arc::new(Db::default());
    let (cache_a, cache_b) = (tls_node(true), tls_node(false));
    wait_in_sync(&cache_a).await;
    wait_in_sync(&cache_b).await;
    let a = app(cache_a.clone(), db.clone()).await;
    let b = app(cache_b.clone(), db.clone()).await;
    eventually(Duration::from_secs(5), "a fill shared over TLS", || async {
        let first = get(&a, "/p/1").await;
        let again = get(&b, "/p/1").await;
        (again.x_cache() == "HIT" && again.text() == "1:v0")
            .then_some(())
            .ok_or_else(|| format!("A {:?}, B {:?}", first.summary(), again.summary()))
    })
    .await;
    db.version.store(1, Ordering::SeqCst);
    cache_a
        .invalidate_tag("products")
        .await
        .unwrap_or_else(|e| panic!("invalidate over TLS: {e}"));
    assert_eq!(get(&a, "/p/1").await.text(), "1:v1");
    b_hears_of_it(&b, "1:v1").await;
    // A store that does not trust the CA reaches nothing, and still answers.
    let untrusting = Cache::builder()
        .l2(RedisStore::cluster(cluster.urls()).unwrap_or_else(|e| panic!("{e}")))
        .namespace("shop")
        .build();
    let c = app(untrusting, db.clone()).await;
    let reply = get(&c, "/p/1").await;
    assert_eq!(
        reply.summary(),
        (StatusCode::OK, "MISS".into(), "1:v1".into())
    );
}

/// The pid of the `redis-server` on `port` (from its `INFO server`).
fn pid_of(cluster: &RedisCluster, port: u16) -> String {
    let info = cluster
        .command(port, &["INFO", "server"])
        .unwrap_or_else(|| panic!("port {port} did not answer INFO"));
    cache_actix_tests::resp::info_field(&info, "process_id")
        .unwrap_or_else(|| panic!("no process_id from port {port}"))
}

/// Sends `signal` (`STOP`, `CONT`) to a process.
fn signal(pid: &str, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
    assert!(status.success(), "kill -{signal} {pid}");
}

#[actix_web::test]
async fn an_invalidation_is_ok_only_once_a_replica_has_it_and_outlives_its_masters_failover() {
    let mut cluster = RedisCluster::start();
    let db = Arc::new(Db::default());
    let (cache_a, cache_b) = (node(&cluster, true), node(&cluster, false));
    wait_in_sync(&cache_a).await;
    wait_in_sync(&cache_b).await;
    let a = app(cache_a.clone(), db.clone()).await;
    let b = app(cache_b.clone(), db.clone()).await;
    eventually(Duration::from_secs(5), "B shares A's fill", || async {
        get(&a, "/p/1").await;
        let again = get(&b, "/p/1").await;
        (again.x_cache() == "HIT" && again.text() == "1:v0")
            .then_some(())
            .ok_or_else(|| format!("{:?}", again.summary()))
    })
    .await;
    let clock_master = cluster.owner(cluster.keyslot(&cluster.counter_key()));
    let replica = cluster
        .replica_of(clock_master)
        .unwrap_or_else(|| panic!("no replica of {clock_master}"));

    // The clock master's replica frozen: the master takes the invalidation, but no replica can
    // confirm it, so a failover could lose it. The caller hears `Err`, not `Ok`, and neither
    // node serves the old version (A dropped its L1; B reads Redis, where the clock moved).
    let replica_pid = pid_of(&cluster, replica);
    signal(&replica_pid, "STOP");
    db.version.store(1, Ordering::SeqCst);
    let unconfirmed = cache_a.invalidate_tag("products").await;
    signal(&replica_pid, "CONT");
    assert!(
        unconfirmed.is_err(),
        "an invalidation no replica confirmed returned Ok"
    );
    assert_eq!(get(&a, "/p/1").await.text(), "1:v1");
    b_hears_of_it(&b, "1:v1").await;

    // The replica back: the next invalidation is confirmed, then the master is killed at once.
    db.version.store(2, Ordering::SeqCst);
    eventually(
        Duration::from_secs(5),
        "a confirmed invalidation",
        || async {
            cache_a
                .invalidate_tag("products")
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    cluster.kill(clock_master);
    let promoted = cluster.wait_failover(clock_master, Duration::from_secs(10));
    assert_eq!(promoted, replica, "the replica took over");
    // On the promoted replica the invalidation holds: no node ever serves v0 or v1 again, and
    // shared hits come back (the control).
    for (name, node) in [("A", &a), ("B", &b)] {
        eventually(
            Duration::from_secs(10),
            "hits after the failover",
            || async {
                let first = get(node, "/p/1").await;
                let second = get(node, "/p/1").await;
                for reply in [&first, &second] {
                    assert!(
                        !reply.status.is_server_error(),
                        "{name}: {:?}",
                        reply.summary()
                    );
                    assert_eq!(reply.text(), "1:v2", "{name} served an invalidated body");
                }
                (second.x_cache() == "HIT")
                    .then_some(())
                    .ok_or_else(|| format!("{:?}", second.summary()))
            },
        )
        .await;
    }
}

/// Node B answers `/p/1` with `body` within the pub/sub propagation delay of an invalidation A
/// made (the contract across nodes), and from then on only with it.
async fn b_hears_of_it<S>(b: &S, body: &str)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let heard = until_propagated(
        Instant::now() + PROPAGATION,
        || get(b, "/p/1"),
        |seen| seen.text() == body,
    )
    .await;
    assert_eq!(heard.text(), body, "B never heard of A's invalidation");
    assert_eq!(get(b, "/p/1").await.text(), body, "B after it heard");
}
