"""The asyncio client, :class:`AsyncMags`: every method of
:class:`mags.Mags`, as coroutines, on ``httpx.AsyncClient``; streams are
async iterators.

    async with AsyncMags() as m:
        r = await m.run_and_wait("echo hi")
        async for ev in m.stream_output(job_id):
            ...
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncGenerator, AsyncIterator, Dict, List, Optional, Union

import httpx

from . import _wire as w
from .config import resolve
from .errors import ConnectionFailed, MagsError, MagsTimeout
from .client import _check
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

__all__ = ["AsyncMags", "AsyncExecStream", "AsyncOutputStream"]

_RECONNECTS = 5


class AsyncMags:
    """Asyncio client for a Mags server; arguments as :class:`mags.Mags`."""

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
        self._http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {self.api_token}"},
            timeout=timeout,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncMags":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncMags(api_url={self.api_url!r})"

    # ── transport ────────────────────────────────────────────────────

    async def _send(
        self, method: str, path: str, *, stream: bool = False, **kw: Any
    ) -> httpx.Response:
        try:
            req = self._http.build_request(method, f"{self.api_url}/api/v1{path}", **kw)
            return await self._http.send(req, stream=stream)
        except httpx.TimeoutException as e:
            raise MagsTimeout(f"{method} {path}: no answer from {self.api_url} in time ({e})") from e
        except httpx.TransportError as e:
            raise ConnectionFailed(f"cannot reach the Mags server at {self.api_url}: {e}") from e

    async def _request(
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
        return _check(await self._send(method, path, **kw))

    async def _open_stream(self, method: str, path: str, **kw: Any) -> httpx.Response:
        kw["timeout"] = httpx.Timeout(self.timeout, read=None)
        resp = await self._send(method, path, stream=True, **kw)
        if resp.status_code >= 400:
            try:
                await resp.aread()
            finally:
                await resp.aclose()
            _check(resp)
        return resp

    # ── jobs ─────────────────────────────────────────────────────────

    async def run(self, script: str, **kwargs: Any) -> JobSubmitted:
        """Submits ``script``; keyword arguments as :meth:`mags.Mags.run`."""
        return await self._request("POST", "/mags-jobs", json=w.run_payload(script, **kwargs))

    async def run_and_wait(
        self,
        script: str,
        *,
        timeout: float = 60.0,
        poll_interval: float = 1.0,
        **run_kwargs: Any,
    ) -> RunResult:
        request_id = (await self.run(script, **run_kwargs))["request_id"]
        deadline = time.monotonic() + timeout
        while True:
            st = await self.status(request_id)
            if st.get("status") in w.FINAL:
                return w.run_result(request_id, st, await self.logs(request_id))
            if time.monotonic() >= deadline:
                raise MagsTimeout(f"Job {request_id} timed out after {timeout}s")
            await asyncio.sleep(poll_interval)

    async def status(self, request_id: str) -> JobStatus:
        return await self._request("GET", f"/mags-jobs/{w.seg(request_id)}/status")

    async def logs(
        self, request_id: str, *, offset: Optional[int] = None, limit: Optional[int] = None
    ) -> Logs:
        return await self._request(
            "GET",
            f"/mags-jobs/{w.seg(request_id)}/logs",
            params=w.logs_params(offset, limit),
        )

    async def list_jobs(self, *, page: int = 1, page_size: int = 20) -> JobList:
        return await self._request(
            "GET", "/mags-jobs", params={"page": page, "page_size": page_size}
        )

    async def stream_output(
        self, name_or_id: str, *, after: Optional[int] = None, follow: bool = True
    ) -> "AsyncOutputStream":
        """A job's output events as they happen (``async for``)."""
        return AsyncOutputStream(self, await self._resolve_job_id(name_or_id), after, follow)

    async def update_job(
        self,
        request_id: str,
        *,
        startup_command: Optional[str] = None,
        no_sleep: Optional[bool] = None,
        idle_timeout_secs: Optional[int] = None,
    ) -> JobStatus:
        body: Dict[str, Any] = {}
        if startup_command is not None:
            body["startup_command"] = startup_command
        if no_sleep is not None:
            body["no_sleep"] = no_sleep
        if idle_timeout_secs is not None:
            body["idle_timeout_secs"] = idle_timeout_secs
        return await self._request("PATCH", f"/mags-jobs/{w.seg(request_id)}", json=body)

    async def stop(self, name_or_id: str) -> ActionResult:
        request_id = await self._resolve_job_id(name_or_id)
        return await self._request("POST", f"/mags-jobs/{w.seg(request_id)}/stop")

    async def delete_job(self, name_or_id: str) -> DeleteResult:
        request_id = await self._resolve_job_id(name_or_id)
        return await self._request("DELETE", f"/mags-jobs/{w.seg(request_id)}")

    async def sync(self, request_id: str) -> ActionResult:
        return await self._request("POST", f"/mags-jobs/{w.seg(request_id)}/sync")

    async def usage(self, *, window_days: int = 30) -> Usage:
        return await self._request("GET", "/mags-jobs/usage", params={"window_days": window_days})

    async def pool_status(self) -> PoolStatus:
        return await self._request("GET", "/mags-jobs/pool-status")

    # ── sandboxes ────────────────────────────────────────────────────

    async def new(
        self,
        name: str,
        *,
        persistent: bool = False,
        base_workspace_id: Optional[str] = None,
        disk_gb: Optional[int] = None,
        timeout: float = 30.0,
        poll_interval: float = 1.0,
    ) -> NewResult:
        request_id = (
            await self.run(
                "sleep infinity",
                workspace_id=name,
                persistent=True,
                no_sync=not persistent,
                base_workspace_id=base_workspace_id,
                disk_gb=disk_gb,
            )
        )["request_id"]
        deadline = time.monotonic() + timeout
        while True:
            st = await self.status(request_id)
            if st.get("status") == "running" and st.get("vm_id"):
                return {"request_id": request_id, "status": "running"}
            if st.get("status") in w.FINAL:
                why = f" ({st['error']})" if st.get("error") else ""
                raise MagsError(f"Job {request_id} ended unexpectedly: {st.get('status')}{why}")
            if time.monotonic() >= deadline:
                raise MagsTimeout(f"Job {request_id} did not start within {timeout}s")
            await asyncio.sleep(poll_interval)

    async def find_job(self, name_or_id: str) -> Optional[JobStatus]:
        jobs = (await self.list_jobs(page_size=50)).get("jobs", [])
        return w.pick_job(jobs, name_or_id)

    async def exec(
        self,
        name_or_id: str,
        command: str,
        *,
        timeout: Optional[int] = 30,
        stream: bool = False,
    ) -> Union[ExecResult, "AsyncExecStream"]:
        """``{"exit_code", "output", "stderr"}``; with ``stream=True`` an
        :class:`AsyncExecStream` (see :meth:`exec_stream`)."""
        if stream:
            return await self.exec_stream(name_or_id, command, timeout=timeout)
        secs = 30.0 if timeout is None else float(timeout)
        request_id = w.exec_target(await self.find_job(name_or_id), name_or_id)
        resp = await self._request(
            "POST",
            f"/mags-jobs/{w.seg(request_id)}/exec",
            json=w.exec_body(command, timeout),
            timeout=secs + w.EXEC_HTTP_SLACK,
        )
        return w.exec_result(resp)

    async def exec_stream(
        self, name_or_id: str, command: str, *, timeout: Optional[float] = None
    ) -> "AsyncExecStream":
        request_id = w.exec_target(await self.find_job(name_or_id), name_or_id)
        resp = await self._open_stream(
            "POST", f"/mags-jobs/{w.seg(request_id)}/exec/stream", json=w.exec_body(command, timeout)
        )
        return AsyncExecStream(resp)

    async def resize(
        self,
        workspace: str,
        disk_gb: int,
        *,
        timeout: float = 30.0,
        poll_interval: float = 1.0,
    ) -> NewResult:
        existing = await self.find_job(workspace)
        if existing and existing.get("status") in w.LIVE:
            await self._request(
                "POST", f"/mags-workspaces/{w.seg(workspace)}/resize", json={"disk_gb": disk_gb}
            )
            return {"request_id": w.job_id(existing), "status": "running"}
        return await self.new(
            workspace, persistent=True, disk_gb=disk_gb, timeout=timeout, poll_interval=poll_interval
        )

    # ── access and URLs ──────────────────────────────────────────────

    async def enable_access(self, request_id: str, *, port: int = 8080) -> AccessInfo:
        return await self._request(
            "POST", f"/mags-jobs/{w.seg(request_id)}/access", json={"port": port}
        )

    async def url(self, name_or_id: str, *, port: int = 8080) -> AccessInfo:
        request_id = await self._resolve_job_id(name_or_id)
        resp = await self.enable_access(request_id, port=port)
        st = None if resp.get("url") else await self.status(request_id)
        return w.access_url(resp, st)

    async def url_alias_create(
        self, subdomain: str, workspace_id: str, domain: Optional[str] = None
    ) -> UrlAlias:
        return await self._request(
            "POST", "/mags-url-aliases", json=w.alias_payload(subdomain, workspace_id, domain)
        )

    async def url_alias_list(self) -> UrlAliasList:
        return await self._request("GET", "/mags-url-aliases")

    async def url_alias_delete(self, subdomain: str) -> Dict[str, Any]:
        return await self._request("DELETE", f"/mags-url-aliases/{w.seg(subdomain)}")

    async def browser(
        self, name: Optional[str] = None, *, timeout: float = 300.0
    ) -> BrowserSession:
        """As :meth:`mags.Mags.browser`."""
        return await self._request(
            "POST", "/mags-browser", json=w.browser_payload(name), timeout=timeout
        )

    # ── files and workspaces ─────────────────────────────────────────

    async def upload_file(self, file_path: str) -> str:
        p = Path(file_path)
        if not p.is_file():
            raise MagsError(f"File not found: {file_path}")
        # httpx's async multipart takes bytes; uploads are capped at 100 MB.
        data = await asyncio.to_thread(p.read_bytes)
        resp = await self._send(
            "POST",
            "/mags-files",
            files={"file": (p.name, data, "application/octet-stream")},
            timeout=httpx.Timeout(self.timeout, write=None, read=max(self.timeout, 300)),
        )
        body = _check(resp)
        if not body.get("file_id"):
            raise MagsError(f"Upload failed for {p.name}: {body}")
        return str(body["file_id"])

    async def upload_files(self, file_paths: List[str]) -> List[str]:
        return [await self.upload_file(fp) for fp in file_paths]

    async def list_workspaces(self) -> WorkspaceList:
        return await self._request("GET", "/mags-workspaces")

    async def delete_workspace(self, workspace_id: str) -> WorkspaceAction:
        return await self._request("DELETE", f"/mags-workspaces/{w.seg(workspace_id)}")

    # ── cron ─────────────────────────────────────────────────────────

    async def cron_create(
        self,
        *,
        name: str,
        cron_expression: str,
        script: str,
        workspace_id: Optional[str] = None,
        environment: Optional[Dict[str, str]] = None,
        persistent: bool = False,
    ) -> CronJob:
        body = w.cron_payload(name, cron_expression, script, workspace_id, environment, persistent)
        return await self._request("POST", "/mags-cron", json=body)

    async def cron_list(self) -> CronList:
        return await self._request("GET", "/mags-cron")

    async def cron_get(self, cron_id: str) -> CronJob:
        return await self._request("GET", f"/mags-cron/{w.seg(cron_id)}")

    async def cron_update(self, cron_id: str, **updates: Any) -> CronJob:
        return await self._request("PATCH", f"/mags-cron/{w.seg(cron_id)}", json=updates)

    async def cron_delete(self, cron_id: str) -> Dict[str, Any]:
        return await self._request("DELETE", f"/mags-cron/{w.seg(cron_id)}")

    # ── tokens and audit ─────────────────────────────────────────────

    async def list_tokens(self) -> Dict[str, Any]:
        return await self._request("GET", "/mags-tokens")

    async def create_token(self) -> Dict[str, Any]:
        return await self._request("POST", "/mags-tokens", json={})

    async def revoke_token(self, token_id: str) -> Dict[str, Any]:
        return await self._request("DELETE", f"/mags-tokens/{w.seg(token_id)}")

    async def audit(self, since: Optional[str] = None, limit: int = 100) -> Dict[str, Any]:
        params: Dict[str, Any] = {"limit": limit}
        if since:
            params["since"] = since
        return await self._request("GET", "/mags-audit", params=params)

    async def _resolve_job_id(self, name_or_id: str) -> str:
        if w.looks_like_id(name_or_id):
            return name_or_id
        job = await self.find_job(name_or_id)
        if not job:
            raise MagsError(f"No job found for '{name_or_id}'")
        return w.job_id(job)


