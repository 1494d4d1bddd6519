#!/usr/bin/env python3
"""Pod start latency and density for Berth's node runtime, next to podman and a bare fork/exec
of the same program. Driven by bench/node/run.sh, which starts the server and sets up podman.

Latency is measured from the moment the request to start is made to the moment the program
serves: for Berth, creating the Pod until the watch shows it Ready (a busybox httpd with an
httpGet readiness probe); for podman and fork/exec, starting `podman run -d` or the process
until an HTTP GET of the same page answers 200 (polled every millisecond).
"""

import argparse
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

# The workload: the same shell line everywhere; it writes the page and becomes busybox httpd.
def httpd_line(port, root, bind=""):
    return f"mkdir -p {root} && echo ok > {root}/index.html && exec busybox httpd -f -p {bind}{port} -h {root}"


def percentile(values, p):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(name, mode, seconds):
    ms = [s * 1000 for s in seconds]
    return {"runner": name, "mode": mode, "n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "max_ms": max(ms) if ms else float("nan"), "ms": [round(v, 2) for v in ms]}


def wait_http(host, port, deadline_s=30.0):
    """Polls until an HTTP GET answers 200; returns False on timeout."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
                head = s.recv(64)
                if head.startswith(b"HTTP/1.") and b" 200 " in head:
                    return True
        except OSError:
            pass
        if time.monotonic() >= end:
            return False
        time.sleep(0.001)


class Api:
    """The Kubernetes API of one berth server, from its kubeconfig (bearer token, CA)."""

    def __init__(self, kubeconfig):
        import base64
        import re
        text = open(kubeconfig).read()
        # The kubeconfig Berth writes is flat YAML; these three fields are all that is needed.
        self.server = re.search(r"server:\s*(\S+)", text).group(1)
        token = re.search(r"token:\s*(\S+)", text).group(1).strip("'\"")
        ca = re.search(r"certificate-authority-data:\s*(\S+)", text).group(1)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.context = ssl.create_default_context(cadata=base64.b64decode(ca).decode())
        hostport = self.server.removeprefix("https://")
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)

    def conn(self):
        return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=600)

    def request(self, conn, method, path, body=None):
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=self.headers)
        response = conn.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data) if data else None


class ReadyWatch:
    """One watch on the namespace's pods; records when each pod was first seen Ready."""

    def __init__(self, api, namespace, label):
        self.api, self.namespace, self.label = api, namespace, label
        self.ready_at = {}
        self.running = set()
        self.cond = threading.Condition()
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        # The first create must not come before the watch is open (it would miss events).
        if not self.opened.wait(30):
            raise RuntimeError("the pod watch did not open")

    def run(self):
        conn = self.api.conn()
        path = f"/api/v1/namespaces/{self.namespace}/pods?watch=1&labelSelector={self.label}"
        conn.request("GET", path, headers=self.api.headers)
        response = conn.getresponse()
        self.opened.set()
        buf = b""
        while True:
            chunk = response.read1(65536) if hasattr(response, "read1") else response.read(1)
            if not chunk:
                return
            now = time.monotonic()
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                event = json.loads(line)
                pod = event.get("object", {})
                name = pod.get("metadata", {}).get("name")
                status = pod.get("status", {})
                conditions = status.get("conditions") or []
                ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
                with self.cond:
                    if status.get("phase") == "Running":
                        self.running.add(name)
                    if ready and name not in self.ready_at:
                        self.ready_at[name] = now
                        self.cond.notify_all()
                    elif status.get("phase") == "Running":
                        self.cond.notify_all()

    def wait(self, names, timeout, key="ready"):
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                seen = self.ready_at if key == "ready" else self.running
                if all(n in seen for n in names):
                    return True
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)


def cpu_times():
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def settle(quiet=0.10, window=0.1, windows=3, deadline_s=60.0):
    """Waits until the machine is quiet: `windows` windows in a row with the CPUs busy under
    `quiet` of the time. What a series leaves behind (podman's per-container cleanup processes,
    the kernel tearing down namespaces and cgroups, Berth's shims ending) otherwise runs during
    the next series and slows whichever runner comes next. Returns the seconds waited."""
    began = time.monotonic()
    calm = 0
    busy0, total0 = cpu_times()
    while calm < windows and time.monotonic() - began < deadline_s:
        time.sleep(window)
        busy1, total1 = cpu_times()
        share = (busy1 - busy0) / max(1, total1 - total0)
        calm = calm + 1 if share < quiet else 0
        busy0, total0 = busy1, total1
    return time.monotonic() - began


