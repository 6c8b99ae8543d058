"""The README's offline install, line for line: Debian's Python, a venv that sees the system's
setuptools and wheel, ``pip install --no-build-isolation``. Run on a copy of the SDK in a temporary
directory (the build writes into the source tree) with pip's index turned off."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SDK = Path(__file__).resolve().parents[1]
MARKER = "<!-- offline-install:"


def offline_lines() -> list:
    text = (SDK / "README.md").read_text(encoding="utf-8")
    after = text[text.index(MARKER):]
    block = re.search(r"```sh\n(.*?)```", after, re.S)
    assert block is not None, "the README's offline install has no sh block after its marker"
    return [line for line in block.group(1).splitlines() if line.strip()]


def missing_debian_packages() -> list:
    missing = []
    for package in ("python3-venv", "python3-setuptools", "python3-wheel"):
        done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
        if "install ok installed" not in done.stdout:
            missing.append(package)
    return missing


def test_the_readme_offline_install_works(tmp_path: Path) -> None:
    if not Path("/usr/bin/python3").exists() or shutil.which("dpkg-query") is None:
        pytest.skip("not Debian: the offline install is for Debian 12's /usr/bin/python3")
    missing = missing_debian_packages()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/install-deps.sh installs them)")
    shutil.copytree(SDK, tmp_path / "sdk" / "python", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env["PIP_NO_INDEX"] = "1"

    for line in offline_lines():
        done = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    installed = subprocess.run([str(tmp_path / ".venv" / "bin" / "python"), "-c", "import sandboxvm, sys; print(sandboxvm.__file__)"],
                               cwd="/", env=env, capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.strip().startswith(str(tmp_path / ".venv")), installed.stdout
