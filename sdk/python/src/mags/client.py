"""The synchronous client, :class:`Mags`.

Method names, parameters and return shapes are those of the published
``magpie-mags`` 1.3.8 client; what it lacks is added beside them:
streaming output (:meth:`Mags.stream_output`), streaming exec
(:meth:`Mags.exec_stream`, ``exec(..., stream=True)``), typed results
(:mod:`mags.types`), typed errors (:mod:`mags.errors`), URLs taken from
the server's answers, and configuration like the ``mags`` CLI's
(:mod:`mags.config`). The asyncio twin is :class:`mags.aio.AsyncMags`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Generator, Iterator, List, Literal, Optional, Union, overload

import httpx

from . import _wire as w
from .config import resolve
from .errors import ConnectionFailed, MagsError, MagsTimeout, error_for_status
from .types import (
    AccessInfo,
    ActionResult,
    BrowserSession,
    CronJob,
    CronList,
    DeleteResult,
    ExecExit,
    ExecResult,
    JobExit,
    JobList,
    JobStatus,
    JobSubmitted,
    Logs,
    NewResult,
    OutputChunk,
    OutputEvent,
    PoolStatus,
    RunResult,
    UrlAlias,
    UrlAliasList,
    Usage,
    WorkspaceAction,
    WorkspaceList,
)

__all__ = ["Mags", "MagsError", "ExecStream", "OutputStream"]

#: How often a followed output stream may reconnect without progress.
_RECONNECTS = 5


def _decode(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _check(resp: httpx.Response) -> Any:
    """The body of a 2xx answer (``{}`` when empty); raises otherwise."""
    if resp.status_code >= 400:
        raise error_for_status(resp.status_code, _decode(resp), resp.text)
    if not resp.content:
        return {}
    body = _decode(resp)
    if body is None:
        raise MagsError(f"the server answered {resp.status_code} with a body that is not JSON")
    return body


class Mags:
    """Client for a Mags server.

    Args:
        api_token: API token; else ``MAGS_API_TOKEN``, ``MAGS_TOKEN``,
            ``~/.mags/config.json`` or the local server's token.
        api_url: Server base URL (``http://host:7070``); else
            ``MAGS_API_URL``, ``~/.mags/config.json`` or the local server
            the ``mags`` CLI started.
        timeout: Default request timeout in seconds.
    """

    def __init__(
        self,
        api_token: Optional[str] = None,
        api_url: Optional[str] = None,
        timeout: int = 30,
    ):
        cfg = resolve(api_url, api_token)
        self.api_url = cfg.api_url
        self.api_token = cfg.api_token
        self.timeout = timeout
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {self.api_token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> "Mags":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Mags(api_url={self.api_url!r})"

    # ── transport ────────────────────────────────────────────────────

    def _url(self, path: str) -> str:
        return f"{self.api_url}/api/v1{path}"

    def _send(self, method: str, path: str, *, stream: bool = False, **kw: Any) -> httpx.Response:
        try:
            req = self._http.build_request(method, self._url(path), **kw)
            return self._http.send(req, stream=stream)
        except httpx.TimeoutException as e:
            raise MagsTimeout(f"{method} {path}: no answer from {self.api_url} in time ({e})") from e
        except httpx.TransportError as e:
            raise ConnectionFailed(f"cannot reach the Mags server at {self.api_url}: {e}") from e

    def _request(
        self,
        method: str,
        path: str,
        json: Any = None,
        params: Optional[Dict[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        kw: Dict[str, Any] = {"params": params, "timeout": timeout or self.timeout}
        if json is not None:
            kw["json"] = json
        return _check(self._send(method, path, **kw))

    def _open_stream(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Sends a request whose NDJSON answer is read as it arrives (no
        read timeout: a quiet command is not a dead one)."""
        kw["timeout"] = httpx.Timeout(self.timeout, read=None)
        resp = self._send(method, path, stream=True, **kw)
        if resp.status_code >= 400:
            try:
                resp.read()
            finally:
                resp.close()
            _check(resp)
        return resp

    # ── jobs ─────────────────────────────────────────────────────────

    def run(
        self,
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
    ) -> JobSubmitted:
        """Submits ``script`` (run as ``bash -c`` in ``/root`` of a fresh VM).

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
        body = w.run_payload(
            script,
            name=name,
            workspace_id=workspace_id,
            base_workspace_id=base_workspace_id,
            persistent=persistent,
            no_sleep=no_sleep,
            ephemeral=ephemeral,
            startup_command=startup_command,
            environment=environment,
            file_ids=file_ids,
            disk_gb=disk_gb,
            no_sync=no_sync,
            rootfs_type=rootfs_type,
            idle_timeout_secs=idle_timeout_secs,
            no_internet=no_internet,
            egress_allow=egress_allow,
            egress_deny=egress_deny,
            script_timeout=script_timeout,
        )
        return self._request("POST", "/mags-jobs", json=body)

    def run_and_wait(
        self,
        script: str,
        *,
        timeout: float = 60.0,
        poll_interval: float = 1.0,
        **run_kwargs: Any,
    ) -> RunResult:
        """Submits a job and waits until it is ``completed`` or ``error``.

        Returns ``request_id``, ``status``, ``exit_code``, ``duration_ms``
        and ``logs``; raises :class:`MagsTimeout` after ``timeout`` seconds.
        """
        request_id = self.run(script, **run_kwargs)["request_id"]
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(request_id)
            if st.get("status") in w.FINAL:
                return w.run_result(request_id, st, self.logs(request_id))
            if time.monotonic() >= deadline:
                raise MagsTimeout(f"Job {request_id} timed out after {timeout}s")
            time.sleep(poll_interval)

    def status(self, request_id: str) -> JobStatus:
        """The job's status (``accepted``, ``queued``, ``running``,
        ``sleeping``, ``completed``, ``error``) and details."""
        return self._request("GET", f"/mags-jobs/{w.seg(request_id)}/status")

    def logs(
        self, request_id: str, *, offset: Optional[int] = None, limit: Optional[int] = None
    ) -> Logs:
        """The job's output so far as lines: ``{"logs": [{"timestamp",
        "level", "message", "source"}]}``; ``offset`` skips that many lines,
        ``limit`` returns at most that many (default: all)."""
        return self._request(
            "GET",
            f"/mags-jobs/{w.seg(request_id)}/logs",
            params=w.logs_params(offset, limit),
        )

    def list_jobs(self, *, page: int = 1, page_size: int = 20) -> JobList:
        """Recent jobs, newest first: ``{"jobs", "total", "page", "page_size"}``."""
        return self._request("GET", "/mags-jobs", params={"page": page, "page_size": page_size})

    def stream_output(
        self, name_or_id: str, *, after: Optional[int] = None, follow: bool = True
    ) -> "OutputStream":
        """A job's output as it is produced.

        Iterating yields :class:`~mags.types.OutputChunk` (bytes, in order),
        :class:`~mags.types.StatusChange` and, last, a
        :class:`~mags.types.JobExit` (also kept as ``.exit``) once the job
        is final or a persistent job's script has ended. ``after`` skips
        chunks up to that ``seq``; ``follow=False`` returns what exists now.
        A dropped connection is resumed where it stopped.
        """
        return OutputStream(self, self._resolve_job_id(name_or_id), after, follow)

    def update_job(
        self,
        request_id: str,
        *,
        startup_command: Optional[str] = None,
        no_sleep: Optional[bool] = None,
        idle_timeout_secs: Optional[int] = None,
    ) -> JobStatus:
        """Changes a live job's ``startup_command`` (run after each wake;
        ``""`` removes it), ``no_sleep`` or ``idle_timeout_secs``."""
        body: Dict[str, Any] = {}
        if startup_command is not None:
            body["startup_command"] = startup_command
        if no_sleep is not None:
            body["no_sleep"] = no_sleep
        if idle_timeout_secs is not None:
            body["idle_timeout_secs"] = idle_timeout_secs
        return self._request("PATCH", f"/mags-jobs/{w.seg(request_id)}", json=body)

    def stop(self, name_or_id: str) -> ActionResult:
        """Stops a job by id, name or workspace (a persistent sandbox is
        synced first)."""
        request_id = self._resolve_job_id(name_or_id)
        return self._request("POST", f"/mags-jobs/{w.seg(request_id)}/stop")

    def delete_job(self, name_or_id: str) -> DeleteResult:
        """Deletes an ended job and its stored output, by id, name or
        workspace (a 409 :class:`Conflict` while it is live: stop it
        first)."""
        request_id = self._resolve_job_id(name_or_id)
        return self._request("DELETE", f"/mags-jobs/{w.seg(request_id)}")

    def sync(self, request_id: str) -> ActionResult:
        """Stores a live sandbox's workspace now, without stopping it."""
        return self._request("POST", f"/mags-jobs/{w.seg(request_id)}/sync")

    def usage(self, *, window_days: int = 30) -> Usage:
        """``{"total_jobs", "vm_seconds", "window_days"}`` for the window."""
        return self._request("GET", "/mags-jobs/usage", params={"window_days": window_days})

    def pool_status(self) -> PoolStatus:
        """The server's warm pool and queue."""
        return self._request("GET", "/mags-jobs/pool-status")

    # ── sandboxes ────────────────────────────────────────────────────

    def new(
        self,
        name: str,
        *,
        persistent: bool = False,
        base_workspace_id: Optional[str] = None,
        disk_gb: Optional[int] = None,
        timeout: float = 30.0,
        poll_interval: float = 1.0,
    ) -> NewResult:
        """Starts a sandbox on workspace ``name`` and waits until it runs.

        Its disk stays on this host (``persistent=True``: synced to object
        storage too). Returns ``{"request_id", "status": "running"}``.
        """
        request_id = self.run(
            "sleep infinity",
            workspace_id=name,
            persistent=True,
            no_sync=not persistent,
            base_workspace_id=base_workspace_id,
            disk_gb=disk_gb,
        )["request_id"]
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(request_id)
            if st.get("status") == "running" and st.get("vm_id"):
                return {"request_id": request_id, "status": "running"}
            if st.get("status") in w.FINAL:
                why = f" ({st['error']})" if st.get("error") else ""
                raise MagsError(f"Job {request_id} ended unexpectedly: {st.get('status')}{why}")
            if time.monotonic() >= deadline:
                raise MagsTimeout(f"Job {request_id} did not start within {timeout}s")
            time.sleep(poll_interval)

    def find_job(self, name_or_id: str) -> Optional[JobStatus]:
        """The job a name, workspace or id means (the CLI's rule: live
        name, live workspace, then any status), or ``None``."""
        return w.pick_job(self.list_jobs(page_size=50).get("jobs", []), name_or_id)

    @overload
    def exec(
        self, name_or_id: str, command: str, *, timeout: int = 30, stream: Literal[False] = False
    ) -> ExecResult: ...

    @overload
    def exec(
        self, name_or_id: str, command: str, *, timeout: Optional[int] = 30, stream: Literal[True]
    ) -> "ExecStream": ...

    def exec(
        self,
        name_or_id: str,
        command: str,
        *,
        timeout: Optional[int] = 30,
        stream: bool = False,
    ) -> Union[ExecResult, "ExecStream"]:
        """Runs ``command`` (``bash -c``, in ``/root``) in a running or
        sleeping sandbox (woken first).

        Returns ``{"exit_code", "output", "stderr"}`` (``output`` is
        stdout); a command killed by ``timeout`` exits 124. With
        ``stream=True`` returns an :class:`ExecStream` instead.
        """
        if stream:
            return self.exec_stream(name_or_id, command, timeout=timeout)
        request_id = w.exec_target(self.find_job(name_or_id), name_or_id)
        secs = 30.0 if timeout is None else float(timeout)
        resp = self._request(
            "POST",
            f"/mags-jobs/{w.seg(request_id)}/exec",
            json=w.exec_body(command, timeout),
            timeout=secs + w.EXEC_HTTP_SLACK,
        )
        return w.exec_result(resp)

    def exec_stream(
        self, name_or_id: str, command: str, *, timeout: Optional[float] = None
    ) -> "ExecStream":
        """Runs ``command`` in a sandbox; its output arrives as it is
        produced. No time limit unless ``timeout`` (seconds). Closing the
        stream early kills the command."""
        request_id = w.exec_target(self.find_job(name_or_id), name_or_id)
        resp = self._open_stream(
            "POST", f"/mags-jobs/{w.seg(request_id)}/exec/stream", json=w.exec_body(command, timeout)
        )
        return ExecStream(resp)

    def resize(
        self,
        workspace: str,
        disk_gb: int,
        *,
        timeout: float = 30.0,
        poll_interval: float = 1.0,
    ) -> NewResult:
        """Grows a workspace's disk to ``disk_gb`` and returns its running
        sandbox: a live one is grown in place, else a new persistent
        sandbox starts on the bigger disk."""
        existing = self.find_job(workspace)
        if existing and existing.get("status") in w.LIVE:
            self._request(
                "POST", f"/mags-workspaces/{w.seg(workspace)}/resize", json={"disk_gb": disk_gb}
            )
            return {"request_id": w.job_id(existing), "status": "running"}
        return self.new(
            workspace, persistent=True, disk_gb=disk_gb, timeout=timeout, poll_interval=poll_interval
        )

    # ── access and URLs ──────────────────────────────────────────────

    def enable_access(self, request_id: str, *, port: int = 8080) -> AccessInfo:
        """Opens ``port`` of the job's VM: a public ``url`` for HTTP ports,
        ``ssh_host``/``ssh_port``/``ssh_private_key`` for 22."""
        return self._request("POST", f"/mags-jobs/{w.seg(request_id)}/access", json={"port": port})

    def url(self, name_or_id: str, *, port: int = 8080) -> AccessInfo:
        """The public URL of ``port`` in a job's VM, as the server names it
        (its own apps domain; never rewritten)."""
        request_id = self._resolve_job_id(name_or_id)
        resp = self.enable_access(request_id, port=port)
        st = None if resp.get("url") else self.status(request_id)
        return w.access_url(resp, st)

    def url_alias_create(
        self, subdomain: str, workspace_id: str, domain: Optional[str] = None
    ) -> UrlAlias:
        """A stable ``subdomain`` that follows whichever job is live in
        ``workspace_id``. ``domain`` defaults to the server's apps domain.
        Returns ``{"id", "subdomain", "url"}``."""
        return self._request(
            "POST", "/mags-url-aliases", json=w.alias_payload(subdomain, workspace_id, domain)
        )

    def url_alias_list(self) -> UrlAliasList:
        """``{"aliases": [...], "total"}``."""
        return self._request("GET", "/mags-url-aliases")

    def url_alias_delete(self, subdomain: str) -> Dict[str, Any]:
        return self._request("DELETE", f"/mags-url-aliases/{w.seg(subdomain)}")

    def browser(
        self, name: Optional[str] = None, *, timeout: float = 300.0
    ) -> BrowserSession:
        """A browser session: headless Chromium in a sandbox of the browser
        image, its DevTools endpoint behind the URL proxy (a live session of
        the same name is reused). Returns ``cdpUrl``, ``cdpHttpUrl`` and
        ``wsEndpoint`` (e.g. Playwright's ``connect_over_cdp(wsEndpoint)``);
        the URLs carry the session's secret. :meth:`stop` ends it. Starting
        Chromium takes a while under TCG, hence the long ``timeout`` (seconds)."""
        return self._request(
            "POST", "/mags-browser", json=w.browser_payload(name), timeout=timeout
        )

    # ── files and workspaces ─────────────────────────────────────────

    def upload_file(self, file_path: str) -> str:
        """Uploads one file (100 MB at most); returns its file id. A job
        given it in ``file_ids`` finds it at ``/root/<name>``."""
        p = Path(file_path)
        if not p.is_file():
            raise MagsError(f"File not found: {file_path}")
        with p.open("rb") as f:
            resp = self._send(
                "POST",
                "/mags-files",
                files={"file": (p.name, f, "application/octet-stream")},
                timeout=httpx.Timeout(self.timeout, write=None, read=max(self.timeout, 300)),
            )
        data = _check(resp)
        if not data.get("file_id"):
            raise MagsError(f"Upload failed for {p.name}: {data}")
        return str(data["file_id"])

    def upload_files(self, file_paths: List[str]) -> List[str]:
        """Uploads each file in turn; returns their ids in the same order."""
        return [self.upload_file(fp) for fp in file_paths]

    def list_workspaces(self) -> WorkspaceList:
        """``{"workspaces": [{"workspace_id", ...}], "total"}``."""
        return self._request("GET", "/mags-workspaces")

    def delete_workspace(self, workspace_id: str) -> WorkspaceAction:
        """Deletes a workspace and its stored data (a 409 :class:`Conflict`
        while a job is live on it)."""
        return self._request("DELETE", f"/mags-workspaces/{w.seg(workspace_id)}")

    # ── cron ─────────────────────────────────────────────────────────

    def cron_create(
        self,
        *,
        name: str,
        cron_expression: str,
        script: str,
        workspace_id: Optional[str] = None,
        environment: Optional[Dict[str, str]] = None,
        persistent: bool = False,
    ) -> CronJob:
        """Schedules ``script`` (5-field expression in UTC, or ``@hourly``...)."""
        body = w.cron_payload(name, cron_expression, script, workspace_id, environment, persistent)
        return self._request("POST", "/mags-cron", json=body)

    def cron_list(self) -> CronList:
        """``{"cron_jobs": [...], "total"}``."""
        return self._request("GET", "/mags-cron")

    def cron_get(self, cron_id: str) -> CronJob:
        return self._request("GET", f"/mags-cron/{w.seg(cron_id)}")

    def cron_update(self, cron_id: str, **updates: Any) -> CronJob:
        """Changes any fields, e.g. ``cron_update(id, enabled=False)``."""
        return self._request("PATCH", f"/mags-cron/{w.seg(cron_id)}", json=updates)

    def cron_delete(self, cron_id: str) -> Dict[str, Any]:
        return self._request("DELETE", f"/mags-cron/{w.seg(cron_id)}")

    # ── tokens and audit ─────────────────────────────────────────────

    def list_tokens(self) -> Dict[str, Any]:
        """Your API tokens, ``{"tokens": [{"id", "prefix", "created_at",
        "last_used_at", "revoked"}], "total"}`` (never the secrets)."""
        return self._request("GET", "/mags-tokens")

    def create_token(self) -> Dict[str, Any]:
        """A new token for you: ``{"token", "id", "prefix", ...}``; the
        token is shown only this once."""
        return self._request("POST", "/mags-tokens", json={})

    def revoke_token(self, token_id: str) -> Dict[str, Any]:
        """Revokes one of your tokens (id or display prefix); it is refused
        from its next request on."""
        return self._request("DELETE", f"/mags-tokens/{w.seg(token_id)}")

    def audit(self, since: Optional[str] = None, limit: int = 100) -> Dict[str, Any]:
        """Your audit events, oldest first: ``{"events": [...], "total"}``;
        ``since`` is RFC 3339 or an age like ``"24h"``."""
        params: Dict[str, Any] = {"limit": limit}
        if since:
            params["since"] = since
        return self._request("GET", "/mags-audit", params=params)

    # ── helpers ──────────────────────────────────────────────────────

    def _resolve_job_id(self, name_or_id: str) -> str:
        """A job id for a name, workspace or id."""
        if w.looks_like_id(name_or_id):
            return name_or_id
        job = self.find_job(name_or_id)
        if not job:
            raise MagsError(f"No job found for '{name_or_id}'")
        return w.job_id(job)


