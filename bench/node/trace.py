#!/usr/bin/env python3
"""Where the one-after-another pod starts' time went, from the server's debug log
(`BERTH_LOG=warn,berth_node::runtime=debug`): p50 / p90 of each step, in milliseconds.

    python3 bench/node/trace.py WORK/server.err [--per-pod]

With `--per-pod`, one line per pod in start order instead (to see what the slowest starts
have in common).

Only the `start-seq-*` pods count (one at a time, so each container start belongs to the pod
whose sandbox came last).
"""
import re
import sys
from datetime import datetime

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LINE = re.compile(r"^(\S+Z)\s+DEBUG\s+berth_node::runtime:\s+(.*)$")


def when(stamp):
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1e3


def field(text, name):
    m = re.search(rf"\b{name}=(\S+)", text)
    return m.group(1).strip('"') if m else None


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")


def main(path, per_pod=False):
    pods = {}
    current = None
    for raw in open(path, errors="replace"):
        m = LINE.match(ANSI.sub("", raw.rstrip("\n")))
        if not m:
            continue
        t, text = when(m.group(1)), m.group(2)
        pod = field(text, "pod")
        if pod and pod.startswith("Some("):
            pod = pod[5:].rstrip(")").strip('"')
        if text.startswith("pod bound") and pod and pod.startswith("start-seq-"):
            pods[pod] = {"name": pod, "bound": t, "writes": []}
        elif text.startswith("sandbox namespaces ready") and pod in pods:
            pods[pod]["ns_at"] = t
        elif text.startswith("sandbox created") and pod in pods:
            current = pod
            pods[pod]["sandbox"] = float(field(text, "total_ms"))
            pods[pod]["sandbox_at"] = t
        elif text.startswith("container started") and current in pods and "started" not in pods[current]:
            p = pods[current]
            p["started"] = t
            p["prepare"] = float(field(text, "prepare_ms"))
            p["shim"] = float(field(text, "shim_ms"))
            waited = field(text, "waited_ms")
            if waited is not None:
                p["waited"] = float(waited)
            # Set when the container was created while the network was configured, then
            # started: the time from "create" to "start".
            network = field(text, "network_ms")
            if network is not None:
                p["network"] = float(network)
            c = re.search(r"create ([\d.]+) ms, start ([\d.]+) ms", text)
            if c:
                p["create"], p["start"] = float(c.group(1)), float(c.group(2))
            w = re.search(r"waited ([\d.]+) ms for start", text)
            if w:
                p["start_wait"] = float(w.group(1))
        elif text.startswith("first readiness probe success") and current in pods:
            if "first_ready" not in pods[current]:
                pods[current]["first_ready"] = t
                pods[current]["rechecks"] = field(text, "rechecks")
                pods[current]["longest_recheck"] = field(text, "longest_recheck_ms")
        elif text.startswith("pod status written") and pod in pods:
            pods[pod]["writes"].append((t, field(text, "ready") == "true"))
    rows = {}

    def add(name, value):
        if value is not None:
            rows.setdefault(name, []).append(value)

    for p in pods.values():
        if "started" not in p:
            continue
        ready_at = next((t for t, ready in p["writes"] if ready), None)
        # "go" is the shim's first line: "create" (then "start" once the network is
        # configured) or "go" (create and start) when the sandbox came first.
        go_at = p["started"] - p["shim"]
        if "ns_at" in p:
            add("bound -> namespaces ready", p["ns_at"] - p["bound"])
        add("bound -> sandbox made", p["sandbox_at"] - p["bound"])
        add("sandbox", p["sandbox"])
        add("container preparation", p["prepare"])
        waiting_for = "the namespaces" if "network" in p else "the sandbox"
        add(f"prepared, waiting for {waiting_for}", p.get("waited"))
        if "ns_at" in p and "network" in p:
            add("namespaces ready -> go", go_at - p["ns_at"])
            add("go -> network configured", p["network"])
        add("go -> handshake" if "waited" in p else "shim spawn -> handshake", p["shim"])
        add("  libcontainer create", p.get("create"))
        add("  created, waiting for start", p.get("start_wait"))
        add("  libcontainer start", p.get("start"))
        add(
            "  shim exec and set-up",
            p["shim"] - p["create"] - p["start"] - p.get("start_wait", 0.0) if "create" in p else None,
        )
        if "first_ready" in p:
            add("container started -> first readiness success", p["first_ready"] - p["started"])
            if ready_at:
                add("readiness success -> Ready written", ready_at - p["first_ready"])
        if ready_at:
            add("bound -> Ready written", ready_at - p["bound"])
        add("status writes after the start", float(sum(1 for t, _ in p["writes"] if t >= p["started"])))
    # The client sees Ready, creates the next pod, and the node binds it (scheduler included).
    ordered = sorted(pods.values(), key=lambda p: p["bound"])
    for prev, nxt in zip(ordered, ordered[1:]):
        ready_at = next((t for t, ready in prev["writes"] if ready), None)
        if ready_at:
            add("Ready written -> next pod bound", nxt["bound"] - ready_at)
    if per_pod:
        print("pod                 bound->Ready  bound->go  sandbox  create   start  started->ready  ready->written"
              "  re-checks (longest ms)")
        cell = lambda value, width: f"{value:{width}.1f}" if value is not None else f"{'-':>{width}}"
        for p in ordered:
            ready_at = next((t for t, ready in p["writes"] if ready), None)
            started = "started" in p
            go = p["started"] - p["shim"] - p["bound"] if started else None
            first = p["first_ready"] - p["started"] if "first_ready" in p and started else None
            written = ready_at - p["first_ready"] if ready_at and "first_ready" in p else None
            print(f"{p['name']:<20}{cell(ready_at - p['bound'] if ready_at else None, 12)} {cell(go, 10)}"
                  f" {cell(p.get('sandbox'), 8)} {cell(p.get('create'), 7)} {cell(p.get('start'), 7)}"
                  f"{cell(first, 16)}{cell(written, 16)}"
                  f"  {p.get('rechecks') or '-'} ({p.get('longest_recheck') or '-'})")
        return
    print(f"{len(pods)} one-after-another pods; p50 / p90 ms")
    for name, values in rows.items():
        print(f"  {name:<46} {pct(values, 50):7.1f} / {pct(values, 90):7.1f}")


if __name__ == "__main__":
    main(sys.argv[1], "--per-pod" in sys.argv[2:])
