"""Exceptions raised by the Mags clients.

Every error is a :class:`MagsError` (the published client's one exception
class, kept so ``except MagsError`` still catches everything). Errors the
server answered carry its HTTP ``status_code`` and are raised as the
subclass for that status, so callers can ``except NotFound``.
"""

from __future__ import annotations

from typing import Any, Optional


class MagsError(Exception):
    """An error from the Mags API or from the client itself.

    ``status_code`` is the HTTP status when the server answered with one,
    else ``None`` (bad arguments, network failures, timeouts).
    """

    def __init__(self, message: str, status_code: Optional[int] = None, body: Any = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        #: The decoded error body (usually ``{"error": "..."}``), if any.
        self.body = body


class BadRequest(MagsError):
    """400: the server refused the request's content."""


class AuthenticationError(MagsError):
    """401 or 403: the token is missing, wrong or not allowed."""


class NotFound(MagsError):
    """404: no such job, workspace, cron job, alias or endpoint."""


class Conflict(MagsError):
    """409: the thing is in the wrong state (e.g. a workspace already in use)."""


class PayloadTooLarge(MagsError):
    """413: an upload above the server's limit."""


class ServerError(MagsError):
    """5xx: the server failed or is unavailable."""


class ConnectionFailed(MagsError):
    """The server could not be reached (refused, DNS, TLS, reset)."""


class MagsTimeout(MagsError):
    """A wait (``run_and_wait``, ``new``, a request) ran out of time."""


_BY_STATUS = {
    400: BadRequest,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
}


def error_for_status(status: int, body: Any, text: str) -> MagsError:
    """The exception for an HTTP error answer: the body's ``error`` (then
    ``message``) as the message, the subclass chosen by ``status``."""
    msg = None
    if isinstance(body, dict):
        msg = body.get("error") or body.get("message")
    if not msg:
        text = text.strip()
        # Not our server's JSON (a proxy's HTML page, say): keep it short.
        msg = f"HTTP {status}: {text[:300]}" if text else f"HTTP {status}"
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else MagsError)
    return cls(str(msg), status_code=status, body=body)
