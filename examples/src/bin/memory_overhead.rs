//! Measures the memory an L1 entry costs beyond its key, headers and body, against the process's
//! resident set size (Linux `/proc/self/statm`): store N entries, divide the RSS growth minus the
//! payload bytes by N; and sets it against what the store's budget charges for them, so that an
//! operator sees whether a `max_bytes` budget is honest. Run it optimised:
//!
//! `cargo run --release -p cache-actix-examples --bin memory_overhead`
//!
//! Environment: `ENTRIES` (default 1,000,000); `HIT=1` also answers each entry once, right after
//! storing it, through `CacheMiddleware` (on the whole `App` of `bench_app::app_wide`, driven
//! in-process with `actix_web::test`), so the response head the middleware prepares at an
//! entry's first answer is in the RSS too, as it is for every entry a real fill stores (a
//! miss's answer prepares it). Every such answer must be a `HIT`; the run stops otherwise.
//!
//! Prints the entry count and mode, the payload, the RSS growth, the measured and the charged
//! overhead per entry, the `Entry` struct's size, the store's count and charge, and the ratio of
//! the bytes charged to the RSS growth of the store (target: within 10% of 1).

#![forbid(unsafe_code)]

use std::sync::Arc;

use actix_web::test::{self, TestRequest};
use cache_actix::{Cache, Entry, MemoryStore, Record};
use cache_actix_examples::bench_app::{app_wide, x_cache};

fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() {
    let entries: usize = std::env::var("ENTRIES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let hit = std::env::var("HIT").is_ok_and(|v| v == "1");
    if let Err(err) = actix_web::rt::System::new().block_on(measure(entries, hit)) {
        eprintln!("memory_overhead: {err}");
        std::process::exit(1);
    }
}

async fn measure(entries: usize, hit: bool) -> Result<(), String> {
    let store = MemoryStore::new().max_bytes(usize::MAX);
    // The store is the L1 of a cache so that `HIT=1` can answer from it; without `HIT` the
    // cache only names the keys.
    let cache = Cache::builder().l1(store.clone()).build();
    let app = app_wide(cache.clone()).await;
    let answer = |path: &str| {
        TestRequest::get()
            .uri(path)
            .insert_header(("host", "example.com"))
            .to_request()
    };
    if hit {
        // The first request sets up what every later one reuses (actix's request pool, the
        // date service), outside the measurement.
        test::call_service(&app, answer("/warm-up")).await;
    }
    let before = rss_bytes().unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut payload = 0usize;
    let mut scaffolding = Vec::with_capacity(entries);
    for i in 0..entries {
        let path = format!("/products/{i}");
        // The key the middleware computes for `http://example.com/products/{i}`.
        let key = cache
            .primary_key(b"http://example.com", path.as_bytes(), b"")
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
        if hit {
            let res = test::call_service(&app, answer(&path)).await;
            if x_cache(&res) != "HIT" {
                return Err(format!(
                    "{path} answered {} {:?}, not a HIT",
                    res.status(),
                    x_cache(&res)
                ));
            }
        }
        // Keep the key alive as a caller would; its bytes are shared with the entry's.
        scaffolding.push(key);
    }
    let after = rss_bytes().unwrap_or(0);
    let scaffolding_bytes = entries * std::mem::size_of::<cache_actix::CacheKey>();
    let growth = after.saturating_sub(before);
    let overhead = growth
        .saturating_sub(payload)
        .saturating_sub(scaffolding_bytes);
    let n = entries.max(1);
    println!("entries:                       {entries}");
    println!(
        "mode:                          {}",
        if hit {
            "HIT=1 (each entry answered once through CacheMiddleware)"
        } else {
            "stored only (never answered)"
        }
    );
    println!("payload (key+headers+body+tags+etag): {payload} bytes");
    println!("RSS growth:                    {growth} bytes");
    println!("overhead per entry (measured): {} bytes", overhead / n);
    println!(
        "overhead charged by the budget: {} bytes per entry",
        store.bytes().saturating_sub(payload) / n
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
    let store_growth = growth.saturating_sub(scaffolding_bytes).max(1);
    println!(
        "charged / RSS growth of the store: {:.3} ({} charged, {store_growth} grown; target 0.90-1.10)",
        store.bytes() as f64 / store_growth as f64,
        store.bytes()
    );
    drop(scaffolding);
    Ok(())
}
