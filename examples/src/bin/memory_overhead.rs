//! Measures the memory an L1 entry costs beyond its key, headers and body, against the process's
//! resident set size (Linux `/proc/self/statm`): store N entries, divide the RSS growth minus the
//! payload bytes by N. Run it optimised:
//!
//! `cargo run --release -p cache-actix-examples --bin memory_overhead`

use std::sync::Arc;

use cache_actix::{Entry, MemoryStore, PrimaryKey, Record};

const ENTRIES: usize = 200_000;

fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() {
    let before = rss_bytes().unwrap_or(0);
    let store = MemoryStore::new().max_bytes(usize::MAX);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut payload = 0usize;
    let mut scaffolding = Vec::with_capacity(ENTRIES);
    for i in 0..ENTRIES {
        let key = PrimaryKey::new(
            "bench",
            b"example.com",
            format!("/products/{i}").as_bytes(),
            b"",
        )
        .cache_key();
        let headers = vec![(
            "content-type".to_string(),
            bytes::Bytes::from_static(b"application/json"),
        )];
        let body = bytes::Bytes::from(vec![b'x'; 64]);
        let entry = Entry::new(key.bytes(), 200, headers, body, now, now + 3_600_000)
            .with_tags(vec!["products".to_string(), format!("product:{i}")]);
        let record = Record::Response(Arc::new(entry));
        payload += record.payload_bytes();
        store.put_now(&key, record);
        // Keep the key alive as a caller would; its bytes are shared with the entry's.
        scaffolding.push(key);
    }
    let after = rss_bytes().unwrap_or(0);
    let scaffolding_bytes = ENTRIES * std::mem::size_of::<cache_actix::CacheKey>();
    let overhead = after
        .saturating_sub(before)
        .saturating_sub(payload)
        .saturating_sub(scaffolding_bytes);
    println!("entries:                       {ENTRIES}");
    println!("payload (key+headers+body+tags+etag): {payload} bytes");
    println!(
        "RSS growth:                    {} bytes",
        after.saturating_sub(before)
    );
    println!(
        "overhead per entry (measured): {} bytes",
        overhead / ENTRIES
    );
    println!(
        "overhead charged by the budget: {} bytes per entry",
        (store.bytes() - payload) / ENTRIES
    );
    println!(
        "of which the Entry struct:     {} bytes (plus the Arc's two counters)",
        std::mem::size_of::<Entry>()
    );
    println!(
        "store: {} entries, {} bytes charged",
        store.len(),
        store.bytes()
    );
    drop(scaffolding);
}
