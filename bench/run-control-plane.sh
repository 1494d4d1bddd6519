#!/usr/bin/env bash
# Control-plane benchmarks: Berth side by side with a peer (busybox httpd, etcd 3.4) in the same
# run, printing a results table with the ratio. One command, about 10-15 minutes on 2 cores:
#
#   bash bench/run-control-plane.sh                      # everything
#   bash bench/run-control-plane.sh --only creates --rounds 3   # flags go to the load generator
#
# Environment: CARGO_TARGET_DIR (default: <repo>/target-bench), BENCH_WORK_DIR (scratch data,
# default: $CARGO_TARGET_DIR/bench-run; it is on the disk being measured), BENCH_OUT_DIR
# (results, default: $CARGO_TARGET_DIR/bench-results), BENCH_STORE_UPDATES (store_bench updates,
# default 1000000; 0 skips store_bench), BENCH_SOURCE (worktree: build Berth from the working
# tree, the default; HEAD: build it from `git archive HEAD`, for a consistent snapshot while
# others edit the tree), BERTH_BIN (a `berth` binary to measure instead of building one, to
# compare two builds back to back).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench}
WORK=${BENCH_WORK_DIR:-$CARGO_TARGET_DIR/bench-run}
OUT=${BENCH_OUT_DIR:-$CARGO_TARGET_DIR/bench-results}
STORE_UPDATES=${BENCH_STORE_UPDATES:-1000000}

say() { printf '\n=== %s\n' "$*"; }

# --- What the benchmarks drive: etcd 3.4 and a busybox with httpd (Debian packages).
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
BUSYBOX=$(command -v busybox || true)
if [[ -z $BUSYBOX ]] || ! "$BUSYBOX" --list | grep -qx httpd; then
    missing+=(busybox-static)
fi
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    BUSYBOX=$(command -v busybox)
fi
ETCD=$(command -v etcd)
# 1,000 watchers need a few thousand descriptors in the load generator and in each server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- Release builds: the server, the store benchmark, the load generator (its own workspace).
SOURCE=$ROOT
if [[ ${BENCH_SOURCE:-worktree} == HEAD ]]; then
    SOURCE=$CARGO_TARGET_DIR/source-head
    rm -rf "$SOURCE" && mkdir -p "$SOURCE"
    git -C "$ROOT" archive HEAD | tar -x -C "$SOURCE"
fi
say "building (release) from $SOURCE into $CARGO_TARGET_DIR"
[[ -n ${BERTH_BIN:-} ]] || cargo build --release --quiet --manifest-path "$SOURCE/Cargo.toml" -p berth
[[ $STORE_UPDATES == 0 ]] ||
    cargo build --release --quiet --manifest-path "$SOURCE/Cargo.toml" -p berth-store --example store_bench
cargo build --release --quiet --manifest-path "$ROOT/bench/loadgen/Cargo.toml"
BERTH=${BERTH_BIN:-$CARGO_TARGET_DIR/release/berth}
LOADGEN=$CARGO_TARGET_DIR/release/berth-loadgen
STORE_BENCH=$CARGO_TARGET_DIR/release/examples/store_bench

rm -rf "$WORK" "$OUT"
mkdir -p "$WORK" "$OUT"
started=$(date +%s)

# --- The machine, and the disk's synchronous write latency (what every durable commit pays).
say "machine"
dsync_line=$(dd if=/dev/zero of="$WORK/dsync-probe" bs=4k count=1000 oflag=dsync 2>&1 | tail -n 1)
rm -f "$WORK/dsync-probe"
dsync_seconds=$(awk -F', ' '{ split($3, t, " "); print t[1] }' <<<"$dsync_line")
dsync_ms=$(awk -v s="$dsync_seconds" 'BEGIN { printf "%.3f", s }')
{
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- cores: $(nproc); memory: $(free -m | awk '/^Mem:/ { print $2 " MiB total, " $7 " MiB available" }')"
    echo "- kernel: $(uname -r); OS: $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "- disk of the data dirs: $(df -h "$WORK" | awk 'NR == 2 { print $1 ", " $2 " size, " $4 " free, mounted on " $6 }')"
    echo "- fsync: dd bs=4k count=1000 oflag=dsync: $dsync_line => $dsync_ms ms per synchronous 4 KiB write"
    echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- etcd: $("$ETCD" --version | head -n 1); busybox: $("$BUSYBOX" | head -n 1)"
    if [[ -n ${BERTH_BIN:-} ]]; then
        echo "- berth: binary $BERTH_BIN"
    elif [[ $SOURCE == "$ROOT" ]]; then
        echo "- berth: working tree at $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo ' + uncommitted changes')"
    else
        echo "- berth: commit $(git -C "$ROOT" rev-parse --short HEAD) (git archive)"
    fi
} | tee "$OUT/machine.md"

# --- Everything that runs through the API, with its peer in the same run.
say "load generator (cold start, memory, creates, list, watch, store size through the API)"
"$LOADGEN" --berth "$BERTH" --etcd "$ETCD" --busybox "$BUSYBOX" --work-dir "$WORK/loadgen" \
    --table-out "$OUT/table.md" --json-out "$OUT/results.jsonl" "$@"

# --- Store size after one key is updated a million times, straight through the store.
if [[ $STORE_UPDATES != 0 ]]; then
    say "store_bench: $STORE_UPDATES updates of one key"
    "$STORE_BENCH" --puts 50000 --updates "$STORE_UPDATES" --dir "$WORK/store-bench" | tee "$OUT/store_bench.txt"
    puts_line=$(grep '^puts:' "$OUT/store_bench.txt" || true)
    size_line=$(grep '^size after updates:' "$OUT/store_bench.txt" || true)
    closed_line=$(grep '^size after close:' "$OUT/store_bench.txt" || true)
    rate_line=$(grep '^updates:' "$OUT/store_bench.txt" || true)
    total_mib=$(sed -n 's/.*total \([0-9.]*\) MiB.*/\1/p' <<<"$size_line")
    met=$(awk -v t="${total_mib:-999999}" 'BEGIN { print (t < 50 ? "yes" : "**no**") }')
    {
        echo "| Store only (store_bench, no API): ${puts_line#puts: } | see Benchmark | — | — | — | — |"
        echo "| Store size after $STORE_UPDATES updates of one key (store_bench, db + WAL) | ${size_line#size after updates: }; ${closed_line#size after close: }; ${rate_line#updates: } | — | — | < 50 MB | $met |"
    } >>"$OUT/table.md"
fi

say "summary ($(($(date +%s) - started)) s; results in $OUT)"
cat "$OUT/machine.md"
echo
cat "$OUT/table.md"
