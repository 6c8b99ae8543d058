"""Python client for SandboxVM: run code in microVMs over its HTTP API.

>>> from sandboxvm import Sandbox
>>> result = Sandbox.run_once("print(6 * 7)", template="python-data-analysis")  # doctest: +SKIP
>>> result.output  # doctest: +SKIP
'42\\n'
"""

from . import tools
from ._version import __version__
from .errors import (
    ApiError,
    AuthenticationError,
    EgressDeniedError,
    FileTooLargeError,
    NotFoundError,
    RateLimitError,
    SandboxConnectionError,
    SandboxError,
    SandboxTimeoutError,
    SearchNotConfiguredError,
    ServerError,
    ToolError,
    UnavailableError,
    UnknownTemplateError,
    ValidationError,
)
from .commands import Command, Commands
from .terminal import Terminal
from .models import Artifact, FileInfo, RunMetrics, RunResult, SandboxInfo, SnapshotInfo
from .sandbox import Files, Sandbox, delete_snapshot, list_snapshots, list_templates
from .tools import FetchResult, PageLink, SearchHit, SearchResults

__all__ = [
    "__version__",
    "Sandbox",
    "SnapshotInfo",
    "list_snapshots",
    "delete_snapshot",
    "Files",
    "Commands",
    "Command",
    "Terminal",
    "list_templates",
    "tools",
    "SearchResults",
    "SearchHit",
    "FetchResult",
    "PageLink",
    "RunResult",
    "RunMetrics",
    "Artifact",
    "SandboxInfo",
    "FileInfo",
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
