//! The Redis topology helpers start what they say and behave like the real thing: a cluster
//! spreads keys over its masters, fails over and reshards; sentinels promote the replica when
//! the primary dies; a TLS server refuses plaintext and, when asked to, clients without a
//! certificate.

use std::time::{Duration, Instant};

use cache_actix_tests::redis_cluster::{RedisCluster, SLOTS};
use cache_actix_tests::redis_sentinel::RedisSentinel;
use cache_actix_tests::redis_tls::RedisTls;
use cache_actix_tests::resp;

#[test]
fn cluster_spreads_keys_reshards_and_fails_over() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start();
    eprintln!("cluster up in {:?}", started.elapsed());
    assert_eq!(cluster.urls().len(), 6);
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "three masters: {masters:?}");
    let total: u32 = masters.iter().map(|&m| cluster.slots(m)).sum();
    assert_eq!(total, SLOTS);
    for &m in &masters {
        let replica = cluster.replica_of(m).expect("every master has a replica");
        assert!(!masters.contains(&replica));
    }

    for i in 0..100 {
        let key = format!("topo:{i}");
        assert_eq!(cluster.cli(&["SET", &key, &i.to_string()]), "OK");
    }
    let per_master = cluster.keys_per_master("topo:*");
    assert_eq!(per_master.len(), 3);
    assert_eq!(per_master.iter().map(|(_, n)| n).sum::<u64>(), 100);
    assert!(
        per_master.iter().all(|&(_, n)| n > 0),
        "100 keys land on every master: {per_master:?}"
    );
    // Without -c a node answers MOVED for a key it does not serve.
    let moved = masters
        .iter()
        .filter_map(|&m| cluster.command(m, &["GET", "topo:0"]))
        .filter(|r| r.starts_with("-MOVED"))
        .count();
    assert_eq!(moved, 2, "exactly one master serves topo:0");

    let (from, to) = (masters[0], masters[1]);
    let (from_before, to_before) = (cluster.slots(from), cluster.slots(to));
    let reshard_started = Instant::now();
    cluster.reshard(from, to, 100);
    eprintln!("reshard of 100 slots in {:?}", reshard_started.elapsed());
    assert_eq!(cluster.slots(from), from_before - 100);
    assert_eq!(cluster.slots(to), to_before + 100);
    let after: u64 = cluster
        .keys_per_master("topo:*")
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(after, 100, "resharding moves keys with their slots");
    assert_eq!(cluster.cli(&["GET", "topo:42"]), "42");

    let victim = masters[2];
    let heir = cluster.replica_of(victim).expect("replica");
    let failover_started = Instant::now();
    cluster.kill(victim);
    assert_eq!(cluster.command(victim, &["PING"]), None);
    let new_master = cluster.wait_failover(victim, Duration::from_secs(15));
    eprintln!("cluster failover in {:?}", failover_started.elapsed());
    assert_eq!(new_master, heir);
    let now = cluster.masters();
    assert!(now.contains(&heir) && !now.contains(&victim), "{now:?}");
    assert_eq!(now.len(), 3);
    // Every key is still readable through the cluster (the replica had them all).
    for i in (0..100).step_by(7) {
        assert_eq!(cluster.cli(&["GET", &format!("topo:{i}")]), i.to_string());
    }
    eprintln!("cluster test in {:?}", started.elapsed());
}

