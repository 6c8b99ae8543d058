#!/usr/bin/env bash
# The main job: install what is missing, build everything, build the built-in templates, serve on 127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
if [ "$(id -u)" = 0 ]; then
  ln -sf "$PWD/artifacts/cli/sandboxvm" /usr/local/bin/sandboxvm
fi
artifacts/cli/sandboxvm templates build
exec artifacts/cli/sandboxvm serve "$@"
