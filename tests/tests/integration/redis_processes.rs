//! Two real processes of the product example on two ports, sharing one real Redis, driven
//! over HTTP: they behave as one cache.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cache_actix_tests::{call, free_port, redis::RedisServer};

/// A `product_node` process; killed on drop.
struct Node {
    base: String,
    child: Child,
}

impl Node {
    fn start(redis: &RedisServer) -> Node {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_product_node"))
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("REDIS_URL", redis.url())
            .env("DB_LATENCY_MS", "20")
            .env("CACHE_ADMIN_TOKEN", "secret")
            .env("WORKERS", "2")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the product example: {e}"));
        Node {
            base: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(client: &awc::Client, url: &str) -> (u16, String, serde_json::Value) {
    // Behind a load balancer every process sees the public host name; the host is part of the key.
    let mut req = client.get(url).insert_header(("host", "shop.example"));
    if url.contains("/admin/") {
        req = req.insert_header(("authorization", "Bearer secret"));
    }
    let reply = call(req, None).await;
    (reply.status, reply.x_cache, reply.body)
}

/// Waits until the node answers and its invalidation subscription is up (before that, the node
/// caches nothing rather than risk staleness), as a readiness probe would.
async fn ready(client: &awc::Client, node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let probe = client
            .get(node.url("/admin/stats"))
            .insert_header(("authorization", "Bearer secret"))
            .send()
            .await;
        if let Ok(mut res) = probe {
            let body = res.body().await.unwrap_or_default();
            let stats: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if stats["in_sync"] == true {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node at {} never came up",
            node.base
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn two_processes_fill_once_hit_everywhere_and_invalidate_once() {
    let redis = RedisServer::start();
    let (a, b) = (Node::start(&redis), Node::start(&redis));
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish();
    ready(&client, &a).await;
    ready(&client, &b).await;

    let misses_on_b = get(&client, &b.url("/admin/stats")).await.2["misses"].clone();
    let first = get(&client, &a.url("/api/products/1")).await;
    assert_eq!((first.0, first.1.as_str()), (200, "MISS"));
    let on_b = get(&client, &b.url("/api/products/1")).await;
    assert_eq!(
        (on_b.0, on_b.1.as_str(), &on_b.2),
        (200, "HIT", &first.2),
        "B answers from the fill A made"
    );
    let stats = get(&client, &b.url("/admin/stats")).await.2;
    assert_eq!(
        stats["misses"], misses_on_b,
        "B never ran the handler: {stats}"
    );

    // A write on A invalidates `product:1` and `products` in Redis; B stops serving its copy.
    let put = client
        .put(a.url("/api/products/1"))
        .insert_header(("host", "shop.example"))
        .send_json(&serde_json::json!({ "name": "Teapot XL", "price_cents": 2600 }))
        .await
        .unwrap_or_else(|e| panic!("PUT: {e}"));
    assert_eq!(put.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (status, x_cache, _) = get(&client, &b.url("/api/products/1")).await;
        assert_eq!(status, 200);
        if x_cache == "MISS" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B kept serving an invalidated entry"
        );
    }
    // Each process has its own fake database (the example keeps rows in memory), so the
    // cache, not the data, is what the two share: B's refill is now what A serves.
    let (_, x_cache, body) = get(&client, &a.url("/api/products/1")).await;
    let (_, _, on_b) = get(&client, &b.url("/api/products/1")).await;
    assert_eq!((x_cache.as_str(), &body), ("HIT", &on_b));
}
