#!/usr/bin/env bash
# Runs every test: install what is missing, build, build the templates (cached outside the checkout), then the suites.
#   scripts/test.sh                 everything (the CI command, .ci/run)
#   scripts/test.sh --fast          the unit and integration tiers only: no install, no template build, no
#                                   network, no VMs (docs/CONTRIBUTING.md); builds the solution and
#                                   publishes the agent first
#   scripts/test.sh --fast --no-build   the same on the build already there
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
build=1
for arg in "$@"; do
  case "$arg" in
    --fast) fast=1 ;;
    --no-build) build=0 ;;
    *) echo "usage: scripts/test.sh [--fast [--no-build]]" >&2; exit 2 ;;
  esac
done
if [ "$build" = 0 ] && [ "$fast" = 0 ]; then
  echo "--no-build goes with --fast (the full run builds and publishes what it tests)" >&2; exit 2
fi
results="$PWD/artifacts/test-results"
status=0

# The unit and integration tiers: every test project at once, each through its own xunit runner (a
# v3 test project is a program) with its output (artifacts/test-results/logs) and results file apart.
# `dotnet test` ran two projects at a time and added MSBuild and vstest to each: about 9 s of CPU per
# project (Protocol.Tests: 10.7 s of CPU through dotnet test, 1.6 s through its runner).
# Sandboxes run the published NativeAOT agent when it was published from the agent's build output as it
# is now: it starts on 0.03 s of CPU, the dll under the JIT on 0.2 s and more per path (Agent.Tests: 40 s
# of CPU, not 100). Builds are deterministic, so the dlls' hashes (written at publish) tell; their
# times do not (building a test project rewrites the agent's dll unchanged).
agent_sources="src/SandboxVM.Agent/bin/Release/net10.0/linux-x64/sandboxvm-agent.dll src/SandboxVM.Agent/bin/Release/net10.0/linux-x64/SandboxVM.Protocol.dll"
# `fast_tiers serial` (the full run, CI) starts each project's runner after the previous one ended: CI has
# time to spare, and one project at a time keeps the host's load (and timing-sensitive tests) as they were.
wait_runners() {
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      status=1
      # Failed tests are in the summary below; a runner that ended without results left only its output.
      if [ ! -s "$results/${names[$i]}.trx" ]; then
        echo "${names[$i]} ended without results; the end of $logs/${names[$i]}.log:"
        tail -n 40 "$logs/${names[$i]}.log"
      fi
    fi
  done
  pids=()
  names=()
}
fast_tiers() {
  local mode=${1:-parallel} logs="$results/logs" agent=artifacts/agent/sandboxvm-agent csproj project dir pids=() names=()
  mkdir -p "$logs"
  if [ -z "${SANDBOXVM_AGENT_BINARY:-}" ] && [ -x "$agent" ]; then
    if sha256sum --status -c "$agent.sources" 2>/dev/null; then
      export SANDBOXVM_AGENT_BINARY="$PWD/$agent"
    else
      echo "note: $agent was not published from the agent's build as it is now, so tests run the dll (slower); scripts/build.sh or scripts/test.sh --fast publishes it" >&2
    fi
  fi
  for csproj in tests/*/*.Tests.csproj; do
    project=$(basename "$csproj" .csproj)
    dir="$PWD/tests/$project/bin/Release/net10.0"
    if [ ! -f "$dir/$project.dll" ]; then
      echo "$dir/$project.dll is missing: build first (scripts/test.sh --fast without --no-build)" >&2
      status=1
      continue
    fi
    # The runner's wall time and the CPU of it and every process it waited for (agents, node, servers),
    # from bash's `times`, in $logs/$project.cpu for the summary.
    (cd "$dir" && began=$SECONDS && rc=0 && { dotnet "$project.dll" -trait "tier=unit" -trait "tier=integration" -noLogo -noColor \
      -reporter quiet -trx "$results/$project.trx" || rc=$?; } && echo "$((SECONDS - began))" >"$logs/$project.cpu" \
      && times >>"$logs/$project.cpu" && exit $rc) >"$logs/$project.log" 2>&1 &
    pids+=("$!")
    names+=("$project")
    if [ "$mode" = serial ]; then
      wait_runners
    fi
  done
  wait_runners
}

if [ "$fast" = 1 ]; then
  export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
  if [ "$build" = 1 ]; then
    dotnet build SandboxVM.slnx -c Release -v quiet -nologo
    dotnet publish src/SandboxVM.Agent -c Release -o artifacts/agent -v quiet -nologo
    sha256sum $agent_sources >artifacts/agent/sandboxvm-agent.sources
  fi
  rm -rf "$results"
  start=$SECONDS
  fast_tiers
  elapsed=$((SECONDS - start))
else
  scripts/install-deps.sh
  scripts/build.sh
  # Each change to the agent or a template makes new images (0.2-0.7 GB each) in the cache outside the
  # checkout; on a machine that tests many commits they filled the disk (74 GB in a day, seen). Entries
  # the current templates need and those used in the last 6 hours stay.
  artifacts/cli/sandboxvm cache gc --older-than 6h | tail -n 1 || echo "note: the image cache collection did not remove everything (above)"
  artifacts/cli/sandboxvm templates build

  export SANDBOXVM_AGENT="$PWD/artifacts/agent/sandboxvm-agent"
  # The runtime's end-to-end tests boot a real guest: the kernel, initramfs and a root disk with the agent.
  eval "$(artifacts/cli/sandboxvm templates vm-images cpp-algorithm)"
  export SANDBOXVM_KERNEL SANDBOXVM_INITRD SANDBOXVM_ROOTFS_IMG
  rm -rf "$results"
  # The fast tiers first, one project at a time; then the cluster tier (redis-server and server nodes,
  # installed above), then the vm tier one project at a time: two projects of TCG guests and gVisor
  # sandboxes at once on a 2-core host took load to 12 and timed runs out.
  fast_tiers serial
  for tier in cluster vm; do
    for project in $(grep -rl --include='*.cs' "Trait(\"tier\", \"$tier\")" tests | cut -d/ -f2 | sort -u); do
      dotnet test "tests/$project" -c Release --no-build --filter "tier=$tier" \
        --logger "trx;LogFileName=$project.$tier.trx" --results-directory "$results" -v quiet -nologo || status=$?
    done
  done

  # The Python SDK's tests (Debian's python3-pytest) start their own server from the build above.
  py=python3
  $py -c 'import pytest' 2>/dev/null || py=/usr/bin/python3
  $py -c 'import pytest' 2>/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pytest >/dev/null || true
  SANDBOXVM_TEST_SKIP_BUILD=1 $py -m pytest sdk/python/tests -q --junitxml="$results/python-sdk.junit.xml" || status=$?
fi

# One summary line over every test project, in the plain "N passed, N failed" form.
python3 - "$results" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
passed = failed = skipped = 0
failures = []  # (test, message): printed whole, since the runs above are quiet
def clip(text, limit=4000):
    text = (text or "").strip()
    return text if len(text) <= limit else text[:limit] + "\n[...]"
for f in glob.glob(sys.argv[1] + "/*.trx"):
    for r in ET.parse(f).getroot().iter("{%s}UnitTestResult" % ns["t"]):
        outcome = r.get("outcome")
        if outcome == "Passed": passed += 1
        elif outcome == "NotExecuted": skipped += 1
        else:
            failed += 1
            message = r.findtext("t:Output/t:ErrorInfo/t:Message", "", ns)
            stack = r.findtext("t:Output/t:ErrorInfo/t:StackTrace", "", ns)
            failures.append((r.get("testName"), clip(message) + "\n" + clip(stack, 1500)))
for f in glob.glob(sys.argv[1] + "/*.junit.xml"):  # pytest
    for case in ET.parse(f).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            failed += 1
            bad = next(c for c in case if c.tag in ("failure", "error"))
            failures.append((case.get("classname", "") + "::" + case.get("name", ""), clip((bad.get("message") or "") + "\n" + (bad.text or ""))))
        elif "skipped" in kinds: skipped += 1
        else: passed += 1
for name, text in failures:
    print(f"FAILED {name}\n{text}\n")
if failures:
    # An internal error's answer points at the server log: the functional servers' warnings and errors.
    # Only the logs of the failed tests' runtimes (QemuX -> functional-qemu-*), and without stack frames
    # past the first of each exception: the cause is in the messages, and a CI log is read from its end.
    import re
    runtimes = {m.lower() for name, _ in failures for m in re.findall(r"\.(Qemu|Gvisor|Process)\w*Tests\.", name)}
    for f in sorted(glob.glob(sys.argv[1] + "/logs/*.server.log")):
        if runtimes and not any(f"functional-{r}-" in f for r in runtimes):
            continue
        lines, in_trace = [], False
        for line in open(f, errors="replace").read().splitlines():
            frame = line.lstrip().startswith("at ")
            if not (frame and in_trace):
                lines.append(line)
            in_trace = frame
        if lines:
            print(f"--- the last {min(len(lines), 60)} of {len(lines)} lines of {f} (stack frames after the first left out)")
            print("\n".join(lines[-60:])[-8000:])
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
PY
if [ "$fast" = 1 ]; then
  # Per project: wall seconds and CPU seconds (user + system, the runner and the processes it started).
  python3 - "$results/logs" "$elapsed" <<'PY'
import glob, os, re, sys
def seconds(t):  # bash `times`: 1m2.345s
    m = re.fullmatch(r"(\d+)m([\d.]+)s", t)
    return int(m[1]) * 60 + float(m[2]) if m else 0.0
rows = []
for f in glob.glob(sys.argv[1] + "/*.cpu"):
    # line 1: wall seconds; then `times`: this shell's user and system, then its children's
    wall, _, _, user, system = open(f).read().split()[:5]
    rows.append((os.path.basename(f)[:-4].removeprefix("SandboxVM."), int(wall), seconds(user) + seconds(system)))
rows.sort(key=lambda r: -r[1])
print("per project, wall and CPU: " + ", ".join(f"{n} {w} s {c:.0f} s" for n, w, c in rows))
load = open("/proc/loadavg").read().split()[:3]
print(f"fast tiers (unit, integration): {sys.argv[2]} s of tests, {sum(r[2] for r in rows):.0f} s of CPU; load average now {' '.join(load)}")
PY
fi
exit $status
