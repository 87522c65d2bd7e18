"""Everything the sync client (:mod:`mags.client`) and the async one
(:mod:`mags.aio`) share, except the streams' (:mod:`mags._ndjson`):
nothing here does I/O.

- :class:`ClientBase`: configuration, request options, the mapping of
  httpx failures to :class:`MagsError` subclasses;
- one function (or constant) per REST call, the :class:`Call` to send
  (path, body, query, timeout), its arguments checked and normalised;
- the ``run`` parameters, listed once (:func:`run_payload`) and given to
  both clients' ``run`` by :func:`takes_run_options`;
- flows: the methods that take several requests (``run_and_wait``,
  ``new``, ``exec``, ``url``, name resolution...) as generators that yield
  a :class:`Call` (sent back its decoded answer) or a :class:`Sleep`; each
  client drives them with its own I/O;
- answers: :func:`check` (the body, or the error for its status) and the
  result shapes.
"""

from __future__ import annotations

import inspect
import sys
import time
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Generator,
    List,
    NamedTuple,
    Optional,
    TypeVar,
    Union,
)
from urllib.parse import quote

import httpx

from .config import resolve
from .errors import ConnectionFailed, MagsError, MagsTimeout, error_for_status
from .types import AccessInfo, ExecResult, JobStatus, Logs, NewResult, RunResult

if TYPE_CHECKING:
    if sys.version_info >= (3, 10):
        from typing import Concatenate, ParamSpec
    else:
        from typing_extensions import Concatenate, ParamSpec

    _P = ParamSpec("_P")

_T = TypeVar("_T")
_R = TypeVar("_R")

#: Statuses of a job whose VM (or its snapshot) is live.
LIVE = ("running", "sleeping")
#: Statuses a job never leaves.
FINAL = ("completed", "error")
#: Extra HTTP time over an exec's own timeout (a sleeping sandbox wakes first).
EXEC_HTTP_SLACK = 60.0


class Call(NamedTuple):
    """One JSON request: ``path`` is under ``/api/v1``; ``timeout`` ``None``
    is the client's default."""

    method: str
    path: str
    json: Any = None
    params: Optional[Dict[str, Any]] = None
    timeout: Optional[float] = None


class Sleep(NamedTuple):
    """A flow's pause between two polls, in seconds."""

    seconds: float


#: A flow: yields a :class:`Call` (sent back its decoded answer) or a
#: :class:`Sleep` (sent back ``None``); returns the method's result.
Flow = Generator[Union[Call, Sleep], Any, _T]


def seg(value: str) -> str:
    """``value`` as one URL path segment."""
    return quote(str(value), safe="")


def looks_like_id(name_or_id: str) -> bool:
    """The clients' rule: 32+ characters with a ``-`` is a job id."""
    return len(name_or_id) >= 32 and "-" in name_or_id


# ── the clients' common part ─────────────────────────────────────────


class ClientBase:
    """Configuration and the request plumbing both clients share."""

    def __init__(self, api_token: Optional[str], api_url: Optional[str], timeout: int):
        cfg = resolve(api_url, api_token)
        self.api_url = cfg.api_url
        self.api_token = cfg.api_token
        self.timeout = timeout

    def _http_options(self) -> Dict[str, Any]:
        """Arguments of the ``httpx`` client."""
        return {"headers": {"Authorization": f"Bearer {self.api_token}"}, "timeout": self.timeout}

    def _url(self, path: str) -> str:
        return f"{self.api_url}/api/v1{path}"

    def _transport_error(self, method: str, path: str, e: httpx.TransportError) -> MagsError:
        """What a request that got no answer raises."""
        if isinstance(e, httpx.TimeoutException):
            return MagsTimeout(f"{method} {path}: no answer from {self.api_url} in time ({e})")
        return ConnectionFailed(f"cannot reach the Mags server at {self.api_url}: {e}")

    def _request_options(self, call: Call) -> Dict[str, Any]:
        """``build_request`` arguments of a JSON call."""
        kw: Dict[str, Any] = {"params": call.params, "timeout": call.timeout or self.timeout}
        if call.json is not None:
            kw["json"] = call.json
        return kw

    def _stream_options(self, call: Call) -> Dict[str, Any]:
        """``build_request`` arguments of a call whose NDJSON answer is read
        as it arrives: no read timeout (a quiet command is not a dead one)."""
        timeout = httpx.Timeout(self.timeout, read=None)
        kw: Dict[str, Any] = {"params": call.params, "timeout": timeout}
        if call.json is not None:
            kw["json"] = call.json
        return kw

    def _upload_options(self, p: Path, content: Any) -> Dict[str, Any]:
        """``build_request`` arguments of ``POST /mags-files`` for ``p``."""
        return {
            "files": {"file": (p.name, content, "application/octet-stream")},
            "timeout": httpx.Timeout(self.timeout, write=None, read=max(self.timeout, 300)),
        }


