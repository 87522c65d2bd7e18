"""The NDJSON streams' part that does no I/O, shared by the sync
(:mod:`mags.client`) and async (:mod:`mags.aio`) stream classes: the line
decoders of ``/output`` and ``/exec/stream``, and the state and reconnect
policy of the stream objects."""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Optional, Union

from ._wire import Call, output
from .errors import ConnectionFailed, MagsError
from .types import ExecExit, ExecResult, JobExit, OutputChunk, OutputEvent, StatusChange

#: How often a followed output stream may reconnect without progress.
RECONNECTS = 5


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


class ExecStreamState:
    """What ``ExecStream`` and ``AsyncExecStream`` share."""

    def __init__(self) -> None:
        self._decoder = ExecDecoder()

    @property
    def exit(self) -> Optional[ExecExit]:
        return self._decoder.exit

    @property
    def exit_code(self) -> Optional[int]:
        return self._decoder.exit.exit_code if self._decoder.exit else None

    @property
    def timed_out(self) -> bool:
        return bool(self._decoder.exit and self._decoder.exit.timed_out)

    def _chunk(self, line: Union[str, bytes]) -> Optional[OutputChunk]:
        """The chunk a line carries (``None`` for the exit and unknown
        events); an ``error`` event raises."""
        ev = self._decoder.decode(line)
        return ev if isinstance(ev, OutputChunk) else None

    def _result(self, chunks: List[OutputChunk]) -> ExecResult:
        assert self._decoder.exit is not None
        return collect(chunks, self._decoder.exit)

    def _ended(self) -> MagsError:
        return MagsError("the exec stream ended before the command did")

    def _broke(self, e: Exception) -> MagsError:
        return ConnectionFailed(f"the exec stream broke: {e}")


class OutputStreamState:
    """What ``OutputStream`` and ``AsyncOutputStream`` share: the decoder,
    the request to (re)open and the reconnect policy."""

    def __init__(self, request_id: str, after: Optional[int], follow: bool):
        self.request_id = request_id
        self._follow = follow
        self._decoder = OutputDecoder(after)
        self._failures = 0

    @property
    def exit(self) -> Optional[JobExit]:
        return self._decoder.exit

    @property
    def after(self) -> Optional[int]:
        return self._decoder.after

    def _call(self) -> Call:
        """The request that resumes after the last ``seq`` seen."""
        return output(self.request_id, self._follow, self._decoder.after)

    def _ended_early(self) -> MagsError:
        return MagsError("the output stream ended before the job did")

    def _resume_delay(self, seen: Optional[int], err: Exception) -> float:
        """Seconds to wait before reopening a stream that ended or broke
        before the job did (``seen``: the last ``seq`` when it was opened);
        raises once it keeps failing without progress."""
        self._failures = 0 if self._decoder.after != seen else self._failures + 1
        if self._failures >= RECONNECTS:
            raise MagsError(f"lost the output stream of job {self.request_id}: {err}")
        return 0.2 * (self._failures + 1)
