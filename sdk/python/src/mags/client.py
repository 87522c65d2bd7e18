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
from typing import Any, Dict, Generator, Iterator, List, Literal, Optional, TypeVar, Union, overload

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

__all__ = ["Mags", "MagsError", "ExecStream", "OutputStream"]

_T = TypeVar("_T")


class Mags(w.ClientBase):
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
        super().__init__(api_token, api_url, timeout)
        self._http = httpx.Client(**self._http_options())

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

    def _send(self, method: str, path: str, *, stream: bool = False, **kw: Any) -> httpx.Response:
        try:
            req = self._http.build_request(method, self._url(path), **kw)
            return self._http.send(req, stream=stream)
        except httpx.TransportError as e:
            raise self._transport_error(method, path, e) from e

    def _call(self, call: w.Call) -> Any:
        """Sends one JSON call; its decoded answer."""
        return w.check(self._send(call.method, call.path, **self._request_options(call)))

    def _drive(self, flow: "w.Flow[_T]") -> _T:
        """Runs a flow of :mod:`mags._wire`: sends its calls, sleeps its
        pauses; its result."""
        answer: Any = None
        try:
            while True:
                step = flow.send(answer)
                if isinstance(step, w.Sleep):
                    time.sleep(step.seconds)
                    answer = None
                else:
                    answer = self._call(step)
        except StopIteration as done:
            return done.value

    def _open_stream(self, call: w.Call) -> httpx.Response:
        """Sends a call whose NDJSON answer is read as it arrives."""
        resp = self._send(call.method, call.path, stream=True, **self._stream_options(call))
        if resp.status_code >= 400:
            try:
                resp.read()
            finally:
                resp.close()
            w.check(resp)
        return resp

    # ── jobs ─────────────────────────────────────────────────────────

    @w.takes_run_options
    def run(self, script: str, **options: Any) -> JobSubmitted:
        return self._call(w.submit(script, **options))

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
        return self._drive(w.run_and_wait(script, timeout, poll_interval, run_kwargs))

    def status(self, request_id: str) -> JobStatus:
        """The job's status (``accepted``, ``queued``, ``running``,
        ``sleeping``, ``completed``, ``error``) and details."""
        return self._call(w.job_status(request_id))

    def logs(
        self, request_id: str, *, offset: Optional[int] = None, limit: Optional[int] = None
    ) -> Logs:
        """The job's output so far as lines: ``{"logs": [{"timestamp",
        "level", "message", "source"}]}``; ``offset`` skips that many lines,
        ``limit`` returns at most that many (default: all)."""
        return self._call(w.job_logs(request_id, offset, limit))

    def list_jobs(self, *, page: int = 1, page_size: int = 20) -> JobList:
        """Recent jobs, newest first: ``{"jobs", "total", "page", "page_size"}``."""
        return self._call(w.list_jobs(page, page_size))

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
        return OutputStream(self, self._drive(w.resolve_job_id(name_or_id)), after, follow)

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
        return self._call(w.update_job(request_id, startup_command, no_sleep, idle_timeout_secs))

    def stop(self, name_or_id: str) -> ActionResult:
        """Stops a job by id, name or workspace (a persistent sandbox is
        synced first)."""
        return self._drive(w.stop(name_or_id))

    def delete_job(self, name_or_id: str) -> DeleteResult:
        """Deletes an ended job and its stored output, by id, name or
        workspace (a 409 :class:`Conflict` while it is live: stop it
        first)."""
        return self._drive(w.delete(name_or_id))

    def sync(self, request_id: str) -> ActionResult:
        """Stores a live sandbox's workspace now, without stopping it."""
        return self._call(w.sync_job(request_id))

    def usage(self, *, window_days: int = 30) -> Usage:
        """``{"total_jobs", "vm_seconds", "window_days"}`` for the window."""
        return self._call(w.usage(window_days))

    def pool_status(self) -> PoolStatus:
        """The server's warm pool and queue."""
        return self._call(w.POOL_STATUS)

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
        flow = w.new(name, persistent, base_workspace_id, disk_gb, timeout, poll_interval)
        return self._drive(flow)

    def find_job(self, name_or_id: str) -> Optional[JobStatus]:
        """The job a name, workspace or id means (the CLI's rule: live
        name, live workspace, then any status), or ``None``."""
        return self._drive(w.find_job(name_or_id))

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
        return self._drive(w.exec_(name_or_id, command, timeout))

    def exec_stream(
        self, name_or_id: str, command: str, *, timeout: Optional[float] = None
    ) -> "ExecStream":
        """Runs ``command`` in a sandbox; its output arrives as it is
        produced. No time limit unless ``timeout`` (seconds). Closing the
        stream early kills the command."""
        request_id = self._drive(w.find_sandbox(name_or_id))
        return ExecStream(self._open_stream(w.exec_stream(request_id, command, timeout)))

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
        return self._drive(w.resize(workspace, disk_gb, timeout, poll_interval))

    # ── access and URLs ──────────────────────────────────────────────

    def enable_access(self, request_id: str, *, port: int = 8080) -> AccessInfo:
        """Opens ``port`` of the job's VM: a public ``url`` for HTTP ports,
        ``ssh_host``/``ssh_port``/``ssh_private_key`` for 22."""
        return self._call(w.enable_access(request_id, port))

    def url(self, name_or_id: str, *, port: int = 8080) -> AccessInfo:
        """The public URL of ``port`` in a job's VM, as the server names it
        (its own apps domain; never rewritten)."""
        return self._drive(w.url(name_or_id, port))

    def url_alias_create(
        self, subdomain: str, workspace_id: str, domain: Optional[str] = None
    ) -> UrlAlias:
        """A stable ``subdomain`` that follows whichever job is live in
        ``workspace_id``. ``domain`` defaults to the server's apps domain.
        Returns ``{"id", "subdomain", "url"}``."""
        return self._call(w.alias_create(subdomain, workspace_id, domain))

    def url_alias_list(self) -> UrlAliasList:
        """``{"aliases": [...], "total"}``."""
        return self._call(w.ALIAS_LIST)

    def url_alias_delete(self, subdomain: str) -> Dict[str, Any]:
        return self._call(w.alias_delete(subdomain))

    def browser(
        self, name: Optional[str] = None, *, timeout: float = 300.0
    ) -> BrowserSession:
        """A browser session: headless Chromium in a sandbox of the browser
        image, its DevTools endpoint behind the URL proxy (a live session of
        the same name is reused). Returns ``cdpUrl``, ``cdpHttpUrl`` and
        ``wsEndpoint`` (e.g. Playwright's ``connect_over_cdp(wsEndpoint)``);
        the URLs carry the session's secret. :meth:`stop` ends it. Starting
        Chromium takes a while under TCG, hence the long ``timeout`` (seconds)."""
        return self._call(w.browser(name, timeout))

    # ── files and workspaces ─────────────────────────────────────────

    def upload_file(self, file_path: str) -> str:
        """Uploads one file (100 MB at most); returns its file id. A job
        given it in ``file_ids`` finds it at ``/root/<name>``."""
        p = w.upload_source(file_path)
        with p.open("rb") as f:
            resp = self._send("POST", w.UPLOAD_PATH, **self._upload_options(p, f))
        return w.upload_result(w.check(resp), p)

    def upload_files(self, file_paths: List[str]) -> List[str]:
        """Uploads each file in turn; returns their ids in the same order."""
        return [self.upload_file(fp) for fp in file_paths]

    def list_workspaces(self) -> WorkspaceList:
        """``{"workspaces": [{"workspace_id", ...}], "total"}``."""
        return self._call(w.LIST_WORKSPACES)

    def delete_workspace(self, workspace_id: str) -> WorkspaceAction:
        """Deletes a workspace and its stored data (a 409 :class:`Conflict`
        while a job is live on it)."""
        return self._call(w.delete_workspace(workspace_id))

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
        call = w.cron_create(name, cron_expression, script, workspace_id, environment, persistent)
        return self._call(call)

    def cron_list(self) -> CronList:
        """``{"cron_jobs": [...], "total"}``."""
        return self._call(w.CRON_LIST)

    def cron_get(self, cron_id: str) -> CronJob:
        return self._call(w.cron_get(cron_id))

    def cron_update(self, cron_id: str, **updates: Any) -> CronJob:
        """Changes any fields, e.g. ``cron_update(id, enabled=False)``."""
        return self._call(w.cron_update(cron_id, updates))

    def cron_delete(self, cron_id: str) -> Dict[str, Any]:
        return self._call(w.cron_delete(cron_id))

    # ── tokens and audit ─────────────────────────────────────────────

    def list_tokens(self) -> Dict[str, Any]:
        """Your API tokens, ``{"tokens": [{"id", "prefix", "created_at",
        "last_used_at", "revoked"}], "total"}`` (never the secrets)."""
        return self._call(w.LIST_TOKENS)

    def create_token(self) -> Dict[str, Any]:
        """A new token for you: ``{"token", "id", "prefix", ...}``; the
        token is shown only this once."""
        return self._call(w.CREATE_TOKEN)

    def revoke_token(self, token_id: str) -> Dict[str, Any]:
        """Revokes one of your tokens (id or display prefix); it is refused
        from its next request on."""
        return self._call(w.revoke_token(token_id))

    def audit(self, since: Optional[str] = None, limit: int = 100) -> Dict[str, Any]:
        """Your audit events, oldest first: ``{"events": [...], "total"}``;
        ``since`` is RFC 3339 or an age like ``"24h"``."""
        return self._call(w.audit(since, limit))


