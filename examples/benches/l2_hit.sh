#!/usr/bin/env bash
# L2-hit throughput of the product example with the L1 off, against redis-benchmark GET on the
# same Redis at the same concurrency and value size (the target: at least 0.6x). An L2 hit is
# one HGET of the record (checked against this node's mirror of the clocks).
#
#   bash examples/benches/l2_hit.sh            # CONNS=32 DURATION=10 WORKERS=1 STRICT=0 CLUSTER=0
#   CLUSTER=1 bash examples/benches/l2_hit.sh  # the same on a 3-master Redis Cluster
#
# STRICT=1 checks every read against the clocks in Redis (RedisStore::strict_reads).
# CLUSTER=1 starts three masters with a replica each (examples/benches/cluster_lib.sh), runs the
# app on REDIS_CLUSTER_URLS and compares with `redis-benchmark --cluster`.
# PERF=1 also records `perf record -g` on the app while wrk runs and prints its top symbols.
#
# redis-benchmark runs `-t set,get` and its GET line is taken: `-t get` alone reads a key that
# does not exist (a nil reply), whatever `-d` says. `-d` is the size of the record's stored value
# (HSTRLEN of its `v` field, read back from Redis), not the body's.
#
# Needs wrk and redis-server/redis-benchmark (apt-get install -y wrk redis-server).
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNS=${CONNS:-32}
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-1}
STRICT=${STRICT:-0}
CLUSTER=${CLUSTER:-0}
PERF=${PERF:-0}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cargo build --release -q -p cache-actix-examples --bin products
DIR=$(mktemp -d /tmp/cache-actix-l2.XXXXXX)
# A copy: another build sharing CARGO_TARGET_DIR cannot swap the binary under the run.
cp "${CARGO_TARGET_DIR:-target}/release/products" "$DIR/products"
source examples/benches/cluster_lib.sh
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    stop_cluster
    rm -rf "$DIR"
}
trap cleanup EXIT

if [ "$CLUSTER" = 1 ]; then
    start_cluster "$DIR"
    REDIS_ENV=("REDIS_CLUSTER_URLS=$CLUSTER_URLS")
else
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
    PIDS+=($!)
    until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
    REDIS_ENV=("REDIS_URL=redis://127.0.0.1:$REDIS_PORT")
fi

APP_PORT=$(free_port)
env "${REDIS_ENV[@]}" CACHE_L1=off CACHE_STRICT_READS="$STRICT" LISTEN_ADDR="127.0.0.1:$APP_PORT" \
    WORKERS="$WORKERS" DB_LATENCY_MS=0 RUST_LOG=warn "$DIR/products" &
