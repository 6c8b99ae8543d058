#!/usr/bin/env python3
"""Does a template's pool follow demand? Back-to-back runs and bursts of concurrent runs of print(1), on a fresh
server and again once the pool has seen that demand, with the pool's target, readiness and refill time.

Usage: bench/pool_demand.py [--runtime gvisor] [--template python-data-analysis] [--series 20] [--burst 10]
                            [--rounds 2] [--env KEY=VALUE ...]
Starts artifacts/cli/sandboxvm serve with the runtime on a free loopback port (bench/run_latency.py's way), waits
until the template's pool is full, then per round: SERIES runs back to back (each waits for the previous one,
never for the pool), a wait until the pool is back at its target (timed), BURST runs at once (one thread each),
and that wait again. Round 1 meets a fresh server; later rounds a pool that has seen the demand. --env passes
server settings (e.g. SandboxVM__PoolRefillConcurrency=2). Writes a Markdown report to bench/results/.
"""
import argparse, datetime, os, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_latency import PROGRAMS, host_baseline, machine, pct, post, serving, templates_of, wait_for_pools, describe  # noqa: E402


def dirty(repo):
    """Whether the checkout has changes beyond its commit (a template edited for the run, say)."""
    try:
        return bool(subprocess.run(["git", "-C", repo, "status", "--porcelain"], capture_output=True, text=True, check=True).stdout.strip())
    except (subprocess.CalledProcessError, OSError):
        return False


def pool(url, name):
    return templates_of(url)[name]["pool"]


class Sampler:
    """Polls the pool's status every 100 ms while a phase runs: the highest target and the lowest ready count seen."""

    def __init__(self, url, name):
        self.url, self.name, self.stop = url, name, threading.Event()
        self.max_target, self.min_ready = 0, 1 << 30
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop.is_set():
            p = pool(self.url, self.name)
            self.max_target = max(self.max_target, p["target"])
            self.min_ready = min(self.min_ready, p["ready"])
            self.stop.wait(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        self.thread.join()


def refill(url, name, timeout_s=300):
    """Seconds until ready >= target (the target read each time), and the pool then."""
    start = time.monotonic()
    while True:
        p = pool(url, name)
        if p["ready"] >= p["target"] and p["starting"] == 0:
            return time.monotonic() - start, p
        if time.monotonic() - start > timeout_s:
            return None, p
        time.sleep(0.1)


def run_one(url, name, code):
    ms, result = post(url, {"template": name, "code": code})
    if result["status"] != "ok":
        raise SystemExit(f"{name}: run failed: {result}")
    return ms, result["metrics"]["vm_source"]


def series(url, name, code, n):
    return [run_one(url, name, code) for _ in range(n)]


def burst(url, name, code, n):
    out, errors = [None] * n, []

    def one(i):
        try:
            out[i] = run_one(url, name, code)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"burst failed: {errors[0]}")
    return out, (time.perf_counter() - start) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runtime", default="gvisor")
    ap.add_argument("--template", default="python-data-analysis")
    ap.add_argument("--series", type=int, default=20)
    ap.add_argument("--burst", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server's environment")
    args = ap.parse_args()
    name = args.template
    source, code, compile_cmd, run_cmd = PROGRAMS[name]
    env = dict(e.split("=", 1) for e in args.env)
    log_dir = tempfile.mkdtemp(prefix="sandboxvm-bench-")
    phases = []
    loads = []
    with serving(args.runtime, log_dir, env=env) as url:
        wait_for_pools(url, [name])
        t = templates_of(url)[name]
        accel = t.get("accel") or "-"
        post(url, {"template": name, "code": code})  # warm caches once; not counted
        secs, p = refill(url, name)
        print(f"fresh pool: {p}", flush=True)
        for rnd in range(1, args.rounds + 1):
            for kind, n in (("back to back", args.series), ("burst", args.burst)):
                before = pool(url, name)
                with Sampler(url, name) as s:
                    if kind == "burst":
                        rows, total = burst(url, name, code, n)
                    else:
                        start = time.perf_counter()
                        rows = series(url, name, code, n)
                        total = (time.perf_counter() - start) * 1000
                    secs, after = refill(url, name)
                loads.append(float(open("/proc/loadavg").read().split()[0]))
                walls = [r[0] for r in rows]
                sources = {}
                for _, src in rows:
                    sources[src] = sources.get(src, 0) + 1
                phases.append(dict(round=rnd, kind=kind, n=n, walls=walls, total=total, sources=sources, before=before,
                                   max_target=s.max_target, min_ready=s.min_ready, refill=secs, after=after))
                print(f"round {rnd} {kind} {n}: median {statistics.median(walls):.0f} ms, p95 {pct(walls, 95):.0f} ms, "
                      f"max {max(walls):.0f} ms, all {total:.0f} ms, {sources}; target {before['target']} -> {s.max_target} "
                      f"(ready {before['ready']}, lowest {s.min_ready}); back at target {after['target']} in "
                      f"{'-' if secs is None else f'{secs:.1f} s'}", flush=True)
    bare = host_baseline(source, code, compile_cmd, run_cmd, 20)
    b = statistics.median(bare)
    b95 = pct(bare, 95)

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = (f"`bench/pool_demand.py --runtime {args.runtime} --template {name} --series {args.series} --burst {args.burst} "
               f"--rounds {args.rounds}" + "".join(f" --env {e}" for e in args.env) + f"` at {describe(repo)}"
               + (" with uncommitted changes" if dirty(repo) else ""))
    lines = [
        f"# Pool under demand: back-to-back and burst, {stamp}",
        "",
        f"Machine: {machine()}; load average {min(loads):.1f}-{max(loads):.1f} at the ends of the phases.",
        f"Command: {command} (the server started by the script; runtime {args.runtime}, accel {accel}).",
        f"Template {name}, program `{code.strip()}`. Bare on the host (`{' '.join(run_cmd)}`, 20 runs): median {b:.1f} ms, p95 {b95:.1f} ms.",
        "Per phase: the wall time of each POST /v1/run (ms), where its sandbox came from (pool: taken ready; restore: started",
        "for the caller), the pool's target before the phase and the highest seen during it (polled every 100 ms), the lowest",
        "ready count seen, and the seconds from the phase's end until the pool was back at its target (ready >= target, none starting).",
        "",
        "| round | phase | runs | wall median | wall p95 | wall max | median/bare | p95/bare median | phase wall | vm_source | target before -> max | ready before, lowest | refill to target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ph in phases:
        w = ph["walls"]
        lines.append(
            f"| {ph['round']} | {ph['kind']} | {ph['n']} | {statistics.median(w):.0f} | {pct(w, 95):.0f} | {max(w):.0f} | "
            f"{statistics.median(w) / b:.1f}x | {pct(w, 95) / b:.1f}x | {ph['total']:.0f} | "
            + ", ".join(f"{k} {v}" for k, v in sorted(ph["sources"].items()))
            + f" | {ph['before']['target']} -> {ph['max_target']} | {ph['before']['ready']}, {ph['min_ready']} | "
            + ("not within 300 s" if ph["refill"] is None else f"{ph['refill']:.1f} s to {ph['after']['target']}") + " |")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"pool-demand-{args.runtime}-{stamp}.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