class ExecStream(_ndjson.ExecStreamState):
    """A command running in a sandbox, read as it runs.

    Iterate for :class:`~mags.types.OutputChunk` items; afterwards
    ``exit_code`` and ``timed_out`` are set. :meth:`wait` reads the rest
    and returns ``{"exit_code", "output", "stderr"}`` of what was not yet
    iterated. Closing it (or leaving a ``with`` block) before the end
    kills the command. A sandbox failure raises :class:`MagsError`.
    """

    def __init__(self, resp: httpx.Response):
        super().__init__()
        self._resp = resp
        self._lines = resp.iter_lines()

    def __iter__(self) -> Iterator[OutputChunk]:
        return self

    def __next__(self) -> OutputChunk:
        while self._decoder.exit is None:
            try:
                line = next(self._lines)
            except StopIteration:
                self.close()
                raise self._ended() from None
            except httpx.TransportError as e:
                self.close()
                raise self._broke(e) from e
            try:
                chunk = self._chunk(line)
            except MagsError:
                self.close()
                raise
            if chunk is not None:
                return chunk
        self.close()
        raise StopIteration

    def wait(self) -> ExecResult:
        """Reads to the end; the result of the output not yet iterated."""
        return self._result(list(self))

    def close(self) -> None:
        self._resp.close()

    def __enter__(self) -> "ExecStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class OutputStream(_ndjson.OutputStreamState):
    """A job's output events as they happen (see :meth:`Mags.stream_output`).

    After the last event ``exit`` holds the :class:`~mags.types.JobExit`
    (``None`` if ``follow=False`` ended before the job). ``after`` is the
    last ``seq`` seen.
    """

    def __init__(self, client: Mags, request_id: str, after: Optional[int], follow: bool):
        super().__init__(request_id, after, follow)
        self._client = client
        self._resp: Optional[httpx.Response] = None
        self._events = self._run()

    def _run(self) -> Generator[OutputEvent, None, None]:
        while True:
            seen = self._decoder.after
            try:
                self._resp = self._client._open_stream(self._call())
                for line in self._resp.iter_lines():
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
                self.close()
            # Resume after a dropped connection, unless it keeps failing
            # without progress.
            time.sleep(self._resume_delay(seen, err))

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
