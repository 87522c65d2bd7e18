"""Typed shapes of what the clients return.

The dict results are ``TypedDict``s: plain dicts, exactly the JSON the
server sends (or the published client's shapes for ``run_and_wait`` and
``exec``), so code written for ``magpie-mags`` keeps working while type
checkers and editors know the keys. ``total=False``: servers may omit
optional keys and add new ones.

Stream events are small frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, TypedDict, Union


class JobSubmitted(TypedDict, total=False):
    """Answer to ``run``: ``status`` is ``"accepted"``."""

    request_id: str
    status: str
    message: str


class JobStatus(TypedDict, total=False):
    """A job, as ``status``, ``list_jobs`` and ``find_job`` return it."""

    request_id: str
    id: str
    name: Optional[str]
    status: str
    vm_id: Optional[str]
    workspace_id: Optional[str]
    base_workspace_id: Optional[str]
    persistent: bool
    no_sleep: bool
    startup_command: Optional[str]
    idle_timeout_secs: Optional[int]
    timeout: Optional[int]
    subdomain: Optional[str]
    url: Optional[str]
    exit_code: Optional[int]
    script_duration_ms: Optional[int]
    disk_gb: int
    created_at: str
    started_at: Optional[str]
    finished_at: Optional[str]
    error: Optional[str]
    vm_seconds: float
    output_bytes: int
    output_pruned: bool


class LogEntry(TypedDict, total=False):
    """One line of output; ``source`` is ``stdout``, ``stderr`` or ``system``."""

    timestamp: str
    level: str
    message: str
    source: str


class Logs(TypedDict):
    logs: List[LogEntry]


class JobList(TypedDict, total=False):
    jobs: List[JobStatus]
    total: int
    page: int
    page_size: int


class RunResult(TypedDict):
    """``run_and_wait``'s result."""

    request_id: str
    status: str
    exit_code: Optional[int]
    duration_ms: Optional[int]
    logs: List[LogEntry]


class ExecResult(TypedDict):
    """``exec``'s result (``output`` is stdout, as in the published client)."""

    exit_code: int
    output: str
    stderr: str


class NewResult(TypedDict):
    """``new``'s and ``resize``'s result: ``status`` is ``"running"``."""

    request_id: str
    status: str


class ActionResult(TypedDict, total=False):
    """Answer to ``stop`` and ``sync``."""

    success: bool
    request_id: str
    status: str
    message: str


class DeleteResult(TypedDict, total=False):
    """Answer to ``delete_job``: the ended job and its output are gone."""

    success: bool
    request_id: str
    output_bytes: int
    message: str


class Usage(TypedDict, total=False):
    window_days: int
    total_jobs: int
    vm_seconds: float


class PoolStatus(TypedDict, total=False):
    idle_vms: int
    busy_vms: int
    total_vms: int
    min_pool_size: int
    max_pool_size: int
    queued_jobs: int
    accel: Optional[str]


class AccessInfo(TypedDict, total=False):
    """Answer to ``enable_access`` / ``url``: ``url`` for HTTP ports,
    ``ssh_host``/``ssh_port``/``ssh_private_key`` for port 22."""

    success: bool
    url: str
    port: int
    subdomain: str
    ssh_host: str
    ssh_port: int
    ssh_user: str
    ssh_private_key: str
    error: str


class Workspace(TypedDict, total=False):
    workspace_id: str
    persistent: bool
    size: int
    disk_gb: int
    last_used: str
    created_at: str
    versions: int
    latest_version: Optional[int]
    cached: bool
    live_job_id: Optional[str]


class WorkspaceList(TypedDict, total=False):
    workspaces: List[Workspace]
    total: int


class WorkspaceAction(TypedDict, total=False):
    success: bool
    workspace_id: str
    message: str


class CronJob(TypedDict, total=False):
    id: str
    name: str
    cron_expression: str
    script: str
    persistent: bool
    workspace_id: Optional[str]
    environment: Dict[str, str]
    enabled: bool
    next_run_at: Optional[str]
    last_run_at: Optional[str]
    last_job_id: Optional[str]
    last_status: Optional[str]
    last_skip_reason: Optional[str]
    run_count: int
    skipped_runs: int
    created_at: str
    updated_at: str


class CronList(TypedDict, total=False):
    cron_jobs: List[CronJob]
    total: int


class UrlAlias(TypedDict, total=False):
    id: str
    subdomain: str
    url: str
    workspace_id: str
    created_at: Optional[str]


BrowserSession = TypedDict(
    "BrowserSession",
    {
        "success": bool,
        "request_id": str,
        "name": Optional[str],
        "status": str,
        "subdomain": str,
        "cdpUrl": str,
        "cdpHttpUrl": str,
        "wsEndpoint": str,
    },
    total=False,
)
"""A browser session's endpoints (the URLs carry its secret)."""


class UrlAliasList(TypedDict, total=False):
    aliases: List[UrlAlias]
    total: int


# ── stream events ────────────────────────────────────────────────────


@dataclass(frozen=True)
class OutputChunk:
    """Bytes a job or command wrote, in the order written.

    ``stream`` is ``stdout``, ``stderr`` or ``system``; ``seq`` and
    ``timestamp`` are set for job output (resume with ``after=seq``),
    ``None`` for exec output.
    """

    stream: str
    data: bytes
    seq: Optional[int] = None
    timestamp: Optional[str] = None

    @property
    def text(self) -> str:
        """``data`` as UTF-8 (invalid bytes replaced)."""
        return self.data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class StatusChange:
    """The job's status changed (also sent once when the stream opens)."""

    status: str


@dataclass(frozen=True)
class JobExit:
    """The job is final (or a persistent job's script ended while its
    sandbox lives on); the stream's last event."""

    status: str
    exit_code: Optional[int]
    error: Optional[str] = None


@dataclass(frozen=True)
class ExecExit:
    """A streamed command ended."""

    exit_code: int
    timed_out: bool = False


#: What iterating a job's output stream yields.
OutputEvent = Union[OutputChunk, StatusChange, JobExit]