def _decode(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def check(resp: httpx.Response) -> Any:
    """The body of a 2xx answer (``{}`` when empty); raises otherwise."""
    if resp.status_code >= 400:
        raise error_for_status(resp.status_code, _decode(resp), resp.text)
    if not resp.content:
        return {}
    body = _decode(resp)
    if body is None:
        raise MagsError(f"the server answered {resp.status_code} with a body that is not JSON")
    return body


# ── jobs ─────────────────────────────────────────────────────────────


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
    ``script_timeout`` is sent as ``timeout`` (seconds). The one place the
    ``run`` parameters are listed: both clients' ``run`` take this
    signature (:func:`takes_run_options`)."""
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


RUN_DOC = """Submits ``script`` (run as ``bash -c`` in ``/root`` of a fresh VM).

        ``workspace_id`` keeps the disk (local; synced too with
        ``persistent``), ``base_workspace_id`` mounts one read-only (a fork
        with ``workspace_id``), ``persistent`` keeps the VM after the
        script, ``no_sleep`` keeps it awake, ``file_ids`` come from
        :meth:`upload_files`. ``no_internet`` cuts the sandbox off the
        network; ``egress_allow`` (hostnames or CIDRs) is the only place it
        may reach, ``egress_deny`` adds denials: both narrow the server's
        policy. ``script_timeout`` (seconds, sent as ``timeout``) kills the
        script after that long and ends the job in
        ``error``; without it the server's default applies to one-shot jobs.
        Returns ``{"request_id", "status": "accepted"}``.
        """


def _params_of(
    src: "Callable[_P, Any]", doc: str
) -> "Callable[[Callable[..., _R]], Callable[Concatenate[Any, _P], _R]]":
    """A decorator giving a method ``(self, *args, **kwargs)`` the
    parameters of ``src`` after ``self``, for ``inspect``/``help`` (its
    ``__signature__``) and for type checkers (the annotation), and ``doc``."""
    params = list(inspect.signature(src).parameters.values())

    def decorate(method: Callable[..., _R]) -> Any:
        sig = inspect.signature(method)
        self_param = next(iter(sig.parameters.values()))
        method.__signature__ = sig.replace(parameters=[self_param, *params])  # type: ignore[attr-defined]
        method.__doc__ = doc
        return method

    return decorate


#: Gives ``Mags.run`` and ``AsyncMags.run`` the parameters of
#: :func:`run_payload` and the docstring :data:`RUN_DOC`.
takes_run_options = _params_of(run_payload, RUN_DOC)


def submit(script: str, **options: Any) -> Call:
    return Call("POST", "/mags-jobs", json=run_payload(script, **options))


def job_status(request_id: str) -> Call:
    return Call("GET", f"/mags-jobs/{seg(request_id)}/status")


def job_logs(request_id: str, offset: Optional[int] = None, limit: Optional[int] = None) -> Call:
    """Query of ``/logs``: only what was given (the server's default is
    every line, streamed)."""
    params = {k: v for k, v in (("offset", offset), ("limit", limit)) if v is not None}
    return Call("GET", f"/mags-jobs/{seg(request_id)}/logs", params=params or None)


def list_jobs(page: int, page_size: int) -> Call:
    return Call("GET", "/mags-jobs", params={"page": page, "page_size": page_size})


def update_job(
    request_id: str,
    startup_command: Optional[str],
    no_sleep: Optional[bool],
    idle_timeout_secs: Optional[int],
) -> Call:
    """``PATCH``: only the fields given."""
    given = (
        ("startup_command", startup_command),
        ("no_sleep", no_sleep),
        ("idle_timeout_secs", idle_timeout_secs),
    )
    body = {k: v for k, v in given if v is not None}
    return Call("PATCH", f"/mags-jobs/{seg(request_id)}", json=body)


def stop_job(request_id: str) -> Call:
    return Call("POST", f"/mags-jobs/{seg(request_id)}/stop")


def delete_job(request_id: str) -> Call:
    return Call("DELETE", f"/mags-jobs/{seg(request_id)}")


def sync_job(request_id: str) -> Call:
    return Call("POST", f"/mags-jobs/{seg(request_id)}/sync")


def usage(window_days: int) -> Call:
    return Call("GET", "/mags-jobs/usage", params={"window_days": window_days})


POOL_STATUS = Call("GET", "/mags-jobs/pool-status")


def output(request_id: str, follow: bool, after: Optional[int]) -> Call:
    """``GET /output`` from after ``seq`` ``after`` (all when ``None``)."""
    params: Dict[str, Any] = {"follow": "true" if follow else "false"}
    if after is not None:
        params["after"] = after
    return Call("GET", f"/mags-jobs/{seg(request_id)}/output", params=params)


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


def find_job(name_or_id: str) -> Flow[Optional[JobStatus]]:
    """Among the 50 most recent jobs (:func:`pick_job`)."""
    jobs = (yield list_jobs(1, 50)).get("jobs", [])
    return pick_job(jobs, name_or_id)


def resolve_job_id(name_or_id: str) -> Flow[str]:
    """A job id for a name, workspace or id."""
    if looks_like_id(name_or_id):
        return name_or_id
    job = yield from find_job(name_or_id)
    if not job:
        raise MagsError(f"No job found for '{name_or_id}'")
    return job_id(job)


def stop(name_or_id: str) -> Flow[Any]:
    request_id = yield from resolve_job_id(name_or_id)
    return (yield stop_job(request_id))


def delete(name_or_id: str) -> Flow[Any]:
    request_id = yield from resolve_job_id(name_or_id)
    return (yield delete_job(request_id))


def run_result(request_id: str, status: JobStatus, logs: Logs) -> RunResult:
    return {
        "request_id": request_id,
        "status": str(status.get("status")),
        "exit_code": status.get("exit_code", 0),
        "duration_ms": status.get("script_duration_ms", 0),
        "logs": logs.get("logs", []),
    }


def run_and_wait(
    script: str, timeout: float, poll_interval: float, run_kwargs: Dict[str, Any]
) -> Flow[RunResult]:
    """Submits, then polls the status until the job is final."""
    request_id = (yield submit(script, **run_kwargs))["request_id"]
    deadline = time.monotonic() + timeout
    while True:
        st = yield job_status(request_id)
        if st.get("status") in FINAL:
            return run_result(request_id, st, (yield job_logs(request_id)))
        if time.monotonic() >= deadline:
            raise MagsTimeout(f"Job {request_id} timed out after {timeout}s")
        yield Sleep(poll_interval)


# ── sandboxes ────────────────────────────────────────────────────────


def new(
    name: str,
    persistent: bool,
    base_workspace_id: Optional[str],
    disk_gb: Optional[int],
    timeout: float,
    poll_interval: float,
) -> Flow[NewResult]:
    """Starts ``sleep infinity`` on workspace ``name``, then polls until its
    VM runs."""
    submitted = yield submit(
        "sleep infinity",
        workspace_id=name,
        persistent=True,
        no_sync=not persistent,
        base_workspace_id=base_workspace_id,
        disk_gb=disk_gb,
    )
    request_id = submitted["request_id"]
    deadline = time.monotonic() + timeout
    while True:
        st = yield job_status(request_id)
        if st.get("status") == "running" and st.get("vm_id"):
            return {"request_id": request_id, "status": "running"}
        if st.get("status") in FINAL:
            why = f" ({st['error']})" if st.get("error") else ""
            raise MagsError(f"Job {request_id} ended unexpectedly: {st.get('status')}{why}")
        if time.monotonic() >= deadline:
            raise MagsTimeout(f"Job {request_id} did not start within {timeout}s")
        yield Sleep(poll_interval)


def resize(workspace: str, disk_gb: int, timeout: float, poll_interval: float) -> Flow[NewResult]:
    """A live sandbox grows in place; else a new persistent one starts on
    the bigger disk."""
    existing = yield from find_job(workspace)
    if existing and existing.get("status") in LIVE:
        yield Call("POST", f"/mags-workspaces/{seg(workspace)}/resize", json={"disk_gb": disk_gb})
        return {"request_id": job_id(existing), "status": "running"}
    return (yield from new(workspace, True, None, disk_gb, timeout, poll_interval))


def exec_target(job: Optional[JobStatus], name_or_id: str) -> str:
    """The id of a sandbox ``exec`` may use, or the published client's errors."""
    if not job:
        raise MagsError(f"No running or sleeping VM found for '{name_or_id}'")
    if job.get("status") not in LIVE:
        raise MagsError(
            f"VM for '{name_or_id}' is {job.get('status')}, needs to be running or sleeping"
        )
    return job_id(job)


def find_sandbox(name_or_id: str) -> Flow[str]:
    """The id of the live sandbox ``name_or_id`` means (:func:`exec_target`)."""
    return exec_target((yield from find_job(name_or_id)), name_or_id)


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


def exec_(name_or_id: str, command: str, timeout: Optional[int]) -> Flow[ExecResult]:
    """``POST /exec`` on the sandbox; the HTTP wait is the command's
    ``timeout`` (30 s when ``None``) plus :data:`EXEC_HTTP_SLACK`."""
    request_id = yield from find_sandbox(name_or_id)
    secs = 30.0 if timeout is None else float(timeout)
    resp = yield Call(
        "POST",
        f"/mags-jobs/{seg(request_id)}/exec",
        json=exec_body(command, timeout),
        timeout=secs + EXEC_HTTP_SLACK,
    )
    return exec_result(resp)


def exec_stream(request_id: str, command: str, timeout: Optional[float]) -> Call:
    body = exec_body(command, timeout)
    return Call("POST", f"/mags-jobs/{seg(request_id)}/exec/stream", json=body)


# ── access and URLs ──────────────────────────────────────────────────


def enable_access(request_id: str, port: int) -> Call:
    return Call("POST", f"/mags-jobs/{seg(request_id)}/access", json={"port": port})


def access_url(resp: AccessInfo, status: Optional[JobStatus]) -> AccessInfo:
    """``url()``'s result: the server's own ``url`` (never a guessed domain),
    from the access answer or else the job's status."""
    url = status.get("url") if status else None
    if not resp.get("url") and url:
        resp["url"] = url
    if not resp.get("url") and resp.get("success") is False:
        raise MagsError(str(resp.get("error") or "the server refused access"), body=dict(resp))
    return resp


def url(name_or_id: str, port: int) -> Flow[AccessInfo]:
    """Opens the port; the job's status is asked only when the answer has
    no ``url``."""
    request_id = yield from resolve_job_id(name_or_id)
    resp = yield enable_access(request_id, port)
    st = None if resp.get("url") else (yield job_status(request_id))
    return access_url(resp, st)


def alias_create(subdomain: str, workspace_id: str, domain: Optional[str]) -> Call:
    body: Dict[str, Any] = {"subdomain": subdomain, "workspace_id": workspace_id}
    if domain:
        body["domain"] = domain
    return Call("POST", "/mags-url-aliases", json=body)


ALIAS_LIST = Call("GET", "/mags-url-aliases")


def alias_delete(subdomain: str) -> Call:
    return Call("DELETE", f"/mags-url-aliases/{seg(subdomain)}")


def browser(name: Optional[str], timeout: float) -> Call:
    return Call("POST", "/mags-browser", json={"name": name} if name else {}, timeout=timeout)


# ── files and workspaces ─────────────────────────────────────────────

UPLOAD_PATH = "/mags-files"


def upload_source(file_path: str) -> Path:
    """``file_path``, refused unless it names a file."""
    p = Path(file_path)
    if not p.is_file():
        raise MagsError(f"File not found: {file_path}")
    return p


def upload_result(data: Dict[str, Any], p: Path) -> str:
    """The uploaded file's id."""
    if not data.get("file_id"):
        raise MagsError(f"Upload failed for {p.name}: {data}")
    return str(data["file_id"])


LIST_WORKSPACES = Call("GET", "/mags-workspaces")


def delete_workspace(workspace_id: str) -> Call:
    return Call("DELETE", f"/mags-workspaces/{seg(workspace_id)}")


# ── cron ─────────────────────────────────────────────────────────────


def cron_create(
    name: str,
    cron_expression: str,
    script: str,
    workspace_id: Optional[str],
    environment: Optional[Dict[str, str]],
    persistent: bool,
) -> Call:
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
    return Call("POST", "/mags-cron", json=body)


CRON_LIST = Call("GET", "/mags-cron")


def cron_get(cron_id: str) -> Call:
    return Call("GET", f"/mags-cron/{seg(cron_id)}")


def cron_update(cron_id: str, updates: Dict[str, Any]) -> Call:
    return Call("PATCH", f"/mags-cron/{seg(cron_id)}", json=updates)


def cron_delete(cron_id: str) -> Call:
    return Call("DELETE", f"/mags-cron/{seg(cron_id)}")


# ── tokens and audit ─────────────────────────────────────────────────


LIST_TOKENS = Call("GET", "/mags-tokens")
CREATE_TOKEN = Call("POST", "/mags-tokens", json={})


def revoke_token(token_id: str) -> Call:
    return Call("DELETE", f"/mags-tokens/{seg(token_id)}")


def audit(since: Optional[str], limit: int) -> Call:
    params: Dict[str, Any] = {"limit": limit}
    if since:
        params["since"] = since
    return Call("GET", "/mags-audit", params=params)
