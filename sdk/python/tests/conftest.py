"""Test fixtures: the SDK from this checkout, and a real SandboxVM server started for the session.

The ``server_url`` fixture builds the server (``scripts/build.sh``) and the templates
(``sandboxvm templates build``, cached in /var/cache/sandboxvm) unless SANDBOXVM_TEST_SKIP_BUILD=1
(scripts/test.sh sets it: it has just built both), then runs ``sandboxvm serve`` on a free loopback
port with SANDBOXVM_RUNTIME from SANDBOXVM_TEST_RUNTIME (default ``process``), waits for /readyz and
for the pools of the code templates, and stops the server by its PID (SIGTERM, then SIGKILL) at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, List

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "sdk" / "python" / "src"))

# The tests pass base_url and keys explicitly; a caller's settings must not leak into them.
for _name in ("SANDBOXVM_BASE_URL", "SANDBOXVM_API_KEY"):
    os.environ.pop(_name, None)

CODE_TEMPLATES = ["python-data-analysis", "cpp-algorithm", "go-algorithm"]
CLI = REPO / "artifacts" / "cli" / "sandboxvm"
AGENT = REPO / "artifacts" / "agent" / "sandboxvm-agent"


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _run_step(args: List[str]) -> None:
    done = subprocess.run(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}", pytrace=False)


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode("utf-8"))


def _pools_ready(url: str) -> str:
    """Empty when every code template is available with a ready VM in its pool; else what is missing."""
    data = _get_json(url + "/v1/templates")
    templates = {t["name"]: t for t in data["templates"]} if isinstance(data, dict) else {}
    waiting = []
    for name in CODE_TEMPLATES:
        t = templates.get(name)
        if t is None:
            waiting.append(f"{name}: not listed")
        elif not t.get("available"):
            waiting.append(f"{name}: unavailable ({t.get('unavailable_reason')})")
        elif t.get("pool") is not None and t["pool"].get("ready", 0) < 1:
            waiting.append(f"{name}: pool {t['pool']}")
    return "; ".join(waiting)


def _stop(process: subprocess.Popen, grace: float = 30.0) -> None:
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """Base URL of a real SandboxVM server serving this checkout's build."""
    if os.environ.get("SANDBOXVM_TEST_SKIP_BUILD") != "1":
        _run_step(["scripts/build.sh"])
        _run_step([str(CLI), "templates", "build"])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = REPO / "artifacts" / "test-results" / "python-sdk-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["SANDBOXVM_RUNTIME"] = os.environ.get("SANDBOXVM_TEST_RUNTIME", "process")
    env["SANDBOXVM_AGENT"] = str(AGENT)
    env.pop("SANDBOXVM_API_KEY", None)
    wait_s = float(os.environ.get("SANDBOXVM_TEST_READY_TIMEOUT", "600"))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(CLI), "serve", "--url", url], cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + wait_s
        waiting = "the server to answer /readyz"
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode} before it was ready; {log_path}:\n{_tail(log_path)}", pytrace=False)
            try:
                _get_json(url + "/readyz")
                waiting = _pools_ready(url)
                if not waiting:
                    break
            except (urllib.error.URLError, OSError, ValueError) as e:
                waiting = f"the server to answer /readyz ({e})"
            if time.monotonic() > deadline:
                pytest.fail(f"the server at {url} was not ready after {wait_s:.0f}s, waiting for {waiting}; {log_path}:\n{_tail(log_path)}", pytrace=False)
            time.sleep(0.5)
        yield url
    finally:
        _stop(process)
