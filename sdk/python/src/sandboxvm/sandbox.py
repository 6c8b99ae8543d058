"""The Sandbox class: one-shot runs and sessions (a VM kept for one caller)."""

from __future__ import annotations

import io
import os
import stat
from types import TracebackType
from typing import IO, Any, BinaryIO, Dict, Iterator, List, Mapping, Optional, Sequence, Type, Union
from urllib.parse import quote

from ._http import DEFAULT_TIMEOUT, HttpClient
from ._runs import OutputCallback, post_run
from .commands import Commands
from .terminal import Terminal, open_terminal
from .errors import NotFoundError, SandboxError
from .models import Artifact, FileInfo, RunResult, SandboxInfo, SnapshotInfo

__all__ = ["Sandbox", "Files", "list_templates"]

CHUNK_SIZE = 64 * 1024
_CREATE_TIMEOUT = 600.0

WriteData = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", IO[bytes], IO[str]]


def list_templates(base_url: Optional[str] = None, api_key: Optional[str] = None) -> List[Dict[str, Any]]:
    """The server's templates (``GET /v1/templates``) as plain dicts: name, language, available, pool..."""
    data = HttpClient(base_url, api_key).call_json("GET", "/v1/templates")
    return list(data.get("templates", [])) if isinstance(data, dict) else []


def list_snapshots(base_url: Optional[str] = None, api_key: Optional[str] = None) -> List[SnapshotInfo]:
    """The caller's named snapshots (``GET /v1/snapshots``), by name."""
    data = HttpClient(base_url, api_key).call_json("GET", "/v1/snapshots")
    items = data.get("snapshots", []) if isinstance(data, dict) else []
    return [SnapshotInfo.from_json(s) for s in items if isinstance(s, dict)]


def delete_snapshot(name: str, base_url: Optional[str] = None, api_key: Optional[str] = None) -> bool:
    """Deletes one of the caller's snapshots (``DELETE /v1/snapshots/{name}``); False when there was none of that name.

    Sandboxes started from it go on. Raises ApiError 409 ``snapshot_busy`` while a sandbox is being started from it.
    """
    try:
        HttpClient(base_url, api_key).call_json("DELETE", f"/v1/snapshots/{quote(name, safe='')}")
        return True
    except NotFoundError:
        return False


def _remaining_length(f: Any) -> Optional[int]:
    """Bytes left to read in a binary file-like, when that can be known without reading it."""
    if isinstance(f, io.TextIOBase):
        return None
    try:
        info = os.fstat(f.fileno())
        if stat.S_ISREG(info.st_mode):
            return max(0, info.st_size - f.tell())
    except (AttributeError, OSError, ValueError):
        pass
    try:
        if f.seekable():
            here = f.tell()
            end = f.seek(0, io.SEEK_END)
            f.seek(here)
            return max(0, end - here)
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _chunks(f: Any, size: int) -> Iterator[bytes]:
    while True:
        chunk = f.read(size)
        if not chunk:
            return
        yield chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)


