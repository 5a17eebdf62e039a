# A Redis Cluster for the benchmark scripts (sourced, never run): three masters with one replica
# each, six redis-server processes on free loopback ports, as tests/src/redis_cluster.rs starts
# them (the examples cannot use the tests crate).
#
#   source examples/benches/cluster_lib.sh
#   start_cluster "$DIR"      # sets CLUSTER_PORTS, CLUSTER_PIDS, CLUSTER_URLS; returns once healthy
#   cluster_masters           # the ports of the masters serving slots, one a line
#   stop_cluster              # SIGKILLs every node it started (also safe from an EXIT trap)
#
# What must stay true: only 127.0.0.1; every wait is bounded and fails with what it last saw;
# the caller's EXIT trap calls stop_cluster, so no node outlives the script.

CLUSTER_NODE_TIMEOUT_MS=${CLUSTER_NODE_TIMEOUT_MS:-1000}
CLUSTER_PORTS=()
CLUSTER_PIDS=()
CLUSTER_URLS=""

cluster_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits (at most $2 tenths of a second) until the command "$1" succeeds; prints "$3" if not.
cluster_wait() {
    local tries=$2
    while ! eval "$1" >/dev/null 2>&1; do
        tries=$((tries - 1))
        if [ "$tries" -le 0 ]; then
            echo "cluster: gave up waiting for: $3" >&2
            return 1
        fi
        sleep 0.1
    done
}

# Whether every node reports a whole cluster of six, three masters with slots, linked replicas.
cluster_healthy() {
    local port info nodes
    for port in "${CLUSTER_PORTS[@]}"; do
        info=$(redis-cli -p "$port" cluster info | tr -d '\r') || return 1
        grep -q '^cluster_state:ok$' <<<"$info" || return 1
        grep -q '^cluster_slots_ok:16384$' <<<"$info" || return 1
        grep -q '^cluster_known_nodes:6$' <<<"$info" || return 1
        nodes=$(redis-cli -p "$port" cluster nodes) || return 1
        [ "$(awk '$3 ~ /master/ && NF > 8' <<<"$nodes" | wc -l)" -eq 3 ] || return 1
        ! grep -Eq 'fail|disconnected' <<<"$nodes" || return 1
        if redis-cli -p "$port" info replication | tr -d '\r' | grep -q '^role:slave$'; then
            redis-cli -p "$port" info replication | tr -d '\r' | grep -q '^master_link_status:up$' || return 1
        fi
    done
}

start_cluster() {
    local dir=$1 port bus used=" " i
    for i in 1 2 3 4 5 6; do
        # Ephemeral ports; the default bus (port + 10000) may not exist, so it gets its own.
        port=$(cluster_free_port)
        while [[ $used == *" $port "* ]]; do port=$(cluster_free_port); done
        used+="$port "
        bus=$(cluster_free_port)
        while [[ $used == *" $bus "* ]]; do bus=$(cluster_free_port); done
        used+="$bus "
        mkdir -p "$dir/$port"
        # A replica may always take over (validity factor 0), and syncs at once (no diskless delay).
        redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file "$dir/$port/nodes.conf" \
            --cluster-node-timeout "$CLUSTER_NODE_TIMEOUT_MS" --cluster-port "$bus" \
            --cluster-replica-validity-factor 0 --repl-diskless-sync-delay 0 \
            --dir "$dir/$port" --save "" --appendonly no --logfile "$dir/$port/redis.log" &
        CLUSTER_PIDS+=($!)
        disown "$!" # no "Killed" line from bash when stop_cluster ends it
        CLUSTER_PORTS+=("$port")
    done
    for port in "${CLUSTER_PORTS[@]}"; do
        cluster_wait "redis-cli -p $port ping | grep -q PONG" 100 "node $port answers" || return 1
    done
    local create=()
    for port in "${CLUSTER_PORTS[@]}"; do create+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${create[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
        || { cat "$dir/create.log" >&2; return 1; }
    cluster_wait cluster_healthy 200 "a healthy cluster (see $dir/*/redis.log)" || return 1
    CLUSTER_URLS=$(printf 'redis://127.0.0.1:%s,' "${CLUSTER_PORTS[@]}")
    CLUSTER_URLS=${CLUSTER_URLS%,}
}

# The ports of the masters that serve slots, as the first node that answers sees them.
cluster_masters() {
    local port
    for port in "${CLUSTER_PORTS[@]}"; do
        if redis-cli -p "$port" cluster nodes 2>/dev/null \
            | awk '$3 ~ /master/ && $3 !~ /fail/ && NF > 8 { split($2, a, "[:@]"); print a[2] }' | sort -n | grep .; then
            return 0
        fi
    done
    return 1
}

stop_cluster() {
    local pid
    for pid in "${CLUSTER_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}
