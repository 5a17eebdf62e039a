//! A randomized checker of the invalidation contract through the whole middleware on one node
//! with an in-memory cache: 64 concurrent workers, 100,000 operations of readers, writers and
//! tag invalidations interleaved by handlers that yield at random points (the checker itself is
//! `cache_actix_tests::checker`). No read may return data older than the last invalidation of
//! its tag that completed before the read began.

use std::time::Duration;

use cache_actix::Cache;
use cache_actix_tests::checker::{run, Plan};

const OPS: usize = 100_000;

#[actix_web::test]
async fn no_read_is_older_than_the_last_completed_invalidation() {
    let plan = Plan {
        keys: 8,
        workers: 64,
        ops: OPS,
        propagation: Duration::ZERO,
    };
    let seen = run(&[Cache::memory()], plan).await;
    assert_eq!(seen.failed_invalidations, 0, "{seen:?}");
    assert!(
        seen.reads > OPS * 8 / 10,
        "only {} reads checked",
        seen.reads
    );
    assert!(
        seen.hits > seen.reads / 4,
        "the checker must exercise hits too: {seen:?}"
    );
}
