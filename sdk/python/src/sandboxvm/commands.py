"""Shell commands and background processes in a sandbox (``sb.commands``), per docs/API.md "Commands"."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Union
from urllib.parse import quote

from ._runs import OutputCallback, post_streamed
from .models import parse_time

if TYPE_CHECKING:  # pragma: no cover
    from .sandbox import Sandbox

Cmd = Union[str, Sequence[str]]


@dataclass
class Command:
    """A command in a sandbox. ``status`` is ``running``, ``exited``, ``signal``, ``timeout``, ``oom``,
    ``output_limit`` or ``cancelled``; ``exit_code`` is set when it exited. ``stdout``/``stderr`` are None
    in listings."""

    id: str
    cmd: List[str] = field(default_factory=list)
    status: str = ""
    running: bool = False
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    started_at: Optional[datetime] = None
    duration_ms: int = 0
    stdout: Optional[str] = None
    stderr: Optional[str] = None
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    truncated: bool = False
    stdin_open: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Command":
        def num(name: str) -> Optional[int]:
            value = data.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        cmd = data.get("cmd")
        return cls(
            id=str(data.get("id") or ""),
            cmd=[str(c) for c in cmd] if isinstance(cmd, list) else [],
            status=str(data.get("status") or ""),
            running=bool(data.get("running")),
            exit_code=num("exit_code"),
            signal=num("signal"),
            started_at=parse_time(data.get("started_at")),
            duration_ms=num("duration_ms") or 0,
            stdout=data.get("stdout") if isinstance(data.get("stdout"), str) else None,
            stderr=data.get("stderr") if isinstance(data.get("stderr"), str) else None,
            stdout_bytes=num("stdout_bytes") or 0,
            stderr_bytes=num("stderr_bytes") or 0,
            truncated=bool(data.get("truncated")),
            stdin_open=bool(data.get("stdin_open")),
        )


class Commands:
    """``sb.commands``: run a command and wait for it, or start one in the background and talk to it.

    ``cmd`` is a shell line (run by ``/bin/sh -c``) or an argv list. Commands run as the sandbox's user
    in ``/home/sandbox`` (or ``cwd``, which must exist), beside the sandbox's runs.
    """

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def _path(self, suffix: str = "") -> str:
        return self._sandbox._api("/commands" + suffix)

    def _one(self, command_id: str, suffix: str = "") -> str:
        return self._path("/" + quote(command_id, safe="") + suffix)

    def run(
        self,
        cmd: Cmd,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        stdin: Optional[str] = None,
        background: bool = False,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> Command:
        """Runs ``cmd``. Foreground (default): waits for it and returns its exit code and output (the
        template's output cap applies; ``timeout`` defaults to 60 s); ``on_stdout``/``on_stderr`` get its
        output as it is printed (chunks, not lines; the result still has all of it). ``background=True``:
        returns at once, running; its output is kept (the last 256 KiB per stream) for ``get``."""
        if background and (on_stdout is not None or on_stderr is not None):
            raise ValueError("on_stdout/on_stderr are for foreground commands; read a background command's output with get()")
        body: Dict[str, Any] = {
            "cmd": cmd if isinstance(cmd, str) else [str(c) for c in cmd],
            "cwd": cwd,
            "env": dict(env) if env is not None else None,
            "timeout_s": timeout,
            "stdin": stdin,
            "background": background,
        }
        http = self._sandbox._http
        wait = 0.0 if background else (timeout if timeout is not None else 60.0)
        return post_streamed(http, self._path(), {k: v for k, v in body.items() if v is not None},
                             max(http.timeout, wait + 30.0), Command.from_json, on_stdout=on_stdout, on_stderr=on_stderr)

    def start(self, cmd: Cmd, **kwargs: Any) -> Command:
        """``run(cmd, background=True, ...)``."""
        return self.run(cmd, background=True, **kwargs)

    def list(self) -> List[Command]:
        """The sandbox's commands, running and recently ended (oldest first), without output."""
        data = self._sandbox._http.call_json("GET", self._path())
        items = data.get("commands", []) if isinstance(data, dict) else []
        return [Command.from_json(c) for c in items if isinstance(c, dict)]

    def get(self, command_id: str, wait: bool = False) -> Command:
        """A command with its kept output; with ``wait``, once it ended or after 30 s."""
        http = self._sandbox._http
        query = {"wait": "true"} if wait else None
        data = http.call_json("GET", self._one(command_id), query=query, timeout=max(http.timeout, 60.0))
        return Command.from_json(data if isinstance(data, dict) else {})

    def send_stdin(self, command_id: str, data: str, eof: bool = False) -> Command:
        """Writes ``data`` to a background command's stdin (closing it after when ``eof``).
        Raises ApiError 409 ``stdin_closed`` when it is closed or the command does not read it."""
        answer = self._sandbox._http.call_json("POST", self._one(command_id, "/stdin"), json_body={"data": data, "eof": eof})
        return Command.from_json(answer if isinstance(answer, dict) else {})

    def kill(self, command_id: str, signal: Optional[Union[str, int]] = None) -> Command:
        """Signals the command's process group: SIGTERM by default, then SIGKILL 2 s later if it still
        runs (returns once it ended); another signal (``"SIGINT"``, ``"HUP"``, ``9``) is only delivered."""
        query = {"signal": str(signal)} if signal is not None else None
        data = self._sandbox._http.call_json("DELETE", self._one(command_id), query=query)
        return Command.from_json(data if isinstance(data, dict) else {})
