//! The integration tests, one module per concern, in one binary: the suite then builds and links
//! one release executable instead of one per file (each linked with actix-web, redis-rs and
//! rustls), which was the largest part of the test command's time. Run one concern with a
//! filter: `cargo test --release -p cache-actix-tests --test integration coalescing::`.
//!
//! Modules share the process and its default two test threads, so none relies on process-wide
//! state (environment variables, a global allocator or recorder). They do share the CPU and the
//! cache's background runtime: the modules that bound latencies or measure isolation
//! (`redis_cold_start`, `coalescing`, `soft_purge`, `concurrency`, `flights`,
//! `products_example`) are run by `scripts/test.sh` after the rest, one test at a time.
//! `reverse_proxy` stays a binary of its own: it measures the process's peak RSS, which
//! neighbouring tests would raise.

mod attacker;
mod bad_input;
mod checker;
mod coalescing;
mod compression;
mod concurrency;
mod flights;
mod http_semantics;
mod key_control;
mod middleware;
mod model_tags;
mod never_stored;
mod poison;
mod products_example;
mod redis_cluster;
mod redis_cluster_faults;
mod redis_cold_start;
mod redis_full;
mod redis_processes;
mod redis_sentinel;
mod redis_tiered;
mod redis_tls;
mod redis_topologies;
mod soft_purge;
mod user_store;
