//! A real Redis Sentinel setup for tests: one primary, one replica and three sentinels (quorum
//! 2) on free loopback ports, stopped on drop. [`RedisSentinel::start_tls`] starts the same setup
//! speaking only TLS: every data node and sentinel on a TLS port alone (`--port 0`), replication
//! and the sentinels' links over TLS (`tls-replication yes`), certificates from one [`Pki`]; the
//! helper then talks to every process over TLS too, never in plaintext.
//!
//! What must stay true: there is no fallback. Without `redis-server` (or `openssl`, for TLS) the
//! test panics with the reason, so a sentinel test can never pass by skipping.
//! [`RedisSentinel::start`] returns only once the replica's link is up and every sentinel names
//! the primary, sees the replica and sees the two other sentinels (so a failover can start as
//! soon as the primary is down). Every wait is bounded and panics with what it last saw. Every
//! process is SIGKILLed and the temp dirs removed on drop, also while a test unwinds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::redis_process::{wait_until, Process, TempDir};
use crate::redis_tls::Pki;
use crate::resp::{self, Value};

/// How long a primary may be unreachable before a sentinel thinks it down.
pub const DOWN_AFTER_MS: u64 = 1000;

/// The TLS of a setup started with [`RedisSentinel::start_tls`].
struct Tls {
    pki: Pki,
    require_client_cert: bool,
    /// How the helper connects: trusting the CA, presenting the client certificate.
    client: Arc<rustls::ClientConfig>,
}

/// A primary, its replica and three sentinels on 127.0.0.1.
pub struct RedisSentinel {
    name: String,
    /// `(port, process)` of the primary and the replica, as started.
    data: Vec<(u16, Process)>,
    sentinels: Vec<(u16, Process)>,
    /// The primary [`RedisSentinel::kill_primary`] killed last.
    killed: Option<u16>,
    tls: Option<Tls>,
    // Last: removed after the processes are dead.
    dir: TempDir,
}

impl RedisSentinel {
    /// Starts everything, the sentinels monitoring the primary as `master_name`, and waits (at
    /// most 30 s) until they agree on the whole setup.
    pub fn start(master_name: &str) -> RedisSentinel {
        RedisSentinel::start_inner(master_name, None, &[])
    }

    /// As [`RedisSentinel::start`], each data node also started with `data_args` (say, ACL
    /// `--user` rules). The sentinels and this helper still connect as the `default` user, so
    /// the rules must leave it `PING`, `INFO`, `ROLE`, replication, the sentinels' commands and
    /// their hello channel (`&__sentinel__:hello`).
    pub fn start_with(master_name: &str, data_args: &[&str]) -> RedisSentinel {
        RedisSentinel::start_inner(master_name, None, data_args)
    }

    /// As [`RedisSentinel::start`], speaking only TLS with a new [`Pki`]: each data node and
    /// sentinel listens on a TLS port alone, with `tls-replication yes` (replication, and the
    /// sentinels' links to the nodes and to each other, over TLS) and, when
    /// `require_client_cert`, `tls-auth-clients yes` everywhere (every client, a store included,
    /// must then present a certificate the CA signed; else `no`).
    pub fn start_tls(master_name: &str, require_client_cert: bool) -> RedisSentinel {
        let pki = Pki::generate();
        let client = pki.client_config();
        RedisSentinel::start_inner(
            master_name,
            Some(Tls {
                pki,
                require_client_cert,
                client,
            }),
            &[],
        )
    }

