"""Uploads with file_ids, and workspaces: list, reuse, delete."""

from __future__ import annotations

import pytest

from conftest import WAIT, messages

from mags import Conflict, MagsError, NotFound


def test_uploaded_files_appear_in_the_vm(m, tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("alpha\n")
    b = tmp_path / "b.bin"
    b.write_bytes(bytes(range(256)))
    ids = m.upload_files([str(a), str(b)])
    assert len(ids) == 2 and all(isinstance(i, str) and i for i in ids)
    assert ids[0] != ids[1]
    r = m.run_and_wait(
        "cat /root/a.txt; cat /uploads/a.txt; sha256sum < /root/b.bin | cut -c1-16",
        file_ids=ids,
        timeout=WAIT,
        poll_interval=0.2,
    )
    assert r["status"] == "completed", r
    import hashlib

    assert messages(r, "stdout") == ["alpha", "alpha", hashlib.sha256(b.read_bytes()).hexdigest()[:16]]

    with pytest.raises(MagsError, match="File not found"):
        m.upload_file(str(tmp_path / "missing"))


def test_workspaces_are_listed_reused_and_deleted(m, unique):
    first = m.run_and_wait("echo kept > /root/f", workspace_id=unique, timeout=WAIT, poll_interval=0.2)
    assert first["status"] == "completed", first
    listed = m.list_workspaces()
    assert listed["total"] == len(listed["workspaces"])
    ws = next(w for w in listed["workspaces"] if w["workspace_id"] == unique)
    assert ws["persistent"] is False

    again = m.run_and_wait("cat /root/f", workspace_id=unique, timeout=WAIT, poll_interval=0.2)
    assert messages(again, "stdout") == ["kept"]

    # A workspace with a live sandbox cannot be deleted.
    m.new(unique, timeout=300, poll_interval=0.2)
    with pytest.raises(Conflict) as err:
        m.delete_workspace(unique)
    assert err.value.status_code == 409
    m.stop(unique)

    assert m.delete_workspace(unique)["success"] is True
    assert unique not in [w["workspace_id"] for w in m.list_workspaces()["workspaces"]]
    with pytest.raises(NotFound) as gone:
        m.delete_workspace(unique)
    assert gone.value.status_code == 404
