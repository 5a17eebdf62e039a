#!/usr/bin/env bash
# L2-hit throughput of the product example with the L1 off, against redis-benchmark GET on the
# same Redis at the same concurrency (the target: at least 0.6x). Each L2 hit is one Lua script
# call: record, born and tag clocks checked in one round trip.
#
#   bash examples/benches/l2_hit.sh            # CONNS=32 DURATION=10 WORKERS=1 STRICT=0 by default
#
# STRICT=1 checks every read against the clocks in Redis (RedisStore::strict_reads).
#
# Needs wrk and redis-server/redis-benchmark (apt-get install -y wrk redis-server).
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNS=${CONNS:-32}
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-1}
STRICT=${STRICT:-0}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cargo build --release -q -p cache-actix-examples --bin products
REDIS_PORT=$(free_port)
APP_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
REDIS_PID=$!
trap 'kill $REDIS_PID $APP_PID 2>/dev/null || true' EXIT
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done

REDIS_URL="redis://127.0.0.1:$REDIS_PORT" CACHE_L1=off CACHE_STRICT_READS="$STRICT" LISTEN_ADDR="127.0.0.1:$APP_PORT" \
    WORKERS="$WORKERS" DB_LATENCY_MS=0 RUST_LOG=warn target/release/products &
APP_PID=$!
URL="http://127.0.0.1:$APP_PORT/api/products/1"
until curl -fs "$URL" >/dev/null 2>&1; do sleep 0.05; done
sleep 0.5
# Fill, then check that what wrk will hit is an L2 hit.
curl -fs "$URL" >/dev/null
STATUS=$(curl -fsi "$URL" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
[ "$STATUS" = "HIT" ] || { echo "expected an L2 HIT, got '$STATUS'"; exit 1; }
BODY=$(curl -fs "$URL" | wc -c)

APP_RPS=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" "$URL" | awk '/Requests\/sec/{print $2}')
REDIS_RPS=$(redis-benchmark -p "$REDIS_PORT" -t get -d 1024 -c "$CONNS" -n $((CONNS * 5000)) -q \
    | tr '\r' '\n' | awk '/requests per second/{print $2}')
echo "body bytes:              $BODY"
echo "connections:             $CONNS (wrk -t1; app workers: $WORKERS; strict reads: $STRICT)"
echo "app L2-hit requests/s:   $APP_RPS"
echo "redis-benchmark GET/s:   $REDIS_RPS"
python3 -c "print(f'ratio app / redis:       {float($APP_RPS)/float($REDIS_RPS):.2f}')"