class Files:
    """Files inside a sandbox (``sb.files``). Relative paths are under ``/home/sandbox``; absolute paths
    are taken as they are, inside the VM."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def _path(self) -> str:
        return f"/v1/sandboxes/{quote(self._sandbox.id, safe='')}/files"

    def write(self, path: str, data: WriteData, *, chunk_size: int = CHUNK_SIZE) -> FileInfo:
        """Writes a file (replacing it) and returns its FileInfo.

        ``data`` is bytes, a str (written as UTF-8), a readable file-like object (binary or text; read
        and sent ``chunk_size`` bytes at a time, never whole into memory) or an ``os.PathLike`` naming a
        local file to upload.
        """
        http = self._sandbox._http
        query = {"path": path}
        kwargs: Dict[str, Any] = {"query": query, "content_type": "application/octet-stream"}
        if isinstance(data, str):
            kwargs["body"] = data.encode("utf-8")
        elif isinstance(data, (bytes, bytearray, memoryview)):
            kwargs["body"] = bytes(data)
        elif isinstance(data, os.PathLike):
            with open(os.fspath(data), "rb") as f:
                return self.write(path, f, chunk_size=chunk_size)
        elif hasattr(data, "read"):
            kwargs["body"] = _chunks(data, chunk_size)
            kwargs["content_length"] = _remaining_length(data)
        else:
            raise TypeError(f"files.write takes bytes, str, a file-like object or a path, not {type(data).__name__}")
        answer = http.call_json("PUT", self._path(), timeout=max(http.timeout, 600.0), **kwargs)
        return FileInfo.from_json(answer if isinstance(answer, dict) else {"path": path})

    def read(self, path: str) -> bytes:
        """A file's bytes. Raises NotFoundError (``file_not_found``) when it does not exist."""
        return self._sandbox._http.call_bytes("GET", self._path(), query={"path": path})

    def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        """A file's text, decoded with ``encoding``."""
        return self.read(path).decode(encoding, errors)

    def download(self, path: str, destination: Union["os.PathLike[str]", str, BinaryIO], *, chunk_size: int = CHUNK_SIZE) -> int:
        """Copies a file out of the sandbox into a local path or binary file-like, in chunks; returns bytes copied."""
        http = self._sandbox._http
        if isinstance(destination, (str, os.PathLike)):
            with open(os.fspath(destination), "wb") as out:
                return self.download(path, out, chunk_size=chunk_size)
        total = 0
        with http.open("GET", self._path(), query={"path": path}, accept="*/*") as (response, url):
            while True:
                chunk = http.read(response, url, chunk_size)
                if not chunk:
                    return total
                destination.write(chunk)
                total += len(chunk)

    def list(self, path: str = ".") -> List[FileInfo]:
        """The entries of a directory (default: the working directory ``/home/sandbox``)."""
        data = self._sandbox._http.call_json("GET", self._path(), query={"path": path, "list": "true"})
        entries = data.get("entries", []) if isinstance(data, dict) else []
        return [FileInfo.from_json(e) for e in entries if isinstance(e, dict)]

    def remove(self, path: str, recursive: bool = False) -> None:
        """Deletes a file, or a directory (with its contents when ``recursive``)."""
        query = {"path": path}
        if recursive:
            query["recursive"] = "true"
        self._sandbox._http.call_json("DELETE", self._path(), query=query)

    def mkdir(self, path: str) -> FileInfo:
        """Creates a directory and its parents; returns its FileInfo."""
        data = self._sandbox._http.call_json("POST", self._path() + "/mkdir", query={"path": path})
        return FileInfo.from_json(data if isinstance(data, dict) else {"path": path, "kind": "directory"})


