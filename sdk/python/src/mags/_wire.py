"""What the sync and async clients share: request bodies, the name
resolution rule, result shapes and the NDJSON stream decoders. Nothing
here does I/O."""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Optional, Union
from urllib.parse import quote

from .errors import MagsError
from .types import (
    AccessInfo,
    Logs,
    ExecExit,
    ExecResult,
    JobExit,
    JobStatus,
    OutputChunk,
    OutputEvent,
    RunResult,
    StatusChange,
)

#: Statuses of a job whose VM (or its snapshot) is live.
LIVE = ("running", "sleeping")
#: Statuses a job never leaves.
FINAL = ("completed", "error")
#: Extra HTTP time over an exec's own timeout (a sleeping sandbox wakes first).
EXEC_HTTP_SLACK = 60.0


def seg(value: str) -> str:
    """``value`` as one URL path segment."""
    return quote(str(value), safe="")


def looks_like_id(name_or_id: str) -> bool:
    """The clients' rule: 32+ characters with a ``-`` is a job id."""
    return len(name_or_id) >= 32 and "-" in name_or_id


def run_payload(
    script: str,
    *,
    name: Optional[str] = None,
    workspace_id: Optional[str] = None,
    base_workspace_id: Optional[str] = None,
    persistent: bool = False,
    no_sleep: bool = False,
    ephemeral: bool = False,
    startup_command: Optional[str] = None,
    environment: Optional[Dict[str, str]] = None,
    file_ids: Optional[List[str]] = None,
    disk_gb: Optional[int] = None,
    no_sync: bool = False,
    rootfs_type: Optional[str] = None,
    idle_timeout_secs: Optional[int] = None,
    no_internet: bool = False,
    egress_allow: Optional[List[str]] = None,
    egress_deny: Optional[List[str]] = None,
    script_timeout: Optional[int] = None,
) -> Dict[str, Any]:
    """The body of ``POST /mags-jobs``; refuses contradictory options.
    ``script_timeout`` is sent as ``timeout`` (seconds)."""
    if not isinstance(script, str) or not script.strip():
        raise MagsError("script is required")
    if ephemeral and workspace_id:
        raise MagsError("Cannot use ephemeral with workspace_id")
    if ephemeral and persistent:
        raise MagsError("Cannot use ephemeral with persistent")
    if no_sleep and not persistent:
        raise MagsError("no_sleep requires persistent=True")
    body: Dict[str, Any] = {"script": script, "type": "inline", "persistent": persistent}
    optional = {
        "name": name,
        "workspace_id": None if ephemeral else workspace_id,
        "base_workspace_id": base_workspace_id,
        "startup_command": startup_command,
        "environment": environment or None,
        "file_ids": list(file_ids) if file_ids else None,
        "disk_gb": disk_gb or None,
        "rootfs_type": rootfs_type,
        "idle_timeout_secs": idle_timeout_secs,
        "egress_allow": list(egress_allow) if egress_allow else None,
        "egress_deny": list(egress_deny) if egress_deny else None,
        "timeout": script_timeout,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if no_sleep:
        body["no_sleep"] = True
    if no_sync:
        body["no_sync"] = True
    if no_internet:
        body["no_internet"] = True
    return body


def browser_payload(name: Optional[str]) -> Dict[str, Any]:
    """The body of ``POST /mags-browser``."""
    return {"name": name} if name else {}


def logs_params(offset: Optional[int], limit: Optional[int]) -> Optional[Dict[str, int]]:
    """Query of ``/logs``: only what was given (the server's default is
    every line, streamed)."""
    params = {k: v for k, v in (("offset", offset), ("limit", limit)) if v is not None}
    return params or None


def pick_job(jobs: List[JobStatus], name_or_id: str) -> Optional[JobStatus]:
    """The CLI's resolution order among recent jobs: live exact name, live
    workspace, any-status name, any-status workspace (an id matches too)."""
    live = [j for j in jobs if j.get("status") in LIVE]
    for pool, key in ((live, "name"), (live, "workspace_id"), (jobs, "name"), (jobs, "workspace_id")):
        for j in pool:
            if j.get(key) == name_or_id:
                return j
    for j in jobs:
        if name_or_id in (j.get("request_id"), j.get("id")):
            return j
    return None


def job_id(job: JobStatus) -> str:
    return str(job.get("request_id") or job.get("id"))


def exec_target(job: Optional[JobStatus], name_or_id: str) -> str:
    """The id of a sandbox ``exec`` may use, or the published client's errors."""
    if not job:
        raise MagsError(f"No running or sleeping VM found for '{name_or_id}'")
    if job.get("status") not in LIVE:
        raise MagsError(
            f"VM for '{name_or_id}' is {job.get('status')}, needs to be running or sleeping"
        )
    return job_id(job)


def exec_body(command: str, timeout: Optional[float]) -> Dict[str, Any]:
    if not isinstance(command, str) or not command.strip():
        raise MagsError("command is required")
    body: Dict[str, Any] = {"command": command}
    if timeout is not None:
        body["timeout"] = timeout
    return body


def exec_result(resp: Dict[str, Any]) -> ExecResult:
    return {
        "exit_code": resp.get("exit_code", -1),
        "output": resp.get("stdout", ""),
        "stderr": resp.get("stderr", ""),
    }


def run_result(request_id: str, status: JobStatus, logs: Logs) -> RunResult:
    return {
        "request_id": request_id,
        "status": str(status.get("status")),
        "exit_code": status.get("exit_code", 0),
        "duration_ms": status.get("script_duration_ms", 0),
        "logs": logs.get("logs", []),
    }


def cron_payload(
    name: str,
    cron_expression: str,
    script: str,
    workspace_id: Optional[str],
    environment: Optional[Dict[str, str]],
    persistent: bool,
) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "name": name,
        "cron_expression": cron_expression,
        "script": script,
        "persistent": persistent,
    }
    if workspace_id:
        body["workspace_id"] = workspace_id
    if environment:
        body["environment"] = environment
    return body


