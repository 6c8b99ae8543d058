"""The Python SDK's side of the wire contract (tests/contract/README.md): every sample read by the
models (each member lands in the attribute of that name, each attribute is in the sample), the run
request sent as the sample, the stream events and the problem handled as the server sends them.

The server and the C# SDK read the same files, so a field renamed in one place fails a suite.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from sandboxvm import ApiError, Sandbox
from sandboxvm.models import Artifact, FileInfo, RunMetrics, RunResult, SandboxInfo, parse_time
from test_client_offline import Stub, send_json

CONTRACT = Path(__file__).resolve().parents[3] / "tests" / "contract"


def sample(name: str) -> Any:
    return json.loads((CONTRACT / name).read_text(encoding="utf-8"))


def wire_fields(model: Any) -> List[str]:
    """The attributes of a model that come from the wire (not its raw copy, loader or decoded bytes)."""
    return [f.name for f in dataclasses.fields(model) if f.name not in ("raw", "_loader", "content")]


def assert_matches(model: Any, document: Dict[str, Any]) -> None:
    """Every member of the sample is the model's attribute of the same name, and the other way round."""
    expected = set(document) - {"content_base64"}
    assert set(wire_fields(model)) == expected, f"{type(model).__name__} has {wire_fields(model)}, the sample {sorted(expected)}"
    for name in expected:
        value, want = getattr(model, name), document[name]
        if name.endswith("_at") or name in ("mtime", "paused_until"):
            assert value == parse_time(want), name
        elif name == "metrics":
            assert_matches(value, want)
        elif name == "artifacts":
            assert len(value) == len(want)
            for artifact, artifact_doc in zip(value, want):
                assert_matches(artifact, artifact_doc)
        else:
            assert value == want, name
    if "content_base64" in document:
        assert model.content == base64.b64decode(document["content_base64"])


def test_run_result_with_artifacts_and_metrics_reads_as_the_sample() -> None:
    document = sample("run_result.json")
    result = RunResult.from_json(document)
    assert_matches(result, document)
    assert isinstance(result.metrics, RunMetrics) and isinstance(result.artifacts[0], Artifact)


def test_sandbox_info_reads_as_the_sample() -> None:
    document = sample("sandbox_info.json")
    assert_matches(SandboxInfo.from_json(document), document)


def test_file_info_reads_as_the_sample() -> None:
    document = sample("file_info.json")
    assert_matches(FileInfo.from_json(document), document)


def test_artifact_event_reads_as_the_sample() -> None:
    events = sample("stream_events.json")
    document = next(e["data"] for e in events if e["event"] == "artifact")
    assert_matches(Artifact.from_json(document), document)


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    yield s
    s.close()


def test_run_request_is_sent_as_the_sample(stub: Stub) -> None:
    document = sample("run_request.json")
    stub.routes[("POST", "/v1/run")] = lambda h, _: send_json(h, 200, sample("run_result.json"))

    Sandbox.run_once(
        document["code"],
        template=document["template"],
        base_url=stub.url,
        stdin=document["stdin"],
        env=document["env"],
        timeout=document["timeout_s"],
        compile_timeout=document["compile_timeout_s"],
    )

    assert json.loads(stub.requests[0][3]) == document


def test_stream_events_reach_the_callbacks_as_the_sample(stub: Stub) -> None:
    events = sample("stream_events.json")

    def stream(h: BaseHTTPRequestHandler, _: bytes) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        for e in events:
            h.wfile.write(f"event: {e['event']}\ndata: {json.dumps(e['data'])}\n\n".encode())
        h.wfile.write(b"event: result\ndata: " + json.dumps(sample("run_result.json")).encode() + b"\n\n")

    stub.routes[("POST", "/v1/run")] = stream
    out: List[str] = []
    err: List[str] = []

    result = Sandbox.run_once("c", template="t", base_url=stub.url, on_stdout=out.append, on_stderr=err.append)

    assert out == [e["data"]["text"] for e in events if e["event"] == "stdout"]
    assert err == [e["data"]["text"] for e in events if e["event"] == "stderr"]
    assert_matches(result, sample("run_result.json"))


def test_problem_reaches_the_exception_as_the_sample(stub: Stub) -> None:
    document = sample("problem.json")
    stub.routes[("POST", "/v1/run")] = lambda h, _: send_json(h, document["status"], document)

    with pytest.raises(ApiError) as raised:
        Sandbox.run_once("c", template="nope", base_url=stub.url)

    e = raised.value
    assert (e.status, e.code, e.field, e.detail, e.title) == (
        document["status"], document["code"], document["field"], document["detail"], document["title"])
