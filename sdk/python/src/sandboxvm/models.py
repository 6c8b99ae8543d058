"""Results and descriptions the server returns, as dataclasses."""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from .errors import SandboxError

__all__ = ["RunResult", "RunMetrics", "Artifact", "SandboxInfo", "FileInfo"]

_StrPath = Union[str, "os.PathLike[str]"]


def _short(text: str, limit: int = 120) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"...(+{len(text) - limit} chars)"


_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$")


def parse_time(value: Any) -> Optional[datetime]:
    """Parses the API's ISO 8601 UTC times (``2026-11-28T21:30:00.123Z``) on any Python 3.9+."""
    if not isinstance(value, str) or not value:
        return None
    m = _TIME.match(value.strip())
    if not m:
        return None
    base, fraction, zone = m.groups()
    text = base.replace(" ", "T")
    if fraction:
        text += "." + (fraction + "000000")[:6]
    if zone in (None, "Z"):
        text += "+00:00"
    else:
        text += zone if ":" in zone else zone[:3] + ":" + zone[3:]
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def _float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _opt_float(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


@dataclass(repr=False)
class RunMetrics:
    """Where a run's time went, in milliseconds, and where its VM came from.

    ``vm_source`` is ``pool``, ``restore``, ``boot``, ``singleton``, ``process`` or (sessions) ``session``.
    """

    queue_ms: float = 0.0
    startup_ms: float = 0.0
    compile_ms: float = 0.0
    run_ms: float = 0.0
    host_ms: float = 0.0
    total_ms: float = 0.0
    vm_source: str = ""

    @classmethod
    def from_json(cls, data: Optional[Mapping[str, Any]]) -> "RunMetrics":
        data = data or {}
        return cls(
            queue_ms=_float(data.get("queue_ms")),
            startup_ms=_float(data.get("startup_ms")),
            compile_ms=_float(data.get("compile_ms")),
            run_ms=_float(data.get("run_ms")),
            host_ms=_float(data.get("host_ms")),
            total_ms=_float(data.get("total_ms")),
            vm_source=_str(data.get("vm_source")),
        )

    def __repr__(self) -> str:
        def ms(v: float) -> str:
            return f"{v:.1f}ms"

        return (
            f"RunMetrics(startup={ms(self.startup_ms)}, compile={ms(self.compile_ms)}, run={ms(self.run_ms)}, "
            f"host={ms(self.host_ms)}, total={ms(self.total_ms)}, queue={ms(self.queue_ms)}, "
            f"vm_source={self.vm_source!r})"
        )


@dataclass(repr=False)
class Artifact:
    """A file the program left in ``/tmp/outputs``.

    ``path`` is relative to ``/tmp/outputs``. ``content`` holds the bytes when the server sent them
    inline (one-shot runs, up to a cap); otherwise :meth:`read` fetches them from the sandbox when
    the artifact came from one.
    """

    path: str
    mime: str = "application/octet-stream"
    size: int = 0
    sha256: str = ""
    content: Optional[bytes] = None
    _loader: Optional[Callable[[str], bytes]] = field(default=None, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], loader: Optional[Callable[[str], bytes]] = None) -> "Artifact":
        encoded = data.get("content_base64")
        size = data.get("size")
        return cls(
            path=_str(data.get("path")),
            mime=_str(data.get("mime")) or "application/octet-stream",
            size=int(size) if isinstance(size, int) else 0,
            sha256=_str(data.get("sha256")),
            content=base64.b64decode(encoded) if isinstance(encoded, str) else None,
            _loader=loader,
        )

    def read(self) -> bytes:
        """The artifact's bytes: inline content, or fetched from its sandbox."""
        if self.content is not None:
            return self.content
        if self._loader is not None:
            return self._loader(self.path)
        raise SandboxError(
            f"artifact {self.path!r} ({self.size} bytes) was not sent inline; "
            "read it from its sandbox with Sandbox.read_artifact"
        )

    def save(self, directory: _StrPath = ".") -> Path:
        """Writes the artifact to ``directory/path`` (creating folders) and returns where.

        Refuses (``SandboxError``) a path that would land outside ``directory``: absolute paths,
        ``..`` components, or symlinks leading out.
        """
        root = Path(directory).resolve()
        relative = Path(self.path)
        if not self.path or relative.is_absolute() or ".." in relative.parts:
            raise SandboxError(f"refusing to save artifact {self.path!r}: its path escapes {str(root)!r}")
        target = (root / relative).resolve()
        if target == root or root not in target.parents:
            raise SandboxError(f"refusing to save artifact {self.path!r}: its path escapes {str(root)!r}")
        data = self.read()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    def __repr__(self) -> str:
        inline = "inline" if self.content is not None else "not inline"
        return f"Artifact(path={self.path!r}, mime={self.mime!r}, size={self.size}, sha256={self.sha256[:12] + '...'!r}, {inline})"


