"""An interactive terminal in a sandbox (``sb.terminal()``): a pseudo-terminal over a WebSocket, per
docs/API.md "Terminals". The WebSocket client (RFC 6455, client side only) is written here on the standard
library so the SDK keeps no dependencies."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import struct
import time
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, Optional, Union

from ._http import api_error
from .errors import SandboxConnectionError, SandboxError, SandboxTimeoutError

if TYPE_CHECKING:  # pragma: no cover
    from .sandbox import Sandbox

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# The server relays output within a 256 KiB window: no frame it sends is larger; anything past this is not it.
_MAX_MESSAGE = 1 << 20
_MAX_HEADER_LINES = 100
EXIT_CLOSE_BASE = 4000


class Terminal:
    """A live terminal: ``write`` keystrokes, ``read`` output (bytes with escape sequences), ``resize``,
    ``close``. When the program exits, ``read`` returns what is left and then ``b""``; ``exit_code`` is its
    exit status (128 + N for signal N). Use it as a context manager so it is closed (closing kills the
    terminal's process group)."""

    def __init__(self, sock: socket.socket, reader: BinaryIO, url: str) -> None:
        self._sock = sock
        self._reader = reader
        self._url = url
        self._closed = False
        self._pending = b""
        self.exit_code: Optional[int] = None
        self.close_code: Optional[int] = None
        self.close_reason: str = ""

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once the server closed the terminal (the program ended) or ``close`` was called."""
        return self._closed

    def write(self, keys: Union[str, bytes]) -> None:
        """Sends keystrokes (text is UTF-8 encoded): ``"ls\\n"``, ``b"\\x03"`` for Ctrl-C."""
        self._send(_BINARY, keys.encode("utf-8") if isinstance(keys, str) else bytes(keys))

    def resize(self, cols: int, rows: int) -> None:
        """Sets the terminal's size (1..1000 each); the program gets SIGWINCH."""
        self._send(_TEXT, json.dumps({"resize": {"cols": int(cols), "rows": int(rows)}}).encode("utf-8"))

    def read(self, timeout: Optional[float] = None) -> bytes:
        """The next output the terminal sent (waits up to ``timeout`` seconds, forever when None; raises
        SandboxTimeoutError past it). ``b""`` once the terminal is closed."""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        while not self._closed:
            opcode, payload = self._receive(timeout)
            if opcode == _BINARY and payload:
                return payload
            if opcode == _CLOSE:
                self._closed_by_server(payload)
        return b""

    def read_until(self, expected: Union[str, bytes], timeout: float = 30.0) -> bytes:
        """Reads until the output contains ``expected``; everything read up to and including it. Raises
        SandboxTimeoutError when it did not come within ``timeout`` s, SandboxError when the terminal closed first."""
        want = expected.encode("utf-8") if isinstance(expected, str) else expected
        deadline = time.monotonic() + timeout
        seen = b""
        while want not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxTimeoutError(f"{want!r} did not appear on the terminal within {timeout:g} s; it showed {seen[-500:]!r}", self._url)
            chunk = self.read(timeout=left)
            if not chunk:
                raise SandboxError(f"the terminal closed ({self.close_reason or self.close_code}) before {want!r} appeared; it showed {seen[-500:]!r}")
            seen += chunk
        end = seen.index(want) + len(want)
        self._pending = seen[end:] + self._pending
        return seen[:end]

    def wait(self, timeout: float = 30.0) -> Optional[int]:
        """Reads (and drops) output until the program ends; its exit code."""
        deadline = time.monotonic() + timeout
        while not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxTimeoutError(f"the terminal's program did not end within {timeout:g} s", self._url)
            self.read(timeout=left)
        return self.exit_code

    def close(self) -> None:
        """Ends the terminal (its process group is killed) and the connection."""
        if not self._closed:
            self._closed = True
            try:
                self._send(_CLOSE, struct.pack("!H", 1000), force=True)
            except SandboxError:
                pass
        try:
            self._reader.close()
        finally:
            self._sock.close()

    def _closed_by_server(self, payload: bytes) -> None:
        self._closed = True
        if len(payload) >= 2:
            self.close_code = struct.unpack("!H", payload[:2])[0]
            self.close_reason = payload[2:].decode("utf-8", "replace")
            if EXIT_CLOSE_BASE <= self.close_code <= EXIT_CLOSE_BASE + 255:
                self.exit_code = self.close_code - EXIT_CLOSE_BASE
        try:
            self._send(_CLOSE, payload[:2], force=True)
        except SandboxError:
            pass

    def _send(self, opcode: int, payload: bytes, force: bool = False) -> None:
        if self._closed and not force:
            raise SandboxError("the terminal is closed")
        # Client frames are masked (RFC 6455 5.3), one frame per message.
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        try:
            self._sock.sendall(header + mask + masked)
        except OSError as e:
            raise SandboxConnectionError(f"the terminal connection to {self._url} broke: {e}", self._url) from e

    def _exactly(self, n: int) -> bytes:
        data = self._reader.read(n)
        if data is None or len(data) < n:
            raise SandboxConnectionError(f"the terminal connection to {self._url} ended in the middle of a frame", self._url)
        return data

    def _receive(self, timeout: Optional[float]) -> "tuple[int, bytes]":
        """One whole message (continuation frames joined; pings answered, also between fragments), or a close or pong."""
        self._sock.settimeout(timeout)
        message_opcode: Optional[int] = None
        parts = []
        size = 0
        started = False
        try:
            while True:
                first, second = self._exactly(2)
                started = True
                fin, opcode = first & 0x80, first & 0x0F
                if second & 0x80:
                    raise SandboxError(f"{self._url} sent a masked frame (servers never mask)")
                length = second & 0x7F
                if length == 126:
                    length = struct.unpack("!H", self._exactly(2))[0]
                elif length == 127:
                    length = struct.unpack("!Q", self._exactly(8))[0]
                if size + length > _MAX_MESSAGE:
                    raise SandboxError(f"{self._url} sent a terminal message over {_MAX_MESSAGE} bytes")
                payload = self._exactly(length) if length else b""
                if opcode == _PING:
                    # Answered at once, also between the fragments of a message.
                    self._send(_PONG, payload)
                    continue
                if opcode >= _CLOSE:
                    return opcode, payload
                if opcode != _CONTINUATION:
                    message_opcode = opcode
                parts.append(payload)
                size += length
                if fin:
                    return message_opcode if message_opcode is not None else _BINARY, b"".join(parts)
        except socket.timeout as e:
            if started:
                # Part of a message was consumed: the stream cannot be read on from here.
                self._closed = True
                raise SandboxConnectionError(f"the terminal connection to {self._url} stalled in the middle of a message", self._url) from e
            raise SandboxTimeoutError(f"no terminal output from {self._url} within {timeout:g} s", self._url) from e
        except OSError as e:
            raise SandboxConnectionError(f"the terminal connection to {self._url} broke: {e}", self._url) from e


def open_terminal(sandbox: "Sandbox", cols: int, rows: int, cmd: Optional[str], timeout: float) -> Terminal:
    """Upgrades ``GET /v1/sandboxes/{id}/pty`` to a WebSocket; a refusal raises the API's typed error."""
    http = sandbox._http
    query: Dict[str, Any] = {"cols": cols, "rows": rows}
    if cmd is not None:
        query["cmd"] = cmd
    path = sandbox._api("/pty")
    url = http.url(path, query)
    conn = http._connection(timeout)
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    headers = {
        "Host": http.host_header,
        **http.headers(),
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
    }
    request = f"GET {http.target(path, query)} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    try:
        conn.connect()
        sock = conn.sock
        sock.sendall(request.encode("ascii"))
        reader = sock.makefile("rb")
        status_line = reader.readline(8192).decode("latin-1")
        match = re.match(r"HTTP/1\.[01] (\d{3})", status_line)
        if not match:
            raise SandboxError(f"{url} answered the terminal upgrade with {status_line.strip()[:100]!r}")
        status = int(match.group(1))
        reason = status_line.strip()[len(match.group(0)):].strip()
        answer: Dict[str, str] = {}
        for _ in range(_MAX_HEADER_LINES):
            line = reader.readline(8192).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            answer[name.strip().lower()] = value.strip()
        else:
            raise SandboxError(f"{url} answered the terminal upgrade with more than {_MAX_HEADER_LINES} header lines")
    except socket.timeout as e:
        conn.close()
        raise SandboxTimeoutError(f"SandboxVM at {url} did not answer the terminal upgrade in time", url) from e
    except OSError as e:
        conn.close()
        raise http.transport_error(url, e) from e
    if status != 101:
        try:
            raw = _read_body(reader, answer, 64 * 1024)
        except (OSError, ValueError):
            raw = b""
        finally:
            reader.close()
            conn.close()
        raise api_error(status, reason, raw, answer.get("retry-after"), f"GET {url}")
    accept = base64.b64encode(hashlib.sha1((key + _GUID).encode("ascii")).digest()).decode("ascii")
    if answer.get("sec-websocket-accept") != accept:
        reader.close()
        conn.close()
        raise SandboxError(f"{url} answered the terminal upgrade without the right Sec-WebSocket-Accept")
    return Terminal(sock, reader, url)


def _read_body(reader: BinaryIO, headers: Dict[str, str], limit: int) -> bytes:
    """A refusal's body (a problem document): by its length or its chunks, at most ``limit`` bytes."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while len(body) < limit:
            size = int(reader.readline(100).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            body += reader.read(min(size, limit - len(body)))
            reader.readline(10)
        return body
    length = min(int(headers.get("content-length", "0") or 0), limit)
    return reader.read(length) if length else b""