APP_PID=$!
PIDS+=("$APP_PID")
URL="http://127.0.0.1:$APP_PORT/api/products/1"
for _ in $(seq 200); do curl -fs "$URL" >/dev/null 2>&1 && break; sleep 0.05; done
sleep 0.5
# Fill, then check that what wrk will hit is an L2 hit.
curl -fs "$URL" >/dev/null
STATUS=$(curl -fsi "$URL" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
[ "$STATUS" = "HIT" ] || { echo "expected an L2 HIT, got '$STATUS'"; exit 1; }
BODY=$(curl -fs "$URL" | wc -c)

# The record's stored value, where it lives.
if [ "$CLUSTER" = 1 ]; then
    RECORD_PORT=""
    for port in $(cluster_masters); do
        KEY=$(redis-cli -p "$port" --scan --pattern 'ca:*:r:*' | head -n 1)
        if [ -n "$KEY" ]; then RECORD_PORT=$port; break; fi
    done
    [ -n "$RECORD_PORT" ] || { echo "no record found on any master"; exit 1; }
    BENCH_PORT=$(cluster_masters | head -n 1)
    BENCH_ARGS=(--cluster -h 127.0.0.1 -p "$BENCH_PORT")
else
    RECORD_PORT=$REDIS_PORT
    KEY=$(redis-cli -p "$RECORD_PORT" --scan --pattern 'ca:*:r:*' | head -n 1)
    BENCH_ARGS=(-h 127.0.0.1 -p "$REDIS_PORT")
fi
VALUE=$(redis-cli -p "$RECORD_PORT" hstrlen "$KEY" v)
[ "$VALUE" -gt 0 ] || { echo "record $KEY has no value"; exit 1; }

if [ "$PERF" = 1 ]; then
    perf record -g -o "$DIR/perf.data" -p "$APP_PID" -- sleep "$DURATION" >/dev/null 2>&1 &
    PERF_PID=$!
fi
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
if [ "$CLUSTER" = 1 ]; then NODES=$(cluster_masters); else NODES=$REDIS_PORT; fi
for port in $NODES; do redis-cli -p "$port" config resetstat >/dev/null; done
# Calls of one command over every node since the reset.
calls() {
    local port total=0 n
    for port in $NODES; do
        n=$(redis-cli -p "$port" info commandstats | tr -d '\r' | awk -F'[=,:]' -v c="cmdstat_$1" '$1==c{print $3}')
        total=$((total + ${n:-0}))
    done
    echo "$total"
}
TICKS_BEFORE=$(cpu_ticks "$APP_PID")
WRK=$(timeout $((DURATION + 30)) wrk -t1 -c"$CONNS" -d"${DURATION}s" "$URL")
TICKS_AFTER=$(cpu_ticks "$APP_PID")
APP_RPS=$(awk '/Requests\/sec/{print $2}' <<<"$WRK")
# What each hit cost Redis: one HGET, and no script (EVALSHA) unless reads are strict.
HGETS=$(calls hget)
SCRIPTS=$(($(calls evalsha) + $(calls eval)))
REQUESTS=$(awk '/requests in/{print $1}' <<<"$WRK")
APP_CPU_US=$(awk -v t=$((TICKS_AFTER - TICKS_BEFORE)) -v hz="$(getconf CLK_TCK)" -v n="$REQUESTS" \
    'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
if [ "$PERF" = 1 ]; then wait "$PERF_PID" || true; fi
REDIS_RPS=$(timeout 300 redis-benchmark "${BENCH_ARGS[@]}" -t set,get -d "$VALUE" -c "$CONNS" -n $((CONNS * 5000)) -q \
    | tr '\r' '\n' | awk '/^GET: .*requests per second/{print $2}')
# The very command of an L2 hit (HGET of the record's value), on the node that holds it.
HGET_RPS=$(timeout 300 redis-benchmark -h 127.0.0.1 -p "$RECORD_PORT" -c "$CONNS" -n $((CONNS * 5000)) -q \
    HGET "$KEY" v | tr '\r' '\n' | awk 'match($0, /[0-9.]+ requests per second/) { v = substr($0, RSTART, RLENGTH); sub(/ .*/, "", v) } END { print v }')
echo "mode:                    $([ "$CLUSTER" = 1 ] && echo "Redis Cluster, 3 masters + 3 replicas (record on master $RECORD_PORT; redis-benchmark --cluster via $BENCH_PORT)" || echo "one redis-server")"
echo "body bytes:              $BODY"
echo "stored value bytes:      $VALUE (HSTRLEN $KEY v; redis-benchmark -d $VALUE)"
echo "connections:             $CONNS (wrk -t1; app workers: $WORKERS; strict reads: $STRICT)"
echo "app L2-hit requests/s:   $APP_RPS ($APP_CPU_US us of app CPU per request)"
echo "redis calls during wrk:  $HGETS HGET, $SCRIPTS scripts for $REQUESTS requests"
echo "redis-benchmark GET/s:   $REDIS_RPS"
echo "redis-benchmark HGET/s:  $HGET_RPS (HGET of the record itself, on its node; not the target's yardstick)"
python3 -c "print(f'ratio app / redis GET:   {float($APP_RPS)/float($REDIS_RPS):.2f}   (target: at least 0.6)')"
python3 -c "print(f'ratio app / HGET:        {float($APP_RPS)/float($HGET_RPS):.2f}')"
if [ "$PERF" = 1 ]; then
    perf report -i "$DIR/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null \
        | grep -E '^ +[0-9]' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' >"$DIR/perf.txt"
    echo "perf (app process, self time) by part:"
    awk '{ pct = $1; sub("%", "", pct); line = $0
           if (line ~ /\[k\]/) part = "kernel"
           else if (line ~ /malloc|free|_int_|unlink_chunk|memmove|memcpy|memset/) part = "libc alloc/copy"
           else if (line ~ /redis::|deadpool/) part = "redis-rs"
           else if (line ~ /cache_core|cache_actix/) part = "cache-core/cache-actix"
           else if (line ~ /actix|h1::/) part = "actix"
           else if (line ~ /tokio::|mio::/) part = "tokio"
           else part = "other"
           sum[part] += pct }
         END { for (p in sum) printf "  %6.2f%%  %s\n", sum[p], p }' "$DIR/perf.txt" | sort -rn
    echo "perf top 20 symbols:"
    head -n 20 "$DIR/perf.txt" | cut -c1-160
fi
