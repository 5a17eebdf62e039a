//! A real `redis-server` for tests: started on a free loopback port, stopped on drop.
//!
//! What must stay true: there is no fallback. Without a `redis-server` binary the test panics
//! with the reason (the README's test command installs it), so a Redis test can never pass by
//! skipping.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Reply;

/// A `redis-server` child process on 127.0.0.1.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    /// Extra `redis-server` arguments, given again on every restart.
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a fresh server (no persistence) on a free port and waits until it answers `PING`.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// As [`RedisServer::start`], with extra `redis-server` arguments (for example
    /// `["--maxmemory", "2mb", "--maxmemory-policy", "volatile-lru"]`), kept across restarts.
    pub fn start_with(args: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port: crate::free_port(),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would: SIGKILL, nothing saved).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}); `bash scripts/test.sh` installs it")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .command(&["PING"])
                .is_some_and(|r| r.starts_with("+PONG"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// Sends one command (RESP) and returns the raw reply, or `None` if the server is unreachable.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.command_bytes(&bytes)
    }

    /// As [`RedisServer::command`], with binary arguments.
    pub fn command_bytes(&self, args: &[&[u8]]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        stream.write_all(&request).ok()?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = stream.read(&mut buf).ok()?;
            reply.extend_from_slice(&buf[..n]);
            if n == 0 || complete(&reply) {
                break;
            }
        }
        Some(String::from_utf8_lossy(&reply).into_owned())
    }

    /// A numeric field of `INFO` (for example `used_memory` or `evicted_keys`), if present.
    pub fn info_field(&self, name: &str) -> Option<u64> {
        let reply = self.command(&["INFO"])?;
        reply.lines().find_map(|line| {
            let (field, value) = line.split_once(':')?;
            if field == name {
                value.trim().parse().ok()
            } else {
                None
            }
        })
    }

    /// The remaining life of `key` in ms (`PTTL`): -1 for a key that never expires, -2 for none.
    pub fn pttl(&self, key: &str) -> Option<i64> {
        let reply = self.command(&["PTTL", key])?;
        reply.strip_prefix(':')?.trim().parse().ok()
    }

    /// Every key matching `pattern` (by `KEYS`; test data sets are small).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let reply = self.command(&["KEYS", pattern]).unwrap_or_default();
        // *N, then $len / key pairs.
        reply
            .split("\r\n")
            .skip(1)
            .collect::<Vec<_>>()
            .chunks(2)
            .filter_map(|pair| pair.get(1).map(|k| k.to_string()))
            .filter(|k| !k.is_empty())
            .collect()
    }
}

/// Whether `reply` holds one whole RESP value (enough for the replies tests read).
fn complete(reply: &[u8]) -> bool {
    let text = String::from_utf8_lossy(reply);
    match text.chars().next() {
        Some('+' | '-' | ':') => text.ends_with("\r\n"),
        Some('$') => {
            let Some((head, rest)) = text.split_once("\r\n") else {
                return false;
            };
            match head[1..].parse::<i64>() {
                Ok(n) if n < 0 => true,
                Ok(n) => rest.len() >= n as usize + 2,
                Err(_) => true,
            }
        }
        Some('*') => {
            let Some((head, _)) = text.split_once("\r\n") else {
                return false;
            };
            let Ok(n) = head[1..].parse::<i64>() else {
                return true;
            };
            // Each element of the arrays we read is a bulk string: two lines.
            n <= 0 || text.matches("\r\n").count() as i64 > 2 * n
        }
        _ => false,
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long after an invalidation returned `Ok` on one node another node may still answer with
/// what it replaced: the pub/sub delay, with room for a loaded 2-core machine.
pub const PROPAGATION: Duration = Duration::from_millis(500);

/// Reads with `read` until `done` holds of the answer or `deadline` has passed, and returns the
/// last answer: how a test waits out the pub/sub delay that the contract across nodes allows
/// (a deadline [`PROPAGATION`] after the other node's `Ok`) before asserting exactly what a node
/// serves. Old answers meanwhile are hits on the old record, so the wait changes nothing the
/// assertions after it read.
pub async fn until_propagated<F, Fut>(
    deadline: Instant,
    mut read: F,
    done: impl Fn(&Reply) -> bool,
) -> Reply
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let mut reply = read().await;
    while !done(&reply) && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(1)).await;
        reply = read().await;
    }
    reply
}

/// Waits until `cache`'s invalidation subscription is up, as a readiness probe would; fails the
/// test after 5 s.
pub async fn wait_in_sync(cache: &cache_actix::Cache) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cache.in_sync() {
        assert!(Instant::now() < deadline, "node never subscribed");
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
}
