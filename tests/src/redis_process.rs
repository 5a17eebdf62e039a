//! What the topology helpers share: a temp dir removed on drop, `redis-server` / `redis-cli` /
//! `openssl` children, and bounded waits that panic with what was last seen.
//!
//! What must stay true: a missing binary is a panic naming it (never a skip); every child is
//! SIGKILLed and reaped when its [`Process`] is dropped, also while a test unwinds; every wait has
//! a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A fresh directory under the system temp dir; removed (with everything in it) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/cache-actix-<what>-<pid>-<n>`.
    pub fn new(what: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "cache-actix-{what}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A subdirectory, created.
    pub fn sub(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process; SIGKILLed and reaped on drop.
pub struct Process {
    child: Option<Child>,
    /// Where it logs (`--logfile`), for panic messages.
    pub log: PathBuf,
}

impl Process {
    /// Runs `redis-server` with `args` (a config file path first, if any), logging to `log`.
    pub fn redis_server(args: &[String], log: PathBuf) -> Process {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--logfile".to_string(), log.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}); `bash scripts/test.sh` installs it")
            });
        Process {
            child: Some(child),
            log,
        }
    }

    /// SIGKILL (as a crash would) and reap; a no-op once done.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it still runs (not killed by us, not exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The last lines of its log, for panic messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `program` with `args` to completion (in `dir` if given) with its stdin closed; panics if
/// it cannot be started.
pub fn run(program: &str, args: &[String], dir: Option<&Path>) -> Output {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command.output().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}); `bash scripts/test.sh` installs redis-server and redis-cli, openssl comes with the OS")
    })
}

/// As [`run`], and panics unless it exits 0, with its output.
pub fn run_ok(program: &str, args: &[String], dir: Option<&Path>) -> Output {
    let out = run(program, args, dir);
    assert!(
        out.status.success(),
        "{program} {} failed ({}):\n{}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `check` every 50 ms until it returns `Ok`; after `timeout` panics with `what` and the
/// last `Err` it gave.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not reached within {timeout:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `args` as owned strings.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}
