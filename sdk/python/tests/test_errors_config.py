"""Typed errors with status codes, and configuration like the CLI's."""

from __future__ import annotations

import json
import os
import socket

import pytest

from mags import (
    AuthenticationError,
    BadRequest,
    ConnectionFailed,
    Mags,
    MagsError,
    NotFound,
)
from mags import client as client_module


def test_server_errors_are_typed_with_status_codes(m):
    with pytest.raises(NotFound) as e:
        m.status("00000000-0000-0000-0000-000000000000")
    assert e.value.status_code == 404
    assert isinstance(e.value, MagsError)
    assert str(e.value) and "<" not in str(e.value)

    with pytest.raises(BadRequest) as e:
        m.run("echo", disk_gb=100000)
    assert e.value.status_code == 400
    assert "disk_gb" in str(e.value)

    with pytest.raises(MagsError, match="No job found") as e:
        m.stop("no-such-job")
    assert e.value.status_code is None


def test_client_side_checks_do_not_reach_the_server(m):
    with pytest.raises(MagsError, match="no_sleep requires persistent"):
        m.run("true", no_sleep=True)
    with pytest.raises(MagsError, match="ephemeral"):
        m.run("true", ephemeral=True, workspace_id="w")


def test_a_bad_token_is_an_authentication_error():
    bad = Mags(api_url=os.environ["MAGS_API_URL"], api_token="mags_wrong")
    with pytest.raises(AuthenticationError) as e:
        bad.list_jobs()
    assert e.value.status_code == 401


def test_an_unreachable_server_is_a_connection_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectionFailed, match=f"127.0.0.1:{port}"):
        Mags(api_url=f"http://127.0.0.1:{port}", api_token="x").list_jobs()


def test_config_order_matches_the_cli(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "local").mkdir(parents=True)
    monkeypatch.setenv("MAGS_HOME", str(home))
    for k in ("MAGS_API_URL", "MAGS_API_TOKEN", "MAGS_TOKEN"):
        monkeypatch.delenv(k, raising=False)

    with pytest.raises(MagsError, match="No Mags server configured"):
        Mags()

    # The local server the CLI starts.
    (home / "local" / "server.json").write_text(json.dumps({"url": "http://127.0.0.1:1/", "pid": 1}))
    (home / "local" / "token").write_text("local-token\n")
    c = Mags()
    assert (c.api_url, c.api_token) == ("http://127.0.0.1:1", "local-token")

    # ~/.mags/config.json over the local server.
    (home / "config.json").write_text(json.dumps({"api_url": "http://file:2", "api_token": "file-token"}))
    c = Mags()
    assert (c.api_url, c.api_token) == ("http://file:2", "file-token")

    # Environment over the file; MAGS_TOKEN when MAGS_API_TOKEN is absent.
    monkeypatch.setenv("MAGS_API_URL", "http://env:3")
    monkeypatch.setenv("MAGS_TOKEN", "env-token")
    c = Mags()
    assert (c.api_url, c.api_token) == ("http://env:3", "env-token")
    monkeypatch.setenv("MAGS_API_TOKEN", "api-token")
    assert Mags().api_token == "api-token"

    # Arguments over everything.
    c = Mags(api_token="arg", api_url="http://arg:4/")
    assert (c.api_url, c.api_token) == ("http://arg:4", "arg")


def test_the_published_surface_is_here():
    published = {
        "run", "run_and_wait", "status", "logs", "list_jobs", "update_job", "enable_access",
        "stop", "resize", "new", "find_job", "url", "exec", "usage", "upload_file",
        "upload_files", "list_workspaces", "delete_workspace", "sync", "cron_create",
        "cron_list", "cron_get", "cron_update", "cron_delete", "url_alias_create",
        "url_alias_list", "url_alias_delete",
    }
    from mags import AsyncMags

    assert published <= set(dir(Mags))
    assert published <= set(dir(AsyncMags))
    assert client_module.MagsError is MagsError
