//! Faults of a real Redis Cluster (three masters, a replica each) under two `Cache` nodes that a
//! client loop reads from while a writer invalidates (`cache_actix_tests::cluster_shop`): slots
//! moved under load, records with `redis-cli --cluster reshard` then the clocks' slot step by
//! step (`MOVED`, `ASK`, `TRYAGAIN`); a node's subscription connection killed again and again;
//! and the randomized invalidation checker over the cluster. Each costs misses at most: never a
//! 5xx, a wrong body, or a body older than an invalidation that returned `Ok` (on the other node,
//! once the pub/sub delay has passed), and hits come back after it (the control).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_actix_tests::checker::{self, Plan};
use cache_actix_tests::cluster_shop::{eventually, node, node_through, open, PROPAGATION};
use cache_actix_tests::redis_cluster::RedisCluster;

/// Products the loops read: records on every master.
const IDS: u32 = 90;
/// Records of the `shop` namespace (`ca:<ns>:r:{<hash>}`).
const RECORDS: &str = "ca:*:r:*";
/// How long the clocks' slot stays in each half-moved state.
const HOLD: Duration = Duration::from_millis(600);

/// A fault run on its own thread while the client loop runs. Joined when dropped, also while
/// the test unwinds, so that the cluster it holds is stopped before the test ends.
struct Background(Option<std::thread::JoinHandle<()>>);

impl Background {
    fn start(work: impl FnOnce() + Send + 'static) -> Background {
        Background(Some(std::thread::spawn(work)))
    }

