"""Where a client finds its server and token, in the ``mags`` CLI's order.

URL: the ``api_url`` argument, ``MAGS_API_URL``, ``api_url`` in
``~/.mags/config.json``, then the local server the CLI starts
(``~/.mags/local/server.json``). Token: the ``api_token`` argument,
``MAGS_API_TOKEN``, ``MAGS_TOKEN``, ``api_token`` in the config file, then
the local server's token file. ``MAGS_HOME`` relocates ``~/.mags``.
There is no built-in default server.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from .errors import MagsError


@dataclass(frozen=True)
class Config:
    """A resolved server address and token."""

    api_url: str
    api_token: str


def mags_home() -> Path:
    """``$MAGS_HOME`` or ``~/.mags``."""
    home = os.environ.get("MAGS_HOME", "").strip()
    return Path(home) if home else Path.home() / ".mags"


def _env(name: str) -> Optional[str]:
    value = os.environ.get(name, "").strip()
    return value or None


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise MagsError(f"cannot read {path}: {e}") from e
    return data if isinstance(data, dict) else {}


def _read_text(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def resolve(api_url: Optional[str] = None, api_token: Optional[str] = None) -> Config:
    """Finds the server and token; raises :class:`MagsError` saying what
    to set when either is missing."""
    home = mags_home()
    file = _read_json(home / "config.json")
    local = home / "local"

    url = api_url or _env("MAGS_API_URL") or (file.get("api_url") or None)
    token = (
        api_token
        or _env("MAGS_API_TOKEN")
        or _env("MAGS_TOKEN")
        or (file.get("api_token") or None)
    )
    if not url:
        server = _read_json(local / "server.json")
        url = server.get("url") or None
        if url and not token:
            token = _read_text(local / "token")
    if not url:
        raise MagsError(
            "No Mags server configured. Pass api_url=..., set MAGS_API_URL, "
            "run `mags login --url URL --token TOKEN`, or start a local server "
            "with any `mags` command."
        )
    if not token:
        raise MagsError(
            "API token required. Set MAGS_API_TOKEN env var or pass api_token "
            "(`magsd token create --user NAME` makes one)."
        )
    return Config(api_url=str(url).rstrip("/"), api_token=str(token))
