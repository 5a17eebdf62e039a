#!/usr/bin/env bash
# The load benchmark: one run, one machine, 1 KiB bodies, wrk. Compares
#   static       prepared static bytes, no middleware (the limit)
#   l1-hit       the same content as an L1 hit through CacheMiddleware
#   l2-hit       an L2 hit (no L1) on a redis-server this script starts
#   plain-miss   unique URLs, the app handler without the middleware
#   l1-miss      unique URLs through CacheMiddleware (every request a miss and a store)
#   l1-hit-app   an L1 hit with the middleware around the whole App (answered before routing)
#   nginx-hit    nginx proxy_cache hits in front of the app
#   varnish-hit  Varnish hits in front of the app
# and, for a 16 KiB JSON body (Accept-Encoding: gzip, deflate, br where a case says so):
#   json-hit     an L1 hit, uncompressed
#   gz-br-hit    an L1 hit through CacheMiddleware::compress (the br copy stored with the entry)
#   gz-gzip-hit  the same, Accept-Encoding: gzip
#   cz-hit       an L1 hit with actix's Compress outside the cache (compressed on every hit)
# After the runs it prints the Redis memory of the JSON record stored plain and compressed.
# Cases are interleaved, ROUNDS times each; the table shows medians: requests/s, p50, p99, the
# ratio to `static`, and the server's CPU microseconds per request (the serving process: the
# app, nginx's worker or Varnish's child; steadier than requests/s on a shared machine).
#
#   bash examples/benches/load.sh          # ROUNDS=3 DURATION=5 CONNS=32 by default
#
# Installs wrk, redis-server, nginx and varnish from Debian's packages when missing. Every
# process it starts, it stops (trap on exit); every wrk run is bounded by `timeout`.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-32}
HERE=examples/benches

need() {
    local missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
need wrk:wrk redis-server:redis-server nginx:nginx varnishd:varnish curl:curl

free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}

