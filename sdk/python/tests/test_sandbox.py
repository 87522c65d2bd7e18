"""Long-lived sandboxes: new, find_job, exec (buffered and streamed),
update_job, sync, stop."""

from __future__ import annotations

import time

import pytest

from mags import ExecStream, MagsError, OutputChunk


def test_new_exec_stream_and_stop(m, unique):
    new = m.new(unique, timeout=300, poll_interval=0.2)
    assert set(new) == {"request_id", "status"}
    assert new["status"] == "running"
    job_id = new["request_id"]
    found = m.find_job(unique)
    assert found["request_id"] == job_id and found["workspace_id"] == unique

    r = m.exec(unique, "echo hi; echo oops >&2; pwd; hostname; exit 3")
    assert r == {"exit_code": 3, "output": "hi\n/root\nmags-vm\n", "stderr": "oops\n"}

    timed = m.exec(unique, "sleep 60", timeout=2)
    assert timed["exit_code"] == 124

    # Streamed: the first line arrives while the command still runs.
    stream = m.exec_stream(unique, "echo one; sleep 2; echo two >&2; exit 5")
    arrivals = []
    for chunk in stream:
        assert isinstance(chunk, OutputChunk)
        arrivals.append((time.monotonic(), chunk.stream, chunk.text))
        assert stream.exit_code is None
    assert [(s, t) for _, s, t in arrivals] == [("stdout", "one\n"), ("stderr", "two\n")]
    assert arrivals[1][0] - arrivals[0][0] >= 1.5
    assert stream.exit_code == 5 and not stream.timed_out

    with m.exec(unique, "seq 3; echo done >&2", stream=True) as s:
        assert isinstance(s, ExecStream)
        assert s.wait() == {"exit_code": 0, "output": "1\n2\n3\n", "stderr": "done\n"}

    timed_stream = m.exec_stream(unique, "echo start; sleep 60", timeout=1)
    assert [c.text for c in timed_stream] == ["start\n"]
    assert timed_stream.exit_code == 124 and timed_stream.timed_out

    upd = m.update_job(job_id, no_sleep=True, startup_command="echo up")
    assert upd["no_sleep"] is True and upd["startup_command"] == "echo up"

    assert m.sync(job_id)["success"] is True

    stopped = m.stop(unique)
    assert stopped["status"] == "completed"
    assert m.find_job(unique)["status"] == "completed"
    with pytest.raises(MagsError, match="completed"):
        m.exec(unique, "echo")
    with pytest.raises(MagsError, match="No running or sleeping VM"):
        m.exec("nosuch-" + unique, "echo")
