"""Sandbox.run_once against the real server (POST /v1/run)."""

from __future__ import annotations

import hashlib
import time

import pytest

from sandboxvm import Sandbox

HELLO = {
    "python-data-analysis": 'print("hello from python", 6 * 7)',
    "cpp-algorithm": '#include <iostream>\nint main() { std::cout << "hello from cpp " << 6 * 7 << "\\n"; }\n',
    "go-algorithm": 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello from go", 6*7) }\n',
}


@pytest.mark.parametrize("template", sorted(HELLO))
def test_run_once_prints_in_each_code_template(server_url: str, template: str) -> None:
    result = Sandbox.run_once(HELLO[template], template=template, base_url=server_url)
    language = template.split("-")[0]
    assert result.status == "ok", result
    assert result.exit_code == 0
    assert result.output == f"hello from {language} 42\n"
    assert result.stdout == result.output
    assert result.stderr == ""
    assert not result.truncated
    assert result.metrics.total_ms > 0
    assert result.metrics.vm_source != ""
    if template != "python-data-analysis":
        assert result.metrics.compile_ms > 0
    assert "startup=" in repr(result.metrics) and "vm_source=" in repr(result.metrics)


def test_run_once_stdin_reaches_the_program(server_url: str) -> None:
    code = "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))"
    result = Sandbox.run_once(code, template="python-data-analysis", base_url=server_url, stdin="1 2 3 4\n")
    assert result.output == "10\n"


def test_run_once_base_url_from_environment(server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOXVM_BASE_URL", server_url)
    result = Sandbox.run_once("print('env')", template="python-data-analysis")
    assert result.output == "env\n"


def test_failing_programs_are_results_not_exceptions(server_url: str) -> None:
    exited = Sandbox.run_once("import sys\nprint('bye', file=sys.stderr)\nsys.exit(3)", template="python-data-analysis", base_url=server_url)
    assert (exited.status, exited.exit_code, exited.stderr) == ("error", 3, "bye\n")
    assert not exited.ok

    broken = Sandbox.run_once("int main() { return undeclared; }\n", template="cpp-algorithm", base_url=server_url)
    assert broken.status == "compile_error"
    assert "undeclared" in broken.output

    slow = Sandbox.run_once("while True:\n    pass\n", template="python-data-analysis", base_url=server_url, timeout=1)
    assert slow.status == "timeout"


def test_run_once_returns_plot_artifact(server_url: str, tmp_path) -> None:
    code = (
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [4, 1, 9])\nplt.savefig('/tmp/outputs/plot.png')\nprint('saved')\n"
    )
    result = Sandbox.run_once(code, template="python-data-analysis", base_url=server_url)
    assert result.output == "saved\n", result
    [artifact] = result.artifacts
    assert (artifact.path, artifact.mime) == ("plot.png", "image/png")
    assert artifact.content is not None and artifact.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(artifact.content) == artifact.size
    assert hashlib.sha256(artifact.content).hexdigest() == artifact.sha256
    saved = artifact.save(tmp_path)
    assert saved == (tmp_path / "plot.png").resolve()
    assert saved.read_bytes() == artifact.content


def test_run_once_streams_output_as_it_is_printed(server_url: str) -> None:
    code = "import time\nfor i in range(5):\n    print(f'line {i}', flush=True)\n    time.sleep(0.4)\n"
    received = []
    result = Sandbox.run_once(
        code, template="python-data-analysis", base_url=server_url,
        on_stdout=lambda text: received.append((time.monotonic(), text)),
    )
    returned = time.monotonic()
    assert result.status == "ok"
    assert "".join(text for _, text in received) == result.stdout == "".join(f"line {i}\n" for i in range(5))
    assert len(received) >= 2, f"output came in one piece: {received}"
    # The program sleeps 2 s after its first line: that line must have arrived well before the result.
    assert received[0][0] <= returned - 0.8, f"first output {returned - received[0][0]:.2f}s before the result"
