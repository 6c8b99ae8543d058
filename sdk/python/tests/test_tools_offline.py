"""sandboxvm.tools against a loopback stub playing the server: requests, results, typed errors."""

from __future__ import annotations

import json
import pickle
from http.server import BaseHTTPRequestHandler
from typing import Iterator

import pytest

from sandboxvm import (
    AuthenticationError,
    EgressDeniedError,
    FetchResult,
    RateLimitError,
    SearchNotConfiguredError,
    SearchResults,
    ServerError,
    ToolError,
    UnavailableError,
    ValidationError,
    tools,
)
from test_client_offline import Stub, problem, send_json

SEARCH = {
    "results": [
        {"title": "Example Domain", "url": "https://example.com/", "snippet": "For use in examples"},
        {"title": None, "url": "https://b.example/", "snippet": ""},
    ],
    "metrics": {"queue_ms": 1, "run_ms": 200, "total_ms": 204.5, "vm_source": "singleton"},
}

PAGE = {
    "status": 404, "url": "http://example.com/x", "final_url": "https://example.com/x/",
    "content_type": "text/html; charset=utf-8", "title": None, "text": "Not here",
    "links": [{"url": "https://example.com/", "text": "Home"}], "truncated": True, "bytes": 5120,
    "metrics": {"total_ms": 88, "vm_source": "singleton"}, "something_newer": {"a": 1},
}


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    yield s
    s.close()


def answer(document: object):
    return lambda h, _: send_json(h, 200, document)


def test_search_posts_query_and_max_results_and_reads_hits(stub: Stub) -> None:
    stub.routes[("POST", "/v1/tools/search")] = answer(SEARCH)

    found = tools.search('example "domain"\n', max_results=3, base_url=stub.url, api_key="k")

    method, path, headers, body = stub.requests[-1]
    assert (method, path) == ("POST", "/v1/tools/search")
    assert headers["Authorization"] == "Bearer k"
    assert json.loads(body) == {"query": 'example "domain"\n', "max_results": 3}
    assert isinstance(found, SearchResults)
    assert len(found) == 2 and found[0].title == "Example Domain"
    assert [h.url for h in found] == ["https://example.com/", "https://b.example/"]
    assert found.results[0].snippet == "For use in examples"
    assert found.results[1].title == ""
    assert found.metrics.total_ms == 204.5 and found.metrics.vm_source == "singleton"


def test_search_defaults_to_five_results_and_the_environment(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    stub.routes[("POST", "/v1/tools/search")] = answer({"results": []})
    monkeypatch.setenv("SANDBOXVM_BASE_URL", stub.url)
    monkeypatch.setenv("SANDBOXVM_API_KEY", "from-env")

    found = tools.search("q")

    _, _, headers, body = stub.requests[-1]
    assert json.loads(body) == {"query": "q", "max_results": 5}
    assert headers["Authorization"] == "Bearer from-env"
    assert list(found) == []


def test_fetch_posts_the_url_as_given_and_reads_the_page(stub: Stub) -> None:
    stub.routes[("POST", "/v1/tools/fetch")] = answer(PAGE)
    url = "http://example.com/x?a=\"b\"&c=d e\n'; import os #"

    page = tools.fetch(url, base_url=stub.url)

    assert json.loads(stub.requests[-1][3]) == {"url": url}
    assert isinstance(page, FetchResult)
    assert page.status == 404 and not page.ok
    assert page.url == "http://example.com/x" and page.final_url == "https://example.com/x/"
    assert page.content_type == "text/html; charset=utf-8"
    assert page.title is None
    assert page.text == "Not here"
    assert [(l.url, l.text) for l in page.links] == [("https://example.com/", "Home")]
    assert page.truncated is True and page.bytes == 5120
    assert page.metrics.total_ms == 88
    assert "status=404" in repr(page)


def test_bad_arguments_are_refused_before_any_call(stub: Stub) -> None:
    with pytest.raises(ValueError):
        tools.search("", base_url=stub.url)
    with pytest.raises(TypeError):
        tools.search("q", max_results="5", base_url=stub.url)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        tools.fetch("", base_url=stub.url)
    assert stub.requests == []


def test_egress_denied_carries_the_reason_and_is_not_an_auth_error(stub: Stub) -> None:
    def denied(h: BaseHTTPRequestHandler, _: bytes) -> None:
        send_json(h, 403, {"title": "Forbidden", "status": 403, "code": "egress_denied", "field": "url",
                           "detail": "the sandbox may not connect there (private_address): 10.0.0.1", "reason": "private_address"})

    stub.routes[("POST", "/v1/tools/fetch")] = denied

    with pytest.raises(EgressDeniedError) as raised:
        tools.fetch("http://10.0.0.1/", base_url=stub.url)
    error = raised.value
    assert error.reason == "private_address"
    assert (error.status, error.code, error.field) == (403, "egress_denied", "url")
    assert "private_address" in str(error)
    assert not isinstance(error, AuthenticationError)
    assert pickle.loads(pickle.dumps(error)).reason == "private_address"


@pytest.mark.parametrize(
    "status,code,timeout",
    [
        (502, "fetch_failed", False),
        (502, "fetch_too_large", False),
        (502, "search_failed", False),
        (504, "upstream_timeout", True),
        (504, "tool_timeout", True),
        (502, "tool_failed", False),
        (502, "sandbox_error", False),
    ],
)
def test_tool_failures_are_tool_errors(stub: Stub, status: int, code: str, timeout: bool) -> None:
    stub.routes[("POST", "/v1/tools/fetch")] = problem(status, code)

    with pytest.raises(ToolError) as raised:
        tools.fetch("https://example.com/", base_url=stub.url)
    assert (raised.value.status, raised.value.code, raised.value.is_timeout) == (status, code, timeout)
    assert isinstance(raised.value, ServerError)


@pytest.mark.parametrize(
    "status,code,expected",
    [
        (503, "search_not_configured", SearchNotConfiguredError),
        (409, "template_unavailable", UnavailableError),
        (429, "overloaded", RateLimitError),
        (400, "invalid_argument", ValidationError),
        (400, "invalid_url", ValidationError),
        (400, "missing_field", ValidationError),
        (401, "unauthorized", AuthenticationError),
    ],
)
def test_other_tool_problems_map_to_their_error_types(stub: Stub, status: int, code: str, expected: type) -> None:
    stub.routes[("POST", "/v1/tools/search")] = problem(status, code, field="query")

    with pytest.raises(expected) as raised:
        tools.search("q", base_url=stub.url)
    assert raised.value.code == code


def test_search_not_configured_is_an_unavailable_error(stub: Stub) -> None:
    stub.routes[("POST", "/v1/tools/search")] = problem(503, "search_not_configured")

    with pytest.raises(UnavailableError):
        tools.search("q", base_url=stub.url)
