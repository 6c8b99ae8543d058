"""Web search and page fetch, run by the server inside its ``websearch-tools`` sandbox (``/v1/tools``).

The page is fetched from the sandbox, through the server's egress policy (no private, loopback or
cloud metadata addresses), never from the caller's machine.

>>> from sandboxvm import tools
>>> found = tools.search("firecracker microvm", max_results=3)  # doctest: +SKIP
>>> page = tools.fetch(found.results[0].url)  # doctest: +SKIP
>>> print(page.title, page.text[:200])  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, List, Mapping, Optional

from ._http import HttpClient
from .models import RunMetrics

__all__ = ["search", "fetch", "SearchResults", "SearchHit", "FetchResult", "PageLink", "DEFAULT_MAX_RESULTS"]

DEFAULT_MAX_RESULTS = 5
# A tool call waits for a slot in the tools sandbox and then for the remote site: more than a run's default.
DEFAULT_TIMEOUT = 120.0


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass
class SearchHit:
    """One search result: ``title``, ``url`` and a plain-text ``snippet`` (may be empty)."""

    title: str = ""
    url: str = ""
    snippet: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SearchHit":
        return cls(title=_str(data.get("title")), url=_str(data.get("url")), snippet=_str(data.get("snippet")))


@dataclass
class SearchResults:
    """The answer of :func:`search`: ``results`` best first, and the tool run's ``metrics``.

    Iterating, ``len()`` and indexing go to ``results``.
    """

    results: List[SearchHit] = field(default_factory=list)
    metrics: RunMetrics = field(default_factory=RunMetrics)

    def __iter__(self) -> Iterator[SearchHit]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> SearchHit:
        return self.results[index]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SearchResults":
        hits = data.get("results")
        return cls(
            results=[SearchHit.from_json(h) for h in hits if isinstance(h, dict)] if isinstance(hits, list) else [],
            metrics=RunMetrics.from_json(data.get("metrics") if isinstance(data.get("metrics"), dict) else None),
        )


@dataclass
class PageLink:
    """A link on a fetched page: absolute ``url`` and its ``text`` (may be empty)."""

    url: str = ""
    text: str = ""


@dataclass(repr=False)
class FetchResult:
    """A fetched page.

    ``status`` is the site's HTTP status after redirects (a 404 page is a result, not an error: see
    :attr:`ok`); ``final_url`` is where the page came from; ``text`` is its readable text, cut when
    ``truncated``; ``bytes`` is how much of it the tool read.
    """

    status: int = 0
    url: str = ""
    final_url: str = ""
    content_type: str = ""
    title: Optional[str] = None
    text: str = ""
    links: List[PageLink] = field(default_factory=list)
    truncated: bool = False
    bytes: int = 0
    metrics: RunMetrics = field(default_factory=RunMetrics)

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FetchResult":
        links = data.get("links")
        title = data.get("title")
        return cls(
            status=_int(data.get("status")),
            url=_str(data.get("url")),
            final_url=_str(data.get("final_url")),
            content_type=_str(data.get("content_type")),
            title=title if isinstance(title, str) else None,
            text=_str(data.get("text")),
            links=[PageLink(url=_str(l.get("url")), text=_str(l.get("text"))) for l in links if isinstance(l, dict)]
            if isinstance(links, list)
            else [],
            truncated=data.get("truncated") is True,
            bytes=_int(data.get("bytes")),
            metrics=RunMetrics.from_json(data.get("metrics") if isinstance(data.get("metrics"), dict) else None),
        )

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 80 else self.text[:80] + f"...(+{len(self.text) - 80} chars)"
        return (
            f"FetchResult(status={self.status}, final_url={self.final_url!r}, title={self.title!r}, "
            f"content_type={self.content_type!r}, text={text!r}, links={len(self.links)}, "
            f"truncated={self.truncated}, bytes={self.bytes})"
        )


def search(
    query: str,
    max_results: int = DEFAULT_MAX_RESULTS,
    base_url: Optional[str] = None,
    api_key: Optional[str] = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> SearchResults:
    """Searches the web (``POST /v1/tools/search``); ``max_results`` 1 to 20.

    ``base_url`` and ``api_key`` default to ``SANDBOXVM_BASE_URL`` / ``SANDBOXVM_API_KEY`` as everywhere
    in the SDK; ``timeout`` is the HTTP timeout in seconds.

    Raises :class:`~sandboxvm.ValidationError` (``invalid_argument``, ``missing_field``),
    :class:`~sandboxvm.SearchNotConfiguredError`, :class:`~sandboxvm.ToolError` (``search_failed``,
    ``upstream_timeout``, ``tool_timeout``, ``tool_failed``, ``sandbox_error``),
    :class:`~sandboxvm.UnavailableError` (``template_unavailable``), :class:`~sandboxvm.RateLimitError`.
    """
    if not isinstance(query, str) or not query:
        raise ValueError("query must be a non-empty string")
    if isinstance(max_results, bool) or not isinstance(max_results, int):
        raise TypeError("max_results must be an int")
    data = HttpClient(base_url, api_key, timeout).call_json(
        "POST", "/v1/tools/search", json_body={"query": query, "max_results": max_results}
    )
    return SearchResults.from_json(data if isinstance(data, dict) else {})


def fetch(
    url: str,
    base_url: Optional[str] = None,
    api_key: Optional[str] = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> FetchResult:
    """Fetches a web page and extracts its text and links (``POST /v1/tools/fetch``).

    ``url`` is an absolute ``http://`` or ``https://`` URL (at most 8 KiB), sent as given.

    Raises :class:`~sandboxvm.ValidationError` (``invalid_url``), :class:`~sandboxvm.EgressDeniedError`
    (``.reason`` such as ``private_address``), :class:`~sandboxvm.ToolError` (``fetch_failed``,
    ``fetch_too_large``, ``upstream_timeout``, ``tool_timeout``, ``tool_failed``, ``sandbox_error``),
    :class:`~sandboxvm.UnavailableError`, :class:`~sandboxvm.RateLimitError`.
    """
    if not isinstance(url, str) or not url:
        raise ValueError("url must be a non-empty string")
    data = HttpClient(base_url, api_key, timeout).call_json("POST", "/v1/tools/fetch", json_body={"url": url})
    return FetchResult.from_json(data if isinstance(data, dict) else {})
