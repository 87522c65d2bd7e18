"""Your own API tokens and audit events through the SDK (sync and async)."""

from __future__ import annotations

import asyncio

import pytest

import mags
from mags import MagsError, NotFound


def test_tokens_create_list_revoke_and_audit(m):
    made = m.create_token()
    assert made["token"].startswith(made["prefix"]) and made["id"]
    listed = m.list_tokens()
    assert listed["total"] == len(listed["tokens"])
    mine = [t for t in listed["tokens"] if t["id"] == made["id"]]
    assert mine and mine[0]["revoked"] is False
    assert made["token"] not in str(listed)

    with mags.Mags(api_token=made["token"]) as other:
        assert other.list_tokens()["total"] == listed["total"]
        assert m.revoke_token(made["prefix"])["id"] == made["id"]
        with pytest.raises(MagsError) as refused:
            other.list_tokens()
        assert refused.value.status_code == 401
    with pytest.raises(NotFound):
        m.revoke_token("no-such-token")

    events = m.audit(since="1h")["events"]
    actions = [(e["action"], e["target_id"]) for e in events]
    assert ("token.create", made["id"]) in actions
    assert ("token.revoke", made["id"]) in actions


def test_async_tokens():
    async def go():
        async with mags.AsyncMags() as am:
            made = await am.create_token()
            assert made["id"] in [t["id"] for t in (await am.list_tokens())["tokens"]]
            assert (await am.revoke_token(made["id"]))["success"] is True
            assert (await am.audit(limit=1))["total"] == 1

    asyncio.run(go())
