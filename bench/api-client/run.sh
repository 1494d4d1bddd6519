#!/usr/bin/env bash
# API client transport: latency and CPU per request of `berth server`'s in-process client (its
# controllers' and node agent's) beside the HTTPS client over loopback, both against one API
# server in one process, rounds alternating between them. CPU is the whole process's (both
# ends of every request). Prints p50/p99 and CPU per request for get, list of 100, create,
# and create -> event on an open watch, with the ratio HTTPS / in-process. About a minute.
#
#   bash bench/api-client/run.sh
#   BENCH_REQUESTS=5000 bash bench/api-client/run.sh
#
# Environment: CARGO_TARGET_DIR (default: <repo>/target-bench), BENCH_REQUESTS (per client and
# request kind; lists run a quarter as many), BENCH_TEST_BIN (an already built test binary of
# the `berth` crate, release profile).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target-bench}
BIN=${BENCH_TEST_BIN:-}
if [[ -z $BIN ]]; then
    echo "=== building the berth crate's tests (release) into $CARGO_TARGET_DIR" >&2
    BIN=$(cd "$ROOT" && cargo test --release -p berth --bin berth --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])' | tail -1)
fi
[[ -x $BIN ]] || { echo "no test binary" >&2; exit 1; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB; $(uptime)"
"$BIN" in_process::tests::bench_transports --ignored --nocapture --test-threads 1 2>&1 | grep -v '^test result\|^running\|^$'
echo "after: $(uptime)"
