#!/usr/bin/env bash
# HTTP through Berth's router, side by side with the same backend reached directly, through
# nginx as a reverse proxy and through haproxy, in one run: wrk, keep-alive, 64 connections.
# Every proxy gets one worker thread (Berth: --router-threads 1) and no access log.
# Then the time from a Service selector change to all new requests landing on the new pods.
#
# usage (as root: the second part runs pods): [ONLY=http|switch] [ROUNDS=N] bench/router/run.sh [SECONDS_PER_RUN]
# needs: nginx, haproxy, wrk, python3, kubectl (scripts/install-test-deps)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-10}
ONLY=${ONLY:-}   # http or switch: only that part
ROUNDS=${ROUNDS:-1}   # rounds of Berth and nginx, alternating which goes first
PROFILE=${BERTH_PROFILE:-release}   # BERTH_PROFILE=debug only to check the script itself; BERTH_BIN: a built binary
if [ -z "${BERTH_BIN:-}" ] && [ "$PROFILE" = release ]; then cargo build --release -q -p berth; fi
BIN=${BERTH_BIN:-$PWD/target/$PROFILE/berth}
source bench/lib/slot.sh
WORK=$(mktemp -d /tmp/berth-router-bench.XXXXXX)
chmod 755 "$WORK"   # nginx workers (www-data) read the page
IP=$(ip route get 192.0.2.1 | awk '{for (i = 1; i <= NF; i++) if ($i == "src") print $(i + 1)}')
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
BACKEND=$(free_port); NGINX=$(free_port); HAPROXY=$(free_port); ROUTER=$(free_port); API=$(free_port)
export KUBECONFIG=$WORK/berth/kubeconfig KUBECACHEDIR=$WORK/kubecache
PIDS=()
BERTH=""
cleanup() {
  berth_teardown $? deploy
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
slot_take
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"

printf 'hello\n' >"$WORK/index.html"
temp_paths="client_body_temp_path $WORK/body; proxy_temp_path $WORK/proxy; fastcgi_temp_path $WORK/fcgi; uwsgi_temp_path $WORK/uwsgi; scgi_temp_path $WORK/scgi;"
cat >"$WORK/backend.conf" <<EOF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
events { worker_connections 4096; }
http { access_log off; $temp_paths
  server { listen $IP:$BACKEND; root $WORK; keepalive_requests 10000000; } }
EOF
cat >"$WORK/proxy.conf" <<EOF
worker_processes 1; daemon off; pid $WORK/proxy.pid; error_log $WORK/proxy.err;
events { worker_connections 4096; }
http { access_log off; $temp_paths
  upstream backend { server $IP:$BACKEND; keepalive 64; keepalive_requests 10000000; }
  server { listen 127.0.0.1:$NGINX; keepalive_requests 10000000;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$host; } } }
EOF
cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option forwardfor
  http-reuse always
frontend web
  bind 127.0.0.1:$HAPROXY
  default_backend backend
backend backend
  server b1 $IP:$BACKEND
EOF
nginx -c "$WORK/backend.conf" -p "$WORK" & PIDS+=($!)
nginx -c "$WORK/proxy.conf" -p "$WORK" & PIDS+=($!)
haproxy -f "$WORK/haproxy.cfg" -db & PIDS+=($!)

# Berth with its node agent (pods for the second part), the access log off like the peers',
# one router thread (as nginx and haproxy have one worker) and one runtime worker thread for
# everything else (API, controllers, node agent). Builds from before the router had its own
# threads ran the router on that one runtime thread.
ROUTER_THREADS=()
if "$BIN" server --help | grep -q -- --router-threads; then ROUTER_THREADS=(--router-threads 1); fi
TOKIO_WORKER_THREADS=1 BERTH_LOG=warn "$BIN" server --data-dir "$WORK/berth" --listen "127.0.0.1:$API" \
  --http-listen "127.0.0.1:$ROUTER" --https-listen off --route-suffix bench.invalid "${ROUTER_THREADS[@]}" \
  "${SLOT_ARGS[@]}" >"$WORK/berth.out" 2>"$WORK/berth.err" &
