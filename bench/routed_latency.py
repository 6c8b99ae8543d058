#!/usr/bin/env python3
"""The extra latency of a run routed through a node that does not hold the sandbox (issue 16).

Usage: bench/routed_latency.py [--runs 200] [--rounds 3] [--code 'echo ok'] [--node PATH.dll]
Starts a redis-server and two cluster nodes on free loopback ports (tests/SandboxVM.Cluster.Node: the real
server and cluster, sandboxes on the local agent runtime, so the run itself is short and the hop shows),
creates one sandbox on node 1, then sends the same run alternately through node 1 (the owner) and node 2
(forwarded to node 1), one at a time, each node over its own kept-alive connection, `--runs` of each per
round. Reports median and p95 per round and over all rounds, with the load average before and after,
and writes a Markdown report to bench/results/. Build first: dotnet build tests/SandboxVM.Cluster.Node -c Release.
"""
import argparse, datetime, http.client, json, os, platform, shutil, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE = os.path.join(ROOT, "tests/SandboxVM.Cluster.Node/bin/Release/net10.0/SandboxVM.Cluster.Node.dll")


def pct(values, p):
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, check, patience=120):
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.2)
    sys.exit(f"routed_latency: {what} not within {patience} s")


def call(conn, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    try:
        conn.request(method, path, body=data, headers={"content-type": "application/json"} if data else {})
        r = conn.getresponse()
        payload = r.read()
    except (OSError, http.client.HTTPException):
        conn.close()  # the next request reconnects
        raise
    return r.status, dict(r.getheaders()), payload


def load():
    return open("/proc/loadavg").read().split()[:3]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--code", default="echo ok")
    ap.add_argument("--node", default=NODE)
    args = ap.parse_args()
    if not os.path.exists(args.node):
        sys.exit(f"routed_latency: {args.node} is missing: dotnet build tests/SandboxVM.Cluster.Node -c Release")
    work = tempfile.mkdtemp(prefix="routed-latency-")
    procs = []
    ok = False
    try:
        redis_port = free_port()
        procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait("redis", lambda: socket.create_connection(("127.0.0.1", redis_port), 1).close() is None)
        ports = []
        for i in range(2):
            http_port, silo = free_port(), free_port()
            ports.append(http_port)
            log = open(os.path.join(work, f"node-{i + 1}.log"), "w")
            procs.append(subprocess.Popen(["dotnet", args.node, os.path.join(work, f"node-{i + 1}"), "--urls", f"http://127.0.0.1:{http_port}",
                                           "--SandboxVM:Cluster", f"redis://127.0.0.1:{redis_port}", "--SandboxVM:ClusterSiloPort", str(silo)],
                                          stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, Logging__LogLevel__Default="Warning")))
        conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=120) for p in ports]

        def active(conn):
            status, _, body = call(conn, "GET", "/v1/admin/cluster")
            return status == 200 and sum(n["status"] == "active" for n in json.loads(body)["nodes"]) == 2
        for c in conns:
            wait("two active nodes", lambda c=c: active(c))
        status, _, body = call(conns[0], "POST", "/v1/sandboxes", {"template": "local-sh", "timeout_s": 3600})
        assert status == 201, body
        sid = json.loads(body)["id"]
        owner = f"http://127.0.0.1:{ports[0]}/"
        run = f"/v1/sandboxes/{sid}/run"
        for c in conns:  # warm both paths (JIT, connections between the nodes)
            for _ in range(10):
                call(c, "POST", run, {"code": args.code})
        load_before = load()
        rounds = []
        for _ in range(args.rounds):
            times = {"owner": [], "routed": []}
            for _ in range(args.runs):
                for name, c in (("owner", conns[0]), ("routed", conns[1])):
                    start = time.perf_counter()
                    status, headers, body = call(c, "POST", run, {"code": args.code})
                    elapsed = (time.perf_counter() - start) * 1000
                    assert status == 200 and json.loads(body)["status"] == "ok", body
                    assert headers.get("SandboxVM-Node") == owner, headers  # both served by the owner
                    times[name].append(elapsed)
            rounds.append(times)
        load_after = load()
        ok = True
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"routed_latency: the nodes' logs and state are in {work}", file=sys.stderr)

    def row(label, t):
        o, r = t["owner"], t["routed"]
        return (f"| {label} | {len(o)} | {statistics.median(o):.1f} / {pct(o, 95):.1f} | {statistics.median(r):.1f} / {pct(r, 95):.1f} "
                f"| {statistics.median(r) - statistics.median(o):+.1f} / {pct(r, 95) - pct(o, 95):+.1f} |")
    lines = [row(str(i + 1), t) for i, t in enumerate(rounds)]
    total = {k: [x for t in rounds for x in t[k]] for k in ("owner", "routed")}
    now = datetime.datetime.now(datetime.timezone.utc)
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    report = "\n".join([
        f"# Routed run latency: through the owning node vs through another node ({now:%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `bench/routed_latency.py --runs {args.runs} --rounds {args.rounds} --code '{args.code}'`",
        f"Host: {os.cpu_count()} cores, {int(mem) // 1024 // 1024} GiB, kernel {platform.release()}; load average (1/5/15 min) "
        f"{' '.join(load_before)} before, {' '.join(load_after)} after.",
        "Two nodes and a Redis on loopback, the sandbox (template local-sh, local agent runtime) on node 1; runs sent one at a "
        "time, alternating between node 1 and node 2, each over its own kept-alive HTTP connection. Times are the client's, in ms.",
        "",
        "| round | runs per path | owner: median / p95 | routed: median / p95 | routed - owner: median / p95 |",
        "|---|---|---|---|---|",
        *lines,
        row("all", total),
        "",
    ])
    print(report)
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    path = os.path.join(ROOT, "bench/results", f"routed-latency-{now:%Y-%m-%dT%H%MZ}.md")
    with open(path, "w") as f:
        f.write(report)
    print(f"written: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
