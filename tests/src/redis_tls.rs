//! TLS for the Redis tests: [`Pki`], the one way they make certificates (a throwaway CA, a
//! server certificate for `127.0.0.1` / `localhost` and a client certificate, made by the
//! `openssl` command-line tool in a fresh temp dir), what a `redis-server` and a client need to
//! use them, and [`RedisTls`], one `redis-server` that speaks only TLS. The cluster and Sentinel
//! helpers start their TLS nodes with the same [`Pki`].
//!
//! What must stay true: there is no fallback. Without `redis-server`, `redis-cli` or `openssl`
//! (or with a `redis-server` built without TLS) the test panics with the reason, so a TLS test
//! can never pass by skipping. A server started with these arguments listens on no plaintext
//! port (`--port 0`). Every wait is bounded. The server is SIGKILLed and the temp dirs (keys
//! included) removed on drop, also while a test unwinds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::redis_process::{run, run_ok, strings, wait_until, Process, TempDir};

/// PEM files of a throwaway PKI, removed on drop: a CA, a server certificate it signed (SAN
/// `IP:127.0.0.1`, `DNS:localhost`; usable as server and as client, since Redis presents it
/// for replication, the cluster bus and a sentinel's links) and a client certificate it signed.
pub struct Pki {
    /// The CA certificate.
    pub ca_cert: PathBuf,
    /// The server certificate.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// The client certificate.
    pub client_cert: PathBuf,
    /// The client's private key (PKCS#8).
    pub client_key: PathBuf,
    // Last: removed once nothing refers to its files.
    _dir: TempDir,
}

impl Pki {
    /// Generates the CA and both certificates (P-256 keys, SHA-256, valid for 2 days).
    pub fn generate() -> Pki {
        let temp = TempDir::new("pki");
        let dir = temp.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let openssl = |args: &[&str]| run_ok("openssl", &strings(args), Some(dir));
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
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
        ]);
        openssl(&ca);
        let leaf = |name: &str, cn: &str, serial: &str, ext: &str| {
            let ext_file = format!("{name}.ext");
            std::fs::write(dir.join(&ext_file), ext)
                .unwrap_or_else(|e| panic!("cannot write {ext_file}: {e}"));
            let (key, csr, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
            );
            let subj = format!("/CN={cn}");
            let mut req = vec!["req", "-new"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(&req);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                serial,
                "-days",
                "2",
                "-sha256",
                "-out",
                &crt,
                "-extfile",
                &ext_file,
            ]);
        };
        leaf(
            "server",
            "127.0.0.1",
            "2",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        );
        leaf(
            "client",
            "cache-actix test client",
            "3",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        );
        Pki {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            _dir: temp,
        }
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> Vec<u8> {
        read(&self.ca_cert)
    }

    /// The client certificate (PEM).
    pub fn client_cert_pem(&self) -> Vec<u8> {
        read(&self.client_cert)
    }

    /// The client's private key (PEM).
    pub fn client_key_pem(&self) -> Vec<u8> {
        read(&self.client_key)
    }

    /// The server's private key (PEM): a key that does not belong to the client certificate.
    pub fn server_key_pem(&self) -> Vec<u8> {
        read(&self.server_key)
    }

    /// The `redis-server` arguments that serve TLS with these files (the certificate also
    /// presented on the server's own outgoing links), asking clients for a certificate signed by
    /// the CA when `require_client_cert` (`--tls-auth-clients yes`, else `no`). The TLS port
    /// and `--port 0` are the caller's.
    pub fn server_args(&self, require_client_cert: bool) -> Vec<String> {
        vec![
            "--tls-cert-file".into(),
            self.server_cert.display().to_string(),
            "--tls-key-file".into(),
            self.server_key.display().to_string(),
            "--tls-ca-cert-file".into(),
            self.ca_cert.display().to_string(),
            "--tls-auth-clients".into(),
            if require_client_cert { "yes" } else { "no" }.into(),
        ]
    }

    /// [`Pki::server_args`] as config-file lines (for a sentinel, which needs a config file).
    pub fn server_conf(&self, require_client_cert: bool) -> String {
        self.server_args(require_client_cert)
            .chunks(2)
            .map(|pair| format!("{} {}\n", pair[0].trim_start_matches("--"), pair[1]))
            .collect()
    }

    /// The `redis-cli` arguments for TLS trusting the CA, with the client certificate or not.
    pub fn cli_args(&self, client_cert: bool) -> Vec<String> {
        let mut args = vec![
            "--tls".to_string(),
            "--cacert".into(),
            self.ca_cert.display().to_string(),
        ];
        if client_cert {
            args.extend([
                "--cert".into(),
                self.client_cert.display().to_string(),
                "--key".into(),
                self.client_key.display().to_string(),
            ]);
        }
        args
    }

    /// A rustls client configuration that trusts only the CA and presents the client
    /// certificate, for the helpers' own RESP connections (`resp::request_over`).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca_cert)
            .unwrap_or_else(|e| panic!("read the test CA: {e}"))
        {
            roots
                .add(cert.unwrap_or_else(|e| panic!("the test CA: {e}")))
                .unwrap_or_else(|e| panic!("the test CA as a root: {e}"));
        }
        let chain = CertificateDer::pem_file_iter(&self.client_cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .unwrap_or_else(|e| panic!("the test client certificate: {e}"));
        let key = PrivateKeyDer::from_pem_file(&self.client_key)
            .unwrap_or_else(|e| panic!("the test client key: {e}"));
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("rustls protocol versions: {e}"))
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap_or_else(|e| panic!("the test client certificate for rustls: {e}"));
        Arc::new(config)
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A TLS-only `redis-server` on 127.0.0.1.
pub struct RedisTls {
    /// Its TLS port.
    pub port: u16,
    require_client_cert: bool,
    pki: Pki,
    process: Option<Process>,
    // Last: removed after the server is dead.
    dir: TempDir,
}

