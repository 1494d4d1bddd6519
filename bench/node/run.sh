#!/usr/bin/env bash
# Node runtime benchmarks: pod start latency (create -> Ready, 100 one after another and a burst
# of 100) side by side in the same run with `podman run` of the same busybox httpd and a bare
# fork/exec of it, and density (1,000 busybox sleep pods: Berth's own memory per running pod).
# Needs root, runc, podman and busybox-static (installed if missing). About 15-25 minutes on 2
# cores.
#
#   bash bench/node/run.sh                  # everything
#   bash bench/node/run.sh --only latency --n 20
#   bash bench/node/run.sh --only density --density 300
#
# Environment: CARGO_TARGET_DIR (default: <repo>/target-bench), BENCH_WORK_DIR (scratch, default
# $CARGO_TARGET_DIR/node-bench), BERTH_BIN (use this berth binary instead of building one),
# BERTH_RUNTIME (the server's --container-runtime: libcontainer, the default, or runc).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# pods_remove: what pods leave behind once the server is gone.
source "$ROOT/bench/lib/slot.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench}
WORK=${BENCH_WORK_DIR:-$CARGO_TARGET_DIR/node-bench}
# A bridge and ranges of its own, apart from the test slots (10.180-181.x) and the default.
BRIDGE=bnb0
POD_CIDR=10.182.0.0/20
say() { printf '\n=== %s\n' "$*" >&2; }

[[ $(id -u) == 0 ]] || { echo "run as root: pods need namespaces and cgroups" >&2; exit 1; }
missing=()
command -v runc >/dev/null || missing+=(runc)
command -v podman >/dev/null || missing+=(podman)
[[ -x /bin/busybox ]] && file -L /bin/busybox 2>/dev/null | grep -q "statically linked" || missing+=(busybox-static)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ -z ${BERTH_BIN:-} ]]; then
    say "building berth (release) into $CARGO_TARGET_DIR"
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p berth
    BERTH_BIN=$CARGO_TARGET_DIR/release/berth
fi

rm -rf "$WORK"
mkdir -p "$WORK"
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    # Whatever pods the benchmark did not delete: their shims, containers and namespaces.
    pods_remove "$WORK/berth/node"
    ip link del "$BRIDGE" 2>/dev/null || true
    for table in filter nat; do
        iptables -t "$table" -S 2>/dev/null | grep -e "$POD_CIDR" -e " $BRIDGE " | sed 's/^-A /-D /' |
            xargs -r -L1 iptables -t "$table" 2>/dev/null || true
    done
    podman --root "$WORK/podman" --runroot "$WORK/podman-run" rm -af -t 0 >/dev/null 2>&1 || true
}
trap cleanup EXIT

# --- podman's image: Debian's static busybox and nothing else, imported locally (no registry).
say "importing a busybox-static image into podman"
rootfs=$WORK/rootfs
mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc"
chmod 1777 "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh mkdir true sleep httpd; do ln -s busybox "$rootfs/bin/$applet"; done
PODMAN=(podman --root "$WORK/podman" --runroot "$WORK/podman-run" --runtime runc --cgroup-manager cgroupfs
    --events-backend file)
tar -C "$rootfs" -c . | "${PODMAN[@]}" import --quiet --change "ENV PATH=/bin" - localhost/berth-bench-busybox >/dev/null
# The first run sets up podman's network; keep it out of the figures.
"${PODMAN[@]}" run --rm --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 -p 127.0.0.1:23999:8080 \
    localhost/berth-bench-busybox true

# --- Berth.
say "starting berth server"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BERTH_LOG=${BERTH_LOG:-warn} "$BERTH_BIN" server --data-dir "$WORK/berth" --listen "127.0.0.1:$PORT" --http-listen off --https-listen off \
    --pod-bridge "$BRIDGE" --pod-cidr "$POD_CIDR" --max-pods 1100 --container-runtime "${BERTH_RUNTIME:-libcontainer}" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
for _ in $(seq 300); do
    grep -q KUBECONFIG "$WORK/server.out" 2>/dev/null && break
    sleep 0.1
done
grep -q KUBECONFIG "$WORK/server.out" || { cat "$WORK/server.err" >&2; exit 1; }
export KUBECONFIG=$WORK/berth/kubeconfig
for _ in $(seq 300); do
    kubectl get nodes -o name 2>/dev/null | grep -q node/ && break
    sleep 0.1
done

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(uname -r);" \
    "runc $(runc --version | awk 'NR==1 {print $3}'); podman $(podman --version | awk '{print $3}');" \
    "berth $("$BERTH_BIN" --version | awk '{print $2}') ($(git -C "$ROOT" rev-parse --short HEAD)," \
    "containers by ${BERTH_RUNTIME:-libcontainer})"
python3 "$ROOT/bench/node/podstart.py" --kubeconfig "$KUBECONFIG" --data-dir "$WORK/berth" \
    --server-pid "$SERVER_PID" --podman-root "$WORK/podman" --podman-runroot "$WORK/podman-run" \
    --out "$WORK/results.json" "$@"
echo "results: $WORK/results.json"