class ExecStream:
    """A command running in a sandbox, read as it runs.

    Iterate for :class:`~mags.types.OutputChunk` items; afterwards
    ``exit_code`` and ``timed_out`` are set. :meth:`wait` reads the rest
    and returns ``{"exit_code", "output", "stderr"}`` of what was not yet
    iterated. Closing it (or leaving a ``with`` block) before the end
    kills the command. A sandbox failure raises :class:`MagsError`.
    """

    def __init__(self, resp: httpx.Response):
        self._resp = resp
        self._decoder = w.ExecDecoder()
        self._lines = resp.iter_lines()

    @property
    def exit(self) -> Optional[ExecExit]:
        return self._decoder.exit

    @property
    def exit_code(self) -> Optional[int]:
        return self._decoder.exit.exit_code if self._decoder.exit else None

    @property
    def timed_out(self) -> bool:
        return bool(self._decoder.exit and self._decoder.exit.timed_out)

    def __iter__(self) -> Iterator[OutputChunk]:
        return self

    def __next__(self) -> OutputChunk:
        while self._decoder.exit is None:
            try:
                line = next(self._lines)
            except StopIteration:
                self.close()
                raise MagsError("the exec stream ended before the command did") from None
            except httpx.TransportError as e:
                self.close()
                raise ConnectionFailed(f"the exec stream broke: {e}") from e
            try:
                ev = self._decoder.decode(line)
            except MagsError:
                self.close()
                raise
            if isinstance(ev, OutputChunk):
                return ev
        self.close()
        raise StopIteration

    def wait(self) -> ExecResult:
        """Reads to the end; the result of the output not yet iterated."""
        chunks = list(self)
        assert self._decoder.exit is not None
        return w.collect(chunks, self._decoder.exit)

    def close(self) -> None:
        self._resp.close()

    def __enter__(self) -> "ExecStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class OutputStream:
    """A job's output events as they happen (see :meth:`Mags.stream_output`).

    After the last event ``exit`` holds the :class:`~mags.types.JobExit`
    (``None`` if ``follow=False`` ended before the job). ``after`` is the
    last ``seq`` seen.
    """

    def __init__(self, client: Mags, request_id: str, after: Optional[int], follow: bool):
        self.request_id = request_id
        self._client = client
        self._follow = follow
        self._decoder = w.OutputDecoder(after)
        self._resp: Optional[httpx.Response] = None
        self._events = self._run()

    @property
    def exit(self) -> Optional[JobExit]:
        return self._decoder.exit

    @property
    def after(self) -> Optional[int]:
        return self._decoder.after

    def _open(self) -> Iterator[str]:
        params: Dict[str, Any] = {"follow": "true" if self._follow else "false"}
        if self._decoder.after is not None:
            params["after"] = self._decoder.after
        self._resp = self._client._open_stream(
            "GET", f"/mags-jobs/{w.seg(self.request_id)}/output", params=params
        )
        return self._resp.iter_lines()

    def _run(self) -> Generator[OutputEvent, None, None]:
        failures = 0
        while True:
            seen = self._decoder.after
            try:
                for line in self._open():
                    ev = self._decoder.decode(line)
                    if ev is not None:
                        yield ev
                    if self._decoder.exit is not None:
                        return
                if not self._follow:
                    return
                err: Exception = MagsError("the output stream ended before the job did")
            except (httpx.TransportError, ConnectionFailed) as e:
                err = e
            finally:
                self.close()
            # Resume after a dropped connection, unless it keeps failing
            # without progress.
            failures = 0 if self._decoder.after != seen else failures + 1
            if failures >= _RECONNECTS:
                raise MagsError(f"lost the output stream of job {self.request_id}: {err}")
            time.sleep(0.2 * (failures + 1))

    def __iter__(self) -> Iterator[OutputEvent]:
        return self

    def __next__(self) -> OutputEvent:
        return next(self._events)

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    def __enter__(self) -> "OutputStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._events.close()
        self.close()
