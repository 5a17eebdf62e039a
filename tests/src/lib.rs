//! Helpers shared by the integration tests: free loopback ports and real servers.
//!
//! What must stay true: every server a test starts listens on 127.0.0.1 only and stops when its
//! handle is dropped.

use std::net::TcpListener;

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// A running actix-web server; stopped when dropped.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    handle: actix_web::dev::ServerHandle,
}

/// A loopback listener on a free port and its base URL.
pub fn listener() -> (TcpListener, String) {
    let listener =
        TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind loopback: {e}"));
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("local addr: {e}"));
    (listener, format!("http://127.0.0.1:{port}"))
}

impl Server {
    /// Runs an `HttpServer` already bound with [`listener`] (build it with `disable_signals()`).
    pub fn spawn(server: actix_web::dev::Server, base: String) -> Server {
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Server { base, handle }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let stop = self.handle.stop(false);
        actix_web::rt::spawn(stop);
    }
}
