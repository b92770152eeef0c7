#!/usr/bin/env bash
# Fleet benchmark of snapshot distribution: origin upload and time to fleet, BitTorrent swarm
# against plain HTTP from the origin, for fleets of N followers.
#
# Every node (the origin, and each follower with the `adsnap serve` it feeds) runs in its own
# network namespace, joined to one bridge by a veth pair whose both directions are limited by tc
# (tbf) to RATE_MBIT, so that links, not loopback memory copies, are the constraint. The tracker
# (Debian's opentracker) and this script sit on the bridge in the root namespace.
#
# For each N and each transport it starts a fresh tracker, origin, N servers and N followers,
# publishes one snapshot, and measures until every server's /health reports it:
#   - origin upload: bytes sent by the origin's interface (kernel counter, all protocol overhead
#     included), also as a multiple of the snapshot size;
#   - time to fleet: from the publish command to the last server serving the new snapshot.
# N = 1 with BitTorrent is the "one follower alone" baseline of the time ratio; HTTP at the same N
# is the baseline of the upload reduction.
#
# Needs root (network namespaces), scripts/install-deps.sh, curl, python3, bc, and a release build:
#   cargo build --release && sudo bench/distribute.sh
# Knobs (environment): SIZES="1 4 8 16" RATE_MBIT=50 CAMPAIGNS=30000 PIECE_BYTES=262144
# STRIPES_MAX=64 PEER_REQUESTS_MAX=32 SUPER_SEED=true (the origin's and followers' defaults)
# TRANSPORTS="bittorrent http" (leaving http out skips the baseline, for quicker swarm-only runs)
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"1 4 8 16"}
RATE_MBIT=${RATE_MBIT:-50}
CAMPAIGNS=${CAMPAIGNS:-30000}
PIECE_BYTES=${PIECE_BYTES:-262144}
STRIPES_MAX=${STRIPES_MAX:-64}
PEER_REQUESTS_MAX=${PEER_REQUESTS_MAX:-32}
SUPER_SEED=${SUPER_SEED:-true}
TRANSPORTS=${TRANSPORTS:-"bittorrent http"}
ADSNAP=${ADSNAP:-$PWD/target/release/adsnap}
WORK=${WORK:-$PWD/target/bench-work/distribute}
# The longest a single run may take before it is reported as failed.
RUN_DEADLINE_S=${RUN_DEADLINE_S:-900}
# Unique names and subnet for this run, so that concurrent runs on one machine do not collide.
TAG="ad$(($$ % 100000))"
NET="10.$((100 + $$ % 100)).$(($$ / 100 % 250))"
BRIDGE="br$TAG"
MAX_N=$(printf '%s\n' $SIZES | sort -n | tail -1)

PIDS=()
cleanup() {
    for pid in "${PIDS[@]:-}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for i in $(seq 0 "$MAX_N"); do ip netns del "${TAG}n$i" 2>/dev/null || true; done
    ip link del "$BRIDGE" 2>/dev/null || true
}
trap cleanup EXIT

node_ip() { echo "$NET.$((10 + $1))"; }

setup_network() {
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for i in $(seq 0 "$MAX_N"); do
        local ns="${TAG}n$i" outer="${TAG}a$i" inner="${TAG}b$i"
        ip netns add "$ns"
        ip link add "$outer" type veth peer name "$inner"
        ip link set "$inner" netns "$ns"
        ip link set "$outer" master "$BRIDGE" up
        ip -n "$ns" addr add "$(node_ip "$i")/24" dev "$inner"
        ip -n "$ns" link set "$inner" up
        ip -n "$ns" link set lo up
        # Uplink (the node's egress) and downlink (the bridge's egress toward the node).
        ip netns exec "$ns" tc qdisc add dev "$inner" root tbf rate "${RATE_MBIT}mbit" burst 256kb latency 200ms
        tc qdisc add dev "$outer" root tbf rate "${RATE_MBIT}mbit" burst 256kb latency 200ms
    done
}

