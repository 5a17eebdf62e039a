#!/usr/bin/env bash
# The whole test suite, as the README gives it and .ci/run calls it, on a fresh Debian machine
# with Rust: formatting, lints, the docs, then every test of the workspace (unit, doc, trybuild,
# and the integration tests against real servers) in one shared build.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Redis tests start their own redis-server on a free loopback port; they fail without one.
# The TLS tests (redis_tls, and the TLS cases of redis_cluster and redis_sentinel) also make their
# certificates with the openssl command-line tool.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    echo "== installing redis-server and openssl"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server openssl >/dev/null
fi
redis-server --version
openssl version

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo doc -D warnings"
# Broken or private intra-doc links, bad code spans and unclosed HTML in the public docs fail here
# rather than on docs.rs.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features

echo "== cargo test"
# The randomized checker and the concurrency tests are worth running optimised; one profile for
# everything keeps it to a single build.
#
# The modules of the integration binary that bound latencies, or measure what one store's dead
# Redis costs another in the same process, run after the rest and one test at a time, so that
# the test on the other core is never what they measure. Same build, same binary.
ALONE=(redis_cold_start:: coalescing:: soft_purge:: concurrency:: flights:: products_example::)
SKIP=()
for module in "${ALONE[@]}"; do SKIP+=(--skip "$module"); done
cargo test --workspace --release -- "${SKIP[@]}"

echo "== cargo test, timing-sensitive modules one test at a time"
# `--workspace`, as above: the same features, so the binary built above, not a second build.
cargo test --workspace --release --test integration -- --test-threads=1 "${ALONE[@]}"
