#!/usr/bin/env python3
"""POST /v1/run latency per template against a bare run of the same trivial program on the host.

Usage: bench/run_latency.py [--url http://127.0.0.1:8000] [--runs 30]
Needs a running server (scripts/serve.sh). Writes a Markdown report to bench/results/.
"""
import argparse, datetime, json, os, platform, shutil, statistics, subprocess, tempfile, time, urllib.request

PROGRAMS = {
    # /usr/bin/python3, not a PATH shim (pyenv's adds tens of ms of bash).
    "python-data-analysis": ("main.py", "print(1)\n", None, ["/usr/bin/python3", "main.py"]),
    "cpp-algorithm": ("main.cpp", "#include <cstdio>\nint main(){std::puts(\"1\");}\n",
                      ["g++", "-O2", "-o", "main", "main.cpp"], ["./main"]),
    "go-algorithm": ("main.go", "package main\nimport \"fmt\"\nfunc main(){fmt.Println(1)}\n",
                     ["go", "build", "-o", "main", "main.go"], ["./main"]),
}


def pct(values, p):
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def post(url, body):
    req = urllib.request.Request(url + "/v1/run", data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        result = json.load(r)
    return (time.perf_counter() - start) * 1000, result


def host_baseline(source, code, compile_cmd, run_cmd, runs):
    """Bare run on the host, compile included as the sandbox does it: the floor the sandbox is measured against."""
    if shutil.which(run_cmd[0] if compile_cmd is None else compile_cmd[0]) is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, source), "w") as f:
            f.write(code)
        env = dict(os.environ, GOCACHE=os.path.join(d, "gocache"), GO111MODULE="off")
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            if compile_cmd:
                subprocess.run(compile_cmd, cwd=d, check=True, env=env, capture_output=True)
            subprocess.run(run_cmd, cwd=d, check=True, env=env, capture_output=True)
            times.append((time.perf_counter() - start) * 1000)
        return times


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    return f"{os.cpu_count()} cores, {cpu}, {int(mem) // 1024 // 1024} GiB, kernel {platform.release()}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()

    with urllib.request.urlopen(args.url + "/v1/templates") as r:
        templates = {t["name"]: t for t in json.load(r)["templates"]}
    rows = []
    for name, (source, code, compile_cmd, run_cmd) in PROGRAMS.items():
        if name not in templates or not templates[name]["available"]:
            continue
        post(args.url, {"template": name, "code": code})  # warm caches once; not counted
        wall, host_ms, startup, run_ms = [], [], [], []
        for _ in range(args.runs):
            ms, result = post(args.url, {"template": name, "code": code})
            if result["status"] != "ok":
                raise SystemExit(f"{name}: run failed: {result}")
            m = result["metrics"]
            wall.append(ms); host_ms.append(m["host_ms"]); startup.append(m["startup_ms"]); run_ms.append(m["run_ms"] + m["compile_ms"])
        base = host_baseline(source, code, compile_cmd, run_cmd, args.runs)
        rows.append((name, templates[name]["runtime"], wall, startup, run_ms, host_ms, base))
        print(f"{name}: median {statistics.median(wall):.1f} ms, p95 {pct(wall, 95):.1f} ms")

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    lines = [
        f"# POST /v1/run latency, {stamp}",
        "",
        f"Machine: {machine()}. Runs per template: {args.runs} (after one warm-up run).",
        "Command: `bench/run_latency.py` against `scripts/serve.sh`. Baseline: the same program compiled (C++/Go)",
        "and run bare on the host each time, as the sandbox does; the host's go build cache is warm after the first run.",
        "",
        "| template | runtime | wall median ms | wall p95 ms | startup median | compile+run median | host_ms median | host bare median ms | sandbox/bare |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runtime, wall, startup, run_ms, host_ms, base in rows:
        b = statistics.median(base) if base else None
        ratio = f"{statistics.median(wall) / b:.1f}x" if b else "-"
        lines.append(f"| {name} | {runtime} | {statistics.median(wall):.1f} | {pct(wall, 95):.1f} | {statistics.median(startup):.1f} | "
                     f"{statistics.median(run_ms):.1f} | {statistics.median(host_ms):.1f} | {f'{b:.1f}' if b else 'n/a'} | {ratio} |")
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    out = os.path.join(os.path.dirname(__file__), "results", f"run-latency-{stamp}.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
