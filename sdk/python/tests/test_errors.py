"""Typed errors against the real server, and a closed port."""

from __future__ import annotations

import pytest

from conftest import free_port
from sandboxvm import (
    ApiError,
    NotFoundError,
    Sandbox,
    SandboxConnectionError,
    SandboxError,
    ValidationError,
)


def test_unknown_template_is_not_found(server_url: str) -> None:
    with pytest.raises(NotFoundError) as raised:
        Sandbox.run_once("print(1)", template="no-such-template", base_url=server_url)
    assert raised.value.code == "unknown_template"
    assert raised.value.field == "template"
    assert "no-such-template" in (raised.value.detail or "")


def test_unknown_template_for_a_session_is_not_found(server_url: str) -> None:
    with pytest.raises(NotFoundError) as raised:
        Sandbox.create("no-such-template", base_url=server_url)
    assert raised.value.code == "unknown_template"


def test_empty_code_is_a_validation_error(server_url: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Sandbox.run_once("", template="python-data-analysis", base_url=server_url)
    error = raised.value
    assert (error.status, error.code, error.field) == (400, "empty_code", "code")
    assert "empty_code" in str(error)


def test_timeout_out_of_range_is_a_validation_error(server_url: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Sandbox.run_once("print(1)", template="python-data-analysis", base_url=server_url, timeout=10**6)
    assert raised.value.code == "timeout_out_of_range"


def test_connection_refused_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SandboxConnectionError) as raised:
        Sandbox.run_once("print(1)", template="python-data-analysis", base_url=url)
    assert f"{url}/v1/run" in str(raised.value)
    assert isinstance(raised.value, ConnectionError) and isinstance(raised.value, SandboxError)
    assert not isinstance(raised.value, ApiError)

    with pytest.raises(SandboxConnectionError, match=f"{url}/v1/sandboxes"):
        with Sandbox("python-data-analysis", base_url=url):
            pass


def test_unknown_sandbox_id_is_not_found(server_url: str) -> None:
    with pytest.raises(NotFoundError) as raised:
        Sandbox.connect("sbx-does-not-exist", base_url=server_url)
    assert raised.value.code == "sandbox_not_found"
    assert raised.value.status == 404