class Sandbox:
    """A SandboxVM sandbox.

    One-shot: ``Sandbox.run_once(code, template=...)`` runs code in a fresh VM and returns a RunResult.

    Session: ``with Sandbox(template=...) as sb:`` creates a sandbox (one VM kept for you) on entering
    and kills it on leaving; files and (python) interpreter state survive from one ``sb.run`` to the
    next. ``Sandbox.create(...)`` creates one without a ``with`` block; call ``kill()`` when done.

    Args:
        template: template name, e.g. ``python-data-analysis``, ``cpp-algorithm``, ``go-algorithm``.
        base_url: server URL; default ``SANDBOXVM_BASE_URL``, else ``http://127.0.0.1:8000``.
        timeout: the sandbox's lifetime in seconds (server default when None).
        idle_timeout: seconds without activity after which the server ends it (server default when None).
        metadata: string labels kept with the sandbox.
        api_key: sent as ``Authorization: Bearer``; default ``SANDBOXVM_API_KEY``.
        http_timeout: seconds to wait on the server for calls other than runs and uploads.
        keep_running: keep the VM running between calls, so background processes go on (by default an
            idle sandbox is frozen and thawed by the next call; its state is kept either way).
        on_idle: ``kill`` (server default) or ``pause``: what the server does once it is idle.
        auto_resume: whether a call on the paused sandbox resumes it first (server default True).

    Pause, resume, fork, snapshots (qemu and gvisor runtimes): ``sb.pause()`` saves it to the server's disk,
    ``sb.resume()`` (or any call) brings it back as it was, ``sb.fork(n)`` returns n new sandboxes
    started from its state now, ``sb.snapshot(name)`` keeps its state under a name that
    ``Sandbox.from_snapshot(name)`` starts sandboxes from. ``Sandbox.list(metadata=..., state=...)`` and
    ``Sandbox.connect(id)`` find a sandbox again; ``sb.set_timeout(s)`` gives it a new lifetime.
    """

    def __init__(
        self,
        template: str,
        base_url: Optional[str] = None,
        timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
        metadata: Optional[Mapping[str, str]] = None,
        api_key: Optional[str] = None,
        http_timeout: float = DEFAULT_TIMEOUT,
        *,
        keep_running: Optional[bool] = None,
        on_idle: Optional[str] = None,
        auto_resume: Optional[bool] = None,
        from_snapshot: Optional[str] = None,
    ) -> None:
        self.template = template
        self._from_snapshot = from_snapshot
        self.keep_running = keep_running
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.on_idle = on_idle
        self.auto_resume = auto_resume
        self.metadata: Dict[str, str] = dict(metadata or {})
        self._http = HttpClient(base_url, api_key, http_timeout)
        self._info: Optional[SandboxInfo] = None
        self._killed = False
        self.files = Files(self)
        self.commands = Commands(self)

    # ---- one-shot -------------------------------------------------------------------------------

    @staticmethod
    def run_once(
        code: str,
        template: str,
        base_url: Optional[str] = None,
        stdin: Optional[str] = None,
        timeout: Optional[float] = None,
        api_key: Optional[str] = None,
        *,
        env: Optional[Mapping[str, str]] = None,
        compile_timeout: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> RunResult:
        """Runs ``code`` once in a fresh VM of ``template`` (``POST /v1/run``) and returns its RunResult.

        ``timeout`` and ``compile_timeout`` are the run's limits in seconds (template defaults when
        None). With ``on_stdout``/``on_stderr`` the answer is streamed and the callbacks get each piece
        of output as it is written. A program that fails is not an exception: check ``result.status``.
        Raises ApiError subclasses for refused requests, SandboxConnectionError when unreachable.
        """
        if not isinstance(code, str):
            raise TypeError("code must be a str")
        payload = {
            "template": template,
            "code": code,
            "stdin": stdin,
            "env": dict(env) if env is not None else None,
            "timeout_s": timeout,
            "compile_timeout_s": compile_timeout,
        }
        return post_run(HttpClient(base_url, api_key), "/v1/run", payload, on_stdout=on_stdout, on_stderr=on_stderr)

    # ---- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        template: str,
        base_url: Optional[str] = None,
        timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
        metadata: Optional[Mapping[str, str]] = None,
        api_key: Optional[str] = None,
        http_timeout: float = DEFAULT_TIMEOUT,
        *,
        keep_running: Optional[bool] = None,
        on_idle: Optional[str] = None,
        auto_resume: Optional[bool] = None,
    ) -> "Sandbox":
        """Creates a sandbox now (``POST /v1/sandboxes``) and returns it. Kill it with ``kill()`` or a ``with`` block.

        ``on_idle="pause"`` pauses it when idle instead of ending it; ``auto_resume=False`` makes calls on a
        paused sandbox fail (409 ``sandbox_paused``) instead of resuming it.
        """
        sandbox = cls(template, base_url, timeout, idle_timeout, metadata, api_key, http_timeout, keep_running=keep_running, on_idle=on_idle, auto_resume=auto_resume)
        sandbox._create()
        return sandbox

    @classmethod
    def from_snapshot(
        cls,
        name: str,
        base_url: Optional[str] = None,
        timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
        metadata: Optional[Mapping[str, str]] = None,
        api_key: Optional[str] = None,
        http_timeout: float = DEFAULT_TIMEOUT,
        *,
        keep_running: Optional[bool] = None,
        on_idle: Optional[str] = None,
        auto_resume: Optional[bool] = None,
    ) -> "Sandbox":
        """Creates a sandbox from the caller's named snapshot ``name`` (``POST /v1/sandboxes {"from_snapshot"}``).

        It starts with the snapshot's files and interpreter state, of the snapshot's template; as often as wanted.
        Raises NotFoundError (``snapshot_not_found``, also for another key's snapshot), ApiError 409 ``pause_unsupported``.
        """
        sandbox = cls("", base_url, timeout, idle_timeout, metadata, api_key, http_timeout, keep_running=keep_running,
                      on_idle=on_idle, auto_resume=auto_resume, from_snapshot=name)
        sandbox._create()
        return sandbox

    @classmethod
    def connect(cls, sandbox_id: str, base_url: Optional[str] = None, api_key: Optional[str] = None) -> "Sandbox":
        """Attaches to an existing sandbox by id. Raises NotFoundError (``sandbox_not_found``) for an unknown or ended one."""
        sandbox = cls("", base_url, api_key=api_key)
        sandbox._info = SandboxInfo(id=sandbox_id)
        info = sandbox.refresh()
        sandbox.template = info.template
        return sandbox

    @staticmethod
    def list(
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        metadata: Optional[Mapping[str, str]] = None,
        state: Union[str, Sequence[str], None] = None,
    ) -> List[SandboxInfo]:
        """The caller's sandboxes (``GET /v1/sandboxes``), oldest first.

        ``metadata``: only those with every one of these labels; ``state``: only those in this state (or one of
        these): ``running``, ``pausing``, ``paused``, ``resuming``. Raises BadRequestError ``invalid_filter``.
        """
        query: Dict[str, str] = {f"metadata.{k}": v for k, v in (metadata or {}).items()}
        if state is not None:
            query["state"] = state if isinstance(state, str) else ",".join(state)
        data = HttpClient(base_url, api_key).call_json("GET", "/v1/sandboxes", query=query or None)
        items = data.get("sandboxes", []) if isinstance(data, dict) else []
        return [SandboxInfo.from_json(s) for s in items if isinstance(s, dict)]

    def _create(self) -> None:
        if self._info is not None:
            raise SandboxError(f"sandbox {self._info.id} already exists")
        body: Dict[str, Any] = {}
        if self.template:
            body["template"] = self.template
        if self._from_snapshot is not None:
            body["from_snapshot"] = self._from_snapshot
        if self.timeout is not None:
            body["timeout_s"] = self.timeout
        if self.idle_timeout is not None:
            body["idle_timeout_s"] = self.idle_timeout
        if self.metadata:
            body["metadata"] = self.metadata
        if self.keep_running is not None:
            body["keep_running"] = self.keep_running
        if self.on_idle is not None:
            body["on_idle"] = self.on_idle
        if self.auto_resume is not None:
            body["auto_resume"] = self.auto_resume
        data = self._http.call_json("POST", "/v1/sandboxes", json_body=body, timeout=max(self._http.timeout, _CREATE_TIMEOUT))
        if not isinstance(data, dict) or not data.get("id"):
            raise SandboxError(f"{self._http.url('/v1/sandboxes')} answered without a sandbox id: {data!r}")
        self._info = SandboxInfo.from_json(data)
        self.template = self._info.template or self.template

    def __enter__(self) -> "Sandbox":
        if self._info is None:
            self._create()
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if self._info is None or self._killed:
            return
        try:
            self.kill()
        except SandboxError:
            if exc_type is None:
                raise  # otherwise keep the error that ended the block

    @property
    def base_url(self) -> str:
        """The server this sandbox lives on."""
        return self._http.base_url

    @property
    def id(self) -> str:
        """The sandbox id. Raises SandboxError before the sandbox is created."""
        if self._info is None:
            raise SandboxError("the sandbox has not been created yet: use `with Sandbox(...) as sb:` or Sandbox.create(...)")
        return self._info.id

    @property
    def info(self) -> Optional[SandboxInfo]:
        """The last SandboxInfo the server sent (None before creation); ``refresh()`` fetches a new one."""
        return self._info

    def _api(self, suffix: str = "") -> str:
        return f"/v1/sandboxes/{quote(self.id, safe='')}{suffix}"

    def refresh(self) -> SandboxInfo:
        """Fetches the sandbox's current SandboxInfo (``GET /v1/sandboxes/{id}``)."""
        data = self._http.call_json("GET", self._api())
        self._info = SandboxInfo.from_json(data if isinstance(data, dict) else {"id": self.id})
        return self._info

    def keep_alive(self, timeout: Optional[float] = None) -> SandboxInfo:
        """Moves the sandbox's expiry to now + ``timeout`` seconds (default: its lifetime); returns the new SandboxInfo."""
        body: Dict[str, Any] = {} if timeout is None else {"timeout_s": timeout}
        data = self._http.call_json("POST", self._api("/keepalive"), json_body=body)
        self._info = SandboxInfo.from_json(data if isinstance(data, dict) else {"id": self.id})
        return self._info

    def set_timeout(self, timeout: float) -> SandboxInfo:
        """Gives the sandbox a new lifetime (``PATCH /v1/sandboxes/{id}``): it expires ``timeout`` seconds from now,
        and later ``keep_alive()`` calls without a timeout extend it by as much. Returns the new SandboxInfo.

        Raises BadRequestError ``timeout_out_of_range``; ApiError 409 ``sandbox_paused`` (resume it first).
        """
        data = self._http.call_json("PATCH", self._api(), json_body={"timeout_s": timeout})
        self._info = SandboxInfo.from_json(data if isinstance(data, dict) else {"id": self.id})
        self.timeout = self._info.timeout_s
        return self._info

    def snapshot(self, name: str) -> SnapshotInfo:
        """Saves the sandbox's state now (memory, files, interpreter) as the caller's snapshot ``name``
        (``POST .../snapshots``); it keeps running. ``Sandbox.from_snapshot(name)`` starts new sandboxes from it.

        ``name``: 1 to 64 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit. Raises BadRequestError
        ``invalid_snapshot_name``; ApiError 409 ``snapshot_exists``, ``too_many_snapshots``, ``pause_unsupported``;
        503 ``snapshot_failed`` (the sandbox keeps running).
        """
        data = self._http.call_json("POST", self._api("/snapshots"), json_body={"name": name}, timeout=max(self._http.timeout, _CREATE_TIMEOUT))
        return SnapshotInfo.from_json(data if isinstance(data, dict) else {"name": name})

    def share_port(self, port: int, expires_in_s: float = 3600) -> str:
        """A link that serves ``port`` of this sandbox to anyone who has it, without an API key, until
        ``expires_in_s`` (1 s to 7 days) or the end of the sandbox (``POST .../shares``). Returns the absolute
        URL; a path under it reaches the same path on the port. Raises BadRequestError ``invalid_port``,
        ``invalid_expiry``; NotFoundError when the sandbox has ended.
        """
        data = self._http.call_json("POST", self._api("/shares"), json_body={"port": port, "expires_in_s": expires_in_s})
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            raise ValueError(f"the server's share answer has no url: {data!r}")
        return self._http.base_url + data["url"]

    def pause(self) -> SandboxInfo:
        """Saves the sandbox to the server's disk and ends its VM (``POST .../pause``); it costs no RAM until resumed.

        Waits for a run in progress. Raises ApiError: 409 ``sandbox_paused`` (already paused), ``sandbox_busy``
        (a file call in progress), ``pause_unsupported`` (process runtime); 503 ``pause_failed`` (it keeps running).
        """
        return self._post_info("/pause")

    def resume(self) -> SandboxInfo:
        """Brings a paused sandbox back as it was (``POST .../resume``): globals, open files, background processes.

        Any run or file call resumes it too, unless it was created with ``auto_resume=False``.
        Raises ApiError 409 ``sandbox_not_paused`` for a running one.
        """
        return self._post_info("/resume")

    def fork(self, count: int = 1) -> List["Sandbox"]:
        """``count`` new sandboxes started from this one's state now (``POST .../fork``); this one keeps running.

        Each fork is independent afterwards, with its own identity, clock and entropy; kill each (or use ``with``).
        They count against the live-sandbox limits (429 ``too_many_sandboxes`` before any work).
        """
        data = self._http.call_json("POST", self._api("/fork"), json_body={"count": count}, timeout=max(self._http.timeout, _CREATE_TIMEOUT))
        items = data.get("sandboxes", []) if isinstance(data, dict) else []
        forks: List[Sandbox] = []
        for item in items:
            if isinstance(item, dict):
                fork = Sandbox(self.template)
                fork._http = self._http
                fork._info = SandboxInfo.from_json(item)
                forks.append(fork)
        return forks

    def _post_info(self, suffix: str) -> SandboxInfo:
        data = self._http.call_json("POST", self._api(suffix), timeout=max(self._http.timeout, _CREATE_TIMEOUT))
        self._info = SandboxInfo.from_json(data if isinstance(data, dict) else {"id": self.id})
        return self._info

    def terminal(self, cols: int = 80, rows: int = 24, cmd: Optional[str] = None, timeout: float = 30.0) -> Terminal:
        """Opens an interactive terminal: the template's shell (or ``cmd``, a shell line) on a real
        pseudo-terminal as the sandbox user. ``timeout`` bounds the connection's set-up. Close it (or use
        ``with``) to end it; when its program exits, ``exit_code`` says how."""
        return open_terminal(self, cols, rows, cmd, timeout)

    def kill(self) -> None:
        """Ends the sandbox and its VM at once (``DELETE``). A sandbox that has already ended is fine."""
        try:
            self._http.call_json("DELETE", self._api())
        except NotFoundError as e:
            if e.code != "sandbox_not_found":
                raise
        self._killed = True
        if self._info is not None:
            self._info.state = "ended"

    # ---- runs and artifacts ---------------------------------------------------------------------

    def run(
        self,
        code: str,
        stdin: Optional[str] = None,
        timeout: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        *,
        env: Optional[Mapping[str, str]] = None,
        compile_timeout: Optional[float] = None,
    ) -> RunResult:
        """Runs ``code`` in this sandbox; state from earlier runs is kept (check ``result.state_reset``).

        With ``on_stdout``/``on_stderr`` the answer is streamed (``Accept: text/event-stream``) and each
        callback is called with output text as it arrives, before this returns the final RunResult.
        An exception raised by a callback ends the request, which cancels the run.
        """
        if not isinstance(code, str):
            raise TypeError("code must be a str")
        payload = {
            "code": code,
            "stdin": stdin,
            "env": dict(env) if env is not None else None,
            "timeout_s": timeout,
            "compile_timeout_s": compile_timeout,
        }
        return post_run(self._http, self._api("/run"), payload, on_stdout=on_stdout, on_stderr=on_stderr, loader=self.read_artifact)

    def list_artifacts(self) -> List[Artifact]:
        """Files in the sandbox's ``/tmp/outputs`` (paths relative to it); ``Artifact.read()`` fetches the bytes."""
        data = self._http.call_json("GET", self._api("/artifacts"))
        items = data.get("artifacts", []) if isinstance(data, dict) else []
        return [Artifact.from_json(a, self.read_artifact) for a in items if isinstance(a, dict)]

    def read_artifact(self, path: str) -> bytes:
        """The bytes of an artifact, by its path relative to ``/tmp/outputs``."""
        return self._http.call_bytes("GET", self._api("/artifacts/" + quote(path.lstrip("/"), safe="/")))

    def __repr__(self) -> str:
        if self._info is None:
            return f"Sandbox(template={self.template!r}, not created, base_url={self.base_url!r})"
        state = "killed" if self._killed else (self._info.state or "running")
        return f"Sandbox(id={self._info.id!r}, template={self.template!r}, state={state!r}, base_url={self.base_url!r})"
