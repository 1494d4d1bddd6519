#!/usr/bin/env bash
# Workload controller benchmarks: a Deployment scaled 0 -> 1,000 replicas, then a rolling update
# of those 1,000 pods with maxSurge 25%, against a release `berth server` (no node agent: pod
# status is driven as kwok does, by the load driver). Prints the time, the ratio against the
# upstream anchor (kube-controller-manager's default client limit of 20 requests/s: about 50 s
# for 1,000 pod creates), the controller's scaling steps and the API requests per pod.
#
#   bash bench/workloads/run.sh            # 1,000 replicas
#   REPLICAS=200 bash bench/workloads/run.sh
#
# Environment: CARGO_TARGET_DIR (default <repo>/target-bench), REPLICAS (default 1000),
# BENCH_WORK_DIR (scratch data dir, default $CARGO_TARGET_DIR/workloads-run), BENCH_PROFILE
# (release, the default; debug measures the unoptimised build, where a release build does not
# fit).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench}
REPLICAS=${REPLICAS:-1000}
WORK=${BENCH_WORK_DIR:-$CARGO_TARGET_DIR/workloads-run}
ANCHOR_QPS=20

say() { printf '\n=== %s\n' "$*" >&2; }

PROFILE=${BENCH_PROFILE:-release}
case $PROFILE in
    release) PROFILE_FLAG=--release; PROFILE_DIR=release ;;
    debug) PROFILE_FLAG=; PROFILE_DIR=debug ;;
    *) echo "BENCH_PROFILE must be release or debug" >&2; exit 2 ;;
esac
say "building ($PROFILE) into $CARGO_TARGET_DIR"
cargo build $PROFILE_FLAG --quiet --manifest-path "$ROOT/Cargo.toml" -p berth
cargo build $PROFILE_FLAG --quiet --manifest-path "$ROOT/Cargo.toml" -p berth-controllers --example workload_bench
BERTH=$CARGO_TARGET_DIR/$PROFILE_DIR/berth
DRIVER=$CARGO_TARGET_DIR/$PROFILE_DIR/examples/workload_bench

rm -rf "$WORK" && mkdir -p "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
say "starting berth server on 127.0.0.1:$PORT (controllers, no node agent)"
BERTH_LOG=warn "$BERTH" server --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --no-node --http-listen off --https-listen off \
    >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
KUBECONFIG_FILE=$WORK/data/kubeconfig
for _ in $(seq 1 300); do
    [[ -s $KUBECONFIG_FILE ]] && curl -sk "https://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
TOKEN=$(awk '/token:/ { print $2; exit }' "$KUBECONFIG_FILE")

# Sum of the server's API request counters (every client, the controllers included); empty
# when this build exports none.
requests_total() {
    curl -sk -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT/metrics" |
        awk '/^apiserver_request_total[{ ]/ { sum += $NF; found = 1 } END { if (found) printf "%d\n", sum }'
}

# The store's revision: every create, update, patch and delete of any object advances it by one,
# so its growth counts the API writes of every client.
store_revision() {
    curl -sk -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT/api/v1/namespaces?limit=1" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])'
}

cpu_seconds() { awk '{ printf "%.2f\n", ($14 + $15) / 100 }' "/proc/$SERVER/stat"; }

field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

say "Deployment 0 -> $REPLICAS replicas"
req0=$(requests_total); rev0=$(store_revision); cpu0=$(cpu_seconds)
scale=$("$DRIVER" "$KUBECONFIG_FILE" scale "$REPLICAS")
req1=$(requests_total); rev1=$(store_revision); cpu1=$(cpu_seconds)
echo "$scale" >&2

say "rolling update of $REPLICAS replicas, maxSurge 25%"
rollout=$("$DRIVER" "$KUBECONFIG_FILE" rollout "$REPLICAS")
req2=$(requests_total); rev2=$(store_revision); cpu2=$(cpu_seconds)
echo "$rollout" >&2

round() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }
exist=$(round "$(field "$scale" pods_exist_seconds)")
ready=$(round "$(field "$scale" all_ready_seconds)")
anchor=$(awk -v n="$REPLICAS" -v q="$ANCHOR_QPS" 'BEGIN { printf "%.1f", n / q }')
secs=$(round "$(field "$rollout" seconds)")
steps=$(field "$rollout" scaling_steps)
per_step=$(round "$(field "$rollout" seconds_per_step)")
created=$(field "$rollout" pods_created)

per_pod() { # server requests minus the driver's own, per pod
    local delta=$1 driver=$2 pods=$3
    if [[ -z $delta ]]; then echo "n/a (no request counters in this build)"; return; fi
    awk -v d="$delta" -v own="$driver" -v p="$pods" 'BEGIN { printf "%.2f", (d - own) / p }'
}
# Writes of everyone but the driver (its status patches and its one scale or template change).
writes_per_pod() {
    awk -v d="$1" -v own="$2" -v p="$3" 'BEGIN { printf "%.2f", (d - own) / p }'
}
scale_writes=$(writes_per_pod $((rev1 - rev0)) "$(field "$scale" status_writes)" "$REPLICAS")
rollout_writes=$(writes_per_pod $((rev2 - rev1)) "$(field "$rollout" status_writes)" "$created")
scale_req=""; rollout_req=""
if [[ -n $req0 && -n $req1 && -n $req2 ]]; then
    scale_req=$((req1 - req0 - 1)); rollout_req=$((req2 - req1 - 1)) # minus the /metrics scrape
fi

cat <<EOF

## Results ($REPLICAS replicas; $PROFILE build; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%dT%H:%MZ))

| measurement | Berth | anchor | ratio |
|---|---|---|---|
| 0 -> $REPLICAS: all pod objects exist | ${exist} s | ${anchor} s ($ANCHOR_QPS req/s client limit) | $(awk -v a="$anchor" -v b="$exist" 'BEGIN { printf "%.0fx faster", a / b }') |
| 0 -> $REPLICAS: all counted ready | ${ready} s | ${anchor} s | $(awk -v a="$anchor" -v b="$ready" 'BEGIN { printf "%.0fx faster", a / b }') |
| rolling update, maxSurge 25%: total | ${secs} s, ${steps} scaling steps | | |
| rolling update: per scaling step | ${per_step} s | | |
| controller API writes per pod, scale-up | $scale_writes | | |
| controller API writes per pod, rolling update | $rollout_writes | | |
| controller requests per pod, scale-up | $(per_pod "$scale_req" "$(field "$scale" driver_requests)" "$REPLICAS") | | |
| controller requests per pod, rolling update | $(per_pod "$rollout_req" "$(field "$rollout" driver_requests)" "$created") | | |
| server CPU, scale-up / rolling update | $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.1f", b - a }') s / $(awk -v a="$cpu1" -v b="$cpu2" 'BEGIN { printf "%.1f", b - a }') s | | |
EOF
