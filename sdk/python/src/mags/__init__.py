"""Python client for Mags: run scripts and long-lived sandboxes in microVMs
on your own Mags server.

    from mags import Mags
    m = Mags()                      # MAGS_API_URL / MAGS_API_TOKEN or ~/.mags/config.json
    print(m.run_and_wait("echo hi")["logs"])

:class:`Mags` keeps the published ``magpie-mags`` client's methods and
return shapes; :class:`AsyncMags` is its asyncio twin.
"""

from .aio import AsyncExecStream, AsyncMags, AsyncOutputStream
from .client import ExecStream, Mags, OutputStream
from .errors import (
    AuthenticationError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    MagsError,
    MagsTimeout,
    NotFound,
    PayloadTooLarge,
    ServerError,
)
from .types import ExecExit, JobExit, OutputChunk, StatusChange

__version__ = "0.1.0"

__all__ = [
    "Mags",
    "AsyncMags",
    "MagsError",
    "BadRequest",
    "AuthenticationError",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "ServerError",
    "ConnectionFailed",
    "MagsTimeout",
    "ExecStream",
    "OutputStream",
    "AsyncExecStream",
    "AsyncOutputStream",
    "OutputChunk",
    "StatusChange",
    "JobExit",
    "ExecExit",
]
