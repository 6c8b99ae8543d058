"""Finding sandboxes again (list filters, connect, PATCH of the lifetime) and snapshots, against the real server.

The server of these tests runs the process runtime by default (SANDBOXVM_TEST_RUNTIME): it cannot save a
sandbox, so snapshots are refused with ``pause_unsupported``; on qemu or gvisor they are saved and restored.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from sandboxvm import ApiError, NotFoundError, Sandbox, ValidationError, delete_snapshot, list_snapshots

PY = "python-data-analysis"


def test_list_filters_by_metadata_and_state(server_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    with Sandbox(PY, base_url=server_url, metadata={"run": run, "role": "worker"}) as worker, \
            Sandbox(PY, base_url=server_url, metadata={"run": run, "role": "judge"}) as judge:
        both = Sandbox.list(base_url=server_url, metadata={"run": run})
        workers = Sandbox.list(base_url=server_url, metadata={"run": run, "role": "worker"})
        running = Sandbox.list(base_url=server_url, metadata={"run": run}, state="running")
        paused = Sandbox.list(base_url=server_url, metadata={"run": run}, state=["paused", "resuming"])
        again = Sandbox.connect(workers[0].id, base_url=server_url)

        assert sorted(s.id for s in both) == sorted([worker.id, judge.id])
        assert [s.id for s in workers] == [worker.id]
        assert sorted(s.id for s in running) == sorted([worker.id, judge.id])
        assert paused == []
        assert again.run("print(6 * 7)").output == "42\n"
    with pytest.raises(ValidationError) as raised:
        Sandbox.list(base_url=server_url, state="sleeping")
    assert raised.value.code == "invalid_filter"


def test_set_timeout_gives_a_new_lifetime_from_now(server_url: str) -> None:
    with Sandbox(PY, base_url=server_url, timeout=60) as sb:
        info = sb.set_timeout(1800)
        expected = datetime.now(timezone.utc) + timedelta(seconds=1800)

        assert info.timeout_s == 1800
        assert info.expires_at is not None and abs((info.expires_at - expected).total_seconds()) < 30
        assert sb.refresh().expires_at == info.expires_at
        with pytest.raises(ValidationError) as raised:
            sb.set_timeout(-1)
        assert raised.value.code == "timeout_out_of_range"


def test_snapshots_on_this_runtime(server_url: str) -> None:
    name = "py-" + uuid.uuid4().hex[:8]
    with Sandbox(PY, base_url=server_url) as sb:
        sb.run("x = 41")
        if sb.info.runtime == "process":
            with pytest.raises(ApiError) as raised:
                sb.snapshot(name)
            assert (raised.value.status, raised.value.code) == (409, "pause_unsupported")
            assert list_snapshots(base_url=server_url) == []
            return
        saved = sb.snapshot(name)
    try:
        assert (saved.name, saved.template) == (name, PY) and saved.size_bytes > 0
        assert name in [s.name for s in list_snapshots(base_url=server_url)]
        with Sandbox.from_snapshot(name, base_url=server_url) as one, Sandbox.from_snapshot(name, base_url=server_url) as two:
            assert one.run("x += 1\nprint(x)").output == "42\n"
            assert two.run("print(x)").output == "41\n"
    finally:
        assert delete_snapshot(name, base_url=server_url)
    with pytest.raises(NotFoundError) as raised:
        Sandbox.from_snapshot(name, base_url=server_url)
    assert raised.value.code == "snapshot_not_found"
