"""Cron CRUD through the SDK (runs themselves are covered by cron.rs)."""

from __future__ import annotations

import pytest

from mags import BadRequest, NotFound


def test_cron_crud(m, unique):
    c = m.cron_create(
        name=unique,
        cron_expression="0 3 * * *",
        script="echo nightly",
        workspace_id=unique,
        environment={"A": "1"},
    )
    assert c["name"] == unique and c["cron_expression"] == "0 3 * * *"
    assert c["enabled"] is True and c["next_run_at"]
    assert c["environment"] == {"A": "1"}
    assert c["workspace_id"] == unique

    assert c["id"] in [x["id"] for x in m.cron_list()["cron_jobs"]]
    assert m.cron_get(c["id"])["script"] == "echo nightly"

    off = m.cron_update(c["id"], enabled=False, script="echo changed")
    assert off["enabled"] is False and off["next_run_at"] is None
    assert off["script"] == "echo changed"

    with pytest.raises(BadRequest) as bad:
        m.cron_create(name="bad-" + unique, cron_expression="every day", script="true")
    assert bad.value.status_code == 400

    assert m.cron_delete(c["id"])["success"] is True
    with pytest.raises(NotFound):
        m.cron_get(c["id"])
    assert c["id"] not in [x["id"] for x in m.cron_list()["cron_jobs"]]
