//! Micro-benchmarks of the hot path's pieces: key building, L1 lookup, record encode/decode,
//! and `invalidate_tag` on a tag that 100,000 entries carry (its cost must not grow with them).
//!
//! `cargo bench -p cache-core --features redis --bench core`

use std::sync::Arc;

use bytes::Bytes;
use cache_core::{codec, Cache, Entry, MemoryStore, PrimaryKey, Record};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};

fn entry(key: &PrimaryKey, tags: Vec<String>) -> Entry {
    let now = cache_core::time::now_ms();
    Entry::new(
        key.cache_key().bytes(),
        200,
        vec![(
            "content-type".to_string(),
            Bytes::from_static(b"application/json"),
        )],
        Bytes::from(vec![b'x'; 1024]),
        now,
        now + 3_600_000,
    )
    .with_tags(tags)
}

fn keys(c: &mut Criterion) {
    c.bench_function("primary key: host, path, 3-param query", |b| {
        b.iter(|| {
            PrimaryKey::new(
                black_box("shop"),
                black_box(b"api.example.com"),
                black_box(b"/api/products/123"),
                black_box(b"sort=price&page=2&lang=en"),
            )
        })
    });
    let primary = PrimaryKey::new("shop", b"h", b"/me", b"");
    c.bench_function("variant key: one vary header", |b| {
        b.iter(|| {
            primary
                .variant()
                .header("authorization", [black_box(&b"Bearer abc"[..])])
                .finish()
        })
    });
}

fn l1_lookup(c: &mut Criterion) {
    let store = MemoryStore::new();
    let mut keys = Vec::new();
    for i in 0..10_000 {
        let primary = PrimaryKey::new("", b"h", format!("/p/{i}").as_bytes(), b"");
        let key = primary.cache_key();
        store.put_now(&key, Record::Response(Arc::new(entry(&primary, vec![]))));
        keys.push(key);
    }
    let mut i = 0;
    c.bench_function("L1 get_now (10k entries)", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(store.get_now(&keys[i]))
        })
    });
}

fn codec_round_trip(c: &mut Criterion) {
    let primary = PrimaryKey::new("shop", b"h", b"/p/1", b"");
    let record = Record::Response(Arc::new(entry(
        &primary,
        vec!["products".into(), "product:1".into()],
    )));
    let bytes = Bytes::from(codec::encode(&record));
    c.bench_function("encode 1 KiB record", |b| {
        b.iter(|| codec::encode(black_box(&record)))
    });
    c.bench_function("decode 1 KiB record (shared body)", |b| {
        b.iter(|| codec::decode_shared(black_box(&bytes)))
    });
}

fn invalidation(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let cache = Cache::builder()
        .l1(MemoryStore::new().max_bytes(1 << 30))
        .build();
    runtime.block_on(async {
        for i in 0..100_000 {
            let primary = cache.primary_key(b"h", format!("/p/{i}").as_bytes(), b"");
            let e = entry(&primary, vec!["products".into()]).with_born(cache.begin_fill());
            let stored = cache.store(&primary, &primary.cache_key(), e).await;
            assert!(stored.is_ok(), "entry {i} was not stored");
        }
    });
    assert_eq!(cache.stats().l1.entries, 100_000);
    c.bench_function("invalidate_tag on a tag of 100k entries", |b| {
        b.iter_batched(
            || (),
            |()| runtime.block_on(cache.invalidate_tag("products")),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, keys, l1_lookup, codec_round_trip, invalidation);
criterion_main!(benches);
