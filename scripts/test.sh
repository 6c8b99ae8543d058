#!/usr/bin/env bash
# Runs every test: install what is missing, build, build the templates (cached outside the checkout), then the suites.
#   scripts/test.sh                 everything (the CI command, .ci/run)
#   scripts/test.sh --fast          the unit and integration tiers only: no install, no template build, no
#                                   network, no VMs (docs/CONTRIBUTING.md); builds the solution first
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

if [ "$fast" = 1 ]; then
  export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
  if [ "$build" = 1 ]; then
    dotnet build SandboxVM.slnx -c Release -v quiet -nologo
  fi
  rm -rf "$results"
  start=$SECONDS
  dotnet test SandboxVM.slnx -c Release --no-build --filter "tier=unit|tier=integration" \
    --logger "trx" --results-directory "$results" -v quiet -nologo || status=$?
  elapsed=$((SECONDS - start))
else
  scripts/install-deps.sh
  scripts/build.sh
  artifacts/cli/sandboxvm templates build

  export SANDBOXVM_AGENT="$PWD/artifacts/agent/sandboxvm-agent"
  # The runtime's end-to-end tests boot a real guest: the kernel, initramfs and a root disk with the agent.
  eval "$(artifacts/cli/sandboxvm templates vm-images cpp-algorithm)"
  export SANDBOXVM_KERNEL SANDBOXVM_INITRD SANDBOXVM_ROOTFS_IMG
  rm -rf "$results"
  # The fast tiers first, projects side by side; then the vm tier one project at a time: two projects
  # of TCG guests and gVisor sandboxes at once on a 2-core host took load to 12 and timed runs out.
  dotnet test SandboxVM.slnx -c Release --no-build --filter "tier=unit|tier=integration" \
    --logger "trx" --results-directory "$results" -v quiet -nologo || status=$?
  for project in $(grep -rl --include='*.cs' 'Trait("tier", "vm")' tests | cut -d/ -f2 | sort -u); do
    dotnet test "tests/$project" -c Release --no-build --filter "tier=vm" \
      --logger "trx;LogFileName=$project.vm.trx" --results-directory "$results" -v quiet -nologo || status=$?
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
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
PY
if [ "$fast" = 1 ]; then
  echo "fast tiers (unit, integration): ${elapsed} s of tests"
fi
exit $status
