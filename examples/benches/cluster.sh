#!/usr/bin/env bash
# The Redis Cluster measurements of examples/src/bin/cluster_bench.rs: key spread over the
# masters, invalidation propagation from node to node, and a master's failover. Each phase runs
# on a fresh cluster (three masters, a replica each: examples/benches/cluster_lib.sh), RUNS times.
#
#   bash examples/benches/cluster.sh                       # RUNS=2, every phase
#   PHASES="failover-clocks" RUNS=3 bash examples/benches/cluster.sh
#
# Phases: spread, propagation (the nodes subscribe on the first URL, as a user's would),
# propagation-clocks / propagation-other (the first URL is the master holding the clocks, where
# invalidations publish / another master, so each message crosses the cluster bus), failover-clocks (kill the master holding the clocks),
# failover-records (kill a master holding only records), failover-subscription (kill the master
# the nodes subscribe on). FILLS, ROUNDS and FAILOVER_SECS pass through to the binary, and
# CLUSTER_NODE_TIMEOUT_MS (default 1000, as in tests/src/redis_cluster.rs) to the nodes.
#
# Needs redis-server and redis-cli. Every node it starts is killed on exit (trap).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-2}
PHASES=${PHASES:-"spread propagation propagation-clocks propagation-other failover-clocks failover-records failover-subscription"}
export CLUSTER_NODE_TIMEOUT_MS=${CLUSTER_NODE_TIMEOUT_MS:-1000}
# redis-rs warns on every reconnect attempt to a killed master; its errors still show.
export RUST_LOG=${RUST_LOG:-warn,redis=error}

cargo build --release -q -p cache-actix-examples --bin cluster_bench
source examples/benches/cluster_lib.sh
DIR=$(mktemp -d /tmp/cache-actix-cluster.XXXXXX)
BIN_DIR=$(mktemp -d /tmp/cache-actix-cluster-bin.XXXXXX)
trap 'stop_cluster; rm -rf "$DIR" "$BIN_DIR"' EXIT
# A copy: another build sharing CARGO_TARGET_DIR cannot swap the binary under the run.
cp "${CARGO_TARGET_DIR:-target}/release/cluster_bench" "$BIN_DIR/"
BIN="$BIN_DIR/cluster_bench"

for run in $(seq "$RUNS"); do
    for phase in $PHASES; do
        echo "== run $run: $phase ($(uptime | sed 's/.*load/load/'))"
        stop_cluster
        CLUSTER_PIDS=()
        CLUSTER_PORTS=()
        rm -rf "${DIR:?}"/*
        start_cluster "$DIR"
        case $phase in
            propagation-*) CLUSTER_URLS=$CLUSTER_URLS SEED=${phase#propagation-} timeout 600 "$BIN" propagation ;;
            failover-*) CLUSTER_URLS=$CLUSTER_URLS VICTIM=${phase#failover-} timeout 120 "$BIN" failover ;;
            *) CLUSTER_URLS=$CLUSTER_URLS timeout 600 "$BIN" "$phase" ;;
        esac
    done
done
