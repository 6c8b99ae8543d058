#!/usr/bin/env python3
"""POST /v1/run latency per template against a bare run of the same trivial program on the host.

Usage: bench/run_latency.py [--url http://127.0.0.1:8000] [--runs 30] [--settle] [--templates a,b]
       bench/run_latency.py --runtimes process,gvisor,qemu [--runs 30] [--settle] [--templates a,b] [--before DIR]
The first form needs a running server (scripts/serve.sh). The second starts artifacts/cli/sandboxvm serve
once per runtime on a free loopback port (one after the other, never two at once), waits until every pool
is full, measures, stops it, and writes one table for all of them. --settle waits for a full pool before
every run (the pooled path); without it runs go back to back and the vm_source column says where each
sandbox came from. --before DIR: a checkout of an earlier commit with its own artifacts/ built
(scripts/build.sh, or the agent and CLI publish steps of it): each runtime is measured on that build first,
then on this one, in the same run and against the same bare baseline. --before-env KEY=VALUE (repeatable) sets
the before server's environment: with --before . it compares one build with a server option changed
(e.g. --before-env SandboxVM__PoolRefillHoldMs=0). Writes a Markdown report to bench/results/.
"""
import argparse, contextlib, datetime, json, os, platform, shutil, signal, socket, statistics, subprocess, tempfile, time, urllib.request

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


def templates_of(url):
    with urllib.request.urlopen(url + "/v1/templates") as r:
        return {t["name"]: t for t in json.load(r)["templates"]}


def wait_for_pools(url, names, timeout_s=900):
    deadline = time.monotonic() + timeout_s
    while True:
        ts = templates_of(url)
        if all(not ts[n].get("pool") or ts[n]["pool"]["ready"] >= ts[n]["pool"]["target"] for n in names if n in ts):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"pools did not fill within {timeout_s} s: {[(n, ts[n].get('pool')) for n in names if n in ts]}")
        time.sleep(0.1)


HOST_PHASE = "sandboxvm_server_run_host_phase_seconds_sum"


def host_phase_sums(url, template):
    """The server's running sums of where host_ms went, by part, for one-shot runs of template (seconds)."""
    with urllib.request.urlopen(url + "/metrics") as r:
        text = r.read().decode()
    sums = {}
    for line in text.splitlines():
        if line.startswith(HOST_PHASE + "{") and f'template="{template}"' in line and 'kind="run"' in line:
            labels, value = line[len(HOST_PHASE) + 1:].rsplit("} ", 1)
            phase = next(l.split("=", 1)[1].strip('"') for l in labels.split(",") if l.startswith("phase="))
            sums[phase] = float(value)
    return sums


def measure(url, runs, settle):
    """Rows of (template, runtime, accel, wall, startup, compile+run, host_ms, sources, host parts) for every available template.
    Host parts: each run's share of host_ms by part, from the /metrics sums before and after it (runs are one at a time)."""
    templates = templates_of(url)
    names = [n for n in PROGRAMS if n in templates and templates[n]["available"]]
    wait_for_pools(url, names)
    rows = []
    for name in names:
        source, code, _, _ = PROGRAMS[name]
        post(url, {"template": name, "code": code})  # warm caches once; not counted
        wall, host_ms, startup, run_ms, sources, parts = [], [], [], [], {}, {}
        for _ in range(runs):
            if settle:
                wait_for_pools(url, [name])
            before = host_phase_sums(url, name)
            ms, result = post(url, {"template": name, "code": code})
            for phase, total in host_phase_sums(url, name).items():
                parts.setdefault(phase, []).append((total - before.get(phase, 0.0)) * 1000)
            if result["status"] != "ok":
                raise SystemExit(f"{name}: run failed: {result}")
            m = result["metrics"]
            wall.append(ms); host_ms.append(m["host_ms"]); startup.append(m["startup_ms"]); run_ms.append(m["run_ms"] + m["compile_ms"])
            sources[m["vm_source"]] = sources.get(m["vm_source"], 0) + 1
        t = templates[name]
        rows.append((name, t["runtime"], t.get("accel") or "-", wall, startup, run_ms, host_ms, sources, parts))
        print(f"{name} on {t['runtime']}: median {statistics.median(wall):.1f} ms, p95 {pct(wall, 95):.1f} ms, {sources}", flush=True)
    return rows


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(runtime, log_dir, env=None, repo=None):
    """Starts the CLI's server (of repo: this checkout by default) with one runtime and yields its URL; stops it on exit (SIGTERM: it ends every sandbox)."""
    repo = repo or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cli = os.path.join(repo, "artifacts", "cli", "sandboxvm")
    url = f"http://127.0.0.1:{free_port()}"
    log = open(os.path.join(log_dir, f"serve-{runtime}-{os.path.basename(repo)}.log"), "w")
    server = subprocess.Popen([cli, "serve", "--runtime", runtime, "--url", url], stdout=log, stderr=subprocess.STDOUT, cwd=repo,
                              env=dict(os.environ, **(env or {})))
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                templates_of(url)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the {runtime} server did not come up; see {log.name}")
                time.sleep(0.5)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def serve_and_measure(runtime, runs, settle, log_dir, repo=None, label=None, env=None):
    with serving(runtime, log_dir, env=env, repo=repo) as url:
        rows = measure(url, runs, settle)
    return [(r[0], f"{r[1]} ({label})", *r[2:]) for r in rows] if label else rows


