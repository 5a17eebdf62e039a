//! A RESP2 client for one command at a time, in plaintext or over TLS (rustls, trusting a test
//! CA), with a full reply parser (nested arrays included), for the topology helpers that read
//! `CLUSTER NODES`, `SCAN`, `ROLE` or `SENTINEL` replies.
//!
//! What must stay true: a reply is only returned once it has been read whole; an unreachable
//! server, a closed connection or a reply that is not RESP is `None`, never a partial value.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// One RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+text`.
    Simple(String),
    /// `-text`.
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$len` + bytes (lossy UTF-8), or `$-1` as `None`.
    Bulk(Option<String>),
    /// `*n` + values, or `*-1` as `None`.
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The text of a simple or bulk string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Simple(s) | Value::Bulk(Some(s)) => Some(s),
            _ => None,
        }
    }

    /// The elements of an array (an empty slice for anything else).
    pub fn items(&self) -> &[Value] {
        match self {
            Value::Array(Some(items)) => items,
            _ => &[],
        }
    }

    /// An integer, or a string holding one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            other => other.as_str()?.trim().parse().ok(),
        }
    }
}

/// Sends `args` to 127.0.0.1:`port` and returns the raw reply text (lossy UTF-8), or `None` if
/// the server is unreachable or no whole reply arrived within 2 s.
pub fn command(port: u16, args: &[&str]) -> Option<String> {
    command_over(None, port, args)
}

/// As [`command`], parsed.
pub fn request(port: u16, args: &[&str]) -> Option<Value> {
    request_over(None, port, args)
}

/// As [`command`]: in plaintext without `tls`, over TLS with it.
pub fn command_over(
    tls: Option<&Arc<rustls::ClientConfig>>,
    port: u16,
    args: &[&str],
) -> Option<String> {
    let (_, raw) = exchange(tls, port, args)?;
    Some(String::from_utf8_lossy(&raw).into_owned())
}

/// As [`request`]: in plaintext without `tls`, over TLS with it.
pub fn request_over(
    tls: Option<&Arc<rustls::ClientConfig>>,
    port: u16,
    args: &[&str],
) -> Option<Value> {
    exchange(tls, port, args).map(|(value, _)| value)
}

fn exchange(
    tls: Option<&Arc<rustls::ClientConfig>>,
    port: u16,
    args: &[&str],
) -> Option<(Value, Vec<u8>)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    let Some(config) = tls else {
        return talk(&mut stream, args);
    };
    let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let session = rustls::ClientConnection::new(config.clone(), name).ok()?;
    // The handshake runs on the first write and read; a refused one is an `Err`, so `None`.
    talk(&mut rustls::StreamOwned::new(session, stream), args)
}

fn talk(stream: &mut (impl Read + Write), args: &[&str]) -> Option<(Value, Vec<u8>)> {
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        req.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        req.extend_from_slice(arg.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    stream.write_all(&req).ok()?;
    stream.flush().ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some((value, used)) = parse(&reply)? {
            reply.truncate(used);
            return Some((value, reply));
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
    }
}

/// Parses one value from the start of `buf`: `Some(Some((value, bytes used)))`, `Some(None)`
/// when more bytes are needed, `None` when it is not RESP.
pub fn parse(buf: &[u8]) -> Option<Option<(Value, usize)>> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Some(None);
    };
    let line = String::from_utf8_lossy(buf.get(1..end)?).into_owned();
    let after = end + 2;
    let value = match buf.first()? {
        b'+' => Value::Simple(line),
        b'-' => Value::Error(line),
        b':' => Value::Int(line.parse().ok()?),
        b'$' => {
            let len: i64 = line.parse().ok()?;
            if len < 0 {
                return Some(Some((Value::Bulk(None), after)));
            }
            let len = len as usize;
            if buf.len() < after + len + 2 {
                return Some(None);
            }
            let text = String::from_utf8_lossy(&buf[after..after + len]).into_owned();
            return Some(Some((Value::Bulk(Some(text)), after + len + 2)));
        }
        b'*' => {
            let n: i64 = line.parse().ok()?;
            if n < 0 {
                return Some(Some((Value::Array(None), after)));
            }
            let mut items = Vec::with_capacity(n as usize);
            let mut at = after;
            for _ in 0..n {
                match parse(&buf[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Some(None),
                }
            }
            return Some(Some((Value::Array(Some(items)), at)));
        }
        _ => return None,
    };
    Some(Some((value, after)))
}

/// The `field:value` lines of an `INFO` or `CLUSTER INFO` reply, as a lookup.
pub fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (field, value) = line.split_once(':')?;
        (field == name).then(|| value.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_and_partial_replies() {
        let raw = b"*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n:5\r\n";
        let (value, used) = parse(raw).unwrap().unwrap();
        assert_eq!(used, raw.len());
        assert_eq!(value.items()[0].as_str(), Some("0"));
        assert_eq!(value.items()[1].items()[1], Value::Int(5));
        for cut in 0..raw.len() {
            assert_eq!(parse(&raw[..cut]), Some(None), "cut at {cut}");
        }
        assert_eq!(parse(b"?x\r\n"), None);
    }
}
