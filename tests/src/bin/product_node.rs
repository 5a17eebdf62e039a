//! The product example server, built inside the test package so that its integration tests can
//! start it as separate processes (`CARGO_BIN_EXE_product_node`). Same code as the `products`
//! binary of `examples/`.

fn main() -> std::io::Result<()> {
    cache_actix_examples::server::run_from_env()
}