make_snapshots() {
    mkdir -p "$WORK"
    if [ ! -f "$WORK/catalog-$CAMPAIGNS/catalog.json" ]; then
        "$ADSNAP" gen --out "$WORK/catalog-$CAMPAIGNS" --campaigns "$CAMPAIGNS" >/dev/null
    fi
    "$ADSNAP" build "$WORK/catalog-$CAMPAIGNS" --out "$WORK/v0.snap" --snapshot-version 1 --quiet >/dev/null
    "$ADSNAP" build "$WORK/catalog-$CAMPAIGNS" --out "$WORK/v1.snap" --snapshot-version 2 --quiet >/dev/null
    V1_ID=$("$ADSNAP" inspect "$WORK/v1.snap" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot_id"])')
    SNAP_BYTES=$(stat -c %s "$WORK/v1.snap")
    rm -f "$WORK/publisher.key" "$WORK/publisher.key.pub"
    "$ADSNAP" keygen --out "$WORK/publisher.key" >/dev/null
    PUBLIC_KEY=$(cat "$WORK/publisher.key.pub")
}

now() { date +%s.%N; }

health_id() {
    curl -s --max-time 2 "http://$(node_ip "$1"):8080/health" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot"]["id"])' 2>/dev/null || true
}

wait_until() { # description, deadline seconds, command...
    local what=$1 deadline=$2
    shift 2
    local start
    start=$(now)
    until "$@"; do
        if (($(echo "$(now) - $start > $deadline" | bc))); then
            echo "timed out waiting for $what" >&2
            return 1
        fi
        sleep 0.1
    done
}

all_serving() { # N, id
    for i in $(seq 1 "$1"); do [ "$(health_id "$i")" = "$2" ] || return 1; done
}

# Waits, in one process, until every server's /health reports the id; prints the time (as `now`)
# it first saw the last one serving. Polling with a curl and a python3 start per check (as
# `all_serving` does) cost a share of this 2-core machine's CPU while the fleet downloaded, and a
# whole pass over 16 servers took about a second, all counted as time to fleet.
wait_all_serving() { # N, id, deadline seconds
    python3 - "$1" "$2" "$3" "$(node_ip 0)" <<'PY'
import json, sys, time, urllib.request
n, want, deadline, origin_ip = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
base = origin_ip.rsplit(".", 1)[0]
last = int(origin_ip.rsplit(".", 1)[1])
waiting = {f"http://{base}.{last + i}:8080/health" for i in range(1, n + 1)}
start = time.time()
while waiting:
    if time.time() - start > deadline:
        sys.exit(f"timed out waiting for {len(waiting)} servers")
    for url in sorted(waiting):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if json.load(r)["snapshot"]["id"] == want:
                    waiting.discard(url)
                    seen = time.time()
        except Exception:
            pass
    if waiting:
        time.sleep(0.05)
print(f"{seen:.9f}")
PY
}

origin_tx_bytes() { ip netns exec "${TAG}n0" cat "/sys/class/net/${TAG}b0/statistics/tx_bytes"; }

start_run() { # N, transport
    local n=$1 transport=$2 run="$WORK/run-$1-$2"
    RUN=$run
    rm -rf "$run" && mkdir -p "$run/tracker"
    : >"$run/tracker/whitelist.txt"
    (cd "$run/tracker" && exec opentracker -i "$NET.1" -p 6969 -P 6969 -d "$run/tracker" \
        -w whitelist.txt -u nobody >"$run/tracker.log" 2>&1) &
    local tracker_pid=$!
    PIDS+=("$tracker_pid")
    cat >"$run/origin.toml" <<EOF
origin_dir = "$run/origin"
signing_key_path = "$WORK/publisher.key"
trackers = ["http://$NET.1:6969/announce"]
http_listen_addr = "$(node_ip 0):8090"
public_base_url = "http://$(node_ip 0):8090"
seed_peers = ["$(node_ip 0):4240"]
piece_bytes = $PIECE_BYTES
stripes_max = $STRIPES_MAX
tracker_whitelist_path = "$run/tracker/whitelist.txt"
tracker_reload_command = ["kill", "-HUP", "$tracker_pid"]
poll_interval_ms = 50
super_seed = $SUPER_SEED

[swarm]
peer_listen_addr = "$(node_ip 0):4240"
peer_requests_max = $PEER_REQUESTS_MAX
EOF
    ip netns exec "${TAG}n0" "$ADSNAP" origin --config "$run/origin.toml" >"$run/origin.log" 2>&1 &
    PIDS+=($!)
    for i in $(seq 1 "$n"); do
        local ns="${TAG}n$i" dir="$run/f$i"
        mkdir -p "$dir"
        cp "$WORK/v0.snap" "$dir/production.snap"
        # Each server has its own event log, profile store and admin listener (on its namespace's
        # own loopback).
        ip netns exec "$ns" "$ADSNAP" serve --listen-addr "$(node_ip "$i"):8080" \
            --admin-listen-addr 127.0.0.1:8081 \
            --snapshot-path "$dir/production.snap" --worker-threads 1 \
            --events-dir "$dir/events" --profiles-path "$dir/profiles" >"$dir/serve.log" 2>&1 &
        local server_pid=$!
        PIDS+=("$server_pid")
        ip netns exec "$ns" "$ADSNAP" follow --data-dir "$dir/follower" \
            --manifest-url "http://$(node_ip 0):8090/manifest.json" --publisher-key "$PUBLIC_KEY" \
            --poll-interval-ms 100 --peer-listen-addr "$(node_ip "$i"):4240" --transport "$transport" \
            --peer-requests-max "$PEER_REQUESTS_MAX" \
            --status-listen-addr "$(node_ip "$i"):8091" \
            --production-path "$dir/production.snap" --staging-path "$dir/staging.snap" \
            --reload-command "kill -HUP $server_pid" >"$dir/follow.log" 2>&1 &
        PIDS+=($!)
    done
    wait_until "the origin" 30 curl -sf --max-time 1 "http://$(node_ip 0):8090/status" -o /dev/null
    local v0_id
    v0_id=$("$ADSNAP" inspect "$WORK/v0.snap" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot_id"])')
    wait_until "the servers" 60 all_serving "$n" "$v0_id"
}

stop_run() {
    for pid in "${PIDS[@]:-}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}

measure() { # N, transport -> prints "seconds bytes"
    local n=$1 transport=$2
    start_run "$n" "$transport"
    local tx0 t0 t1 tx1
    tx0=$(origin_tx_bytes)
    t0=$(now)
    "$ADSNAP" publish "$WORK/v1.snap" --config "$RUN/origin.toml" --target production >/dev/null 2>"$RUN/publish.log"
    t1=$(wait_all_serving "$n" "$V1_ID" "$RUN_DEADLINE_S")
    tx1=$(origin_tx_bytes)
    for i in $(seq 1 "$n"); do
        curl -s --max-time 2 "http://$(node_ip "$i"):8091/status" >"$RUN/f$i/status.json" || true
    done
    echo "  follower uploads: $(python3 -c 'import json,sys; print([json.load(open(f)).get("uploaded_bytes") for f in sys.argv[1:]])' "$RUN"/f*/status.json)" >&2
    echo "  follower stripes (start, claimed): $(python3 -c 'import json,sys; print([(s["start_stripe"], len(s["claimed_stripes"])) for s in (json.load(open(f)).get("stripes") for f in sys.argv[1:])])' "$RUN"/f*/status.json)" >&2
    echo "  fetched from the origin by each follower, MB: $(python3 -c 'import json,sys; print([round(json.load(open(f)).get("fetched_by_peer_host", {}).get(sys.argv[1], 0) / 1e6, 1) for f in sys.argv[2:]])' "$(node_ip 0)" "$RUN"/f*/status.json)" >&2
    echo "  follower peers: $(python3 -c 'import json,sys; print([list(json.load(open(f)).get("peers").values()) for f in sys.argv[1:]])' "$RUN"/f*/status.json)" >&2
    stop_run
    # Logs and statuses stay; the snapshot copies (2N of them) go, so large runs fit on disk.
    find "$RUN" -name '*.snap*' -type f -delete
    echo "$(echo "$t1 - $t0" | bc) $((tx1 - tx0))"
}

setup_network
make_snapshots
echo "snapshot $V1_ID: $SNAP_BYTES bytes; links ${RATE_MBIT} Mbit/s each way; pieces $PIECE_BYTES bytes"
declare -A SECONDS_OF BYTES_OF
for n in $SIZES; do
    for transport in $TRANSPORTS; do
        [ "$n" = 1 ] && [ "$transport" = http ] && continue
        read -r s b < <(measure "$n" "$transport")
        SECONDS_OF[$n,$transport]=$s
        BYTES_OF[$n,$transport]=$b
        echo "  measured N=$n $transport: ${s}s, origin sent $b bytes" >&2
    done
done

alone=${SECONDS_OF[1,bittorrent]:-}
printf '\n| N | transport | time to fleet s | vs one follower alone | origin upload MB | x snapshot | reduction vs HTTP |\n'
printf '|---|---|---|---|---|---|---|\n'
for n in $SIZES; do
    for transport in bittorrent http; do
        [ -n "${SECONDS_OF[$n,$transport]:-}" ] || continue
        s=${SECONDS_OF[$n,$transport]}
        b=${BYTES_OF[$n,$transport]}
        vs_alone=$([ -n "$alone" ] && echo "scale=2; $s / $alone" | bc || echo "-")
        times=$(echo "scale=2; $b / $SNAP_BYTES" | bc)
        reduction="-"
        if [ "$transport" = bittorrent ] && [ -n "${BYTES_OF[$n,http]:-}" ]; then
            reduction="$(echo "scale=1; 100 - 100 * $b / ${BYTES_OF[$n,http]}" | bc)%"
        fi
        printf '| %s | %s | %.2f | %sx | %.1f | %s | %s |\n' "$n" "$transport" "$s" "$vs_alone" \
            "$(echo "scale=1; $b / 1000000" | bc)" "$times" "$reduction"
    done
done
