"""Posting a run: one JSON answer, or a text/event-stream read event by event."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, TypeVar

from ._http import HttpClient
from .errors import SandboxError, error_from_response
from .models import RunResult

OutputCallback = Callable[[str], None]
T = TypeVar("T")


def iter_sse(readline: Callable[[], bytes]) -> Iterator[Tuple[str, str]]:
    """Yields (event, data) from a text/event-stream as each event's closing blank line arrives.

    ``readline`` returns one line (with its ending) or b"" at the end of the stream.
    """
    event = ""
    data: list = []
    while True:
        raw = readline()
        if not raw:
            if data:
                yield event or "message", "\n".join(data)
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data or event:
                yield event or "message", "\n".join(data)
            event, data = "", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def run_http_timeout(http: HttpClient, timeout: Optional[float], compile_timeout: Optional[float]) -> float:
    """How long to wait for a run's answer: the run's own limits plus room for queueing and startup."""
    return max(http.timeout, 600.0 + (timeout or 0.0) + (compile_timeout or 0.0))


def post_run(
    http: HttpClient,
    path: str,
    payload: Dict[str, Any],
    *,
    on_stdout: Optional[OutputCallback] = None,
    on_stderr: Optional[OutputCallback] = None,
    loader: Optional[Callable[[str], bytes]] = None,
) -> RunResult:
    """Posts a run request. With a callback the answer is streamed and callbacks fire as output arrives."""
    payload = {k: v for k, v in payload.items() if v is not None}
    timeout = run_http_timeout(http, payload.get("timeout_s"), payload.get("compile_timeout_s"))
    return post_streamed(http, path, payload, timeout, lambda data: RunResult.from_json(data, loader),
                         on_stdout=on_stdout, on_stderr=on_stderr)


def post_streamed(
    http: HttpClient,
    path: str,
    payload: Dict[str, Any],
    timeout: float,
    parse: Callable[[Dict[str, Any]], T],
    *,
    on_stdout: Optional[OutputCallback] = None,
    on_stderr: Optional[OutputCallback] = None,
) -> T:
    """Posts a run or a foreground command; ``parse`` makes the answer's result of its JSON. With a callback
    the answer is streamed (``stdout``/``stderr`` events, then ``result``) and callbacks fire as output arrives."""
    if on_stdout is None and on_stderr is None:
        data = http.call_json("POST", path, json_body=payload, timeout=timeout)
        if not isinstance(data, dict):
            raise SandboxError(f"{http.url(path)} answered with no result")
        return parse(data)

    with http.open("POST", path, json_body=payload, accept="text/event-stream", timeout=timeout) as (response, url):
        content_type = (response.getheader("Content-Type") or "").lower()
        if not content_type.startswith("text/event-stream"):
            # A server that does not stream answers with the whole result: hand its output over at once.
            try:
                data = json.loads(http.read(response, url).decode("utf-8"))
            except ValueError as e:
                raise SandboxError(f"{url} answered with something that is neither an event stream nor JSON") from e
            if on_stdout is not None and isinstance(data.get("stdout"), str) and data["stdout"]:
                on_stdout(data["stdout"])
            if on_stderr is not None and isinstance(data.get("stderr"), str) and data["stderr"]:
                on_stderr(data["stderr"])
            return parse(data)
        for event, text in iter_sse(lambda: http.read(response, url, line=True)):
            try:
                document = json.loads(text)
            except ValueError as e:
                raise SandboxError(f"{url} sent a {event!r} event whose data is not JSON: {text[:200]!r}") from e
            if event == "stdout":
                if on_stdout is not None:
                    on_stdout(document.get("text", ""))
            elif event == "stderr":
                if on_stderr is not None:
                    on_stderr(document.get("text", ""))
            elif event == "result":
                return parse(document)
            elif event in ("error", "problem"):
                status = document.get("status")
                raise error_from_response(status if isinstance(status, int) else 500, document)
        raise SandboxError(f"the event stream from {url} ended without a result")