    fn start_inner(master_name: &str, tls: Option<Tls>, data_args: &[&str]) -> RedisSentinel {
        assert!(
            !master_name.is_empty() && !master_name.contains(char::is_whitespace),
            "a sentinel master name is one word"
        );
        let dir = TempDir::new("sentinel");
        let mut ports = Vec::new();
        while ports.len() < 5 {
            let port = crate::free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let (primary, replica) = (ports[0], ports[1]);
        let mut setup = RedisSentinel {
            name: master_name.to_string(),
            data: Vec::new(),
            sentinels: Vec::new(),
            killed: None,
            tls,
            dir,
        };
        for (port, replica_of) in [(primary, None), (replica, Some(primary))] {
            let node_dir = setup.dir.sub(&port.to_string());
            let mut args = setup.listen_args(port);
            args.extend(
                [
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    &node_dir.display().to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    // The replica syncs at once instead of after the default 5 s diskless delay.
                    "--repl-diskless-sync-delay",
                    "0",
                ]
                .iter()
                .map(|a| a.to_string()),
            );
            args.extend(data_args.iter().map(|a| a.to_string()));
            if let Some(of) = replica_of {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), of.to_string()]);
            }
            let process = Process::redis_server(&args, node_dir.join("redis.log"));
            setup.data.push((port, process));
        }
        wait_until(Duration::from_secs(10), "replica in sync", || {
            for (port, process) in &mut setup.data {
                if !process.running() {
                    panic!(
                        "redis-server on port {port} exited:\n{}",
                        process.log_tail()
                    );
                }
            }
            let info = setup
                .request(replica, &["INFO", "replication"])
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            match resp::info_field(&info, "master_link_status").as_deref() {
                Some("up") => Ok(()),
                other => Err(format!("replica {replica}: master_link_status {other:?}")),
            }
        });
        for &port in &ports[2..] {
            let sentinel_dir = setup.dir.sub(&format!("sentinel-{port}"));
            // A sentinel rewrites its config file, so each has its own.
            let conf = sentinel_dir.join("sentinel.conf");
            let listen = match &setup.tls {
                None => format!("port {port}\n"),
                Some(tls) => format!(
                    "port 0\ntls-port {port}\ntls-replication yes\n{}",
                    tls.pki.server_conf(tls.require_client_cert)
                ),
            };
            let text = format!(
                "{listen}bind 127.0.0.1\ndir {dir}\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor {name} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {name} 3000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = sentinel_dir.display(),
                name = master_name,
            );
            std::fs::write(&conf, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
            let args = vec![conf.display().to_string(), "--sentinel".to_string()];
            let process = Process::redis_server(&args, sentinel_dir.join("sentinel.log"));
            setup.sentinels.push((port, process));
        }
        // Over TLS the sentinels take longer to find each other (hellos over TLS links).
        wait_until(Duration::from_secs(30), "sentinels agree", || {
            for (port, process) in &mut setup.sentinels {
                if !process.running() {
                    panic!("sentinel on port {port} exited:\n{}", process.log_tail());
                }
            }
            for &(port, _) in &setup.sentinels {
                let named = setup.master_addr(port);
                if named != Some(primary) {
                    return Err(format!("sentinel {port} names {named:?} as primary"));
                }
                let replicas = setup.entries(port, &["SENTINEL", "REPLICAS", &setup.name]);
                let sees_replica = replicas.iter().any(|r| {
                    r.get("port").map(String::as_str) == Some(&replica.to_string())
                        && r.get("flags").is_some_and(|f| f == "slave")
                });
                if !sees_replica {
                    return Err(format!("sentinel {port} sees replicas {replicas:?}"));
                }
                let others = setup.entries(port, &["SENTINEL", "SENTINELS", &setup.name]);
                if others.len() != 2 {
                    return Err(format!("sentinel {port} sees sentinels {others:?}"));
                }
            }
            Ok(())
        });
        setup
    }

    /// The arguments that make a data node listen on `port`: plaintext, or TLS alone.
    fn listen_args(&self, port: u16) -> Vec<String> {
        match &self.tls {
            None => vec!["--port".into(), port.to_string()],
            Some(tls) => {
                let mut args: Vec<String> = vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                    "--tls-replication".into(),
                    "yes".into(),
                ];
                args.extend(tls.pki.server_args(tls.require_client_cert));
                args
            }
        }
    }

    /// One command to any process of the setup, parsed; over TLS for a TLS setup.
    fn request(&self, port: u16, args: &[&str]) -> Option<Value> {
        resp::request_over(self.tls.as_ref().map(|t| &t.client), port, args)
    }

    /// The port of the primary sentinel `port` names.
    fn master_addr(&self, port: u16) -> Option<u16> {
        let reply = self.request(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.name])?;
        match reply.items() {
            [ip, p] if ip.as_str() == Some("127.0.0.1") => p.as_int().map(|p| p as u16),
            _ => None,
        }
    }

    /// A `SENTINEL REPLICAS` / `SENTINEL SENTINELS` reply of sentinel `port`, one map per entry.
    fn entries(&self, port: u16, args: &[&str]) -> Vec<HashMap<String, String>> {
        let Some(reply) = self.request(port, args) else {
            return Vec::new();
        };
        reply
            .items()
            .iter()
            .map(|entry| {
                entry
                    .items()
                    .chunks(2)
                    .filter_map(|kv| {
                        Some((
                            kv.first()?.as_str()?.to_string(),
                            kv.get(1)?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .collect()
    }

    /// `redis://127.0.0.1:PORT` of each sentinel; `rediss://` for a TLS setup.
    pub fn sentinel_urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.sentinel_ports()
            .iter()
            .map(|p| format!("{scheme}://127.0.0.1:{p}"))
            .collect()
    }

    /// The certificates of a setup started with [`RedisSentinel::start_tls`].
    pub fn pki(&self) -> Option<&Pki> {
        self.tls.as_ref().map(|t| &t.pki)
    }

    /// The port of each sentinel.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|(p, _)| *p).collect()
    }

    /// The name the sentinels monitor the primary by.
    pub fn master_name(&self) -> &str {
        &self.name
    }

    /// The primary's port, as the first sentinel that answers names it.
    pub fn primary_port(&self) -> u16 {
        self.sentinels
            .iter()
            .find_map(|&(port, _)| self.master_addr(port))
            .unwrap_or_else(|| panic!("no sentinel names a primary for {}", self.name))
    }

    /// The ports of the two data nodes, as started: the first primary, then its replica.
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(|(p, _)| *p).collect()
    }

    /// SIGKILLs the current primary (as a crash would); returns its port. It stays dead.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port();
        let (_, process) = self
            .data
            .iter_mut()
            .find(|(p, _)| *p == port)
            .unwrap_or_else(|| {
                panic!("the sentinels name {port}, which this helper did not start")
            });
        process.kill();
        self.killed = Some(port);
        port
    }

    /// Waits until every sentinel names the same new primary (not the one killed last) and it
    /// answers `ROLE` as a master; returns its port.
    pub fn wait_failover(&self, timeout: Duration) -> u16 {
        let killed = self
            .killed
            .unwrap_or_else(|| panic!("wait_failover without kill_primary"));
        wait_until(timeout, "sentinel failover", || {
            let named: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .map(|&(port, _)| self.master_addr(port))
                .collect();
            let Some(Some(new)) = named.first().copied() else {
                return Err(format!("sentinels name {named:?}"));
            };
            if new == killed || named.iter().any(|n| *n != Some(new)) {
                return Err(format!("sentinels name {named:?}"));
            }
            match self.request(new, &["ROLE"]) {
                Some(role) if role.items().first().and_then(Value::as_str) == Some("master") => {
                    Ok(new)
                }
                other => Err(format!("{new} answers ROLE with {other:?}")),
            }
        })
    }

    /// Sends one command to the process on `port` (raw RESP reply; over TLS for a TLS setup),
    /// or `None` if unreachable.
    pub fn command(&self, port: u16, args: &[&str]) -> Option<String> {
        resp::command_over(self.tls.as_ref().map(|t| &t.client), port, args)
    }
}
