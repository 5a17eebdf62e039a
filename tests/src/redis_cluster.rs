//! A real Redis Cluster for tests: three masters with one replica each, six `redis-server`
//! processes on free loopback ports, stopped on drop.
//!
//! What must stay true: there is no fallback. Without `redis-server` / `redis-cli` the test
//! panics with the reason, so a cluster test can never pass by skipping. [`RedisCluster::start`]
//! returns only once every node says `cluster_state:ok`, all 16384 slots are served, every node
//! knows all six and every replica's link to its master is up (so a replica can take over at
//! once). Every wait is bounded and panics with what it last saw. Every node is SIGKILLed and the
//! temp dir removed on drop, also while a test unwinds. [`RedisCluster::start_tls`] is the same
//! cluster speaking only TLS (clients, replication and the cluster bus); the helper then talks to
//! every node through `redis-cli --tls`, never in plaintext.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::redis_process::{run, run_ok, strings, wait_until, Process, TempDir};
use crate::redis_tls::Pki;
use crate::resp;

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u32 = 16384;

/// How long a node may be unreachable before the others mark it failed (`--cluster-node-timeout`).
pub const NODE_TIMEOUT_MS: u64 = 1000;

struct Node {
    port: u16,
    process: Process,
}

/// One line of `CLUSTER NODES`, as one node sees another.
#[derive(Debug, Clone)]
pub struct NodeLine {
    /// The node id.
    pub id: String,
    /// Its client port.
    pub port: u16,
    /// `myself`, `master`, `slave`, `fail?`, `fail`, ...
    pub flags: Vec<String>,
    /// The id of its master, for a replica.
    pub master_id: Option<String>,
    /// How many slots it serves (ranges being migrated not counted twice).
    pub slots: u32,
    /// The slot ranges it serves, inclusive (slots being migrated listed where they are).
    pub ranges: Vec<(u32, u32)>,
    /// Whether the cluster bus link to it is `connected`.
    pub connected: bool,
}

impl NodeLine {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Not flagged `fail`, `fail?` or `noaddr`.
    pub fn healthy(&self) -> bool {
        !(self.has("fail") || self.has("fail?") || self.has("noaddr"))
    }

    /// Flagged `master`.
    pub fn is_master(&self) -> bool {
        self.has("master")
    }
}

/// Six cluster nodes on 127.0.0.1 (three masters, one replica each).
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// Node id by port (ids never change).
    ids: HashMap<u16, String>,
    /// The replica a master had when [`RedisCluster::kill`] killed it.
    replica_at_kill: HashMap<u16, Option<u16>>,
    /// The certificates, for a TLS-only cluster.
    tls: Option<Pki>,
    // Last: removed after the nodes are dead.
    dir: TempDir,
}

impl RedisCluster {
    /// Starts six nodes, joins them with `redis-cli --cluster create ... --cluster-replicas 1`
    /// and waits (at most 20 s) until the cluster is whole and healthy.
    pub fn start() -> RedisCluster {
        RedisCluster::start_inner(false)
    }

    /// As [`RedisCluster::start`], but every node listens only on a TLS port (`--port 0`), with
    /// `--tls-cluster yes --tls-replication yes` and a throwaway CA (see [`Pki`]); clients
    /// need no certificate of their own (`--tls-auth-clients no`).
    pub fn start_tls() -> RedisCluster {
        RedisCluster::start_inner(true)
    }

