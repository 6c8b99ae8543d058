#!/usr/bin/env bash
# Runs every test: install what is missing, build, build the templates (cached outside the checkout), then the suites.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
artifacts/cli/sandboxvm templates build

export SANDBOXVM_AGENT="$PWD/artifacts/agent/sandboxvm-agent"
results="$PWD/artifacts/test-results"
rm -rf "$results"
status=0
dotnet test SandboxVM.slnx -c Release --no-build --logger "trx" --results-directory "$results" -v quiet -nologo || status=$?

# One summary line over every test project, in the plain "N passed, N failed" form.
python3 - "$results" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
passed = failed = skipped = 0
for f in glob.glob(sys.argv[1] + "/*.trx"):
    for r in ET.parse(f).getroot().iter("{%s}UnitTestResult" % ns["t"]):
        outcome = r.get("outcome")
        if outcome == "Passed": passed += 1
        elif outcome == "NotExecuted": skipped += 1
        else: failed += 1
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
