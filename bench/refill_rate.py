#!/usr/bin/env python3
"""Pool refill under a steady request rate: POST /v1/run of a trivial program RATE times a second, N times,
against a server on 127.0.0.1:8000; prints wall/startup/host_ms medians and p95 and where each VM came from.
Usage: bench/refill_rate.py RATE N [TEMPLATE]"""
import json, time, urllib.request, statistics, sys
rate = float(sys.argv[1]); n = int(sys.argv[2]); tpl = sys.argv[3] if len(sys.argv) > 3 else "python-data-analysis"
code = {"python-data-analysis": "print(1)", "cpp-algorithm": "#include <bits/stdc++.h>\nint main(){std::cout<<1;}", "go-algorithm": "package main\nimport \"fmt\"\nfunc main(){fmt.Println(1)}"}[tpl]
rows = []
start = time.monotonic()
for i in range(n):
    due = start + i / rate
    if time.monotonic() < due: time.sleep(due - time.monotonic())
    t0 = time.monotonic()
    req = urllib.request.Request("http://127.0.0.1:8000/v1/run", json.dumps({"template": tpl, "code": code}).encode(), {"content-type": "application/json"})
    r = json.load(urllib.request.urlopen(req, timeout=120))
    rows.append(((time.monotonic() - t0) * 1000, r["metrics"]["vm_source"], r["metrics"]["startup_ms"], r["metrics"]["host_ms"], r["status"]))
def q(v, p): v = sorted(v); return v[min(len(v) - 1, int(p * len(v)))]
w = [r[0] for r in rows]; s = [r[2] for r in rows]; h = [r[3] for r in rows]
print(f"{tpl} at {rate}/s, {n} runs: wall median {statistics.median(w):.0f} p95 {q(w,.95):.0f} ms; startup median {statistics.median(s):.0f} p95 {q(s,.95):.0f} ms; host_ms median {statistics.median(h):.1f}; vm_source {dict((k, sum(1 for r in rows if r[1]==k)) for k in set(r[1] for r in rows))}; statuses {set(r[4] for r in rows)}")