    fn is_finished(&self) -> bool {
        self.0.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits for it, and fails the test with its panic if it had one.
    fn join(mut self) {
        if let Some(Err(panic)) = self.0.take().map(|h| h.join()) {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.join();
        }
    }
}

#[actix_web::test]
async fn slots_moved_under_load_cost_misses_never_a_5xx_or_an_invalidated_body() {
    let cluster = Arc::new(RedisCluster::start());
    // A keeps an L1; B has none, so every read of B goes to the cluster and meets the moves.
    let mut shop = open([node(&cluster, true), node(&cluster, false)], IDS).await;
    shop.until_all_hit(Duration::from_secs(10), "warm-up").await;

    let counter = &cluster.counter_key();
    let clock_slot = cluster.keyslot(counter);
    let clock_master = cluster.owner(clock_slot);
    let others: Vec<u16> = cluster
        .masters()
        .into_iter()
        .filter(|&m| m != clock_master)
        .collect();
    let (from, to) = (others[0], others[1]);

    // 1. Half the slots of a master that does not hold the clocks, with their records, moved
    //    by redis-cli while both nodes read and invalidate.
    let records_on_from = cluster.keys_on(from, RECORDS);
    assert!(
        records_on_from.len() >= IDS as usize / 6,
        "records on {from}: {records_on_from:?}"
    );
    let moved = cluster.slots(from) / 2;
    let moved_before = cluster.errors_sent("MOVED");
    let started = Instant::now();
    let mover = {
        let cluster = cluster.clone();
        Background::start(move || cluster.reshard(from, to, moved))
    };
    let before = shop.tally();
    // An invalidation every other round: on a busy machine the reshard may last only five.
    shop.rounds_until(Duration::from_secs(40), "reshard", 2, |_| {
        mover.is_finished()
    })
    .await;
    mover.join();
    let reshard_took = started.elapsed();
    let during = shop.tally();
    assert!(
        during.rounds - before.rounds >= 5 && during.invalidations - before.invalidations >= 2,
        "the loop ran during the reshard: {during:?}"
    );
    assert!(
        during.hits[1] > before.hits[1],
        "B kept hitting during the reshard: {during:?}"
    );
    shop.settle(Duration::from_secs(10)).await;
    // B has no L1: a round of hits only means every record is back in the cluster.
    shop.until_all_hit(Duration::from_secs(10), "hits after the reshard")
        .await;
    let mut now_on_to = 0;
    for key in &records_on_from {
        let owner = cluster.owner(cluster.keyslot(key));
        assert!(owner == from || owner == to, "{key} on {owner}");
        assert!(
            cluster.holds(owner, key),
            "{key} is not on {owner}, which serves its slot"
        );
        now_on_to += usize::from(owner == to);
    }
    assert!(
        now_on_to >= records_on_from.len() / 4 && now_on_to < records_on_from.len(),
        "{now_on_to} of the {} records of {from} moved to {to}",
        records_on_from.len()
    );
    let redirected = cluster.errors_sent("MOVED") - moved_before;
    assert!(redirected > 0, "no MOVED answered during the reshard");

    // 2. The clocks' slot, held half-moved twice, to the master that gave slots away.
    let (ask_before, again_before) = (cluster.errors_sent("ASK"), cluster.errors_sent("TRYAGAIN"));
    let before = shop.tally();
    let mover = {
        let cluster = cluster.clone();
        Background::start(move || cluster.move_slot(clock_slot, from, HOLD))
    };
    shop.rounds_until(Duration::from_secs(20), "clock slot move", 3, |_| {
        mover.is_finished()
    })
    .await;
    mover.join();
    let during_clocks = shop.tally();
    let (asks, again) = (
        cluster.errors_sent("ASK") - ask_before,
        cluster.errors_sent("TRYAGAIN") - again_before,
    );
    assert!(
        asks + again > 0,
        "the loop never met the half-moved slot: {during_clocks:?}"
    );
    assert_eq!(cluster.owner(clock_slot), from);
    assert!(cluster.holds(from, counter), "the counter moved to {from}");
    shop.settle(Duration::from_secs(10)).await;
    shop.until_all_hit(Duration::from_secs(10), "hits after the clock slot moved")
        .await;
    // The clocks answer from their new master: invalidations from both nodes go through.
    let before_last = shop.tally().invalidations;
    for by in [0, 1] {
        let mut tries = 0;
        while !shop.invalidate(by).await {
            tries += 1;
            assert!(
                tries < 50,
                "invalidation from {by} after the move: {:?}",
                shop.tally()
            );
            shop.round().await;
        }
    }
    assert_eq!(shop.tally().invalidations, before_last + 2);
    shop.settle(Duration::from_secs(10)).await;
    shop.until_all_hit(Duration::from_secs(10), "hits after the last invalidations")
        .await;
    let tally = shop.tally();
    println!(
        "reshard of {moved} slots took {reshard_took:?}; {} MOVED, {asks} ASK, {again} TRYAGAIN \
         answered; {now_on_to} of {} records moved; during the clock slot move {} rounds, {} \
         failed invalidations; in all {tally:?}",
        redirected,
        records_on_from.len(),
        during_clocks.rounds - before.rounds,
        during_clocks.failed_invalidations - before.failed_invalidations,
    );
}

#[actix_web::test]
async fn a_killed_subscription_reconnects_and_invalidations_reach_the_node_again() {
    let cluster = RedisCluster::start();
    // Different first seeds: A subscribes on one cluster node, B on another, so killing the one
    // pub/sub client of a cluster node cuts exactly one Cache node off.
    let ports = cluster.ports();
    let mut shop = open(
        [
            node_through(&cluster, true, 0),
            node_through(&cluster, true, 1),
        ],
        40,
    )
    .await;
    let subscriptions = [ports[0], ports[1]];
    for port in subscriptions {
        assert_eq!(cluster.pubsub_clients(port).len(), 1, "port {port}");
    }
    shop.until_all_hit(Duration::from_secs(10), "warm-up").await;

    const KILLS: usize = 6;
    for kill in 0..KILLS {
        let (victim, other) = (kill % 2, 1 - kill % 2);
        let port = subscriptions[victim];
        let [id] = cluster.pubsub_clients(port)[..] else {
            panic!("port {port}: {:?}", cluster.pubsub_clients(port));
        };
        cluster.kill_client(port, id);
        // At once, while the victim may not have noticed: the other node invalidates.
        shop.invalidate(other).await;
        let killed = Instant::now();
        shop.rounds_until(Duration::from_secs(10), "resubscribed", u64::MAX, |shop| {
            let clients = cluster.pubsub_clients(port);
            shop.cache(victim).in_sync() && clients.len() == 1 && clients[0] != id
        })
        .await;
        let back = killed.elapsed();
        // L1 hits resume on the victim: its L1 is in use again.
        shop.settle(Duration::from_secs(10)).await;
        let l1_hits = shop.cache(victim).stats().l1.hits;
        shop.until_all_hit(Duration::from_secs(10), "hits after resubscribing")
            .await;
        assert!(
            shop.cache(victim).stats().l1.hits > l1_hits,
            "kill {kill}: no L1 hit"
        );
        // An invalidation from the other node reaches the victim's L1 through the new
        // subscription: after the pub/sub delay, every read is held to it (`settle`).
        let before = shop.tally().invalidations;
        while !shop.invalidate(other).await {
            shop.round().await;
        }
        assert_eq!(shop.tally().invalidations, before + 1);
        shop.settle(Duration::from_secs(10)).await;
        let after = shop.tally();
        println!("kill {kill} of node {victim}'s subscription: back in {back:?}; {after:?}");
    }
    let tally = shop.tally();
    assert!(
        tally.invalidations >= 2 * KILLS as u64,
        "invalidations went through: {tally:?}"
    );
    eventually(Duration::from_secs(1), "both nodes in sync", || async {
        (shop.cache(0).in_sync() && shop.cache(1).in_sync())
            .then_some(())
            .ok_or_else(|| "out of sync".to_string())
    })
    .await;
}

#[actix_web::test]
async fn the_randomized_checker_holds_over_the_cluster_with_two_nodes() {
    let cluster = RedisCluster::start();
    let nodes = [
        node_through(&cluster, true, 0),
        node_through(&cluster, true, 1),
    ];
    for cache in &nodes {
        cache_actix_tests::redis::wait_in_sync(cache).await;
    }
    const OPS: usize = 40_000;
    let plan = Plan {
        keys: 8,
        workers: 32,
        ops: OPS,
        propagation: PROPAGATION,
    };
    let seen = checker::run(&nodes, plan).await;
    println!("checker over the cluster: {seen:?}");
    assert!(seen.reads > OPS * 8 / 10, "{seen:?}");
    assert!(
        seen.invalidations >= (seen.invalidations + seen.failed_invalidations) * 9 / 10
            && seen.invalidations > OPS / 20,
        "invalidations went through: {seen:?}"
    );
    assert!(
        seen.hits > seen.reads / 4,
        "the checker must exercise hits too: {seen:?}"
    );
}
