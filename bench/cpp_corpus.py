#!/usr/bin/env python3
"""The C++ corpus (bench/corpus/cpp, 100 self-checking programs) through POST /v1/run, N in flight, per runtime.

Usage: bench/cpp_corpus.py [--runtimes process,gvisor] [--limit N] [--concurrency 2] [--go-runs 20]
                           [--templates cpp-algorithm,OTHER] [--extra-templates DIR]
For each runtime it starts artifacts/cli/sandboxvm serve (one runtime at a time, as run_latency.py does),
waits for the cpp-algorithm and go-algorithm pools, runs the whole corpus with --concurrency requests in
flight and checks that every program exited 0 and printed what it printed on the host, then runs the Go
hello world --go-runs times (each after the pool was full again). The host baseline compiles and runs
every program bare with the template's compile command, the same number in flight. --templates runs the
corpus against several C++ templates in one server, alternating program by program (a before/after
comparison: put the other variant in --extra-templates, a directory the server loads templates from).
Writes bench/results/cpp-corpus-<UTC>.md.
"""
import argparse, concurrent.futures, datetime, json, os, statistics, subprocess, tempfile, time, urllib.error

import yaml

from run_latency import machine, pct, post, serving, templates_of, wait_for_pools

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
CORPUS = os.path.join(BENCH, "corpus", "cpp")
GO_HELLO = "package main\nimport \"fmt\"\nfunc main(){fmt.Println(1)}\n"


def load():
    return open("/proc/loadavg").read().split()[0]


def corpus(limit):
    names = sorted(n for n in os.listdir(CORPUS) if n.endswith(".cpp"))[:limit]
    return [(n, open(os.path.join(CORPUS, n)).read()) for n in names]


def template_language(name, extra_dir):
    for d in ([extra_dir] if extra_dir else []) + [os.path.join(REPO, "templates")]:
        path = os.path.join(d, name + ".yaml")
        if os.path.exists(path):
            return yaml.safe_load(open(path))["language"]
    raise SystemExit(f"no template {name} in templates/ or --extra-templates")


def host_pch(lang, pch_dir):
    """Precompiles <bits/stdc++.h> into pch_dir as the cpp-algorithm template's build does (same -std/-O flags), so
    the bare baseline compiles as the sandbox does; returns the compile command that finds it first (-I)."""
    cc = lang["compile"][0]
    machine_, version = (subprocess.run([cc, f"-dump{k}"], capture_output=True, text=True, check=True).stdout.strip() for k in ("machine", "version"))
    header = f"/usr/include/{machine_}/c++/{version}/bits/stdc++.h"
    os.makedirs(os.path.join(pch_dir, "bits"), exist_ok=True)
    flags = [a for a in lang["compile"][1:] if a.startswith(("-std", "-O", "-pipe"))]
    subprocess.run([cc, *flags, "-x", "c++-header", "-o", os.path.join(pch_dir, "bits", "stdc++.h.gch"), header], check=True)
    return dict(lang, compile=[cc, "-I", pch_dir, *lang["compile"][1:]])


def host_run(lang, source, code):
    """Compiles and runs one program bare on the host with the template's commands: (compile ms, run ms, exit, stdout)."""
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, lang["source_file"]), "w") as f:
            f.write(code)
        start = time.perf_counter()
        c = subprocess.run(lang["compile"], cwd=d, capture_output=True, text=True)
        compiled = time.perf_counter()
        if c.returncode != 0:
            return (compiled - start) * 1000, 0.0, None, c.stderr
        r = subprocess.run(lang["run"], cwd=d, capture_output=True, text=True, timeout=60)
        return (compiled - start) * 1000, (time.perf_counter() - compiled) * 1000, r.returncode, r.stdout