BERTH=$!
until grep -q KUBECONFIG "$WORK/berth.out" 2>/dev/null; do sleep 0.1; done
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: static}
spec:
  ports: [{port: 80, targetPort: $BACKEND}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: static-manual
  labels: {kubernetes.io/service-name: static}
addressType: IPv4
ports: [{port: $BACKEND}]
endpoints: [{addresses: ["$IP"], conditions: {ready: true}}]
---
apiVersion: berth.dev/v1
kind: Route
metadata: {name: static}
spec:
  to: {name: static}
EOF
until curl -sf -H 'Host: static-default.localhost' "http://127.0.0.1:$ROUTER/" >/dev/null; do sleep 0.1; done

# CPU time (user + system, all threads) a process has used, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
run_wrk() { # name url host pid: prints "name requests/s p99 cpu-us-per-request"
  local out before after
  before=$( [ -n "$4" ] && cpu_ticks "$4" || echo 0)
  out=$(wrk -t1 -c64 -d"${SECS}s" --latency ${3:+-H "Host: $3"} "$2")
  after=$( [ -n "$4" ] && cpu_ticks "$4" || echo 0)
  local rps p99 reqs
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  if grep -q -e 'Non-2xx' -e 'Socket errors' <<<"$out"; then echo "$1: errors" >&2; echo "$out" >&2; fi
  echo "$1 $rps $(ms "$p99") $(awk -v t=$((after - before)) -v n="$reqs" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { if (t > 0 && n > 0) printf "%.1f", t * 1e6 / hz / n; else print "-" }')"
}
ms() { # wrk latency (us/ms/s) to milliseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
if [ "$ONLY" != switch ]; then
  # The proxies' processes that do the work, for their CPU time per request.
  NGINX_WORKER=$(pgrep -P "${PIDS[1]}" | head -1)
  HAPROXY_PID=${PIDS[2]}
  echo "== HTTP, wrk -t1 -c64 -d${SECS}s, keep-alive, 6-byte page; one worker thread per proxy; $ROUNDS round(s)"
  results=()
  results+=("$(run_wrk direct "http://$IP:$BACKEND/" "" "")")
  results+=("$(run_wrk haproxy "http://127.0.0.1:$HAPROXY/" "" "$HAPROXY_PID")")
  # Berth and nginx alternate which goes first, round by round, so that a change in the
  # machine's load weighs on both alike; the median of the rounds' ratios is the reading.
  rps_ratios=""; p99_ratios=""
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then
      b=$(run_wrk berth "http://127.0.0.1:$ROUTER/" static-default.localhost "$BERTH")
      n=$(run_wrk nginx "http://127.0.0.1:$NGINX/" "" "$NGINX_WORKER")
    else
      n=$(run_wrk nginx "http://127.0.0.1:$NGINX/" "" "$NGINX_WORKER")
      b=$(run_wrk berth "http://127.0.0.1:$ROUTER/" static-default.localhost "$BERTH")
    fi
    read -r _ b_rps b_p99 b_cpu <<<"$b"; read -r _ n_rps n_p99 n_cpu <<<"$n"
    printf 'round %d (load %s): berth %.0f req/s p99 %s ms %s us/req; nginx %.0f req/s p99 %s ms %s us/req; berth/nginx %s rps, %s p99\n' \
      "$round" "$(cut -d' ' -f1 /proc/loadavg)" "$b_rps" "$b_p99" "$b_cpu" "$n_rps" "$n_p99" "$n_cpu" \
      "$(ratio "$b_rps" "$n_rps")" "$(ratio "$b_p99" "$n_p99")"
    rps_ratios+=" $(ratio "$b_rps" "$n_rps")"; p99_ratios+=" $(ratio "$b_p99" "$n_p99")"
    results+=("$b" "$n")
  done
  read -r _ nginx_rps nginx_p99 _ <<<"${results[3]}"
  printf '%-8s %12s %10s %12s %14s %14s\n' peer requests/s p99_ms cpu_us/req rps/nginx p99/nginx
  for i in 0 2 3 1; do
    read -r name rps p99 cpu <<<"${results[$i]}"
    printf '%-8s %12.0f %10s %12s %14s %14s\n' "$name" "$rps" "$p99" "$cpu" "$(ratio "$rps" "$nginx_rps")" "$(ratio "$p99" "$nginx_p99")"
  done
  if [ "$ROUNDS" -gt 1 ]; then
    echo "berth/nginx over $ROUNDS rounds: requests/s median $(median <<<"$rps_ratios") (each:$rps_ratios), p99 median $(median <<<"$p99_ratios") (each:$p99_ratios)"
  fi
fi

[ "$ONLY" = http ] && exit 0
echo "== Service selector change to all new requests on the new pods"
for colour in blue green; do
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata: {name: $colour}
data:
  index.html: "$colour"
  nginx.conf: |
    worker_processes 1; pid /tmp/nginx.pid; error_log /dev/stderr; daemon off;
    events {}
    http { access_log off; client_body_temp_path /tmp/b; proxy_temp_path /tmp/p; fastcgi_temp_path /tmp/f;
      uwsgi_temp_path /tmp/u; scgi_temp_path /tmp/s; server { listen 80; root /site; } }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: $colour}
spec:
  replicas: 2
  selector: {matchLabels: {app: web, version: $colour}}
  template:
    metadata: {labels: {app: web, version: $colour}}
    spec:
      containers:
      - name: nginx
        image: host
        command: [nginx, -c, /site/nginx.conf]
        readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 1}
        volumeMounts: [{name: site, mountPath: /site}]
      volumes: [{name: site, configMap: {name: $colour}}]
EOF
done
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web, version: blue}
  ports: [{port: 80}]
---
apiVersion: berth.dev/v1
kind: Route
metadata: {name: web}
spec:
  to: {name: web}
EOF
kubectl rollout status deploy/blue --timeout=120s >/dev/null
kubectl rollout status deploy/green --timeout=120s >/dev/null
until [ "$(curl -s -H 'Host: web-default.localhost' "http://127.0.0.1:$ROUTER/")" = blue ]; do sleep 0.1; done
TOKEN=$(cat "$WORK/berth/pki/admin.token")
lat=$(python3 bench/router/switch.py "$API" "$TOKEN" "$ROUTER" web-default.localhost 10)
echo "switch latencies (ms): $lat"
echo "$lat" | tr ' ' '\n' | sort -n | awk '{ a[NR] = $1 } END { printf "median %.1f ms, max %.1f ms over %d switches\n", a[int((NR + 1) / 2)], a[NR], NR }'