def alias_payload(subdomain: str, workspace_id: str, domain: Optional[str]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"subdomain": subdomain, "workspace_id": workspace_id}
    if domain:
        body["domain"] = domain
    return body


def access_url(resp: AccessInfo, status: Optional[JobStatus]) -> AccessInfo:
    """``url()``'s result: the server's own ``url`` (never a guessed domain),
    from the access answer or else the job's status."""
    url = status.get("url") if status else None
    if not resp.get("url") and url:
        resp["url"] = url
    if not resp.get("url") and resp.get("success") is False:
        raise MagsError(str(resp.get("error") or "the server refused access"), body=dict(resp))
    return resp


# ── NDJSON streams ───────────────────────────────────────────────────


def _json_line(line: Union[str, bytes]) -> Optional[Dict[str, Any]]:
    line = line.strip()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise MagsError(f"the server sent a line that is not JSON: {line[:200]!r}") from e
    if not isinstance(obj, dict):
        raise MagsError(f"the server sent an unexpected stream line: {line[:200]!r}")
    return obj


def _bytes(obj: Dict[str, Any]) -> bytes:
    if obj.get("data") is not None:
        return str(obj["data"]).encode("utf-8")
    if obj.get("data_b64") is not None:
        try:
            return base64.b64decode(obj["data_b64"])
        except ValueError as e:
            raise MagsError(f"bad base64 in stream: {e}") from e
    return b""


class OutputDecoder:
    """Turns lines of ``GET /mags-jobs/{id}/output`` into events and
    remembers the last ``seq`` (to resume after a dropped connection)."""

    def __init__(self, after: Optional[int]):
        self.after = after
        self.exit: Optional[JobExit] = None

    def decode(self, line: Union[str, bytes]) -> Optional[OutputEvent]:
        obj = _json_line(line)
        if obj is None:
            return None
        kind = obj.get("event")
        if kind == "output":
            seq = obj.get("seq")
            if isinstance(seq, int):
                if self.after is not None and seq <= self.after:
                    return None  # already seen before a reconnect
                self.after = seq
            return OutputChunk(str(obj.get("stream", "stdout")), _bytes(obj), seq, obj.get("timestamp"))
        if kind == "status":
            return StatusChange(str(obj.get("status")))
        if kind == "exit":
            self.exit = JobExit(str(obj.get("status")), obj.get("exit_code"), obj.get("error"))
            return self.exit
        return None  # an event kind newer than this client


class ExecDecoder:
    """Turns lines of ``POST /mags-jobs/{id}/exec/stream`` into events;
    an ``error`` event raises."""

    def __init__(self) -> None:
        self.exit: Optional[ExecExit] = None

    def decode(self, line: Union[str, bytes]) -> Optional[Union[OutputChunk, ExecExit]]:
        obj = _json_line(line)
        if obj is None:
            return None
        kind = obj.get("event")
        if kind == "output":
            return OutputChunk(str(obj.get("stream", "stdout")), _bytes(obj))
        if kind == "exit":
            self.exit = ExecExit(int(obj.get("exit_code", -1)), bool(obj.get("timed_out", False)))
            return self.exit
        if kind == "error":
            raise MagsError(str(obj.get("error") or "the command failed"), body=obj)
        return None


def collect(chunks: List[OutputChunk], exit: ExecExit) -> ExecResult:
    out = b"".join(c.data for c in chunks if c.stream == "stdout")
    err = b"".join(c.data for c in chunks if c.stream != "stdout")
    return {
        "exit_code": exit.exit_code,
        "output": out.decode("utf-8", errors="replace"),
        "stderr": err.decode("utf-8", errors="replace"),
    }