class AsyncExecStream:
    """:class:`mags.client.ExecStream` for ``async for``."""

    def __init__(self, resp: httpx.Response):
        self._resp = resp
        self._decoder = w.ExecDecoder()
        self._lines = resp.aiter_lines()

    @property
    def exit(self) -> Optional[ExecExit]:
        return self._decoder.exit

    @property
    def exit_code(self) -> Optional[int]:
        return self._decoder.exit.exit_code if self._decoder.exit else None

    @property
    def timed_out(self) -> bool:
        return bool(self._decoder.exit and self._decoder.exit.timed_out)

    def __aiter__(self) -> AsyncIterator[OutputChunk]:
        return self

    async def __anext__(self) -> OutputChunk:
        while self._decoder.exit is None:
            try:
                line = await self._lines.__anext__()
            except StopAsyncIteration:
                await self.aclose()
                raise MagsError("the exec stream ended before the command did") from None
            except httpx.TransportError as e:
                await self.aclose()
                raise ConnectionFailed(f"the exec stream broke: {e}") from e
            try:
                ev = self._decoder.decode(line)
            except MagsError:
                await self.aclose()
                raise
            if isinstance(ev, OutputChunk):
                return ev
        await self.aclose()
        raise StopAsyncIteration

    async def wait(self) -> ExecResult:
        chunks = [c async for c in self]
        assert self._decoder.exit is not None
        return w.collect(chunks, self._decoder.exit)

    async def aclose(self) -> None:
        await self._resp.aclose()

    async def __aenter__(self) -> "AsyncExecStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class AsyncOutputStream:
    """:class:`mags.client.OutputStream` for ``async for``."""

    def __init__(self, client: AsyncMags, request_id: str, after: Optional[int], follow: bool):
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

    async def _run(self) -> AsyncGenerator[OutputEvent, None]:
        failures = 0
        while True:
            seen = self._decoder.after
            params: Dict[str, Any] = {"follow": "true" if self._follow else "false"}
            if seen is not None:
                params["after"] = seen
            try:
                self._resp = await self._client._open_stream(
                    "GET", f"/mags-jobs/{w.seg(self.request_id)}/output", params=params
                )
                async for line in self._resp.aiter_lines():
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
                await self.aclose()
            failures = 0 if self._decoder.after != seen else failures + 1
            if failures >= _RECONNECTS:
                raise MagsError(f"lost the output stream of job {self.request_id}: {err}")
            await asyncio.sleep(0.2 * (failures + 1))

    def __aiter__(self) -> AsyncIterator[OutputEvent]:
        return self

    async def __anext__(self) -> OutputEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        if self._resp is not None:
            resp, self._resp = self._resp, None
            await resp.aclose()

    async def __aenter__(self) -> "AsyncOutputStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._events.aclose()
        await self.aclose()