#[test]
fn sentinels_promote_the_replica() {
    let started = Instant::now();
    let mut setup = RedisSentinel::start("topo-primary");
    eprintln!("sentinels up in {:?}", started.elapsed());
    assert_eq!(setup.master_name(), "topo-primary");
    assert_eq!(setup.sentinel_urls().len(), 3);
    let [primary, replica] = setup.data_ports()[..] else {
        panic!("two data nodes")
    };
    assert_eq!(setup.primary_port(), primary);
    assert_eq!(
        setup.command(primary, &["SET", "k", "v"]).as_deref(),
        Some("+OK\r\n")
    );
    let role = resp::request(replica, &["ROLE"]).expect("replica answers");
    assert_eq!(role.items()[0].as_str(), Some("slave"));

    let failover_started = Instant::now();
    assert_eq!(setup.kill_primary(), primary);
    let promoted = setup.wait_failover(Duration::from_secs(20));
    eprintln!("sentinel failover in {:?}", failover_started.elapsed());
    assert_eq!(promoted, replica);
    assert_eq!(setup.primary_port(), replica);
    assert_eq!(
        setup.command(replica, &["SET", "k2", "v"]).as_deref(),
        Some("+OK\r\n"),
        "the promoted replica takes writes"
    );
    eprintln!("sentinel test in {:?}", started.elapsed());
}

#[test]
fn tls_server_refuses_plaintext() {
    let started = Instant::now();
    let mut tls = RedisTls::start();
    assert!(tls.url().starts_with("rediss://127.0.0.1:"));
    assert!(String::from_utf8_lossy(&tls.pki().ca_pem()).contains("BEGIN CERTIFICATE"));
    assert!(String::from_utf8_lossy(&tls.pki().client_cert_pem()).contains("BEGIN CERTIFICATE"));
    assert!(String::from_utf8_lossy(&tls.pki().client_key_pem()).contains("PRIVATE KEY"));
    assert_eq!(tls.command(&["PING"]).as_deref(), Some("PONG"));
    // No client certificate needed here.
    assert_eq!(
        tls.command_without_client_cert(&["PING"]).as_deref(),
        Some("PONG")
    );
    let plain = resp::command(tls.port, &["PING"]);
    assert!(
        !plain.as_deref().unwrap_or("").contains("PONG"),
        "plaintext got {plain:?}"
    );
    assert_eq!(tls.command(&["SET", "k", "v"]).as_deref(), Some("OK"));
    tls.kill();
    assert_eq!(tls.command(&["PING"]), None);
    tls.restart();
    assert_eq!(
        tls.command(&["GET", "k"]).as_deref(),
        Some(""),
        "empty again"
    );
    eprintln!("tls test in {:?}", started.elapsed());
}

#[test]
fn tls_server_can_require_client_certificates() {
    let started = Instant::now();
    let tls = RedisTls::start_requiring_client_cert();
    assert!(tls.requires_client_cert());
    assert_eq!(tls.command(&["PING"]).as_deref(), Some("PONG"));
    assert_eq!(tls.command_without_client_cert(&["PING"]), None);
    let plain = resp::command(tls.port, &["PING"]);
    assert!(
        !plain.as_deref().unwrap_or("").contains("PONG"),
        "plaintext got {plain:?}"
    );
    eprintln!("tls client-cert test in {:?}", started.elapsed());
}

#[test]
fn cluster_over_tls_refuses_plaintext() {
    let started = Instant::now();
    let cluster = RedisCluster::start_tls();
    eprintln!("TLS cluster up in {:?}", started.elapsed());
    assert!(cluster.pki().is_some());
    assert!(cluster.urls().iter().all(|u| u.starts_with("rediss://")));
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    for i in 0..30 {
        assert_eq!(cluster.cli(&["SET", &format!("tls:{i}"), "v"]), "OK");
    }
    let per_master = cluster.keys_per_master("tls:*");
    assert_eq!(per_master.iter().map(|(_, n)| n).sum::<u64>(), 30);
    assert!(per_master.iter().all(|&(_, n)| n > 0), "{per_master:?}");
    assert_eq!(
        cluster.command(masters[0], &["PING"]).as_deref(),
        Some("PONG")
    );
    for port in cluster.ports() {
        let plain = resp::command(port, &["PING"]);
        assert!(
            !plain.as_deref().unwrap_or("").contains("PONG"),
            "plaintext to {port} got {plain:?}"
        );
    }
    eprintln!("TLS cluster test in {:?}", started.elapsed());
}