@dataclass(repr=False)
class RunResult:
    """What a run produced.

    ``status`` is one of ``ok``, ``error``, ``compile_error``, ``timeout``, ``oom``, ``output_limit``,
    ``sandbox_error``. ``output`` is stdout and stderr interleaved as written. ``result`` (python
    sessions) is the repr of the final expression; ``build_cached`` (compiled-language sessions) is
    true when nothing was recompiled; ``state_reset`` (sessions) is true when the interpreter was
    restarted and earlier state is gone.
    """

    stdout: str = ""
    stderr: str = ""
    output: str = ""
    exit_code: Optional[int] = None
    status: str = ""
    truncated: bool = False
    error: Optional[str] = None
    result: Optional[str] = None
    build_cached: bool = False
    state_reset: bool = False
    artifacts: List[Artifact] = field(default_factory=list)
    metrics: RunMetrics = field(default_factory=RunMetrics)
    raw: Dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def ok(self) -> bool:
        """True when the program ran and exited 0 (``status == "ok"``)."""
        return self.status == "ok"

    @classmethod
    def from_json(cls, data: Mapping[str, Any], loader: Optional[Callable[[str], bytes]] = None) -> "RunResult":
        exit_code = data.get("exit_code")
        error = data.get("error")
        result = data.get("result")
        return cls(
            stdout=_str(data.get("stdout")),
            stderr=_str(data.get("stderr")),
            output=_str(data.get("output")),
            exit_code=exit_code if isinstance(exit_code, int) else None,
            status=_str(data.get("status")),
            truncated=bool(data.get("truncated")),
            error=error if isinstance(error, str) else None,
            result=result if isinstance(result, str) else None,
            build_cached=bool(data.get("build_cached")),
            state_reset=bool(data.get("state_reset")),
            artifacts=[Artifact.from_json(a, loader) for a in data.get("artifacts") or [] if isinstance(a, Mapping)],
            metrics=RunMetrics.from_json(data.get("metrics")),
            raw=dict(data),
        )

    def __repr__(self) -> str:
        parts = [f"status={self.status!r}", f"exit_code={self.exit_code!r}", f"output={_short(self.output)}"]
        if self.stderr:
            parts.append(f"stderr={_short(self.stderr)}")
        if self.error:
            parts.append(f"error={_short(self.error)}")
        if self.result is not None:
            parts.append(f"result={_short(self.result)}")
        for flag in ("truncated", "build_cached", "state_reset"):
            if getattr(self, flag):
                parts.append(f"{flag}=True")
        if self.artifacts:
            parts.append(f"artifacts={self.artifacts!r}")
        parts.append(f"metrics={self.metrics!r}")
        return "RunResult(" + ", ".join(parts) + ")"


@dataclass
class SandboxInfo:
    """A sandbox as the server describes it.

    ``state`` is ``running``, ``pausing``, ``paused``, ``resuming`` or ``ended``; a paused one has its
    size on disk in ``paused_bytes`` and is removed at ``paused_until`` unless resumed.
    """

    id: str
    template: str = ""
    state: str = ""
    created_at: Optional[datetime] = None
    expires_at: Optional[datetime] = None
    last_activity_at: Optional[datetime] = None
    timeout_s: Optional[float] = None
    idle_timeout_s: Optional[float] = None
    metadata: Dict[str, str] = field(default_factory=dict)
    runtime: str = ""
    vm_source: str = ""
    startup_ms: Optional[float] = None
    keep_running: bool = False
    frozen: bool = False
    on_idle: str = "kill"
    auto_resume: bool = True
    paused_at: Optional[datetime] = None
    paused_until: Optional[datetime] = None
    paused_bytes: Optional[int] = None
    last_pause_ms: Optional[float] = None
    last_resume_ms: Optional[float] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SandboxInfo":
        metadata = data.get("metadata")
        return cls(
            id=_str(data.get("id")),
            template=_str(data.get("template")),
            state=_str(data.get("state")),
            created_at=parse_time(data.get("created_at")),
            expires_at=parse_time(data.get("expires_at")),
            last_activity_at=parse_time(data.get("last_activity_at")),
            timeout_s=_opt_float(data.get("timeout_s")),
            idle_timeout_s=_opt_float(data.get("idle_timeout_s")),
            metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, Mapping) else {},
            runtime=_str(data.get("runtime")),
            vm_source=_str(data.get("vm_source")),
            startup_ms=_opt_float(data.get("startup_ms")),
            keep_running=data.get("keep_running") is True,
            frozen=data.get("frozen") is True,
            on_idle=_str(data.get("on_idle")) or "kill",
            auto_resume=data.get("auto_resume") is not False,
            paused_at=parse_time(data.get("paused_at")),
            paused_until=parse_time(data.get("paused_until")),
            paused_bytes=int(data["paused_bytes"]) if isinstance(data.get("paused_bytes"), int) else None,
            last_pause_ms=_opt_float(data.get("last_pause_ms")),
            last_resume_ms=_opt_float(data.get("last_resume_ms")),
            raw=dict(data),
        )


@dataclass
class SnapshotInfo:
    """A named snapshot of a sandbox (``GET /v1/snapshots``); ``Sandbox.from_snapshot(name)`` starts sandboxes from it."""

    name: str
    template: str = ""
    size_bytes: int = 0
    created_at: Optional[datetime] = None
    source_sandbox: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SnapshotInfo":
        return cls(
            name=_str(data.get("name")),
            template=_str(data.get("template")),
            size_bytes=int(data["size_bytes"]) if isinstance(data.get("size_bytes"), int) else 0,
            created_at=parse_time(data.get("created_at")),
            source_sandbox=_str(data.get("source_sandbox")),
        )


@dataclass
class FileInfo:
    """A file or directory in a sandbox. ``kind`` is ``file``, ``directory``, ``symlink`` or ``other``."""

    path: str
    name: str = ""
    kind: str = ""
    size: int = 0
    mtime: Optional[datetime] = None

    @property
    def is_dir(self) -> bool:
        """True for a directory."""
        return self.kind == "directory"

    @property
    def is_file(self) -> bool:
        """True for a regular file."""
        return self.kind == "file"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FileInfo":
        size = data.get("size")
        return cls(
            path=_str(data.get("path")),
            name=_str(data.get("name")),
            kind=_str(data.get("kind")),
            size=int(size) if isinstance(size, int) else 0,
            mtime=parse_time(data.get("mtime")),
        )
