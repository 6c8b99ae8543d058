#!/usr/bin/env python3
"""CPU of idle sandboxes, and a pooled print(1) with them present against an empty server.

Creates N python-data-analysis sandboxes (one `x = 1` run each) on a running server, waits until the
server reports them frozen (unless it freezes nothing: SandboxVM__FreezeIdle=false), then sums utime+stime
from /proc over WINDOW seconds for every host process in a sandbox cgroup of the server (cgroup names carry
the server's pid: pool members count too). The host's MemAvailable before and after gives the memory per sandbox (creating stops early, and says so,
when MemAvailable falls under 1.5 GiB). Then 20 sequential pooled print(1) runs with the sandboxes
present, the sandboxes deleted, and 20 more on the emptied server.
Usage: bench/idle_cpu.py BASE_URL SERVER_PID N [WINDOW_S]   (root, on the server's host; SERVER_PID: the server process itself, e.g. from `ss -ltnp`)"""
import json, os, statistics, sys, time, urllib.request

base, server_pid, n = sys.argv[1].rstrip("/"), sys.argv[2], int(sys.argv[3])
window = float(sys.argv[4]) if len(sys.argv) > 4 else 10.0
floor_mib = 1536  # the bench stops creating before the host runs short (other work shares it)
hz = os.sysconf("SC_CLK_TCK")

def call(method, path, body=None, timeout=300):
    req = urllib.request.Request(base + path, None if body is None else json.dumps(body).encode(), {"content-type": "application/json"}, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        text = r.read()
        return json.loads(text) if text else None

def sandbox_ticks():
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                cg = f.read()
            if "/sandboxvm/" not in cg or f"-{server_pid}-" not in cg:
                continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return total

def mem_available_mib():
    with open("/proc/meminfo") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("MemAvailable:")) / 1024

def pooled_print(k=20):
    rows = []
    for _ in range(k):
        t0 = time.monotonic()
        r = call("POST", "/v1/run", {"template": "python-data-analysis", "code": "print(1)"})
        rows.append(((time.monotonic() - t0) * 1000, r["metrics"]["vm_source"], r["status"]))
    w = sorted(r[0] for r in rows)
    src = {s: sum(1 for r in rows if r[1] == s) for s in set(r[1] for r in rows)}
    return f"median {statistics.median(w):.0f} ms, p95 {w[min(len(w) - 1, int(.95 * len(w)))]:.0f} ms, vm_source {src}, statuses {set(r[2] for r in rows)}"

ids = []
avail_before = mem_available_mib()
t0 = time.monotonic()
try:
    for i in range(n):
        if mem_available_mib() < floor_mib:
            print(f"stopped at {i} sandboxes: host MemAvailable under {floor_mib} MiB")
            n = i
            break
        sb = call("POST", "/v1/sandboxes", {"template": "python-data-analysis"})
        ids.append(sb["id"])
        run = call("POST", f"/v1/sandboxes/{sb['id']}/run", {"code": "x = 1"})
        assert run["status"] == "ok", run
    created = time.monotonic() - t0
    freezes = call("GET", "/v1/sandboxes")
    deadline = time.monotonic() + 120
    frozen = 0
    while time.monotonic() < deadline:
        frozen = sum(1 for s in call("GET", "/v1/sandboxes")["sandboxes"] if s.get("frozen"))
        if frozen == n:
            break
        time.sleep(1)
    time.sleep(2)  # let the last freezes (and their runsc processes) finish before the window
    a = sandbox_ticks(); t = time.monotonic()
    time.sleep(window)
    used = (sandbox_ticks() - a) / hz / (time.monotonic() - t)
    print(f"{n} idle sandboxes ({frozen} frozen), created in {created:.0f} s: {used:.3f} of one core over {window:.0f} s")
    avail_after = mem_available_mib()
    print(f"host MemAvailable {avail_before:.0f} MiB before, {avail_after:.0f} MiB with them: "
          f"{(avail_before - avail_after) / n:.1f} MiB per sandbox; {avail_after / ((avail_before - avail_after) / n):.0f} more would fit")
    print(f"pooled print(1) with them present: {pooled_print()}")
finally:
    for i in ids:
        try:
            call("DELETE", f"/v1/sandboxes/{i}")
        except Exception as e:  # keep deleting the others
            print("delete", i, e, file=sys.stderr)
time.sleep(5)
print(f"pooled print(1) on the emptied server: {pooled_print()}")
