"""A small HTTP transport over http.client: JSON calls, raw bodies streamed in chunks, streamed answers."""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import socket
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Tuple, Union
from urllib.parse import urlencode, urlsplit

from ._version import __version__
from .errors import SandboxConnectionError, SandboxError, SandboxTimeoutError, error_from_response

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0
_ERROR_BODY_LIMIT = 1 << 20

Body = Union[bytes, Iterable[bytes], None]


def resolve_base_url(base_url: Optional[str]) -> str:
    """The base URL to use: the argument, else ``SANDBOXVM_BASE_URL``, else http://127.0.0.1:8000."""
    url = base_url or os.environ.get("SANDBOXVM_BASE_URL") or DEFAULT_BASE_URL
    return url.rstrip("/")


def resolve_api_key(api_key: Optional[str]) -> Optional[str]:
    """The API key to send: the argument, else ``SANDBOXVM_API_KEY``, else none."""
    return api_key if api_key is not None else (os.environ.get("SANDBOXVM_API_KEY") or None)


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def api_error(status: int, reason: Optional[str], raw: bytes, retry_after: Optional[str], request: str) -> SandboxError:
    """The typed error for a refusal: its problem document (``raw``), or what can be said without one."""
    document: Dict[str, Any] = {}
    try:
        parsed = json.loads(raw.decode("utf-8")) if raw else {}
        if isinstance(parsed, dict):
            document = parsed
    except (UnicodeDecodeError, ValueError):
        document = {"text": raw.decode("utf-8", "replace").strip()}
    if not document.get("title") and reason:
        document = dict(document, title=reason)
    if not any(document.get(k) for k in ("detail", "text", "code")):
        document = dict(document, detail=f"{request} answered without a problem document")
    return error_from_response(status, document, _retry_after(retry_after))


class HttpClient:
    """Talks to one SandboxVM server. One connection per request: simple and safe across threads."""

    def __init__(self, base_url: Optional[str] = None, api_key: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = resolve_base_url(base_url)
        self.api_key = resolve_api_key(api_key)
        self.timeout = timeout
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {self.base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")

    def headers(self, accept: Optional[str] = None) -> Dict[str, str]:
        """The headers every request carries: User-Agent, the key's Authorization, and Accept when given."""
        headers: Dict[str, str] = {"User-Agent": f"sandboxvm-python/{__version__}"}
        if accept:
            headers["Accept"] = accept
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    @property
    def host_header(self) -> str:
        """The Host header of this server's requests (for a request written by hand, as the terminal's upgrade)."""
        return self._host if self._port in (80, 443, None) else f"{self._host}:{self._port}"

    def target(self, path: str, query: Optional[Mapping[str, Any]] = None) -> str:
        """The request target of an API path: the base URL's path prefix, the path and the query."""
        return self._prefix + path + (("?" + urlencode(query)) if query else "")

    def url(self, path: str, query: Optional[Mapping[str, Any]] = None) -> str:
        """The full URL of an API path."""
        return self.base_url + path + (("?" + urlencode(query)) if query else "")

    def _connection(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    @staticmethod
    def transport_error(url: str, error: BaseException) -> SandboxConnectionError:
        """The SDK error for a transport failure while calling ``url``."""
        if isinstance(error, socket.timeout):
            return SandboxTimeoutError(f"SandboxVM at {url} did not answer in time ({error})", url)
        if isinstance(error, ConnectionRefusedError):
            return SandboxConnectionError(f"could not connect to SandboxVM at {url}: connection refused (is the server running?)", url)
        if isinstance(error, OSError):
            return SandboxConnectionError(f"could not connect to SandboxVM at {url}: {error}", url)
        return SandboxConnectionError(f"the connection to SandboxVM at {url} broke: {error!r}", url)

    @contextmanager
    def open(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Mapping[str, Any]] = None,
        json_body: Any = None,
        body: Body = None,
        content_length: Optional[int] = None,
        content_type: Optional[str] = None,
        accept: str = "application/json",
        timeout: Optional[float] = -1.0,
    ) -> Iterator[Tuple[http.client.HTTPResponse, str]]:
        """Sends a request and yields (response, url) for a 2xx answer; raises the typed error otherwise.

        ``body`` may be bytes or an iterable of byte chunks (sent as they come; chunked transfer
        encoding when ``content_length`` is not given). ``timeout`` -1 means the client default.
        """
        url = self.url(path, query)
        headers = self.headers(accept)
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        if isinstance(body, (bytes, bytearray, memoryview)):
            headers["Content-Length"] = str(len(body))
        elif content_length is not None:
            headers["Content-Length"] = str(content_length)
        elif body is None and method in ("POST", "PUT"):
            headers["Content-Length"] = "0"
        target = self.target(path, query)
        conn = self._connection(self.timeout if timeout == -1.0 else timeout)
        try:
            try:
                try:
                    conn.request(method, target, body=body, headers=headers)
                except (BrokenPipeError, ConnectionResetError) as e:
                    # The server may answer (413, 401...) and close before taking the whole body.
                    try:
                        response = conn.getresponse()
                    except (OSError, http.client.HTTPException):
                        raise e from None
                else:
                    response = conn.getresponse()
                error = None if 200 <= response.status < 300 else self._api_error(response, f"{method} {url}")
            except (OSError, http.client.HTTPException) as e:
                raise self.transport_error(url, e) from e
            if error is not None:
                raise error
            yield response, url
        finally:
            conn.close()

    def read(self, response: http.client.HTTPResponse, url: str, amount: Optional[int] = None, line: bool = False) -> bytes:
        """Reads from an answer, turning a broken connection or a timeout into SandboxConnectionError."""
        try:
            return response.readline() if line else response.read(amount)
        except (OSError, http.client.HTTPException) as e:
            raise self.transport_error(url, e) from e

    @staticmethod
    def _api_error(response: http.client.HTTPResponse, request: str) -> SandboxError:
        return api_error(response.status, response.reason, response.read(_ERROR_BODY_LIMIT), response.getheader("Retry-After"), request)

    def call_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Sends a request and returns the parsed JSON answer (None for an empty answer such as 204)."""
        with self.open(method, path, **kwargs) as (response, url):
            raw = self.read(response, url)
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise SandboxError(f"SandboxVM at {url} answered with something that is not JSON: {raw[:200]!r}") from e

    def call_bytes(self, method: str, path: str, **kwargs: Any) -> bytes:
        """Sends a request and returns the answer's bytes."""
        kwargs.setdefault("accept", "*/*")
        with self.open(method, path, **kwargs) as (response, url):
            return self.read(response, url)
