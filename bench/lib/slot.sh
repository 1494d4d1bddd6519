# Sourced by benchmarks that run pods: takes one of the machine-wide network slots that
# berth-testkit's `Slot` hands to test servers (the same lock files, so benchmarks and tests
# never share a bridge, a range or a NodePort), and removes what an earlier holder left.
# Sets SLOT and SLOT_ARGS (the `berth server` flags); the lock is held by this shell and every
# child that inherits its descriptor, and released when the last of them ends.

slot_clean() { # index
  local - i=$1 table chain
  set +e +o pipefail   # best effort: most of these find nothing
  for link in "bts$i" "bsv$i"; do ip link del "$link" 2>/dev/null || true; done
  # The service proxy's chains of that slot, the jumps into them, then other rules naming it.
  for table in nat filter; do
    for chain in $(iptables-save -t $table 2>/dev/null | awk -v p=":BRT-bsv$i-" 'index($1, p) == 1 { print substr($1, 2) }'); do
      iptables -w -t $table -S 2>/dev/null | grep -- "-j $chain\$" | grep -v "^-A $chain " | sed 's/^-A /-D /' |
        while read -r rule; do eval "iptables -w -t $table $rule" 2>/dev/null || true; done
      iptables -w -t $table -F "$chain" 2>/dev/null || true
      iptables -w -t $table -X "$chain" 2>/dev/null || true
    done
  done
  for table in nat filter; do
    iptables -w -t $table -S 2>/dev/null | grep -w -F -e "bts$i" -e "bsv$i" -e "10.180.$i.0/24" -e "10.181.$i.0/24" |
      sed 's/^-A /-D /' | while read -r rule; do eval "iptables -w -t $table $rule" 2>/dev/null || true; done
  done
}

slot_take() {
  mkdir -p /tmp/berth-test-slots
  while :; do
    for i in $(seq 0 127); do
      exec {SLOT_FD}>>"/tmp/berth-test-slots/$i.lock"
      if flock -n "$SLOT_FD"; then
        SLOT=$i
        slot_clean "$i"
        SLOT_ARGS=(--pod-bridge "bts$i" --pod-cidr "10.180.$i.0/24" --service-cidr "10.181.$i.0/24"
          --service-interface "bsv$i" --service-node-port-range "$((30000 + 20 * i))-$((30019 + 20 * i))")
        return
      fi
      exec {SLOT_FD}>&-
    done
    sleep 0.2
  done
}

# Pods outlive `berth server` by design: removes the containers, shims, mounts and network
# namespaces of the node whose state is under NODE_DIR (what berth-testkit's cleanup does).
pods_remove() { # NODE_DIR
  local - dir=$1 pid id uid
  set +e +o pipefail
  for pid in $(grep -l -a -F "$dir" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
    [ "$pid" != $$ ] && kill -KILL "$pid" 2>/dev/null || true
  done
  # runc's state is in the run directory (a tmpfs), or at the old place for older versions.
  for root in "$dir/run/runc" "$dir/runc"; do
    for id in $(runc --root "$root" list -q 2>/dev/null); do
      runc --root "$root" delete --force "$id" >/dev/null 2>&1 || true
    done
  done
  # Containers libcontainer created have no runc state: kill what runs in their cgroups.
  for uid in $( (ls "$dir/pods"; ls "$dir/run/pods") 2>/dev/null | sort -u); do
    cat /sys/fs/cgroup/pids/berth/pod"$uid"/*/cgroup.procs /sys/fs/cgroup/berth/pod"$uid"/*/cgroup.procs 2>/dev/null |
      xargs -r kill -KILL 2>/dev/null || true
    # Removing a pin's file unpins its namespace in Berth's pin namespace.
    rm -f "$dir/run/pods/$uid/_sandbox/"{net,uts,ipc} "$dir/pods/$uid/_sandbox/"{net,uts,ipc} 2>/dev/null
    ip netns del "berth-$uid" 2>/dev/null || true   # pinned by a version before the pin namespace
  done
  # Their cgroups in every hierarchy, leaves first, once the killed processes are gone (a
  # cgroup with a process left cannot be removed; up to 10 s a pod). Left behind, they pile up
  # by the thousand over benchmark runs and slow every later cgroup change on the machine.
  for uid in $( (ls "$dir/pods"; ls "$dir/run/pods") 2>/dev/null | sort -u); do
    for cg in /sys/fs/cgroup/*/berth/pod"$uid" /sys/fs/cgroup/berth/pod"$uid"; do
      for _ in $(seq 100); do
        [ -d "$cg" ] || break
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
        [ -d "$cg" ] && sleep 0.1
      done
    done
  done
  # Deepest first, the run tmpfs last, so the data dir can be deleted.
  grep -F " $dir/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}

# Ends a benchmark's Berth server (pid in BERTH, data under $WORK/berth, stderr in
# $WORK/berth.err) after deleting its KIND objects (pods outlive the server by design), then
# removes what its pods left and frees the slot. When RC is non-zero it first prints the pods
# and the server's last log lines, so a failed run says why.
berth_teardown() { # RC KIND
  local rc=$1 kind=$2
  if [ "$rc" -ne 0 ] && [ -f "$WORK/berth.err" ]; then
    echo "failed ($rc); pods and the server's last log lines:" >&2
    kubectl get pods -o wide >&2 2>/dev/null || true
    tail -n 20 "$WORK/berth.err" >&2
  fi
  if [ -n "$BERTH" ]; then
    kubectl delete "$kind" --all --wait=true --timeout=60s >/dev/null 2>&1 || true
    kill "$BERTH" 2>/dev/null || true
    wait "$BERTH" 2>/dev/null || true
    pods_remove "$WORK/berth/node"
    slot_clean "$SLOT"
  fi
}
