#!/usr/bin/env python3
"""Memory of the gVisor sandboxes of one server, per sandbox, from their memory cgroups (v1) and their processes' smaps.

Usage: bench/gvisor_memory.py SERVER_PID SECONDS   (samples every 2 s; reports the sample with the most sandboxes)
Per sandbox: the cgroup's usage, its rss and page cache (the sentry's memory file is shmem, counted as cache),
and the PSS and RSS of its processes (PSS splits the runsc binary and shared libraries among them).
"""
import glob, statistics as st, sys, time

pid = sys.argv[1]
best = None
end = time.time() + float(sys.argv[2])
while time.time() < end:
    rows = []
    for cg in glob.glob(f"/sys/fs/cgroup/memory/sandboxvm/gvisor-{pid}-*"):
        try:
            usage = int(open(cg + "/memory.usage_in_bytes").read())
            stat = dict(l.split() for l in open(cg + "/memory.stat"))
            pss = rss = 0
            for p in open(cg + "/cgroup.procs").read().split():
                try:
                    for l in open(f"/proc/{p}/smaps_rollup"):
                        if l.startswith("Pss:"): pss += int(l.split()[1])
                        if l.startswith("Rss:"): rss += int(l.split()[1])
                except OSError: pass
            rows.append((usage, int(stat["total_rss"]), int(stat["total_cache"]), int(stat.get("total_shmem", 0)), pss * 1024, rss * 1024))
        except OSError: pass
    if rows and (best is None or len(rows) > len(best)):
        best = rows
    time.sleep(2)
mib = lambda v: v / 2**20
print(f"{len(best)} sandboxes of server {pid}: per sandbox median usage {mib(st.median(r[0] for r in best)):.1f} MiB, cgroup rss {mib(st.median(r[1] for r in best)):.1f}, cache {mib(st.median(r[2] for r in best)):.1f}, shmem {mib(st.median(r[3] for r in best)):.1f}, PSS {mib(st.median(r[4] for r in best)):.1f}, RSS {mib(st.median(r[5] for r in best)):.1f}; total usage {mib(sum(r[0] for r in best)):.0f} MiB, total PSS {mib(sum(r[4] for r in best)):.0f} MiB")
