#!/usr/bin/env python3
"""Time from a Service selector change to every new request landing on the new pods.

Sends the selector PATCH straight to the API (no kubectl start-up in the measurement), then
asks the router over one keep-alive connection as fast as it answers until 50 answers in a
row come from the new colour. Prints one latency in milliseconds per switch.

usage: switch.py API_PORT TOKEN ROUTER_PORT HOST SWITCHES
"""
import http.client
import json
import ssl
import sys
import time

api_port, token, router_port, host, switches = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def patch(colour):
    c = http.client.HTTPSConnection("127.0.0.1", int(api_port), context=ctx)
    body = json.dumps({"spec": {"selector": {"app": "web", "version": colour}}})
    c.request("PATCH", "/api/v1/namespaces/default/services/web", body,
              {"Authorization": "Bearer " + token, "Content-Type": "application/merge-patch+json"})
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status


router = http.client.HTTPConnection("127.0.0.1", router_port)


def colour_now():
    router.request("GET", "/", headers={"Host": host})
    r = router.getresponse()
    return r.read().decode().strip()


results = []
for i in range(switches):
    target = "green" if i % 2 == 0 else "blue"
    t0 = time.monotonic()
    patch(target)
    streak, first = 0, None
    while streak < 50:
        if colour_now() == target:
            if streak == 0:
                first = time.monotonic()
            streak += 1
        else:
            streak = 0
        if time.monotonic() - t0 > 30:
            sys.exit("selector change not followed within 30 s")
    results.append((first - t0) * 1000)
    time.sleep(0.5)
print(" ".join(f"{x:.1f}" for x in results))
