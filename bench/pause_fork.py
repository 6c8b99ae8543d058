#!/usr/bin/env python3
"""Pause, resume and fork of a python-data-analysis sandbox holding a 100 MB DataFrame (issue 13).

Usage: bench/pause_fork.py --runtimes gvisor,qemu [--reps 3] [--cli PATH]
Starts `sandboxvm serve` once per runtime (qemu under TCG) on a free loopback port with its own state
directory under /var/tmp, waits for the template's pool, then per repetition: creates a sandbox, builds
the DataFrame (1,310,720 x 10 float64 = 100 MiB), reads the guest's used memory, pauses it (wall time,
size on disk), resumes it and runs print(len(df)) (wall time of both), forks it into 3 and runs
print(len(df)) in the three at once (wall time from the fork request to the last answer), reads each
fork's host memory from its cgroup, and deletes everything. Writes a Markdown report to bench/results/.
"""
import argparse, datetime, json, os, platform, signal, statistics, subprocess, tempfile, threading, time, urllib.error, urllib.request

from run_latency import free_port  # same directory

TEMPLATE = "python-data-analysis"
BUILD_DF = ("import numpy as np, pandas as pd\n"
            "df = pd.DataFrame(np.random.default_rng().random((1310720, 10)))\n"
            "print(int(df.memory_usage(index=False).sum()))\n")
GUEST_USED = ("m = dict(l.split(':') for l in open('/proc/meminfo'))\n"
              "kb = lambda k: int(m[k].split()[0])\n"
              "print((kb('MemTotal') - kb('MemFree')) * 1024)\n")
CGROUPS = "/sys/fs/cgroup/memory/sandboxvm"


def call(url, method, path, body=None, timeout=600):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method, headers={"content-type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {path} answered {e.code}: {e.read().decode(errors='replace')}")
    return (time.perf_counter() - start) * 1000, (json.loads(text) if text else None)


def run(url, sid, code):
    ms, result = call(url, "POST", f"/v1/sandboxes/{sid}/run", {"code": code})
    if result["status"] != "ok":
        raise SystemExit(f"run in {sid} failed: {result}")
    return ms, result["stdout"].strip()


def pool_full(url):
    _, data = call(url, "GET", "/v1/templates", timeout=30)
    for t in data["templates"]:
        if t["name"] == TEMPLATE:
            p = t.get("pool")
            return p is None or p["ready"] >= p["target"]
    return False


def cgroup_usage():
    usage = {}
    if os.path.isdir(CGROUPS):
        for name in os.listdir(CGROUPS):
            try:
                with open(os.path.join(CGROUPS, name, "memory.usage_in_bytes")) as f:
                    usage[name] = int(f.read())
            except OSError:
                pass
    return usage


def wait_pool(url, deadline_s=900):
    deadline = time.monotonic() + deadline_s
    while not pool_full(url):
        if time.monotonic() > deadline:
            raise SystemExit("the pool did not fill")
        time.sleep(0.5)


def measure(url, reps):
    rows = []
    for rep in range(reps):
        wait_pool(url)
        _, info = call(url, "POST", "/v1/sandboxes", {"template": TEMPLATE, "timeout_s": 3600})
        sid = info["id"]
        made = [sid]
        try:
            _, df_bytes = run(url, sid, BUILD_DF)
            _, used = run(url, sid, GUEST_USED)
            pause_ms, paused = call(url, "POST", f"/v1/sandboxes/{sid}/pause")
            assert paused["state"] == "paused", paused
            resume_ms, resumed = call(url, "POST", f"/v1/sandboxes/{sid}/resume")
            first_ms, out = run(url, sid, "print(len(df))")
            assert out == "1310720", out
            wait_pool(url)
            before = cgroup_usage()
            start = time.perf_counter()
            _, forked = call(url, "POST", f"/v1/sandboxes/{sid}/fork", {"count": 3})
            fork_ms = (time.perf_counter() - start) * 1000
            forks = [s["id"] for s in forked["sandboxes"]]
            made += forks
            answers = {}
            threads = [threading.Thread(target=lambda f=f: answers.__setitem__(f, run(url, f, "print(len(df))")[1])) for f in forks]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            fork_total_ms = (time.perf_counter() - start) * 1000
            assert all(answers.get(f) == "1310720" for f in forks), answers
            after = cgroup_usage()
            new = [after[k] for k in after if k not in before]
            rows.append({
                "df_bytes": int(df_bytes), "guest_used": int(used),
                "pause_ms": pause_ms, "server_pause_ms": paused["last_pause_ms"], "paused_bytes": paused["paused_bytes"],
                "resume_ms": resume_ms, "server_resume_ms": resumed["last_resume_ms"], "first_run_ms": first_ms,
                "resume_to_len_ms": resume_ms + first_ms,
                "fork_ms": fork_ms, "fork3_to_len_ms": fork_total_ms,
                "fork_cgroup_bytes": sorted(new),
            })
            print(json.dumps(rows[-1]), flush=True)
        finally:
            for s in made:
                try:
                    call(url, "DELETE", f"/v1/sandboxes/{s}")
                except SystemExit:
                    pass
    return rows


