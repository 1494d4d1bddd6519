#!/usr/bin/env bash
# Image import, pull and first pod start: Berth side by side with podman, same tarball and
# same local registry (Debian's docker-registry on loopback, standing in for a public one).
# Usage (root): bench/images/run.sh [RUNS]   (default 5 runs each; prints medians and ratios)
set -euo pipefail
runs=${1:-5}
root=$(cd "$(dirname "$0")/../.." && pwd)
berth=${BERTH:-$root/target/release/berth}
[ -x "$berth" ] || cargo build --release -p berth --manifest-path "$root/Cargo.toml" >/dev/null
for p in podman skopeo docker-registry busybox; do command -v $p >/dev/null || { echo "missing $p: apt-get install podman skopeo docker-registry busybox-static" >&2; exit 1; }; done
work=$(mktemp -d)
trap 'kill $registry_pid 2>/dev/null || true; podman rmi -f bench.local/busybox:1 127.0.0.1:$port/bench/busybox:1 >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
podman_flags=(--runtime runc --cgroup-manager cgroupfs)

# One image, made here: busybox-static as a one-layer rootfs, saved as an OCI archive.
mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp"
cp /bin/busybox "$work/rootfs/bin/"
for a in sh sleep true echo; do ln -s busybox "$work/rootfs/bin/$a"; done
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
podman "${podman_flags[@]}" import --change 'CMD ["/bin/sleep","3600"]' "$work/rootfs.tar" bench.local/busybox:1 >/dev/null
podman "${podman_flags[@]}" save --format oci-archive -o "$work/busybox.tar" bench.local/busybox:1
podman rmi -f bench.local/busybox:1 >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 & registry_pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false "oci-archive:$work/busybox.tar" "docker://127.0.0.1:$port/bench/busybox:1"
image=127.0.0.1:$port/bench/busybox:1

ms() { local s=$(date +%s%N); "$@" >/dev/null 2>&1; echo $(( ($(date +%s%N) - s) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
row() { printf '%-28s %8s ms %8s ms %6.1fx\n' "$1" "$2" "$3" "$(echo "$3 / ($2 + 0.001)" | bc -l)"; }

data=$work/berth
b_import=(); p_import=(); b_pull=(); p_pull=()
for _ in $(seq "$runs"); do
  rm -rf "$data"; b_import+=("$(ms "$berth" image import "$work/busybox.tar" --data-dir "$data")")
  podman rmi -f bench.local/busybox:1 >/dev/null 2>&1 || true
  p_import+=("$(ms podman "${podman_flags[@]}" load -q -i "$work/busybox.tar")")
  rm -rf "$data"; b_pull+=("$(ms "$berth" image pull "$image" --insecure-registry 127.0.0.1:$port --data-dir "$data")")
  podman rmi -f "$image" >/dev/null 2>&1 || true
  p_pull+=("$(ms podman "${podman_flags[@]}" pull --tls-verify=false "$image")")
done

# First start from the pulled image: Berth from pod create to Running (with the pull, policy
# Always), podman run -d after a fresh pull.
b_start=(); p_start=()
apiport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$data"
"$berth" server --data-dir "$data" --listen 127.0.0.1:$apiport --insecure-registry 127.0.0.1:$port \
  --pod-bridge bib0 --pod-cidr 10.183.0.0/24 --service-cidr 10.183.16.0/24 --service-interface bisv0 --service-node-port-range 32700-32719 --http-listen off --https-listen off >"$work/server.log" 2>&1 & server_pid=$!
trap 'kill $server_pid $registry_pid 2>/dev/null || true; rm -rf "$work"' EXIT
export KUBECONFIG=$data/kubeconfig
for _ in $(seq 100); do kubectl get --raw /readyz >/dev/null 2>&1 && break; sleep 0.2; done
for i in $(seq "$runs"); do
  "$berth" image rm "$image" --data-dir "$data" >/dev/null 2>&1 || true
  s=$(date +%s%N)
  kubectl run "first-$i" --image "$image" --image-pull-policy Always >/dev/null
  kubectl wait --for=jsonpath='{.status.phase}'=Running "pod/first-$i" --timeout=60s >/dev/null
  b_start+=($(( ($(date +%s%N) - s) / 1000000 )))
  kubectl delete pod "first-$i" --grace-period=1 --wait=true >/dev/null
  podman rmi -f "$image" >/dev/null 2>&1 || true
  s=$(date +%s%N)
  podman "${podman_flags[@]}" pull --tls-verify=false -q "$image" >/dev/null
  podman "${podman_flags[@]}" run -d --network none --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --name "berth-bench-$$-$i" "$image" >/dev/null
  p_start+=($(( ($(date +%s%N) - s) / 1000000 )))
  podman rm -f -t 0 "berth-bench-$$-$i" >/dev/null
done
kill $server_pid; wait $server_pid 2>/dev/null || true

printf '%-28s %11s %11s %7s\n' "median of $runs" "Berth" "podman" "podman/Berth"
row "import OCI archive" "$(printf '%s\n' "${b_import[@]}" | median)" "$(printf '%s\n' "${p_import[@]}" | median)"
row "pull from local registry" "$(printf '%s\n' "${b_pull[@]}" | median)" "$(printf '%s\n' "${p_pull[@]}" | median)"
row "pull + first start" "$(printf '%s\n' "${b_start[@]}" | median)" "$(printf '%s\n' "${p_start[@]}" | median)"
