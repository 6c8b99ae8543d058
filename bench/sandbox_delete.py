#!/usr/bin/env python3
"""DELETE /v1/sandboxes/{id} latency of idle (frozen) sandboxes.

Usage: bench/sandbox_delete.py [--runtime gvisor] [--runs 10] [--template python-data-analysis]
Starts artifacts/cli/sandboxvm serve with the runtime (bench/run_latency.py's serving), then per run: create a
sandbox, run one statement in it, wait until the server has frozen it (idle), DELETE it and time the DELETE.
Writes a Markdown report to bench/results/.
"""
import argparse, datetime, json, os, statistics, tempfile, time, urllib.request

from run_latency import machine, pct, serving  # same directory


def call(url, method, path, body=None):
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(), method=method,
                                 headers={"content-type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        data = r.read()
    return (time.perf_counter() - start) * 1000, (json.loads(data) if data else None)


def wait_frozen(url, sid, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while True:
        _, info = call(url, "GET", f"/v1/sandboxes/{sid}")
        if info.get("frozen"):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"sandbox {sid} was not frozen within {timeout_s} s: {info}")
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runtime", default="gvisor")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--template", default="python-data-analysis")
    args = ap.parse_args()
    deletes = []
    with serving(args.runtime, tempfile.mkdtemp(prefix="sandboxvm-bench-")) as url:
        for _ in range(args.runs):
            _, sandbox = call(url, "POST", "/v1/sandboxes", {"template": args.template})
            sid = sandbox["id"]
            call(url, "POST", f"/v1/sandboxes/{sid}/run", {"code": "x = 1\n"})
            wait_frozen(url, sid)
            ms, _ = call(url, "DELETE", f"/v1/sandboxes/{sid}")
            deletes.append(ms)
            print(f"DELETE {ms:.0f} ms", flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    load = open("/proc/loadavg").read().split()[0]
    lines = [
        f"# DELETE of an idle sandbox, {stamp}",
        "",
        f"Machine: {machine()}; load average {load} at the end.",
        f"Command: `bench/sandbox_delete.py --runtime {args.runtime} --runs {args.runs} --template {args.template}`: per run a sandbox is",
        "created, runs `x = 1`, is left until the server froze it, then deleted; the DELETE's wall time in ms.",
        "",
        "| runtime | template | runs | median | p95 | max |",
        "|---|---|---|---|---|---|",
        f"| {args.runtime} | {args.template} | {len(deletes)} | {statistics.median(deletes):.1f} | {pct(deletes, 95):.1f} | {max(deletes):.1f} |",
    ]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"sandbox-delete-{stamp}.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
