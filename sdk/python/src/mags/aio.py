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
from typing import Any, AsyncGenerator, AsyncIterator, Dict, List, Optional, TypeVar, Union

import httpx

from . import _ndjson, _wire as w
from .errors import ConnectionFailed, MagsError
from .types import (
    AccessInfo,
    ActionResult,
    BrowserSession,
    CronJob,
    CronList,
    DeleteResult,
    ExecResult,
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

_T = TypeVar("_T")


class AsyncMags(w.ClientBase):
    """Asyncio client for a Mags server; arguments as :class:`mags.Mags`."""

    def __init__(
        self,
        api_token: Optional[str] = None,
        api_url: Optional[str] = None,
        timeout: int = 30,
    ):
        super().__init__(api_token, api_url, timeout)
        self._http = httpx.AsyncClient(**self._http_options())

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
            req = self._http.build_request(method, self._url(path), **kw)
            return await self._http.send(req, stream=stream)
        except httpx.TransportError as e:
            raise self._transport_error(method, path, e) from e

    async def _call(self, call: w.Call) -> Any:
        return w.check(await self._send(call.method, call.path, **self._request_options(call)))

    async def _drive(self, flow: "w.Flow[_T]") -> _T:
        """:meth:`mags.Mags._drive`, awaiting."""
        answer: Any = None
        try:
            while True:
                step = flow.send(answer)
                if isinstance(step, w.Sleep):
                    await asyncio.sleep(step.seconds)
                    answer = None
                else:
                    answer = await self._call(step)
        except StopIteration as done:
            return done.value

    async def _open_stream(self, call: w.Call) -> httpx.Response:
        resp = await self._send(call.method, call.path, stream=True, **self._stream_options(call))
        if resp.status_code >= 400:
            try:
                await resp.aread()
            finally:
                await resp.aclose()
            w.check(resp)
        return resp

    # ── jobs ─────────────────────────────────────────────────────────

    @w.takes_run_options
    async def run(self, script: str, **options: Any) -> JobSubmitted:
        return await self._call(w.submit(script, **options))

    async def run_and_wait(
        self,
        script: str,
        *,
        timeout: float = 60.0,
        poll_interval: float = 1.0,
        **run_kwargs: Any,
    ) -> RunResult:
        return await self._drive(w.run_and_wait(script, timeout, poll_interval, run_kwargs))

    async def status(self, request_id: str) -> JobStatus:
        return await self._call(w.job_status(request_id))

    async def logs(
        self, request_id: str, *, offset: Optional[int] = None, limit: Optional[int] = None
    ) -> Logs:
        return await self._call(w.job_logs(request_id, offset, limit))

    async def list_jobs(self, *, page: int = 1, page_size: int = 20) -> JobList:
        return await self._call(w.list_jobs(page, page_size))

    async def stream_output(
        self, name_or_id: str, *, after: Optional[int] = None, follow: bool = True
    ) -> "AsyncOutputStream":
        """A job's output events as they happen (``async for``)."""
        request_id = await self._drive(w.resolve_job_id(name_or_id))
        return AsyncOutputStream(self, request_id, after, follow)

    async def update_job(
        self,
        request_id: str,
        *,
        startup_command: Optional[str] = None,
        no_sleep: Optional[bool] = None,
        idle_timeout_secs: Optional[int] = None,
    ) -> JobStatus:
        call = w.update_job(request_id, startup_command, no_sleep, idle_timeout_secs)
        return await self._call(call)

    async def stop(self, name_or_id: str) -> ActionResult:
        return await self._drive(w.stop(name_or_id))

    async def delete_job(self, name_or_id: str) -> DeleteResult:
        return await self._drive(w.delete(name_or_id))

    async def sync(self, request_id: str) -> ActionResult:
        return await self._call(w.sync_job(request_id))

    async def usage(self, *, window_days: int = 30) -> Usage:
        return await self._call(w.usage(window_days))

    async def pool_status(self) -> PoolStatus:
        return await self._call(w.POOL_STATUS)

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
        flow = w.new(name, persistent, base_workspace_id, disk_gb, timeout, poll_interval)
        return await self._drive(flow)

    async def find_job(self, name_or_id: str) -> Optional[JobStatus]:
        return await self._drive(w.find_job(name_or_id))

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
        return await self._drive(w.exec_(name_or_id, command, timeout))

    async def exec_stream(
        self, name_or_id: str, command: str, *, timeout: Optional[float] = None
    ) -> "AsyncExecStream":
        request_id = await self._drive(w.find_sandbox(name_or_id))
        return AsyncExecStream(await self._open_stream(w.exec_stream(request_id, command, timeout)))

    async def resize(
        self,
        workspace: str,
        disk_gb: int,
        *,
        timeout: float = 30.0,
        poll_interval: float = 1.0,
    ) -> NewResult:
        return await self._drive(w.resize(workspace, disk_gb, timeout, poll_interval))

    # ── access and URLs ──────────────────────────────────────────────

    async def enable_access(self, request_id: str, *, port: int = 8080) -> AccessInfo:
        return await self._call(w.enable_access(request_id, port))

    async def url(self, name_or_id: str, *, port: int = 8080) -> AccessInfo:
        return await self._drive(w.url(name_or_id, port))

    async def url_alias_create(
        self, subdomain: str, workspace_id: str, domain: Optional[str] = None
    ) -> UrlAlias:
        return await self._call(w.alias_create(subdomain, workspace_id, domain))

    async def url_alias_list(self) -> UrlAliasList:
        return await self._call(w.ALIAS_LIST)

    async def url_alias_delete(self, subdomain: str) -> Dict[str, Any]:
        return await self._call(w.alias_delete(subdomain))

    async def browser(
        self, name: Optional[str] = None, *, timeout: float = 300.0
    ) -> BrowserSession:
        """As :meth:`mags.Mags.browser`."""
        return await self._call(w.browser(name, timeout))

    # ── files and workspaces ─────────────────────────────────────────

    async def upload_file(self, file_path: str) -> str:
        p = w.upload_source(file_path)
        # httpx's async multipart takes bytes; uploads are capped at 100 MB.
        data = await asyncio.to_thread(p.read_bytes)
        resp = await self._send("POST", w.UPLOAD_PATH, **self._upload_options(p, data))
        return w.upload_result(w.check(resp), p)

    async def upload_files(self, file_paths: List[str]) -> List[str]:
        return [await self.upload_file(fp) for fp in file_paths]

    async def list_workspaces(self) -> WorkspaceList:
        return await self._call(w.LIST_WORKSPACES)

    async def delete_workspace(self, workspace_id: str) -> WorkspaceAction:
        return await self._call(w.delete_workspace(workspace_id))

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
        call = w.cron_create(name, cron_expression, script, workspace_id, environment, persistent)
        return await self._call(call)

    async def cron_list(self) -> CronList:
        return await self._call(w.CRON_LIST)

    async def cron_get(self, cron_id: str) -> CronJob:
        return await self._call(w.cron_get(cron_id))

    async def cron_update(self, cron_id: str, **updates: Any) -> CronJob:
        return await self._call(w.cron_update(cron_id, updates))

    async def cron_delete(self, cron_id: str) -> Dict[str, Any]:
        return await self._call(w.cron_delete(cron_id))

    # ── tokens and audit ─────────────────────────────────────────────

    async def list_tokens(self) -> Dict[str, Any]:
        return await self._call(w.LIST_TOKENS)

    async def create_token(self) -> Dict[str, Any]:
        return await self._call(w.CREATE_TOKEN)

    async def revoke_token(self, token_id: str) -> Dict[str, Any]:
        return await self._call(w.revoke_token(token_id))

    async def audit(self, since: Optional[str] = None, limit: int = 100) -> Dict[str, Any]:
        return await self._call(w.audit(since, limit))


class AsyncExecStream(_ndjson.ExecStreamState):
    """:class:`mags.client.ExecStream` for ``async for``."""

    def __init__(self, resp: httpx.Response):
        super().__init__()
        self._resp = resp
        self._lines = resp.aiter_lines()

    def __aiter__(self) -> AsyncIterator[OutputChunk]:
        return self

    async def __anext__(self) -> OutputChunk:
        while self._decoder.exit is None:
            try:
                line = await self._lines.__anext__()
            except StopAsyncIteration:
                await self.aclose()
                raise self._ended() from None
            except httpx.TransportError as e:
                await self.aclose()
                raise self._broke(e) from e
            try:
                chunk = self._chunk(line)
            except MagsError:
                await self.aclose()
                raise
            if chunk is not None:
                return chunk
        await self.aclose()
        raise StopAsyncIteration

    async def wait(self) -> ExecResult:
        return self._result([c async for c in self])

    async def aclose(self) -> None:
        await self._resp.aclose()

    async def __aenter__(self) -> "AsyncExecStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class AsyncOutputStream(_ndjson.OutputStreamState):
    """:class:`mags.client.OutputStream` for ``async for``."""

    def __init__(self, client: AsyncMags, request_id: str, after: Optional[int], follow: bool):
        super().__init__(request_id, after, follow)
        self._client = client
        self._resp: Optional[httpx.Response] = None
        self._events = self._run()

    async def _run(self) -> AsyncGenerator[OutputEvent, None]:
        while True:
            seen = self._decoder.after
            try:
                self._resp = await self._client._open_stream(self._call())
                async for line in self._resp.aiter_lines():
                    ev = self._decoder.decode(line)
                    if ev is not None:
                        yield ev
                    if self._decoder.exit is not None:
                        return
                if not self._follow:
                    return
                err: Exception = self._ended_early()
            except (httpx.TransportError, ConnectionFailed) as e:
                err = e
            finally:
                await self.aclose()
            await asyncio.sleep(self._resume_delay(seen, err))

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
