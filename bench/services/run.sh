#!/usr/bin/env bash
# Service (L4) traffic: throughput through a ClusterIP (kernel NAT rules) against the same pod
# reached directly, in one run, from another pod and from the host: wrk (HTTP keep-alive, a
# 6-byte page from nginx) and iperf3 (one TCP stream). Rounds alternate direct and ClusterIP so
# that other work on the machine weighs on both alike; the median of each is compared.
#
# usage (as root: pods): bench/services/run.sh [SECONDS_PER_RUN] [ROUNDS]
# needs: nginx, wrk, iperf3, python3, kubectl (scripts/install-test-deps)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-5}
ROUNDS=${2:-3}
PROFILE=${BERTH_PROFILE:-release}   # BERTH_PROFILE=debug only to check the script itself; BERTH_BIN: a built binary
if [ -z "${BERTH_BIN:-}" ] && [ "$PROFILE" = release ]; then cargo build --release -q -p berth; fi
BIN=${BERTH_BIN:-$PWD/target/$PROFILE/berth}
source bench/lib/slot.sh
WORK=$(mktemp -d /tmp/berth-services-bench.XXXXXX)
API=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export KUBECONFIG=$WORK/berth/kubeconfig KUBECACHEDIR=$WORK/kubecache
BERTH=""
cleanup() {
  berth_teardown $? pod
  rm -rf "$WORK"
}
trap cleanup EXIT
slot_take
echo "== slot $SLOT; load average: $(cut -d' ' -f1-3 /proc/loadavg)"

BERTH_LOG=warn "$BIN" server --data-dir "$WORK/berth" --listen "127.0.0.1:$API" \
  --http-listen off --https-listen off "${SLOT_ARGS[@]}" >"$WORK/berth.out" 2>"$WORK/berth.err" &
BERTH=$!
until grep -q KUBECONFIG "$WORK/berth.out" 2>/dev/null; do sleep 0.1; done
kubectl apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata: {name: site}
data:
  index.html: "hello\n"
  nginx.conf: |
    worker_processes 1; pid /tmp/nginx.pid; error_log /dev/stderr; daemon off;
    events { worker_connections 4096; }
    http { access_log off; client_body_temp_path /tmp/b; proxy_temp_path /tmp/p; fastcgi_temp_path /tmp/f;
      uwsgi_temp_path /tmp/u; scgi_temp_path /tmp/s;
      server { listen 80; root /site; keepalive_requests 10000000; } }
---
apiVersion: v1
kind: Pod
metadata: {name: sink, labels: {app: sink}}
spec:
  containers:
  - name: nginx
    image: host
    command: [nginx, -c, /site/nginx.conf]
    readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
    volumeMounts: [{name: site, mountPath: /site}]
  - name: iperf3
    image: host
    command: [iperf3, --server, --port, "5201"]
    readinessProbe: {tcpSocket: {port: 5201}, periodSeconds: 1}
  volumes: [{name: site, configMap: {name: site}}]
---
apiVersion: v1
kind: Service
metadata: {name: sink}
spec:
  selector: {app: sink}
  ports: [{name: http, port: 80}, {name: iperf, port: 5201}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
  - name: client
    image: host
    command: [sleep, infinity]
EOF
kubectl wait --for=condition=Ready pod/sink pod/client --timeout=120s >/dev/null
POD=$(kubectl get pod sink -o jsonpath='{.status.podIP}')
VIP=$(kubectl get svc sink -o jsonpath='{.spec.clusterIP}')
# The rules follow the EndpointSlice; wait until the ClusterIP answers from the host and a pod.
until curl -sf -m 1 "http://$VIP/" >/dev/null; do sleep 0.1; done
until kubectl exec client -- curl -sf -m 1 "http://$VIP/" >/dev/null 2>&1; do sleep 0.2; done

on() { # where command...: runs on the host or in the client pod
  local where=$1
  shift
  if [ "$where" = pod ]; then kubectl exec client -- "$@"; else "$@"; fi
}
wrk_rps() { # where ip
  local out
  out=$(on "$1" wrk -t1 -c64 -d"${SECS}s" "http://$2/")
  if grep -q -e 'Non-2xx' -e 'Socket errors' <<<"$out"; then echo "wrk to $2 from $1: errors" >&2; echo "$out" >&2; fi
  awk '/^Requests\/sec:/ {print $2}' <<<"$out"
}
iperf_gbps() { # where ip
  on "$1" iperf3 --client "$2" --port 5201 --time "$SECS" --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9)'
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "== pod $POD, ClusterIP $VIP; $ROUNDS rounds of ${SECS}s each, direct and ClusterIP alternating"
printf '%-5s %-22s %14s %14s %8s\n' from test direct clusterip ratio
for where in pod host; do
  for test in wrk iperf3; do
    direct=() vip=()
    for _ in $(seq 1 "$ROUNDS"); do
      if [ $test = wrk ]; then
        direct+=("$(wrk_rps $where "$POD")")
        vip+=("$(wrk_rps $where "$VIP")")
      else
        direct+=("$(iperf_gbps $where "$POD")")
        vip+=("$(iperf_gbps $where "$VIP")")
      fi
    done
    d=$(echo "${direct[*]}" | median)
    v=$(echo "${vip[*]}" | median)
    unit=$([ $test = wrk ] && echo "requests/s" || echo "Gbit/s")
    printf '%-5s %-22s %14.2f %14.2f %8.3f\n' "$where" "$test ($unit)" "$d" "$v" "$(awk -v a="$v" -v b="$d" 'BEGIN { print a / b }')"
    echo "      rounds: direct ${direct[*]}; clusterip ${vip[*]}" >&2
  done
done
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
