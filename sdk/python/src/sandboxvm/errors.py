"""Exceptions raised by the SandboxVM SDK.

Every error the SDK raises derives from :class:`SandboxError`. Answers the server refuses carry its
RFC 7807 problem fields (``code``, ``status``, ``detail``, ``field``) on :class:`ApiError` and its
subclasses, chosen from the stable ``code`` first and the HTTP status second.
"""

from __future__ import annotations

import builtins
from typing import Any, Dict, Optional, Type

__all__ = [
    "SandboxError",
    "SandboxConnectionError",
    "SandboxTimeoutError",
    "ApiError",
    "ValidationError",
    "NotFoundError",
    "UnknownTemplateError",
    "AuthenticationError",
    "FileTooLargeError",
    "RateLimitError",
    "UnavailableError",
    "ServerError",
    "EgressDeniedError",
    "SearchNotConfiguredError",
    "ToolError",
]


class SandboxError(Exception):
    """Base of every error the SDK raises."""


class SandboxConnectionError(SandboxError, builtins.ConnectionError):
    """The server could not be reached, or the connection broke before an answer arrived.

    The message names the URL that was tried. Also a built-in :class:`ConnectionError`.
    """

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SandboxTimeoutError(SandboxConnectionError, builtins.TimeoutError):
    """The server did not answer within the client's HTTP timeout."""


class ApiError(SandboxError):
    """The server answered with an error (a problem+json body, or any other non-success answer).

    Attributes:
        status: HTTP status code.
        code: stable machine-readable code, e.g. ``unknown_template``; None when the server sent none.
        detail: human-readable explanation.
        field: the request field at fault, e.g. ``template``; None when not about one field.
        title: short summary of the kind of error.
        body: the parsed problem document (or ``{"text": ...}`` when it was not JSON).
    """

    def __init__(
        self,
        status: int,
        code: Optional[str] = None,
        detail: Optional[str] = None,
        field: Optional[str] = None,
        title: Optional[str] = None,
        body: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.title = title
        self.body: Dict[str, Any] = body or {}
        super().__init__(self._message())

    def _message(self) -> str:
        head = (self.title or "SandboxVM request failed").rstrip(".")
        text = f"{head}: {self.detail}" if self.detail else head
        facts = f"HTTP {self.status}"
        if self.code:
            facts += f", code {self.code}"
        if self.field:
            facts += f", field {self.field}"
        return f"{text} ({facts})"

    def __reduce__(self) -> Any:  # keeps the exception picklable despite the keyword-rich constructor
        return (self.__class__, (self.status, self.code, self.detail, self.field, self.title, self.body))


class ValidationError(ApiError):
    """The request was refused as invalid (HTTP 400): ``empty_code``, ``missing_field``,
    ``timeout_out_of_range``, ``invalid_path``, ``not_regular_file``, ``malformed_json``...; also a
    sandbox file it may not touch (HTTP 403 ``permission_denied``)."""


class NotFoundError(ApiError):
    """What was asked for does not exist: ``sandbox_not_found`` (unknown or ended sandbox),
    ``file_not_found``, ``unknown_template``."""


class UnknownTemplateError(NotFoundError, ValidationError):
    """``unknown_template``. ``POST /v1/run`` answers it with HTTP 400, ``GET /v1/templates/{name}``
    with 404, so it is both a :class:`NotFoundError` and a :class:`ValidationError`."""


class AuthenticationError(ApiError):
    """The API key is missing or wrong (HTTP 401 ``unauthorized``, or 403)."""


class FileTooLargeError(ApiError):
    """An upload is over the server's limit (HTTP 413 ``file_too_large``)."""


class RateLimitError(ApiError):
    """Too many requests or sandboxes (HTTP 429 ``too_many_sandboxes``, ``overloaded``).

    ``retry_after`` is the server's ``Retry-After`` in seconds, or None when it sent none.
    """

    def __init__(self, *args: Any, retry_after: Optional[float] = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(*args, **kwargs)

    def __reduce__(self) -> Any:
        return (_rebuild_rate_limit, (self.status, self.code, self.detail, self.field, self.title, self.body, self.retry_after))


def _rebuild_rate_limit(*args: Any) -> RateLimitError:
    *rest, retry_after = args
    return RateLimitError(*rest, retry_after=retry_after)


class UnavailableError(ApiError):
    """The server cannot serve this now (HTTP 409 ``template_unavailable``, 503)."""


class ServerError(ApiError):
    """The server failed (HTTP 5xx other than 503)."""


class EgressDeniedError(ApiError):
    """A tool may not connect where it was asked to (HTTP 403 ``egress_denied``): the server's egress
    policy refuses the host. Not an API key problem.

    ``reason`` is the policy's reason code (``private_address``, ``denied_by_rule``,
    ``metadata_endpoint``, ``port_not_allowed``, ``not_in_allow_list``, ``invalid_request``...), or None.
    """

    @property
    def reason(self) -> Optional[str]:
        value = self.body.get("reason")
        return value if isinstance(value, str) and value else None


class SearchNotConfiguredError(UnavailableError):
    """The server has no web search provider configured (HTTP 503 ``search_not_configured``)."""


class ToolError(ServerError):
    """A tool call failed on the way out or in its sandbox (HTTP 502/504): ``fetch_failed``,
    ``fetch_too_large``, ``search_failed``, ``upstream_timeout``, ``tool_timeout``, ``tool_failed``,
    ``sandbox_error``. ``is_timeout`` is true for the two timeouts (a retry may succeed)."""

    @property
    def is_timeout(self) -> bool:
        return self.code in ("upstream_timeout", "tool_timeout")


_TOOL_FAILURES = ("fetch_failed", "fetch_too_large", "search_failed", "upstream_timeout", "tool_timeout", "tool_failed", "sandbox_error")

_BY_CODE: Dict[str, Type[ApiError]] = {
    "unknown_template": UnknownTemplateError,
    "sandbox_not_found": NotFoundError,
    "file_not_found": NotFoundError,
    "file_too_large": FileTooLargeError,
    # 403 about a file in the sandbox, not about the API key.
    "permission_denied": ValidationError,
    "unauthorized": AuthenticationError,
    "too_many_sandboxes": RateLimitError,
    "overloaded": RateLimitError,
    "template_unavailable": UnavailableError,
    "egress_denied": EgressDeniedError,
    "search_not_configured": SearchNotConfiguredError,
    **{code: ToolError for code in _TOOL_FAILURES},
}


def _class_for(status: int, code: Optional[str]) -> Type[ApiError]:
    if code and code in _BY_CODE:
        return _BY_CODE[code]
    if status in (401, 403):
        return AuthenticationError
    if status == 404:
        return NotFoundError
    if status == 413:
        return FileTooLargeError
    if status == 429:
        return RateLimitError
    if status in (409, 503):
        return UnavailableError
    if 400 <= status < 500:
        return ValidationError
    if status >= 500:
        return ServerError
    return ApiError


def error_from_response(
    status: int, body: Dict[str, Any], retry_after: Optional[float] = None
) -> ApiError:
    """Builds the exception for a non-success answer with a (possibly empty) problem document."""

    def text(key: str) -> Optional[str]:
        value = body.get(key)
        return value if isinstance(value, str) and value else None

    code = text("code")
    cls = _class_for(status, code)
    detail = text("detail") or text("text")
    kwargs: Dict[str, Any] = {}
    if issubclass(cls, RateLimitError):
        kwargs["retry_after"] = retry_after
    return cls(status, code, detail, text("field"), text("title"), body, **kwargs)