def in_flight(jobs, concurrency, fn):
    """Runs fn(job) for every job with `concurrency` in flight; returns (results in job order, wall ms)."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(fn, jobs))
    return results, (time.perf_counter() - start) * 1000


def run_one(url, template, source, code):
    start = time.perf_counter()
    try:
        ms, result = post(url, {"template": template, "code": code})
    except (urllib.error.URLError, OSError) as e:
        return {"program": source, "template": template, "wall": (time.perf_counter() - start) * 1000, "error": str(e)}
    return {"program": source, "template": template, "wall": ms, "status": result["status"], "exit": result["exit_code"],
            "stdout": result["stdout"], "stderr": result["stderr"], "m": result["metrics"]}


def measure(url, templates, go_templates, programs, concurrency, go_runs):
    ts = templates_of(url)
    missing = [t for t in templates + go_templates if t not in ts or not ts[t]["available"]]
    if missing:
        raise SystemExit(f"templates not available: {missing}")
    wait_for_pools(url, templates + go_templates)
    for t in templates:  # warm caches once; not counted
        run_one(url, t, "hello", "#include <cstdio>\nint main(){std::puts(\"1\");}\n")
    for t in go_templates:
        run_one(url, t, "hello", GO_HELLO)
    wait_for_pools(url, templates + go_templates)
    # Alternating program by program, so each template meets the same load.
    jobs = [(t, name, code) for name, code in programs for t in templates]
    rows, wall = in_flight(jobs, concurrency, lambda j: run_one(url, *j))
    print(f"  corpus: {wall / 1000:.1f} s", flush=True)
    go = []
    for _ in range(go_runs):
        for t in go_templates:
            try:
                wait_for_pools(url, [t], timeout_s=60)
            except SystemExit:
                pass  # measured anyway; vm_source says it was not pooled
            go.append(run_one(url, t, "hello.go", GO_HELLO))
    return ts, rows, wall, go


def failures(rows, expected):
    bad = []
    for r in rows:
        want = expected.get(r["program"])
        if "error" in r:
            bad.append((r, f"request failed: {r['error']}"))
        elif r["status"] != "ok" or r["exit"] != 0:
            bad.append((r, f"status {r['status']}, exit {r['exit']}: {(r['stderr'] or r['stdout'])[-200:]!r}"))
        elif want is not None and r["stdout"] != want:
            bad.append((r, f"output differs from the host's: {r['stdout'][:120]!r} vs {want[:120]!r}"))
    return bad


def summary(values):
    return f"{statistics.median(values):.0f} | {pct(values, 95):.0f}" if values else "- | -"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runtimes", default="process,gvisor")
    ap.add_argument("--limit", type=int, help="the first N programs only (qemu under TCG is slow)")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--go-runs", type=int, default=20)
    ap.add_argument("--templates", default="cpp-algorithm", help="comma-separated C++ templates, alternated program by program")
    ap.add_argument("--go-templates", default="go-algorithm", help="comma-separated Go templates for the hello world, alternated")
    ap.add_argument("--variants-on", help="comma-separated runtimes that run every template of --templates/--go-templates; the others run the first only (default: all)")
    ap.add_argument("--reuse-host", help="host.json of an earlier run (its directory is printed at the end): skip the host baseline")
    ap.add_argument("--extra-templates", help="a directory of more templates (SANDBOXVM_TEMPLATES of the server)")
    ap.add_argument("--host-no-pch", action="store_true", help="the host baseline without the template's precompiled <bits/stdc++.h>")
    args = ap.parse_args()
    templates = args.templates.split(",")
    go_templates = args.go_templates.split(",")
    programs = corpus(args.limit)
    load_before = load()
    started = datetime.datetime.now(datetime.timezone.utc)

    # Host baseline: the first template's compile command, bare, as many in flight.
    lang = template_language(templates[0], args.extra_templates)
    log_dir = tempfile.mkdtemp(prefix="sandboxvm-bench-")
    if args.reuse_host:
        saved = json.load(open(args.reuse_host))
        lang, host_wall = saved["lang"], saved["wall"]
        host = [tuple(saved["rows"][name]) for name, _ in programs]
    else:
        with tempfile.TemporaryDirectory(prefix="sandboxvm-bench-pch-") as pch_dir:  # the PCH is 100 MB
            if not args.host_no_pch:
                lang = host_pch(lang, pch_dir)
            host, host_wall = in_flight(programs, args.concurrency, lambda p: host_run(lang, *p))
        with open(os.path.join(log_dir, "host.json"), "w") as f:
            json.dump({"lang": lang, "wall": host_wall, "rows": {name: list(h) for (name, _), h in zip(programs, host)}}, f)
    expected = {name: out for (name, _), (_, _, code, out) in zip(programs, host) if code == 0}
    host_bad = [(name, code, out[-200:]) for (name, _), (_, _, code, out) in zip(programs, host) if code != 0]
    print(f"host: {host_wall / 1000:.1f} s, {len(host_bad)} failed", flush=True)

    env = {"SANDBOXVM_TEMPLATES": os.path.abspath(args.extra_templates)} if args.extra_templates else None
    results = {}
    for runtime in args.runtimes.split(","):
        print(f"{runtime}: starting the server", flush=True)
        with serving(runtime, log_dir, env) as url:
            every = args.variants_on is None or runtime in args.variants_on.split(",")
            results[runtime] = measure(url, templates if every else templates[:1], go_templates if every else go_templates[:1],
                                       programs, args.concurrency, args.go_runs)
    load_after = load()

    stamp = started.strftime("%Y-%m-%dT%H%MZ")
    cmd = "bench/cpp_corpus.py " + " ".join(a for a in [
        f"--runtimes {args.runtimes}", f"--limit {args.limit}" if args.limit else "", f"--concurrency {args.concurrency}",
        f"--go-runs {args.go_runs}", f"--templates {args.templates}" if len(templates) > 1 else "",
        f"--go-templates {args.go_templates}" if len(go_templates) > 1 else "", f"--variants-on {args.variants_on}" if args.variants_on else "",
        f"--reuse-host {args.reuse_host}" if args.reuse_host else "",
        f"--extra-templates {args.extra_templates}" if args.extra_templates else "", "--host-no-pch" if args.host_no_pch else ""] if a)
    hc = [c for c, _, _, _ in host]
    hr = [r for _, r, _, _ in host]
    lines = [
        f"# C++ corpus through POST /v1/run, {stamp}",
        "",
        f"Machine: {machine()}. Load average (1 min) {load_before} before, {load_after} after.",
        f"Command: `{cmd}` (each runtime's server started by the script, one after the other).",
        f"Corpus: {len(programs)} programs of bench/corpus/cpp, {args.concurrency} requests in flight"
        + (f", templates {', '.join(templates)} alternated program by program" if len(templates) > 1 else "") + ".",
        f"Host bare: `{' '.join(lang['compile'])}` then `{' '.join(lang['run'])}` in a temporary directory, {args.concurrency} in flight: "
        f"{host_wall / 1000:.1f} s wall; per program compile median {statistics.median(hc):.0f} ms, run median {statistics.median(hr):.0f} ms"
        + (" (without a precompiled <bits/stdc++.h>)." if args.host_no_pch else
           "; <bits/stdc++.h> precompiled beforehand with the template's flags into the -I directory, as the template's image has it."),
        "",
        "Times in ms unless marked. wall: per request at the client; queue, startup, compile, run: the run's metrics (sums over the corpus "
        "in seconds); other = wall - (queue + startup + compile + run): HTTP, acquire, output and artifact collection, cleanup.",
        "",
        "| runtime | template | corpus wall (s) | vs process | vs host bare | wall median | wall p95 | compile median | run median | "
        "queue s | startup s | compile s | run s | other s | vm_source | failures |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    # With several templates the corpus wall is shared: each template's share is the sum of its walls / concurrency.
    share = {}
    for runtime, (ts, rows, wall, _) in results.items():
        ran = sorted({r["template"] for r in rows}, key=templates.index)
        for t in ran:
            rs = [r for r in rows if r["template"] == t]
            share[(runtime, t)] = wall if len(ran) == 1 else sum(r["wall"] for r in rs) / args.concurrency
    all_bad = []
    for runtime, (ts, rows, wall, _) in results.items():
        for t in sorted({r["template"] for r in rows}, key=templates.index):
            rs = [r for r in rows if r["template"] == t]
            ok = [r for r in rs if "m" in r]
            m = lambda k: [r["m"][k] for r in ok]
            other = sum(r["wall"] - (r["m"]["queue_ms"] + r["m"]["startup_ms"] + r["m"]["compile_ms"] + r["m"]["run_ms"]) for r in ok)
            sources = {}
            for r in ok:
                sources[r["m"]["vm_source"]] = sources.get(r["m"]["vm_source"], 0) + 1
            bad = failures(rs, expected)
            all_bad += [(runtime, r, why) for r, why in bad]
            w = share[(runtime, t)]
            p = share.get(("process", t)) or share.get(("process", templates[0]))
            lines.append(
                f"| {runtime} ({ts[t].get('accel') or '-'}) | {t} | {w / 1000:.1f} | {f'{w / p:.2f}x' if p else '-'} | {w / host_wall:.2f}x | "
                f"{summary([r['wall'] for r in rs])} | {statistics.median(m('compile_ms')) if ok else 0:.0f} | {statistics.median(m('run_ms')) if ok else 0:.0f} | "
                f"{sum(m('queue_ms')) / 1000:.1f} | {sum(m('startup_ms')) / 1000:.1f} | {sum(m('compile_ms')) / 1000:.1f} | {sum(m('run_ms')) / 1000:.1f} | "
                f"{other / 1000:.1f} | {', '.join(f'{k} {v}' for k, v in sorted(sources.items()))} | {len(bad)} |")
    lines += ["", f"Go hello world (`fmt.Println(1)`), {args.go_runs} runs per template one at a time"
              + (", templates alternated" if len(go_templates) > 1 else "") + ", each after the pool was full again (at most 60 s):", "",
              "| runtime | template | wall median | wall p95 | vs process (median) | compile median | run median | startup median | vm_source | failures |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    go_median = {(rt, t): statistics.median([r["wall"] for r in res[3] if r["template"] == t])
                 for rt, res in results.items() for t in {r["template"] for r in res[3]}}
    for runtime, (_, _, _, go_all) in results.items():
        for t in sorted({r["template"] for r in go_all}, key=go_templates.index):
            go = [r for r in go_all if r["template"] == t]
            ok = [r for r in go if "m" in r]
            sources = {}
            for r in ok:
                sources[r["m"]["vm_source"]] = sources.get(r["m"]["vm_source"], 0) + 1
            bad = [r for r in go if "m" not in r or r["status"] != "ok" or r["stdout"] != "1\n"]
            p = go_median.get(("process", t)) or go_median.get(("process", go_templates[0]))
            lines.append(f"| {runtime} | {t} | {summary([r['wall'] for r in go])} | {f'{go_median[(runtime, t)] / p:.2f}x' if p else '-'} | "
                         f"{statistics.median([r['m']['compile_ms'] for r in ok]) if ok else 0:.0f} | {statistics.median([r['m']['run_ms'] for r in ok]) if ok else 0:.0f} | "
                         f"{statistics.median([r['m']['startup_ms'] for r in ok]) if ok else 0:.0f} | {', '.join(f'{k} {v}' for k, v in sorted(sources.items()))} | {len(bad)} |")
    lines += ["", "Failures:" if all_bad or host_bad else "Failures: none (every program exited 0 and printed what it printed on the host).", ""]
    for name, code, out in host_bad:
        lines.append(f"- host: {name}: exit {code}: {out!r}")
    for runtime, r, why in all_bad:
        lines.append(f"- {runtime} {r['template']}: {r['program']}: {why}")
    # Slowest programs per runtime, to see where the time goes.
    for runtime, (_, rows, _, _) in results.items():
        ok = sorted((r for r in rows if "m" in r), key=lambda r: -r["wall"])[:5]
        lines.append(f"- slowest on {runtime}: " + ", ".join(
            f"{r['program']} ({r['template']}) {r['wall']:.0f} ms (compile {r['m']['compile_ms']:.0f}, run {r['m']['run_ms']:.0f}, {r['m']['vm_source']})" for r in ok))
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    out = os.path.join(BENCH, "results", f"cpp-corpus-{stamp}.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(log_dir, "rows.json"), "w") as f:
        json.dump({rt: {"rows": res[1], "go": res[3]} for rt, res in results.items()}, f)
    print("\n".join(lines))
    print("wrote", out, "; raw rows in", log_dir)


if __name__ == "__main__":
    main()