def describe(repo):
    """The commit a checkout is at (git describe), or its path when it is no git work tree (an exported tree)."""
    try:
        return subprocess.run(["git", "-C", repo, "log", "-1", "--format=%h"], capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, OSError):
        return repo


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--runtimes", help="comma-separated: start a server per runtime instead of using --url")
    ap.add_argument("--settle", action="store_true", help="wait for a full pool before every run")
    ap.add_argument("--templates", help="comma-separated: measure only these (default: every template with a program here)")
    ap.add_argument("--before", metavar="DIR", help="a checkout of an earlier commit with artifacts/ built: measured first, per runtime")
    ap.add_argument("--before-name", help="how the report names the --before build (default: its commit, or its path)")
    ap.add_argument("--before-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment of the --before server (e.g. a server option: --before . --before-env SandboxVM__X=0)")
    args = ap.parse_args()
    if args.templates:
        for name in set(PROGRAMS) - set(args.templates.split(",")):
            del PROGRAMS[name]

    if args.runtimes:
        log_dir = tempfile.mkdtemp(prefix="sandboxvm-bench-")
        rows = []
        before = args.before_name or (describe(args.before) if args.before else None)
        for runtime in args.runtimes.split(","):
            if args.before:
                rows += serve_and_measure(runtime, args.runs, args.settle, log_dir, repo=os.path.abspath(args.before), label=f"before: {before}",
                                          env=dict(e.split("=", 1) for e in args.before_env))
            rows += serve_and_measure(runtime, args.runs, args.settle, log_dir, label=f"this: {describe(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}" if args.before else None)
        command = f"`bench/run_latency.py --runtimes {args.runtimes} --runs {args.runs}{' --settle' if args.settle else ''}{' --templates ' + args.templates if args.templates else ''}{' --before ' + args.before if args.before else ''}{''.join(' --before-env ' + e for e in args.before_env)}` (each runtime's server started by the script, one at a time)"
    else:
        rows = measure(args.url, args.runs, args.settle)
        command = f"`bench/run_latency.py --runs {args.runs}{' --settle' if args.settle else ''}{' --templates ' + args.templates if args.templates else ''}` against `scripts/serve.sh`"
    bases = {name: host_baseline(*PROGRAMS[name], args.runs) for name in {r[0] for r in rows}}

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    load = open("/proc/loadavg").read().split()[0]
    lines = [
        f"# POST /v1/run latency, {stamp}",
        "",
        f"Machine: {machine()}; load average {load} at the end. Runs per template and runtime: {args.runs} (after one warm-up run)"
        + (", each after the pool was full again." if args.settle else ", back to back."),
        f"Command: {command}. Baseline: the same program compiled (C++/Go)",
        "and run bare on the host each time, as the sandbox does; the host's go build cache is warm after the first run.",
        "Times in ms. vm_source: where each run's sandbox came from (pool: taken ready; restore/boot: started for the run).",
        "",
        "| template | runtime | accel | wall median | wall p95 | startup median | compile+run median | host_ms median | host bare median | sandbox/bare | vm_source |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runtime, accel, wall, startup, run_ms, host_ms, sources, _ in rows:
        base = bases[name]
        b = statistics.median(base) if base else None
        ratio = f"{statistics.median(wall) / b:.1f}x" if b else "-"
        lines.append(f"| {name} | {runtime} | {accel} | {statistics.median(wall):.1f} | {pct(wall, 95):.1f} | {statistics.median(startup):.1f} | "
                     f"{statistics.median(run_ms):.1f} | {statistics.median(host_ms):.1f} | {f'{b:.1f}' if b else 'n/a'} | {ratio} | "
                     + ", ".join(f"{k} {v}" for k, v in sorted(sources.items())) + " |")
    order = ["attach", "prepare", "steps", "end_processes", "list", "channel", "artifacts", "other"]
    if any(r[8] for r in rows):
        lines += ["", "Where host_ms went (median per part over the runs, ms; `sandboxvm_server_run_host_phase_seconds`, docs/API.md):", "",
                  "| template | runtime | " + " | ".join(order) + " |", "|---|---|" + "---|" * len(order)]
        for name, runtime, *_, parts in rows:
            if parts:
                lines.append(f"| {name} | {runtime} | " + " | ".join(f"{statistics.median(parts[p]):.1f}" if p in parts else "-" for p in order) + " |")
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    kind = "runtime-compare" if args.runtimes else "run-latency"
    out = os.path.join(os.path.dirname(__file__), "results", f"{kind}-{stamp}.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
