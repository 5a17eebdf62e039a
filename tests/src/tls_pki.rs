//! A `redis-server` that speaks TLS only, for tests, and the certificates it needs: a test CA,
//! a server certificate for 127.0.0.1 (and `localhost`) and a client certificate, all made by
//! the `openssl` command-line tool in a fresh temporary directory.
//!
//! What must stay true: there is no fallback. Without `openssl` or `redis-server` (or a
//! `redis-server` built without TLS) the test panics with the reason, so a TLS test can never
//! pass by skipping. The server listens on 127.0.0.1 only, on its TLS port only (`--port 0`), and
//! stops when its handle is dropped; the directory goes with its [`Pki`].

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Test certificates on disk, removed when dropped.
pub struct Pki {
    dir: PathBuf,
}

/// One `openssl` run in `dir`; panics with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}); it makes the test certificates"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `text` to `dir/name`.
fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
}

/// A P-256 key `name.key` and a certificate `name.crt` for `subject`, signed by the CA with the
/// extensions of `extensions`.
fn issue(dir: &Path, name: &str, subject: &str, extensions: &str) {
    let (key, csr, crt, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    write(dir, &ext, extensions);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-CAserial",
            "ca.srl",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    );
}

impl Pki {
    /// A new CA (`ca.crt`), a server certificate for `IP:127.0.0.1` and `DNS:localhost`
    /// (`server.crt`, `server.key`) and a client certificate (`client.crt`, `client.key`).
    pub fn generate() -> Pki {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "cache-actix-tls-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("temp dir {dir:?}: {e}"));
        let pki = Pki { dir };
        let dir = pki.dir.as_path();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-sha256",
                "-subj",
                "/CN=cache-actix test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        issue(
            dir,
            "server",
            "/CN=127.0.0.1",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        );
        issue(
            dir,
            "client",
            "/CN=cache-actix test client",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        );
        pki
    }

    /// The path of one of the files named above.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The contents of one of the files named above.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> Vec<u8> {
        self.read("ca.crt")
    }

    /// The client certificate, PEM.
    pub fn client_cert_pem(&self) -> Vec<u8> {
        self.read("client.crt")
    }

    /// The client's private key, PEM (PKCS#8).
    pub fn client_key_pem(&self) -> Vec<u8> {
        self.read("client.key")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` child process with TLS on a loopback port and no plain TCP port.
pub struct TlsRedis {
    /// Its TLS port.
    pub port: u16,
    child: Child,
}

impl TlsRedis {
    /// Starts a fresh server (no persistence) with `pki`'s server certificate, trusting its CA
    /// for client certificates, which it requires when `require_client_cert`; waits until its
    /// TLS port accepts connections.
    pub fn start(pki: &Pki, require_client_cert: bool) -> TlsRedis {
        let port = crate::free_port();
        let path = |name: &str| pki.path(name).to_string_lossy().into_owned();
        let log = path(&format!("redis-{port}.log"));
        let mut child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-cert-file", &path("server.crt")])
            .args(["--tls-key-file", &path("server.key")])
            .args(["--tls-ca-cert-file", &path("ca.crt")])
            .args([
                "--tls-auth-clients",
                if require_client_cert { "yes" } else { "no" },
            ])
            .args(["--logfile", &log])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}); `bash scripts/test.sh` installs it")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("redis-server with TLS exited ({status}); is it built with TLS?\n{log}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return TlsRedis { port, child };
            }
            assert!(
                Instant::now() < deadline,
                "redis-server never listened on its TLS port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `rediss://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