    fn start_inner(tls: bool) -> RedisCluster {
        let dir = TempDir::new("cluster");
        let tls = tls.then(Pki::generate);
        let mut taken = HashSet::new();
        let mut fresh = || loop {
            let port = crate::free_port();
            if taken.insert(port) {
                return port;
            }
        };
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let (port, bus) = (fresh(), fresh());
            let node_dir = dir.sub(&port.to_string());
            let mut args = match &tls {
                None => vec!["--port".to_string(), port.to_string()],
                Some(pki) => {
                    let mut args = strings(&["--port", "0", "--tls-port"]);
                    args.push(port.to_string());
                    args.extend(strings(&[
                        "--tls-cluster",
                        "yes",
                        "--tls-replication",
                        "yes",
                    ]));
                    args.extend(pki.server_args(false));
                    args
                }
            };
            args.extend([
                "--bind".to_string(),
                "127.0.0.1".into(),
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                node_dir
                    .join(format!("nodes-{port}.conf"))
                    .display()
                    .to_string(),
                "--cluster-node-timeout".into(),
                NODE_TIMEOUT_MS.to_string(),
                // port + 10000 (the default bus) may be past 65535 or taken; give each its own.
                "--cluster-port".into(),
                bus.to_string(),
                // A replica may always take over, however long its link was down.
                "--cluster-replica-validity-factor".into(),
                "0".into(),
                // Replicas sync at once instead of after the default 5 s diskless delay.
                "--repl-diskless-sync-delay".into(),
                "0".into(),
                "--dir".into(),
                node_dir.display().to_string(),
                "--save".into(),
                "".into(),
                "--appendonly".into(),
                "no".into(),
            ]);
            let process = Process::redis_server(&args, node_dir.join("redis.log"));
            nodes.push(Node { port, process });
        }
        let mut cluster = RedisCluster {
            nodes,
            ids: HashMap::new(),
            replica_at_kill: HashMap::new(),
            tls,
            dir,
        };
        for i in 0..cluster.nodes.len() {
            let port = cluster.nodes[i].port;
            let id = wait_until(Duration::from_secs(10), "cluster node answers", || {
                if !cluster.nodes[i].process.running() {
                    panic!(
                        "redis-server on port {port} exited:\n{}",
                        cluster.nodes[i].process.log_tail()
                    );
                }
                match cluster.text(port, &["CLUSTER", "MYID"]) {
                    Some(id) if id.trim().len() == 40 => Ok(id.trim().to_string()),
                    other => Err(format!("port {port}: {other:?}")),
                }
            });
            cluster.ids.insert(port, id);
        }
        let mut create = cluster.cli_tls();
        create.extend(strings(&["--cluster", "create"]));
        create.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port)),
        );
        create.extend(strings(&["--cluster-replicas", "1", "--cluster-yes"]));
        run_ok("redis-cli", &create, None);
        wait_until(Duration::from_secs(20), "cluster healthy", || {
            cluster.healthy_everywhere()
        });
        cluster
    }

    /// `Ok` once every live node reports a whole, healthy cluster of six with linked replicas.
    fn healthy_everywhere(&self) -> Result<(), String> {
        for node in &self.nodes {
            let info = self.cluster_info(node.port)?;
            for (field, want) in [
                ("cluster_state", "ok"),
                ("cluster_slots_assigned", "16384"),
                ("cluster_slots_ok", "16384"),
                ("cluster_known_nodes", "6"),
            ] {
                let got = resp::info_field(&info, field).unwrap_or_default();
                if got != want {
                    return Err(format!("port {}: {field}:{got}", node.port));
                }
            }
            let view = self.view(node.port)?;
            let masters = view.iter().filter(|l| l.is_master() && l.slots > 0).count();
            let replicas = view.iter().filter(|l| l.master_id.is_some()).count();
            if masters != 3 || replicas != 3 || !view.iter().all(|l| l.connected && l.healthy()) {
                return Err(format!("port {}: {view:?}", node.port));
            }
            let me = view.iter().find(|l| l.has("myself"));
            if me.is_some_and(|l| l.master_id.is_some()) {
                let info = self
                    .text(node.port, &["INFO", "replication"])
                    .unwrap_or_default();
                if resp::info_field(&info, "master_link_status").as_deref() != Some("up") {
                    return Err(format!("replica {}: master link not up", node.port));
                }
            }
        }
        Ok(())
    }

    fn cluster_info(&self, port: u16) -> Result<String, String> {
        self.text(port, &["CLUSTER", "INFO"])
            .ok_or_else(|| format!("port {port}: no CLUSTER INFO"))
    }

    /// The ports of all six nodes, dead ones included.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `redis://127.0.0.1:PORT` of every node (dead ones included); `rediss://` for TLS.
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.ports()
            .iter()
            .map(|p| format!("{scheme}://127.0.0.1:{p}"))
            .collect()
    }

    /// The certificates of a cluster started with [`RedisCluster::start_tls`].
    pub fn pki(&self) -> Option<&Pki> {
        self.tls.as_ref()
    }

    /// The `redis-cli` TLS arguments (none for a plaintext cluster).
    fn cli_tls(&self) -> Vec<String> {
        self.tls
            .as_ref()
            .map_or_else(Vec::new, |pki| pki.cli_args(false))
    }

    /// A command whose reply is a string (`CLUSTER NODES`, `INFO`, ...) to one node: in RESP,
    /// or through `redis-cli --tls` for a TLS cluster; `None` if unreachable.
    fn text(&self, port: u16, args: &[&str]) -> Option<String> {
        if self.tls.is_none() {
            return resp::request(port, args).and_then(|v| v.as_str().map(str::to_string));
        }
        let mut full = self.cli_tls();
        full.extend(["-p".to_string(), port.to_string()]);
        full.extend(strings(args));
        let out = run("redis-cli", &full, None);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The id of the node on `port`.
    pub fn node_id(&self, port: u16) -> &str {
        self.ids
            .get(&port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    fn alive(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| !self.replica_at_kill.contains_key(&n.port))
            .map(|n| n.port)
            .collect()
    }

    /// `CLUSTER NODES` as the node on `port` sees it.
    pub fn view(&self, port: u16) -> Result<Vec<NodeLine>, String> {
        let text = self
            .text(port, &["CLUSTER", "NODES"])
            .ok_or_else(|| format!("port {port}: no CLUSTER NODES"))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(parse_node_line)
            .collect()
    }

    /// `CLUSTER NODES` as the first live node that answers sees it.
    fn any_view(&self) -> Vec<NodeLine> {
        let mut last = String::from("no live node");
        for port in self.alive() {
            match self.view(port) {
                Ok(view) => return view,
                Err(e) => last = e,
            }
        }
        panic!("no cluster node answers CLUSTER NODES: {last}")
    }

    /// The ports of the current masters (healthy, not killed by this helper), ascending.
    pub fn masters(&self) -> Vec<u16> {
        let alive = self.alive();
        let mut masters: Vec<u16> = self
            .any_view()
            .into_iter()
            .filter(|l| l.is_master() && l.healthy() && alive.contains(&l.port))
            .map(|l| l.port)
            .collect();
        masters.sort_unstable();
        masters
    }

    /// The port of the (healthy, live) replica of the master on `master_port`.
    pub fn replica_of(&self, master_port: u16) -> Option<u16> {
        let id = self.node_id(master_port).to_string();
        let alive = self.alive();
        self.any_view()
            .into_iter()
            .find(|l| l.master_id.as_deref() == Some(&id) && l.healthy() && alive.contains(&l.port))
            .map(|l| l.port)
    }

    /// How many slots the node on `port` serves, as a live node sees it.
    pub fn slots(&self, port: u16) -> u32 {
        self.any_view()
            .iter()
            .find(|l| l.port == port)
            .map_or(0, |l| l.slots)
    }

    /// SIGKILLs the node on `port` (as a crash would); it stays dead.
    pub fn kill(&mut self, port: u16) {
        let replica = self.replica_of(port);
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"));
        node.process.kill();
        self.replica_at_kill.insert(port, replica);
    }

    /// Waits until the replica the master on `dead_master_port` had when it was killed is a
    /// master and every live node sees it so and says `cluster_state:ok`; returns its port.
    pub fn wait_failover(&self, dead_master_port: u16, timeout: Duration) -> u16 {
        let Some(&Some(heir)) = self.replica_at_kill.get(&dead_master_port) else {
            panic!("port {dead_master_port} was not a master with a replica killed by kill()");
        };
        wait_until(timeout, "cluster failover", || {
            for port in self.alive() {
                let info = self.cluster_info(port)?;
                if resp::info_field(&info, "cluster_state").as_deref() != Some("ok") {
                    return Err(format!("port {port}: cluster_state not ok"));
                }
                let view = self.view(port)?;
                if !view
                    .iter()
                    .any(|l| l.port == heir && l.is_master() && l.slots > 0)
                {
                    return Err(format!("port {port} does not see {heir} as a master"));
                }
            }
            Ok(())
        });
        heir
    }

    /// Moves `slots` slots (with their keys) from the master on `from_port` to the one on
    /// `to_port` with `redis-cli --cluster reshard`, then waits (at most 10 s) until every live
    /// node sees the new counts.
    pub fn reshard(&self, from_port: u16, to_port: u16, slots: u32) {
        let (from_before, to_before) = (self.slots(from_port), self.slots(to_port));
        assert!(
            from_before >= slots,
            "port {from_port} serves {from_before} slots, cannot give {slots}"
        );
        let entry = self.alive()[0];
        let mut args = self.cli_tls();
        args.extend([
            "--cluster".to_string(),
            "reshard".into(),
            format!("127.0.0.1:{entry}"),
            "--cluster-from".into(),
            self.node_id(from_port).into(),
            "--cluster-to".into(),
            self.node_id(to_port).into(),
            "--cluster-slots".into(),
            slots.to_string(),
            "--cluster-yes".into(),
        ]);
        run_ok("redis-cli", &args, None);
        wait_until(Duration::from_secs(10), "reshard seen everywhere", || {
            for port in self.alive() {
                let view = self.view(port)?;
                let count = |p: u16| view.iter().find(|l| l.port == p).map_or(0, |l| l.slots);
                let (from, to) = (count(from_port), count(to_port));
                if from != from_before - slots || to != to_before + slots {
                    return Err(format!("port {port} sees {from} / {to} slots"));
                }
            }
            Ok(())
        });
    }

    /// Sends one command to the node on `port` (no redirect followed) and returns the raw RESP
    /// reply, or `None` if it is unreachable. For a TLS cluster: `redis-cli --tls`'s stdout
    /// instead (`None` if redis-cli fails).
    pub fn command(&self, port: u16, args: &[&str]) -> Option<String> {
        match self.tls {
            None => resp::command(port, args),
            Some(_) => self.text(port, args).map(|t| t.trim().to_string()),
        }
    }

    /// Runs `redis-cli -c` (following `MOVED` / `ASK`, as a cluster client does) against a live
    /// node and returns its stdout; panics if redis-cli fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut full = self.cli_tls();
        full.extend(strings(&["-c", "-p"]));
        full.push(self.alive()[0].to_string());
        full.extend(strings(args));
        let out = run_ok("redis-cli", &full, None);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// How many keys matching `pattern` each current master holds (by `SCAN ... MATCH`).
    pub fn keys_per_master(&self, pattern: &str) -> Vec<(u16, u64)> {
        self.masters()
            .into_iter()
            .map(|port| (port, self.scan_count(port, pattern)))
            .collect()
    }

    /// The temp dir holding every node's dir, config and log.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Whether `redis-cli --cluster check` finds the cluster consistent (for diagnostics).
    pub fn check(&self) -> Result<(), String> {
        let mut args = self.cli_tls();
        args.extend([
            "--cluster".to_string(),
            "check".into(),
            format!("127.0.0.1:{}", self.alive()[0]),
        ]);
        let out = run("redis-cli", &args, None);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        match out.status.success() && !text.contains("[ERR]") {
            true => Ok(()),
            false => Err(text),
        }
    }

    /// Counts the keys matching `pattern` on one node.
    fn scan_count(&self, port: u16, pattern: &str) -> u64 {
        self.keys_on(port, pattern).len() as u64
    }

    /// The keys matching `pattern` that the node on `port` holds itself, by walking `SCAN` (for
    /// TLS, with `redis-cli --tls --scan`).
    pub fn keys_on(&self, port: u16, pattern: &str) -> Vec<String> {
        if self.tls.is_some() {
            let mut args = self.cli_tls();
            args.extend(["-p".to_string(), port.to_string()]);
            args.extend(strings(&["--scan", "--pattern", pattern]));
            let out = run_ok("redis-cli", &args, None);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            return text
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
        }
        let mut cursor = "0".to_string();
        let mut keys = Vec::new();
        loop {
            let reply = resp::request(port, &["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"])
                .unwrap_or_else(|| panic!("port {port} did not answer SCAN"));
            let [next, found] = reply.items() else {
                panic!("port {port}: unexpected SCAN reply {reply:?}");
            };
            keys.extend(
                found
                    .items()
                    .iter()
                    .filter_map(|k| k.as_str().map(str::to_string)),
            );
            cursor = next.as_str().unwrap_or("0").to_string();
            if cursor == "0" {
                return keys;
            }
        }
    }

    /// One command to the node on `port` (no redirect followed): its reply as lines (a string,
    /// an integer's digits, or each element of an array), or the error Redis answered. For a
    /// TLS cluster, `redis-cli --tls`'s stdout lines.
    fn ask(&self, port: u16, args: &[&str]) -> Result<Vec<String>, String> {
        if self.tls.is_some() {
            let text = self
                .text(port, args)
                .ok_or_else(|| format!("port {port}: redis-cli failed on {args:?}"))?;
            return Ok(text.lines().map(str::to_string).collect());
        }
        let scalar = |value: &resp::Value| match value {
            resp::Value::Int(n) => Ok(n.to_string()),
            resp::Value::Error(e) => Err(format!("port {port} {args:?}: {e}")),
            other => Ok(other.as_str().unwrap_or_default().to_string()),
        };
        match resp::request(port, args) {
            None => Err(format!("port {port} did not answer {args:?}")),
            Some(resp::Value::Array(Some(items))) => items.iter().map(scalar).collect(),
            Some(value) => scalar(&value).map(|one| vec![one]),
        }
    }

    /// As [`RedisCluster::ask`], for a reply that must be `OK`.
    fn ask_ok(&self, port: u16, args: &[&str]) {
        match self.ask(port, args) {
            Ok(reply) if reply == ["OK"] => {}
            other => panic!("port {port} {args:?}: {other:?}"),
        }
    }

    /// The name of the one tick counter the caches wrote (`ca:{<ns>}:seq`), found on whichever
    /// master holds it; panics unless there is exactly one.
    pub fn counter_key(&self) -> String {
        let counters: Vec<String> = self
            .masters()
            .into_iter()
            .flat_map(|port| self.keys_on(port, "ca:{*}:seq"))
            .collect();
        match <[String; 1]>::try_from(counters) {
            Ok([counter]) => counter,
            Err(counters) => panic!("one tick counter expected: {counters:?}"),
        }
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> u32 {
        let port = self.alive()[0];
        self.ask(port, &["CLUSTER", "KEYSLOT", key])
            .ok()
            .and_then(|reply| reply.first()?.parse().ok())
            .unwrap_or_else(|| panic!("port {port}: no CLUSTER KEYSLOT for {key}"))
    }

    /// The port of the master that serves `slot`, as a live node sees it.
    pub fn owner(&self, slot: u32) -> u16 {
        let view = self.any_view();
        view.iter()
            .find(|l| l.is_master() && l.ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&slot)))
            .map(|l| l.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}: {view:?}"))
    }

    /// Whether the node on `port` itself holds `key` (`EXISTS`, no redirect followed: a node
    /// that does not serve the key's slot answers `MOVED`, which is `false`).
    pub fn holds(&self, port: u16, key: &str) -> bool {
        self.ask(port, &["EXISTS", key]).is_ok_and(|r| r == ["1"])
    }

    /// Moves one slot, with its keys, to the master on `to_port`, in the steps `redis-cli
    /// --cluster reshard` takes for each slot (`IMPORTING` on the target, `MIGRATING` on the
    /// source, `MIGRATE` of its keys, `SETSLOT NODE` on the target, the source and every other
    /// master), but holds the slot half-moved for `hold` twice: once with every key still on
    /// the source, once with every key on the target before the slot is handed over. Clients
    /// meanwhile meet `ASK` and, for a call on several keys of the slot, `TRYAGAIN`. Returns once
    /// every live node sees `to_port` serving the slot (at most 10 s).
    pub fn move_slot(&self, slot: u32, to_port: u16, hold: Duration) {
        let from_port = self.owner(slot);
        assert_ne!(
            from_port, to_port,
            "slot {slot} is on port {to_port} already"
        );
        let (slot_text, from_id, to_id) = (
            slot.to_string(),
            self.node_id(from_port).to_string(),
            self.node_id(to_port).to_string(),
        );
        let setslot = |port: u16, state: &str, id: &str| {
            self.ask_ok(port, &["CLUSTER", "SETSLOT", &slot_text, state, id]);
        };
        setslot(to_port, "IMPORTING", &from_id);
        setslot(from_port, "MIGRATING", &to_id);
        std::thread::sleep(hold);
        loop {
            let keys = self
                .ask(from_port, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"])
                .unwrap_or_else(|e| panic!("{e}"));
            if keys.is_empty() {
                break;
            }
            let to = to_port.to_string();
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &to, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            self.ask_ok(from_port, &migrate);
        }
        std::thread::sleep(hold);
        setslot(to_port, "NODE", &to_id);
        setslot(from_port, "NODE", &to_id);
        for port in self.masters() {
            if port != to_port && port != from_port {
                setslot(port, "NODE", &to_id);
            }
        }
        wait_until(Duration::from_secs(10), "slot move seen everywhere", || {
            for port in self.alive() {
                let view = self.view(port)?;
                let serves = view.iter().any(|l| {
                    l.port == to_port && l.ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&slot))
                });
                if !serves {
                    return Err(format!("port {port} does not see {to_port} serving {slot}"));
                }
            }
            Ok(())
        });
    }

    /// How many error replies starting with `code` (`MOVED`, `ASK`, `TRYAGAIN`, ...) the live
    /// nodes have sent so far, summed (`INFO errorstats`).
    pub fn errors_sent(&self, code: &str) -> u64 {
        let field = format!("errorstat_{code}");
        self.alive()
            .into_iter()
            .map(|port| {
                let info = self.text(port, &["INFO", "errorstats"]).unwrap_or_default();
                resp::info_field(&info, &field)
                    .and_then(|v| v.strip_prefix("count=")?.split(',').next()?.parse().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// The ids of the clients subscribed on the node on `port` (`CLIENT LIST TYPE pubsub`).
    pub fn pubsub_clients(&self, port: u16) -> Vec<u64> {
        let text = self
            .text(port, &["CLIENT", "LIST", "TYPE", "pubsub"])
            .unwrap_or_else(|| panic!("port {port}: no CLIENT LIST"));
        text.lines()
            .filter_map(|line| {
                line.split_whitespace()
                    .find_map(|field| field.strip_prefix("id="))
                    .and_then(|id| id.parse().ok())
            })
            .collect()
    }

    /// Closes one client's connection on the node on `port` (`CLIENT KILL ID`), as a proxy or
    /// a network fault would.
    pub fn kill_client(&self, port: u16, id: u64) {
        let reply = self.ask(port, &["CLIENT", "KILL", "ID", &id.to_string()]);
        assert_eq!(
            reply,
            Ok(vec!["1".to_string()]),
            "port {port}: CLIENT KILL ID {id}"
        );
    }
}

/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`
fn parse_node_line(line: &str) -> Result<NodeLine, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let bad = || format!("unexpected CLUSTER NODES line: {line}");
    if fields.len() < 8 {
        return Err(bad());
    }
    let port = fields[1]
        .split('@')
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(bad)?;
    let mut slots = 0;
    let mut ranges = Vec::new();
    for range in &fields[8..] {
        if range.starts_with('[') {
            continue; // a slot being imported / migrated, still counted where it is
        }
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let (lo, hi): (u32, u32) = (
            lo.parse().map_err(|_| bad())?,
            hi.parse().map_err(|_| bad())?,
        );
        slots += hi - lo + 1;
        ranges.push((lo, hi));
    }
    Ok(NodeLine {
        id: fields[0].to_string(),
        port,
        flags: fields[2].split(',').map(str::to_string).collect(),
        master_id: (fields[3] != "-").then(|| fields[3].to_string()),
        slots,
        ranges,
        connected: fields[7] == "connected",
    })
}
