"""Sandboxes (sessions) against the real server, per docs/API.md."""

from __future__ import annotations

import hashlib
import io
import os
import time
from datetime import datetime, timedelta, timezone

import pytest

from sandboxvm import NotFoundError, Sandbox

PY = "python-data-analysis"


def test_session_keeps_interpreter_state(server_url: str) -> None:
    with Sandbox(template=PY, base_url=server_url) as sb:
        assert sb.id
        assert sb.info is not None and sb.info.state == "running" and sb.info.template == PY
        first = sb.run("x = 41")
        assert first.status == "ok", first
        second = sb.run("print(x + 1)")
        assert second.output == "42\n", second
        assert not second.state_reset


def test_leaving_the_block_kills_the_sandbox(server_url: str) -> None:
    with Sandbox(template=PY, base_url=server_url) as sb:
        sandbox_id = sb.id
        assert Sandbox.connect(sandbox_id, base_url=server_url).info.state == "running"
    with pytest.raises(NotFoundError) as raised:
        sb.run("print(1)")
    assert raised.value.code == "sandbox_not_found"
    try:
        state = Sandbox.connect(sandbox_id, base_url=server_url).info.state
    except NotFoundError as e:
        assert e.code == "sandbox_not_found"
    else:
        assert state == "ended"
    sb.kill()  # already ended: no error


def test_create_with_options_and_list(server_url: str) -> None:
    sb = Sandbox.create(PY, base_url=server_url, timeout=300, idle_timeout=120, metadata={"owner": "pytest"})
    try:
        info = sb.info
        assert (info.timeout_s, info.idle_timeout_s, info.metadata) == (300, 120, {"owner": "pytest"})
        assert info.created_at is not None and info.expires_at is not None
        assert info.runtime != ""
        assert sb.id in [s.id for s in Sandbox.list(base_url=server_url)]
    finally:
        sb.kill()
    assert sb.id not in [s.id for s in Sandbox.list(base_url=server_url) if s.state == "running"]


def test_keep_alive_moves_expiry(server_url: str) -> None:
    with Sandbox(template=PY, base_url=server_url, timeout=60) as sb:
        info = sb.keep_alive(timeout=600)
        expected = datetime.now(timezone.utc) + timedelta(seconds=600)
        assert info.expires_at is not None
        assert abs((info.expires_at - expected).total_seconds()) < 30
        assert sb.keep_alive().state == "running"


class _Unseekable(io.RawIOBase):
    """A stream whose length cannot be known in advance: the SDK must send it chunked."""

    def __init__(self, data: bytes) -> None:
        self._source = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        chunk = self._source.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_files_round_trip(server_url: str, tmp_path) -> None:
    binary = bytes(range(256)) + b"\xff\xfe\x00\x80 not utf-8 \xc3\x28"
    text = "héllo wörld ✓\nzweite Zeile\n"
    big = os.urandom(3 * 1024 * 1024 + 17)
    streamed = os.urandom(300 * 1024 + 5)
    with Sandbox(template=PY, base_url=server_url) as sb:
        made = sb.files.mkdir("data/nested")
        assert made.kind == "directory"

        info = sb.files.write("data/blob.bin", binary)
        assert (info.kind, info.size) == ("file", len(binary))
        assert sb.files.read("data/blob.bin") == binary

        sb.files.write("data/text.txt", text)
        assert sb.files.read_text("data/text.txt") == text
        assert sb.files.read("data/text.txt") == text.encode("utf-8")

        assert sb.files.write("data/nested/big.bin", io.BytesIO(big)).size == len(big)
        assert sb.files.read("data/nested/big.bin") == big
        assert sb.files.write("/tmp/streamed.bin", _Unseekable(streamed)).size == len(streamed)
        local = tmp_path / "copy.bin"
        assert sb.files.download("/tmp/streamed.bin", local) == len(streamed)
        assert local.read_bytes() == streamed

        entries = {e.name: e for e in sb.files.list("data")}
        assert entries["blob.bin"].size == len(binary) and entries["blob.bin"].is_file
        assert entries["text.txt"].size == len(text.encode("utf-8"))
        assert entries["nested"].is_dir

        # The program sees the uploaded bytes, and what it writes can be read back.
        check = sb.run(
            "import hashlib\n"
            "print(hashlib.sha256(open('/home/sandbox/data/blob.bin', 'rb').read()).hexdigest())\n"
            "open('/home/sandbox/from_vm.txt', 'w').write('written in the VM')\n"
        )
        assert check.output.strip() == hashlib.sha256(binary).hexdigest()
        assert sb.files.read_text("from_vm.txt") == "written in the VM"

        sb.files.remove("data/blob.bin")
        with pytest.raises(NotFoundError) as raised:
            sb.files.read("data/blob.bin")
        assert raised.value.code == "file_not_found"
        sb.files.remove("data", recursive=True)
        assert "data" not in [e.name for e in sb.files.list()]


def test_plot_artifact_listed_and_read_back(server_url: str, tmp_path) -> None:
    code = (
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [4, 1, 9])\nplt.savefig('/tmp/outputs/plot.png')\n"
    )
    with Sandbox(template=PY, base_url=server_url) as sb:
        assert sb.run(code).status == "ok"
        listed = {a.path: a for a in sb.list_artifacts()}
        plot = listed["plot.png"]
        assert plot.mime == "image/png"
        data = sb.read_artifact("plot.png")
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) == plot.size
        assert hashlib.sha256(data).hexdigest() == plot.sha256
        assert plot.save(tmp_path).read_bytes() == data


def test_session_run_streams_in_order(server_url: str) -> None:
    code = "import time\nfor i in range(5):\n    print(f'line {i}', flush=True)\n    time.sleep(0.4)\n"
    received = []
    with Sandbox(template=PY, base_url=server_url) as sb:
        result = sb.run(code, on_stdout=lambda text: received.append((time.monotonic(), text)))
        returned = time.monotonic()
    assert result.status == "ok"
    assert "".join(text for _, text in received) == result.stdout == "".join(f"line {i}\n" for i in range(5))
    assert len(received) >= 2, f"output came in one piece: {received}"
    assert received[0][0] <= returned - 0.8, f"first output {returned - received[0][0]:.2f}s before the result"


def test_compiled_session_reuses_the_build(server_url: str) -> None:
    code = '#include <iostream>\nint main() { std::cout << 6 * 7 << "\\n"; }\n'
    with Sandbox(template="cpp-algorithm", base_url=server_url) as sb:
        first = sb.run(code)
        again = sb.run(code)
    assert (first.output, again.output) == ("42\n", "42\n")
    assert not first.build_cached
    assert again.build_cached