impl RedisTls {
    /// Starts a TLS-only server with a new [`Pki`] that asks for no client certificate
    /// (`--tls-auth-clients no`) and waits until `redis-cli --tls` gets `PONG`.
    pub fn start() -> RedisTls {
        RedisTls::start_inner(false)
    }

    /// As [`RedisTls::start`], but the server requires a client certificate signed by the CA
    /// (`--tls-auth-clients yes`).
    pub fn start_requiring_client_cert() -> RedisTls {
        RedisTls::start_inner(true)
    }

    fn start_inner(require_client_cert: bool) -> RedisTls {
        let mut server = RedisTls {
            port: crate::free_port(),
            require_client_cert,
            pki: Pki::generate(),
            process: None,
            dir: TempDir::new("tls"),
        };
        server.restart();
        server
    }

    /// `rediss://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// Its certificates.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Whether the server requires a client certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.require_client_cert
    }

    /// Runs one command with `redis-cli --tls` trusting the CA and presenting the client
    /// certificate; its stdout (an error reply too, as `ERR ...`), or `None` if redis-cli failed
    /// (no connection, handshake refused).
    pub fn command(&self, args: &[&str]) -> Option<String> {
        self.cli(true, args)
    }

    /// As [`RedisTls::command`], presenting no client certificate.
    pub fn command_without_client_cert(&self, args: &[&str]) -> Option<String> {
        self.cli(false, args)
    }

    fn cli(&self, client_cert: bool, args: &[&str]) -> Option<String> {
        let mut full = self.pki.cli_args(client_cert);
        full.extend(["-p".to_string(), self.port.to_string()]);
        full.extend(strings(args));
        let out = run("redis-cli", &full, None);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Kills the server (as a crash would: SIGKILL, nothing saved).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts it again on the same port, empty, and waits (at most 10 s) until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let mut args = strings(&["--port", "0", "--tls-port"]);
        args.push(self.port.to_string());
        args.extend(strings(&[
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]));
        args.extend(self.pki.server_args(self.require_client_cert));
        args.extend(["--dir".to_string(), self.dir.path().display().to_string()]);
        let mut process = Process::redis_server(&args, self.dir.path().join("redis.log"));
        wait_until(Duration::from_secs(10), "TLS redis-server answers", || {
            if !process.running() {
                panic!(
                    "redis-server (TLS) on port {} exited; is it built with TLS?\n{}",
                    self.port,
                    process.log_tail()
                );
            }
            match self.command(&["PING"]) {
                Some(pong) if pong == "PONG" => Ok(()),
                other => Err(format!("PING gave {other:?}")),
            }
        });
        self.process = Some(process);
    }
}

impl Drop for RedisTls {
    fn drop(&mut self) {
        self.kill();
    }
}
