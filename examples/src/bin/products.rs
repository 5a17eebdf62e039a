//! The product API server: see `cache_actix_examples::server` for its environment variables.

fn main() -> std::io::Result<()> {
    cache_actix_examples::server::run_from_env()
}
