//! The caching reverse proxy: see `cache_actix_examples::reverse_proxy` for its environment
//! variables, e.g. `UPSTREAM_URL=http://127.0.0.1:18080 cargo run --bin reverse_proxy`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match cache_actix_examples::reverse_proxy::run_from_env() {
        Ok(()) => ExitCode::SUCCESS,
        // Display, not the Debug `main` would print: a missing UPSTREAM_URL reads as a sentence.
        Err(error) => {
            eprintln!("reverse_proxy: {error}");
            ExitCode::FAILURE
        }
    }
}