def serve_and_measure(cli, runtime, reps, log_dir):
    url = f"http://127.0.0.1:{free_port()}"
    env = dict(os.environ)
    env["SandboxVM__StateDir"] = tempfile.mkdtemp(prefix=f"sandboxvm-bench-state-{runtime}-", dir="/var/tmp")
    if runtime == "qemu":
        env["SandboxVM__Accel"] = "tcg"
    log = open(os.path.join(log_dir, f"serve-{runtime}.log"), "w")
    server = subprocess.Popen([cli, "serve", "--runtime", runtime, "--url", url], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        deadline = time.monotonic() + 900
        while True:
            try:
                pool_full(url)
                break
            except (OSError, SystemExit):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the {runtime} server did not come up; see {log.name}")
                time.sleep(0.5)
        return measure(url, reps)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runtimes", default="gvisor,qemu")
    ap.add_argument("--reps", type=int, default=3)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--cli", default=os.path.join(repo, "artifacts", "cli", "sandboxvm"))
    args = ap.parse_args()
    log_dir = tempfile.mkdtemp(prefix="sandboxvm-bench-")
    results = {rt: serve_and_measure(args.cli, rt, args.reps, log_dir) for rt in args.runtimes.split(",")}
    now = datetime.datetime.now(datetime.timezone.utc)
    mib = lambda b: f"{b / 2**20:.0f}"
    lines = [
        f"# Pause, resume, fork of a 100 MB DataFrame sandbox ({now:%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `bench/pause_fork.py --runtimes {args.runtimes} --reps {args.reps}` (servers started by the script, one at a time; qemu under TCG).",
        f"Host: {platform.node()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end.",
        "Template python-data-analysis (1024 MiB guest). Medians over the repetitions; every repetition is in the JSON below.",
        "",
        "| runtime | guest used MiB | paused on disk MiB | pause s (target 3) | resume s | resume + print(len(df)) s (target 1.5) | fork 3 until all answered len(df) s (target 3) | host memory per fork MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rt, rows in results.items():
        forks = [b for r in rows for b in r["fork_cgroup_bytes"]]
        lines.append(f"| {rt} | {mib(med(rows, 'guest_used'))} | {mib(med(rows, 'paused_bytes'))} | {med(rows, 'pause_ms') / 1000:.2f} | "
                     f"{med(rows, 'resume_ms') / 1000:.2f} | {med(rows, 'resume_to_len_ms') / 1000:.2f} | {med(rows, 'fork3_to_len_ms') / 1000:.2f} | "
                     f"{mib(statistics.median(forks)) if forks else 'n/a'} |")
    lines += ["", "```json", json.dumps(results, indent=1), "```", ""]
    os.makedirs(os.path.join(repo, "bench", "results"), exist_ok=True)
    path = os.path.join(repo, "bench", "results", f"pause-fork-{now:%Y-%m-%dT%H%MZ}.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines[:12 + len(results)]))
    print(path)


if __name__ == "__main__":
    main()