wait_http() {
    for _ in $(seq 200); do
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.05
    done
    echo "no answer from $1: $(curl -s -o /dev/null -w '%{http_code}' "$1")" >&2
    tail -n 5 "$DIR"/*.log >&2 || true
    exit 1
}

cargo build --release -q -p cache-actix-examples --bin bench_server

DIR=$(mktemp -d /tmp/cache-actix-bench.XXXXXX)
# Varnish reads its VCL after dropping to its own user.
chmod 755 "$DIR"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.2
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
PIDS+=($!)
APP_PORT=$(free_port)
APP2_PORT=$(free_port)
REDIS_URL="redis://127.0.0.1:$REDIS_PORT" LISTEN_ADDR="127.0.0.1:$APP_PORT" \
    APP_LISTEN_ADDR="127.0.0.1:$APP2_PORT" WORKERS=1 \
    "${CARGO_TARGET_DIR:-target}/release/bench_server" &
APP_PID=$!
PIDS+=("$APP_PID")
NGINX_PORT=$(free_port)
sed -e "s|@DIR@|$DIR|g" -e "s|@PORT@|$NGINX_PORT|g" -e "s|@APP_PORT@|$APP_PORT|g" \
    "$HERE/nginx.conf.in" >"$DIR/nginx.conf"
nginx -c "$DIR/nginx.conf" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
VARNISH_PORT=$(free_port)
sed -e "s|@APP_PORT@|$APP_PORT|g" "$HERE/varnish.vcl.in" >"$DIR/varnish.vcl"
varnishd -F -a "127.0.0.1:$VARNISH_PORT" -f "$DIR/varnish.vcl" -s malloc,128m \
    -n "$DIR/varnish" >"$DIR/varnish.log" 2>&1 &
VARNISH_PID=$!
PIDS+=("$VARNISH_PID")

APP="http://127.0.0.1:$APP_PORT"
APP2="http://127.0.0.1:$APP2_PORT"
wait_http "$APP/static"
wait_http "$APP2/l1/0"
wait_http "http://127.0.0.1:$NGINX_PORT/plain/0"
wait_http "http://127.0.0.1:$VARNISH_PORT/plain/0"
# The L2 cache caches only once its invalidation subscription is up.
for _ in $(seq 100); do
    curl -fs -o /dev/null "$APP/l2/0"
    [ "$(curl -fsi "$APP/l2/0" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')" = HIT ] && break
    sleep 0.05
done
for url in "$APP/l1/0" "$APP2/l1/0" "$APP/l2/0" "$APP/json/0" "$APP/gz/0" "$APP/cz/0" \
    "$APP/l2json/0" "$APP/l2gz/0" "http://127.0.0.1:$NGINX_PORT/plain/0" \
    "http://127.0.0.1:$VARNISH_PORT/plain/0"; do
    curl -fs -o /dev/null "$url"
    status=$(curl -fsi "$url" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
    case "$status" in HIT*) ;; *) echo "expected a cache hit at $url, got '$status'" >&2; exit 1 ;; esac
done

# CPU ticks (user + system) of a process and its children (Varnish serves from its child).
cpu_ticks() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        [ -r "/proc/$pid/stat" ] || continue
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# The compressed cases must come back compressed, once.
for pair in "gz:br" "cz:br"; do
    got=$(curl -fs -o /dev/null -D - -H "Accept-Encoding: gzip, deflate, br" "$APP/${pair%%:*}/0" |
        tr -d '\r' | awk -F': ' 'tolower($1)=="content-encoding"{print $2}')
    [ "$got" = "${pair##*:}" ] || { echo "/${pair%%:*}/0: content-encoding '$got'" >&2; exit 1; }
done

# name url pid [script] [accept-encoding]
AE="gzip, deflate, br"
CASES=(
    "static|$APP/static|$APP_PID||"
    "l1-hit|$APP/l1/0|$APP_PID||"
    "l1-hit-app|$APP2/l1/0|$APP_PID||"
    "l2-hit|$APP/l2/0|$APP_PID||"
    "plain-miss|$APP/plain/u|$APP_PID|unique|"
    "l1-miss|$APP/l1/u|$APP_PID|unique|"
    "nginx-hit|http://127.0.0.1:$NGINX_PORT/plain/0|$NGINX_PID||"
    "varnish-hit|http://127.0.0.1:$VARNISH_PORT/plain/0|$VARNISH_PID||"
    "json-hit|$APP/json/0|$APP_PID||"
    "gz-br-hit|$APP/gz/0|$APP_PID||$AE"
    "gz-gzip-hit|$APP/gz/0|$APP_PID||gzip"
    "cz-hit|$APP/cz/0|$APP_PID||$AE"
)

RESULTS="$DIR/results"
: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
    for case in "${CASES[@]}"; do
        IFS='|' read -r name url pid script accept <<<"$case"
        args=(-t1 -c"$CONNS" -d"${DURATION}s" --latency)
        [ -z "$accept" ] || args+=(-H "Accept-Encoding: $accept")
        if [ "$script" = unique ]; then
            # A fresh prefix per run: earlier runs' URLs are cached.
            url="$url$round$RANDOM"
            args+=(-s "$HERE/unique.lua")
        fi
        before=$(cpu_ticks "$pid")
        out=$(timeout $((DURATION + 30)) wrk "${args[@]}" "$url")
        after=$(cpu_ticks "$pid")
        requests=$(awk '/requests in/{print $1}' <<<"$out")
        rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
        p50=$(awk '$1=="50%"{print $2}' <<<"$out")
        p99=$(awk '$1=="99%"{print $2}' <<<"$out")
        errors=$(awk '/Non-2xx|Socket errors/{print}' <<<"$out")
        [ -z "$errors" ] || echo "warning: $name: $errors" >&2
        cpu_us=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" \
            'BEGIN{printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0)}')
        echo "$name $rps $p50 $p99 $cpu_us" >>"$RESULTS"
        echo "round $round $name: $rps req/s, p50 $p50, p99 $p99, $cpu_us us CPU/req" >&2
    done
done

# Medians per case, in the order of CASES.
to_us() { # 1.23ms / 456.00us / 1.2s -> microseconds
    awk '{v=$1; if (v ~ /ms$/) {sub(/ms$/,"",v); v*=1000} else if (v ~ /us$/) {sub(/us$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1e6}; print v}'
}
median() { sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
static_rps=$(awk '$1=="static"{print $2}' "$RESULTS" | median)
echo
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), wrk -t1 -c$CONNS, ${DURATION}s x $ROUNDS rounds (medians), 1 KiB body (json/gz/cz: 16 KiB), app workers: 1"
echo
echo "| case | requests/s | p50 | p99 | ratio to static | server CPU us/request |"
echo "|---|---|---|---|---|---|"
for case in "${CASES[@]}"; do
    name=${case%%|*}
    rps=$(awk -v n="$name" '$1==n{print $2}' "$RESULTS" | median)
    p50=$(awk -v n="$name" '$1==n{print $3}' "$RESULTS" | to_us | median)
    p99=$(awk -v n="$name" '$1==n{print $4}' "$RESULTS" | to_us | median)
    cpu=$(awk -v n="$name" '$1==n{print $5}' "$RESULTS" | median)
    awk -v n="$name" -v r="$rps" -v a="$p50" -v b="$p99" -v c="$cpu" -v s="$static_rps" \
        'BEGIN{printf "| %s | %.0f | %.0f us | %.0f us | %.2f | %.1f |\n", n, r, a, b, r / s, c}'
done

# Ratios the targets name, from the medians above.
ratio() { # a b -> median(a) / median(b) in requests/s
    local a b
    a=$(awk -v n="$1" '$1==n{print $2}' "$RESULTS" | median)
    b=$(awk -v n="$2" '$1==n{print $2}' "$RESULTS" | median)
    awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", (b > 0 ? a / b : 0)}'
}
echo
echo "gz-br-hit / json-hit: $(ratio gz-br-hit json-hit) (target >= 0.9); gz-br-hit / cz-hit: $(ratio gz-br-hit cz-hit) (target >= 3)"
echo "gz-gzip-hit / json-hit: $(ratio gz-gzip-hit json-hit); gz-gzip-hit / cz-hit: $(ratio gz-gzip-hit cz-hit)"

# Redis bytes of the 16 KiB JSON record, stored plain and compressed.
record_bytes() {
    local key
    key=$(redis-cli -p "$REDIS_PORT" --scan --pattern "ca:*$1:r:*" | head -1)
    [ -n "$key" ] && redis-cli -p "$REDIS_PORT" MEMORY USAGE "$key"
}
plain_bytes=$(record_bytes bench-json)
gz_bytes=$(record_bytes bench-gz)
echo "Redis MEMORY USAGE of the JSON record: plain $plain_bytes bytes, compressed $gz_bytes bytes" \
    "($(awk -v p="$plain_bytes" -v g="$gz_bytes" 'BEGIN{printf "%.0f", (p > 0 ? 100 * (p - g) / p : 0)}')% saved)"
