"""Commands in a sandbox (``sb.commands``) against the real server, per docs/API.md "Commands"."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from sandboxvm import ApiError, Sandbox

PY = "python-data-analysis"


def test_run_returns_exit_code_and_output(server_url: str) -> None:
    with Sandbox(template=PY, base_url=server_url) as sb:
        sb.files.write("work/in.txt", "from a file\n")
        shell = sb.commands.run("cat in.txt; echo $WHO; exit 5", cwd="work", env={"WHO": "me"})
        assert shell.status == "exited" and shell.exit_code == 5, shell
        assert shell.stdout == "from a file\nme\n"
        argv = sb.commands.run(["python3", "-c", "import sys; print(sys.stdin.read().upper())"], stdin="piped")
        assert argv.exit_code == 0 and argv.stdout == "PIPED\n", argv


def test_callbacks_get_the_output_while_the_command_runs(server_url: str) -> None:
    with Sandbox(template=PY, base_url=server_url) as sb:
        out: list = []
        err: list = []

        def on_stdout(text: str) -> None:
            out.append(text)
            if text == "ready\n":
                # The command waits for this file: only output delivered while it runs lets it end in time.
                sb.files.write("go", "")

        done = sb.commands.run("echo ready; while [ ! -e go ]; do sleep 0.05; done; echo done; echo warn >&2",
                               timeout=30, on_stdout=on_stdout, on_stderr=err.append)
        assert done.status == "exited" and done.exit_code == 0, done
        assert "".join(out) == "ready\ndone\n" == done.stdout
        assert "".join(err) == "warn\n"
        with pytest.raises(ValueError):
            sb.commands.start("true", on_stdout=print)


def test_background_command_takes_stdin_and_is_killed(server_url: str) -> None:
    with Sandbox(template=PY, base_url=server_url) as sb:
        cat = sb.commands.start("cat")
        assert cat.running and cat.stdin_open and cat.id
        sb.commands.send_stdin(cat.id, "hello\n", eof=True)
        done = sb.commands.get(cat.id, wait=True)
        assert done.status == "exited" and done.stdout == "hello\n", done

        sleeper = sb.commands.start(["sleep", "1000"])
        assert any(c.id == sleeper.id and c.running for c in sb.commands.list())
        killed = sb.commands.kill(sleeper.id)
        assert killed.status == "signal" and killed.signal == 15, killed
        with pytest.raises(ApiError) as raised:
            sb.commands.get("c999")
        assert raised.value.code == "command_not_found"


def test_terminal_runs_the_shell_resizes_and_reports_the_exit(server_url: str) -> None:
    with Sandbox(template=PY, base_url=server_url) as sb:
        with sb.terminal(cols=100, rows=30) as term:
            term.write("tty; stty size; echo $((6 * 7))\n")
            shown = term.read_until("42\r\n").decode()
            assert "/dev/pts/" in shown and "30 100" in shown, shown
            term.resize(120, 40)
            term.write("stty size\n")
            assert b"40 120" in term.read_until("40 120")
            term.write("exit 3\n")
            assert term.wait() == 3 and term.closed
        # A program of the caller's choosing instead of the shell, and its exit by a signal.
        with sb.terminal(cmd="echo from-cmd; kill -TERM $$") as term:
            assert b"from-cmd" in term.read_until("from-cmd")
            assert term.wait() == 128 + 15
        with pytest.raises(ApiError) as refused:
            sb.terminal(cols=0)
        assert refused.value.code == "invalid_terminal_size"


def test_share_port_serves_without_a_key_until_the_sandbox_ends(server_url: str) -> None:
    with Sandbox(template=PY, base_url=server_url) as sb:
        sb.files.write("site/index.html", "<p>shared</p>")
        sb.commands.start(["python3", "-m", "http.server", "8765", "--bind", "127.0.0.1", "--directory", "site"])
        url = sb.share_port(8765, expires_in_s=600)
        assert url.startswith(server_url.rstrip("/") + "/shared/"), url
        deadline = time.monotonic() + 60
        while True:  # the server needs a moment to bind: 502 port_closed before
            try:
                with urllib.request.urlopen(url + "index.html", timeout=30) as answer:
                    assert answer.read() == b"<p>shared</p>"
                break
            except urllib.error.HTTPError as e:
                if e.code != 502 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with pytest.raises(ApiError) as raised:
            sb.share_port(0)
        assert raised.value.code == "invalid_port"
    with pytest.raises(urllib.error.HTTPError) as ended:
        urllib.request.urlopen(url + "index.html", timeout=30)
    assert ended.value.code == 404
