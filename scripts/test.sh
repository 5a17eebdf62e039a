#!/usr/bin/env bash
# The whole test suite, as the README gives it and .ci/run calls it, on a fresh Debian machine
# with Rust: formatting, lints, then every test of the workspace (unit, doc, trybuild, and the
# integration tests against real servers) in one shared build.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
# The randomized checker and the concurrency tests are worth running optimised; one profile for
# everything keeps it to a single build.
cargo test --workspace --release