def pod_manifest(name, label, command, probe=True):
    container = {"name": "app", "image": "host", "command": command}
    if probe:
        container["readinessProbe"] = {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": label}},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 0}}


def delete_all(api, namespace, label, timeout=600):
    conn = api.conn()
    api.request(conn, "DELETE", f"/api/v1/namespaces/{namespace}/pods?labelSelector=bench%3D{label}&gracePeriodSeconds=0")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        left = api.request(conn, "GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=bench%3D{label}")
        if not left["items"]:
            return
        time.sleep(0.5)
    print(f"warning: pods of {label} still there after {timeout}s", file=sys.stderr)


def berth_latency(api, n, burst, namespace="default", label=None, keep=False):
    label = label or f"start-{'burst' if burst else 'seq'}"
    watch = ReadyWatch(api, namespace, f"bench%3D{label}")
    command = ["sh", "-c", httpd_line(8080, "/tmp/www")]
    started = {}
    names = [f"{label}-{i}" for i in range(n)]
    if burst:
        lock = threading.Lock()

        def create(chunk):
            conn = api.conn()
            for name in chunk:
                t = time.monotonic()
                api.request(conn, "POST", f"/api/v1/namespaces/{namespace}/pods", pod_manifest(name, label, command))
                with lock:
                    started[name] = t

        threads = [threading.Thread(target=create, args=(names[i::10],)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not watch.wait(names, 600):
            raise RuntimeError("burst pods not all ready")
    else:
        conn = api.conn()
        for name in names:
            started[name] = time.monotonic()
            api.request(conn, "POST", f"/api/v1/namespaces/{namespace}/pods", pod_manifest(name, label, command))
            if not watch.wait([name], 120):
                raise RuntimeError(f"{name} not ready")
    latencies = [watch.ready_at[n] - started[n] for n in names]
    if not keep:
        delete_all(api, namespace, label)
    return latencies


def podman_cmd(args):
    return ["podman", "--root", args.podman_root, "--runroot", args.podman_runroot, "--runtime", "runc",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file"]


# Warm-up starts listen this far above their runner's ports, clear of the measured ones.
WARMUP_PORT_OFFSET = 900


def podman_latency(args, n, burst, label=None, keep=False, port_offset=0):
    base = podman_cmd(args)
    ports = [args.podman_port_base + port_offset + i for i in range(n)]
    names = [f"berth-bench-{os.getpid()}-{label or ('b' if burst else 's')}{i}" for i in range(n)]

    def run(i):
        t = time.monotonic()
        subprocess.run(base + ["run", "-d", "--rm", "--name", names[i], "--ulimit", "nofile=4096:4096",
                               "--ulimit", "nproc=4096:4096", "-p", f"127.0.0.1:{ports[i]}:8080", args.podman_image,
                               "sh", "-c", httpd_line(8080, "/tmp/www")],
                       check=True, stdout=subprocess.DEVNULL)
        return t

    latencies = [None] * n
    if burst:
        starts = [None] * n
        procs = []
        for i in range(n):
            starts[i] = time.monotonic()
            procs.append(subprocess.Popen(base + ["run", "-d", "--rm", "--name", names[i], "--ulimit",
                                                  "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "-p",
                                                  f"127.0.0.1:{ports[i]}:8080", args.podman_image, "sh", "-c",
                                                  httpd_line(8080, "/tmp/www")], stdout=subprocess.DEVNULL))
        done = [False] * n
        end = time.monotonic() + 600
        while not all(done) and time.monotonic() < end:
            for i in range(n):
                if not done[i] and wait_http("127.0.0.1", ports[i], 0):
                    latencies[i] = time.monotonic() - starts[i]
                    done[i] = True
            time.sleep(0.001)
        for p in procs:
            p.wait()
    else:
        for i in range(n):
            t = run(i)
            if not wait_http("127.0.0.1", ports[i], 60):
                raise RuntimeError(f"podman container {names[i]} never served")
            latencies[i] = time.monotonic() - t
    if not keep:
        subprocess.run(base + ["rm", "-f", "-t", "0"] + names, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if any(l is None for l in latencies):
        raise RuntimeError("podman burst: not every container served")
    return latencies


def fork_latency(args, n, burst, keep=None, port_offset=0):
    """`keep`: a list that takes the started processes instead of killing them at the end."""
    ports = [args.fork_port_base + port_offset + i for i in range(n)]
    root = tempfile.mkdtemp(prefix="berth-bench-fork-")
    procs, starts, latencies = [], [None] * n, [None] * n
    try:
        if burst:
            for i in range(n):
                starts[i] = time.monotonic()
                procs.append(subprocess.Popen(["sh", "-c", httpd_line(ports[i], f"{root}/{i}", "127.0.0.1:")]))
            done = [False] * n
            end = time.monotonic() + 120
            while not all(done) and time.monotonic() < end:
                for i in range(n):
                    if not done[i] and wait_http("127.0.0.1", ports[i], 0):
                        latencies[i] = time.monotonic() - starts[i]
                        done[i] = True
        else:
            for i in range(n):
                t = time.monotonic()
                procs.append(subprocess.Popen(["sh", "-c", httpd_line(ports[i], f"{root}/{i}", "127.0.0.1:")]))
                if not wait_http("127.0.0.1", ports[i], 30):
                    raise RuntimeError("fork/exec httpd never served")
                latencies[i] = time.monotonic() - t
    finally:
        if keep is None:
            for p in procs:
                p.kill()
                p.wait()
        else:
            keep.extend(procs)
    return latencies


def rss_kib(pid, field="Rss"):
    """A field of the process's memory totals in KiB; "Private" is Private_Clean + Private_Dirty:
    the pages no other process maps, which is what this process alone costs."""
    fields = ("Private_Clean", "Private_Dirty") if field == "Private" else (field,)
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name = line.split(":", 1)[0]
                if name in fields:
                    total += int(line.split()[1])
    except OSError:
        pass
    return total


def shim_pids(data_dir):
    marker = f"{data_dir}/node/"  # node/run/pods/ (or node/pods/ before the run tmpfs)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "__berth-node-shim" in cmdline and marker in cmdline:
            pids.append(int(entry))
    return pids


def density(api, args, n, namespace="default"):
    label = "density"
    watch = ReadyWatch(api, namespace, f"bench%3D{label}")
    names = [f"{label}-{i}" for i in range(n)]
    t0 = time.monotonic()
    lock = threading.Lock()

    def create(chunk):
        conn = api.conn()
        for name in chunk:
            api.request(conn, "POST", f"/api/v1/namespaces/{namespace}/pods",
                        pod_manifest(name, label, ["busybox", "sleep", "1000000"], probe=False))

    threads = [threading.Thread(target=create, args=(names[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not watch.wait(names, 3600, key="running"):
        raise RuntimeError(f"only {len(watch.running)} of {n} density pods running")
    elapsed = time.monotonic() - t0
    time.sleep(5)  # let the agent settle (status writes) before measuring
    server_rss, server_pss = rss_kib(args.server_pid), rss_kib(args.server_pid, "Pss")
    shims = shim_pids(args.data_dir)
    shim_rss = sum(rss_kib(p) for p in shims)
    shim_pss = sum(rss_kib(p, "Pss") for p in shims)
    shim_private = sum(rss_kib(p, "Private") for p in shims)
    result = {
        "pods": n, "seconds_to_all_running": elapsed, "shims": len(shims),
        "server_rss_mib": server_rss / 1024, "server_pss_mib": server_pss / 1024,
        "shims_rss_mib": shim_rss / 1024, "shims_pss_mib": shim_pss / 1024,
        "shims_private_mib": shim_private / 1024, "shim_private_kib": shim_private / max(len(shims), 1),
        "per_pod_rss_kib": (server_rss + shim_rss) / n, "per_pod_pss_kib": (server_pss + shim_pss) / n,
    }
    # Report before the (long) clean-up, so an interrupted run still has its figures.
    print_report({"latency": [], "density": result})
    delete_all(api, namespace, label, timeout=1800)
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--density", type=int, default=1000)
    p.add_argument("--podman-image", default="localhost/berth-bench-busybox")
    p.add_argument("--podman-root", required=True)
    p.add_argument("--podman-runroot", required=True)
    p.add_argument("--podman-port-base", type=int, default=24000)
    p.add_argument("--fork-port-base", type=int, default=25000)
    p.add_argument("--only", default="latency,density")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if args.n >= WARMUP_PORT_OFFSET:
        p.error(f"--n must be below {WARMUP_PORT_OFFSET} (the warm-up starts' ports are above the measured ones)")
    api = Api(args.kubeconfig)
    results = {"latency": [], "density": None}
    if "latency" in args.only:
        # Each series begins with one unmeasured start of its runner, right before it: a start
        # after the machine sat idle (even the fraction of a second between two series) runs
        # slower, and the first start after a runner comes up pays one-time costs; the figures
        # leave both out for all three runners alike. The warm-ups keep running until the end
        # (on ports apart), so no measured start overlaps the teardown of a warm-up (for Berth
        # and podman a container's removal goes on in the kernel after the API call returns).
        # Before each series (and its warm-up) the script waits for the machine to quiet down
        # (`settle`): the previous series' teardown is not the next runner's to pay for.
        warm_processes = []
        warm_podman = []
        warm_labels = []

        def warm_up(name, k):
            if name == "fork/exec":
                fork_latency(args, 1, False, keep=warm_processes, port_offset=WARMUP_PORT_OFFSET + k)
            elif name == "podman":
                podman_latency(args, 1, False, label=f"w{k}-", keep=True, port_offset=WARMUP_PORT_OFFSET + k)
                warm_podman.append(f"berth-bench-{os.getpid()}-w{k}-0")
            else:
                berth_latency(api, 1, False, label=f"start-warmup{k}", keep=True)
                warm_labels.append(f"start-warmup{k}")

        for k, burst in enumerate((False, True)):
            mode = "burst" if burst else "sequential"
            for name, fn in (("fork/exec", lambda: fork_latency(args, args.n, burst)),
                             ("podman", lambda: podman_latency(args, args.n, burst)),
                             ("berth", lambda: berth_latency(api, args.n, burst))):
                waited = settle()
                print(f"... {name} {mode} x{args.n} (one warm-up start first, after {waited:.1f} s for the machine"
                      " to quiet down)", file=sys.stderr, flush=True)
                warm_up(name, k)
                results["latency"].append(summary(name, mode, fn()))
        for p in warm_processes:
            p.kill()
            p.wait()
        subprocess.run(podman_cmd(args) + ["rm", "-f", "-t", "0"] + warm_podman,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for label in warm_labels:
            delete_all(api, "default", label)
    if "density" in args.only and args.density > 0:
        print(f"... density x{args.density}", file=sys.stderr, flush=True)
        results["density"] = density(api, args, args.density)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print_report({"latency": results["latency"], "density": None})


def print_report(results):
    rows = {(r["runner"], r["mode"]): r for r in results["latency"]}
    if rows:
        print("\nPod start latency, start request -> serving (ms)")
        print(f"{'mode':<11} {'runner':<10} {'n':>4} {'p50':>9} {'p99':>9} {'max':>9}   p99 ratio")
        for mode in ("sequential", "burst"):
            berth = rows.get(("berth", mode))
            for runner in ("berth", "podman", "fork/exec"):
                r = rows.get((runner, mode))
                if not r:
                    continue
                ratio = ""
                if berth and runner != "berth":
                    ratio = f"berth/{runner} = {berth['p99_ms'] / r['p99_ms']:.2f}x"
                print(f"{mode:<11} {runner:<10} {r['n']:>4} {r['p50_ms']:>9.1f} {r['p99_ms']:>9.1f} {r['max_ms']:>9.1f}   {ratio}")
    d = results.get("density")
    if d:
        print(f"\nDensity: {d['pods']} pods running after {d['seconds_to_all_running']:.0f} s; {d['shims']} shims")
        print(f"  server RSS {d['server_rss_mib']:.1f} MiB (PSS {d['server_pss_mib']:.1f}), shims RSS {d['shims_rss_mib']:.1f} MiB"
              f" (PSS {d['shims_pss_mib']:.1f}, private {d['shims_private_mib']:.1f}: {d['shim_private_kib']:.0f} KiB a shim)")
        print(f"  Berth's memory per running pod: RSS {d['per_pod_rss_kib']:.0f} KiB, PSS {d['per_pod_pss_kib']:.0f} KiB")


if __name__ == "__main__":
    main()
