"""Client behaviour that does not need SandboxVM: a tiny loopback HTTP stub plays the server."""

from __future__ import annotations

import io
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from sandboxvm import (
    Artifact,
    AuthenticationError,
    FileTooLargeError,
    NotFoundError,
    RateLimitError,
    Sandbox,
    SandboxError,
    ServerError,
    UnknownTemplateError,
    ValidationError,
)
from sandboxvm.models import parse_time

Handler = Callable[[BaseHTTPRequestHandler, bytes], None]


class Stub:
    """Routes (method, path without query) to handler functions; records every request."""

    def __init__(self) -> None:
        self.routes: Dict[Tuple[str, str], Handler] = {}
        self.requests: List[Tuple[str, str, Dict[str, str], bytes]] = []
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size + 2)[:size]
                        if size == 0:
                            return data
                        data += chunk
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                stub.requests.append((self.command, self.path, dict(self.headers), body))
                route = stub.routes.get((self.command, self.path.split("?")[0]))
                if route is None:
                    send_json(self, 404, {"code": "no_route"})
                else:
                    route(self, body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send_json(h: BaseHTTPRequestHandler, status: int, document: object, headers: Optional[Dict[str, str]] = None) -> None:
    raw = json.dumps(document).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/problem+json" if status >= 400 else "application/json")
    h.send_header("Content-Length", str(len(raw)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(raw)


def problem(status: int, code: str, field: Optional[str] = None, headers: Optional[Dict[str, str]] = None) -> Handler:
    return lambda h, _: send_json(h, status, {"title": "t", "status": status, "detail": f"because {code}", "code": code, "field": field}, headers)


RESULT = {"stdout": "a\nb\n", "stderr": "", "output": "a\nb\n", "exit_code": 0, "status": "ok", "truncated": False,
          "error": None, "artifacts": [], "metrics": {"startup_ms": 1.5, "total_ms": 9.25, "vm_source": "pool"}}


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    yield s
    s.close()


def test_event_stream_is_handled_event_by_event(stub: Stub) -> None:
    callback_ran = threading.Event()
    seen_by_server: List[bool] = []

    def stream(h: BaseHTTPRequestHandler, _: bytes) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        h.wfile.write(b': comment\n\nevent: stdout\ndata: {"text": "a\\n"}\n\n')
        h.wfile.flush()
        # The client must call on_stdout before the stream goes on: wait for it.
        seen_by_server.append(callback_ran.wait(timeout=10))
        h.wfile.write(b'event: stderr\r\ndata: {"text": "warn\\n"}\r\n\r\n')
        h.wfile.write(b'event: stdout\ndata: {"text": "b\\n"}\n\n')
        h.wfile.write(b"event: artifact\ndata: {\"path\": \"x.png\"}\n\n")
        h.wfile.write(b"event: result\ndata: " + json.dumps(RESULT).encode() + b"\n\n")

    stub.routes[("POST", "/v1/run")] = stream
    out: List[str] = []
    err: List[str] = []

    def on_stdout(text: str) -> None:
        out.append(text)
        callback_ran.set()

    result = Sandbox.run_once("print(1)", template="t", base_url=stub.url, on_stdout=on_stdout, on_stderr=err.append)
    assert seen_by_server == [True]
    assert out == ["a\n", "b\n"] and err == ["warn\n"]
    assert result.stdout == "".join(out)
    assert result.metrics.vm_source == "pool"
    assert stub.requests[0][2]["Accept"] == "text/event-stream"


def test_stream_without_result_is_an_error(stub: Stub) -> None:
    def stream(h: BaseHTTPRequestHandler, _: bytes) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        h.wfile.write(b'event: stdout\ndata: {"text": "a"}\n\n')

    stub.routes[("POST", "/v1/run")] = stream
    with pytest.raises(SandboxError, match="without a result"):
        Sandbox.run_once("x", template="t", base_url=stub.url, on_stdout=lambda _: None)


def test_request_body_and_auth_header(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    stub.routes[("POST", "/v1/run")] = lambda h, _: send_json(h, 200, RESULT)
    monkeypatch.setenv("SANDBOXVM_BASE_URL", stub.url)
    monkeypatch.setenv("SANDBOXVM_API_KEY", "k-123")
    result = Sandbox.run_once("print(1)", template="python-data-analysis", stdin="in", timeout=5)
    method, path, headers, body = stub.requests[0]
    assert (method, path, headers["Authorization"]) == ("POST", "/v1/run", "Bearer k-123")
    assert json.loads(body) == {"template": "python-data-analysis", "code": "print(1)", "stdin": "in", "timeout_s": 5}
    assert result.output == "a\nb\n" and result.ok
    assert "total=9.2ms" in repr(result.metrics) or "total=9.3ms" in repr(result.metrics)


@pytest.mark.parametrize(
    "status, code, kind",
    [
        (400, "empty_code", ValidationError),
        (400, "unknown_template", UnknownTemplateError),
        (404, "sandbox_not_found", NotFoundError),
        (404, "file_not_found", NotFoundError),
        (401, "unauthorized", AuthenticationError),
        (413, "file_too_large", FileTooLargeError),
        (500, "internal", ServerError),
    ],
)
def test_problem_codes_map_to_exceptions(stub: Stub, status: int, code: str, kind: type) -> None:
    stub.routes[("POST", "/v1/run")] = problem(status, code, "code")
    with pytest.raises(kind) as raised:
        Sandbox.run_once("x", template="t", base_url=stub.url)
    assert (raised.value.status, raised.value.code, raised.value.field) == (status, code, "code")
    assert raised.value.detail == f"because {code}"


def test_unknown_template_is_both_not_found_and_validation() -> None:
    assert issubclass(UnknownTemplateError, NotFoundError) and issubclass(UnknownTemplateError, ValidationError)


def test_rate_limit_carries_retry_after(stub: Stub) -> None:
    stub.routes[("POST", "/v1/sandboxes")] = problem(429, "too_many_sandboxes", headers={"Retry-After": "3"})
    with pytest.raises(RateLimitError) as raised:
        Sandbox.create("t", base_url=stub.url)
    assert raised.value.retry_after == 3.0 and raised.value.code == "too_many_sandboxes"


def test_non_json_error_keeps_the_text(stub: Stub) -> None:
    def bad_gateway(h: BaseHTTPRequestHandler, _: bytes) -> None:
        h.send_response(502)
        h.send_header("Content-Length", "9")
        h.end_headers()
        h.wfile.write(b"upstream!")

    stub.routes[("POST", "/v1/run")] = bad_gateway
    with pytest.raises(ServerError, match="upstream!"):
        Sandbox.run_once("x", template="t", base_url=stub.url)


def _session_routes(stub: Stub) -> None:
    info = {"id": "sbx-1", "template": "t", "state": "running", "created_at": "2026-11-28T21:30:00.123Z",
            "expires_at": "2026-11-28T21:35:00Z", "timeout_s": 300, "metadata": {"a": "b"}}
    stub.routes[("POST", "/v1/sandboxes")] = lambda h, _: send_json(h, 201, info)
    stub.routes[("DELETE", "/v1/sandboxes/sbx-1")] = problem(404, "sandbox_not_found")
    stub.routes[("PUT", "/v1/sandboxes/sbx-1/files")] = lambda h, body: send_json(
        h, 200, {"path": "/home/sandbox/f", "name": "f", "kind": "file", "size": len(body), "mtime": "2026-11-28T21:30:00Z"})


def test_with_block_kills_and_tolerates_an_ended_sandbox(stub: Stub) -> None:
    _session_routes(stub)
    with Sandbox("t", base_url=stub.url, timeout=300, metadata={"a": "b"}) as sb:
        assert sb.id == "sbx-1" and sb.info.metadata == {"a": "b"}
        assert sb.info.created_at is not None and sb.info.created_at.microsecond == 123000
    created = json.loads(stub.requests[0][3])
    assert created == {"template": "t", "timeout_s": 300, "metadata": {"a": "b"}}
    assert [r[0] for r in stub.requests] == ["POST", "DELETE"]


def test_with_block_keeps_the_original_error(stub: Stub) -> None:
    _session_routes(stub)
    stub.routes[("DELETE", "/v1/sandboxes/sbx-1")] = problem(500, "internal")
    with pytest.raises(KeyError):
        with Sandbox("t", base_url=stub.url):
            raise KeyError("mine")


class _Reader:
    """A file-like with only read(): its length is unknown, so it must go out chunked."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.sizes: List[int] = []

    def read(self, size: int = -1) -> bytes:
        self.sizes.append(size)
        return self._data.read(size)


def test_file_likes_are_streamed_in_chunks(stub: Stub) -> None:
    _session_routes(stub)
    data = os.urandom(1024 * 1024 + 3)
    reader = _Reader(data)
    with Sandbox("t", base_url=stub.url) as sb:
        assert sb.files.write("f", reader).size == len(data)
        assert sb.files.write("g", io.BytesIO(data)).size == len(data)
        sb.files.write("h", io.StringIO("ünïcode"))
    (_, path, chunked_headers, chunked_body), (_, _, sized_headers, sized_body), (_, _, _, text_body) = stub.requests[1:4]
    assert path == "/v1/sandboxes/sbx-1/files?path=f"
    assert chunked_headers.get("Transfer-Encoding") == "chunked" and chunked_body == data
    assert len(reader.sizes) > 10 and all(0 < s <= 64 * 1024 for s in reader.sizes)
    assert sized_headers["Content-Length"] == str(len(data)) and sized_body == data
    assert text_body == "ünïcode".encode("utf-8")


@pytest.mark.parametrize("bad", ["../evil.png", "/etc/passwd", "a/../../b.png", ""])
def test_artifact_save_refuses_escaping_paths(tmp_path, bad: str) -> None:
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(SandboxError, match="escapes|refusing"):
        Artifact(path=bad, content=b"x").save(target)
    assert list(tmp_path.rglob("*")) == [target]


def test_artifact_save_refuses_symlink_out(tmp_path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SandboxError):
        Artifact(path="link/x.png", content=b"x").save(tmp_path / "out")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_artifact_save_writes_nested_path(tmp_path) -> None:
    saved = Artifact(path="figs/a.png", content=b"png").save(tmp_path)
    assert saved == (tmp_path / "figs" / "a.png").resolve() and saved.read_bytes() == b"png"
    with pytest.raises(SandboxError, match="not sent inline"):
        Artifact(path="b.png").save(tmp_path)


def test_parse_time_forms() -> None:
    assert parse_time("2026-11-28T21:30:00Z").isoformat() == "2026-11-28T21:30:00+00:00"
    assert parse_time("2026-11-28T21:30:00.1234567Z").microsecond == 123456
    assert parse_time("2026-11-28T23:30:00+02:00").hour == 21
    assert parse_time("soon") is None and parse_time(None) is None


def test_list_filters_patch_and_snapshots_send_what_the_api_expects(stub: Stub) -> None:
    info = {"id": "sbx-1", "template": "t", "state": "running", "timeout_s": 900}
    stub.routes[("GET", "/v1/sandboxes")] = lambda h, _: send_json(h, 200, {"sandboxes": [info]})
    stub.routes[("GET", "/v1/sandboxes/sbx-1")] = lambda h, _: send_json(h, 200, info)
    stub.routes[("PATCH", "/v1/sandboxes/sbx-1")] = lambda h, _: send_json(h, 200, info)
    stub.routes[("POST", "/v1/sandboxes/sbx-1/snapshots")] = lambda h, _: send_json(
        h, 201, {"name": "base", "template": "t", "size_bytes": 4096, "created_at": "2026-12-06T02:00:00Z", "source_sandbox": "sbx-1"})
    stub.routes[("POST", "/v1/sandboxes")] = lambda h, _: send_json(h, 201, dict(info, id="sbx-2"))
    stub.routes[("GET", "/v1/snapshots")] = lambda h, _: send_json(h, 200, {"snapshots": []})
    stub.routes[("DELETE", "/v1/snapshots/base")] = problem(404, "snapshot_not_found")

    found = Sandbox.list(base_url=stub.url, metadata={"run": "4 2"}, state=["running", "paused"])
    sb = Sandbox.connect("sbx-1", base_url=stub.url)
    patched = sb.set_timeout(900)
    snap = sb.snapshot("base")
    child = Sandbox.from_snapshot("base", base_url=stub.url, timeout=60)

    assert [s.id for s in found] == ["sbx-1"]
    assert stub.requests[0][1] == "/v1/sandboxes?metadata.run=4+2&state=running%2Cpaused"
    assert (stub.requests[2][0], json.loads(stub.requests[2][3])) == ("PATCH", {"timeout_s": 900})
    assert patched.timeout_s == 900 and sb.timeout == 900
    assert json.loads(stub.requests[3][3]) == {"name": "base"}
    assert (snap.name, snap.template, snap.size_bytes, snap.source_sandbox) == ("base", "t", 4096, "sbx-1")
    assert json.loads(stub.requests[4][3]) == {"from_snapshot": "base", "timeout_s": 60}
    assert child.id == "sbx-2" and child.template == "t"
    from sandboxvm import delete_snapshot, list_snapshots
    assert list_snapshots(base_url=stub.url) == []
    assert delete_snapshot("base", base_url=stub.url) is False


def _server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    import struct
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        return head + bytes([n]) + payload
    if n < 1 << 16:
        return head + bytes([126]) + struct.pack("!H", n) + payload
    return head + bytes([127]) + struct.pack("!Q", n) + payload


def test_terminal_joins_fragments_answers_pings_and_reads_the_exit_from_the_close() -> None:
    import socket
    import struct
    from sandboxvm.terminal import Terminal

    client, server = socket.socketpair()
    term = Terminal(client, client.makefile("rb"), "ws://test")
    server.sendall(_server_frame(0x2, b"hel", fin=False) + _server_frame(0x9, b"are you there")
                   + _server_frame(0x0, b"lo") + _server_frame(0x8, struct.pack("!H", 4007) + b"exit 7"))
    assert term.read(timeout=5) == b"hello"
    assert term.read(timeout=5) == b"" and term.closed and term.exit_code == 7 and term.close_reason == "exit 7"
    # The client masked and sent a pong with the ping's payload, then echoed the close.
    reader = server.makefile("rb")
    first, second = reader.read(2)
    assert first == 0x8A and second & 0x80
    mask = reader.read(4)
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(reader.read(second & 0x7F))) == b"are you there"
    assert reader.read(1)[0] == 0x88
    term.close()
    server.close()


def test_terminal_refuses_a_message_larger_than_its_bound() -> None:
    import socket
    from sandboxvm.terminal import Terminal

    client, server = socket.socketpair()
    term = Terminal(client, client.makefile("rb"), "ws://test")
    # Only the header of a 2 GiB frame: the client must refuse it before reading (or allocating) the payload.
    server.sendall(bytes([0x82, 127]) + (2 << 30).to_bytes(8, "big"))
    with pytest.raises(SandboxError, match="over"):
        term.read(timeout=5)
    term.close()
    server.close()


def test_a_refused_terminal_upgrade_is_the_apis_typed_error_and_carries_the_clients_headers(stub: Stub) -> None:
    # The upgrade is written by hand (a WebSocket): its headers and its refusal go through the same code as every call.
    _session_routes(stub)
    stub.routes[("GET", "/v1/sandboxes/sbx-1/pty")] = problem(429, "too_many_terminals", headers={"Retry-After": "7"})
    with Sandbox("t", base_url=stub.url, api_key="k-9") as sb:
        with pytest.raises(RateLimitError) as raised:
            sb.terminal(cols=100, rows=30)
    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (429, "too_many_terminals", 7.0)
    assert raised.value.detail == "because too_many_terminals"
    method, path, headers, _ = next(r for r in stub.requests if r[1].startswith("/v1/sandboxes/sbx-1/pty"))
    assert (method, path) == ("GET", "/v1/sandboxes/sbx-1/pty?cols=100&rows=30")
    assert headers["Authorization"] == "Bearer k-9"
    assert headers["Host"] == stub.url.removeprefix("http://")
    assert headers["User-Agent"].startswith("sandboxvm-python/")
    assert headers["Upgrade"] == "websocket"
