"""One-shot jobs: run, run_and_wait, status, logs, listing, streaming,
deleting."""

from __future__ import annotations

import time

import pytest
from conftest import WAIT, messages

from mags import Conflict, JobExit, NotFound, OutputChunk, StatusChange


def test_run_and_wait_reports_exit_code_and_logs(m):
    ok = m.run_and_wait("echo hi; echo warn >&2", timeout=WAIT, poll_interval=0.2)
    assert ok["status"] == "completed"
    assert ok["exit_code"] == 0
    assert isinstance(ok["duration_ms"], int)
    assert messages(ok, "stdout") == ["hi"]
    assert messages(ok, "stderr") == ["warn"]
    assert set(ok) == {"request_id", "status", "exit_code", "duration_ms", "logs"}

    bad = m.run_and_wait("echo nope >&2; exit 7", timeout=WAIT, poll_interval=0.2)
    assert bad["status"] == "error"
    assert bad["exit_code"] == 7
    assert "nope" in messages(bad, "stderr")


def test_script_timeout_ends_the_job_in_error(m):
    r = m.run_and_wait("echo started; sleep 600", script_timeout=2, timeout=WAIT, poll_interval=0.2)
    assert r["status"] == "error"
    assert "started" in messages(r, "stdout")
    st = m.status(r["request_id"])
    assert st["timeout"] == 2
    assert "timed out after 2 s" in st["error"]


def test_environment_reaches_the_script(m):
    r = m.run_and_wait('echo "hello $WHO"', environment={"WHO": "sdk"}, timeout=WAIT, poll_interval=0.2)
    assert messages(r, "stdout") == ["hello sdk"]


def test_status_list_and_find_job(m, unique):
    sub = m.run("echo listed", name=unique)
    assert sub["status"] == "accepted"
    job_id = sub["request_id"]
    for ev in m.stream_output(job_id):
        pass
    st = m.status(job_id)
    assert st["request_id"] == job_id
    assert st["name"] == unique
    assert st["status"] == "completed"
    assert st["exit_code"] == 0
    assert st["started_at"]

    listed = m.list_jobs(page_size=5)
    assert listed["jobs"][0]["request_id"] == job_id, "newest first"
    assert listed["page_size"] == 5
    assert m.find_job(unique)["request_id"] == job_id
    assert m.find_job(job_id)["request_id"] == job_id
    assert m.find_job("no-such-" + unique) is None
    assert m.logs(job_id)["logs"][0]["message"] == "listed"
    assert m.logs(job_id, offset=0, limit=1)["logs"][0]["message"] == "listed"
    assert m.logs(job_id, offset=1000)["logs"] == []


def test_output_streams_before_the_job_ends(m):
    job_id = m.run("echo a; sleep 2; echo b; exit 4")["request_id"]
    seen = []  # (monotonic time, event)
    status_when_a = None
    stream = m.stream_output(job_id)
    for ev in stream:
        seen.append((time.monotonic(), ev))
        if isinstance(ev, OutputChunk) and ev.text == "a\n":
            status_when_a = m.status(job_id)["status"]
    chunks = [(t, e) for t, e in seen if isinstance(e, OutputChunk)]
    text = "".join(e.text for _, e in chunks)
    assert text == "a\nb\n"
    assert status_when_a == "running", "the first line arrived while the job still ran"
    t_a = next(t for t, e in chunks if "a" in e.text)
    t_b = next(t for t, e in chunks if "b" in e.text)
    assert t_b - t_a >= 1.5, "lines arrive as written, not at the end"
    assert isinstance(seen[0][1], StatusChange)
    last = seen[-1][1]
    assert isinstance(last, JobExit) and last == stream.exit
    assert (last.status, last.exit_code) == ("error", 4)
    assert all(e.stream == "stdout" and e.seq is not None for _, e in chunks)


def test_output_stream_resumes_after_a_seq(m):
    r = m.run_and_wait("printf 'one\\n'; sleep 0.3; printf 'two\\n' >&2", timeout=WAIT, poll_interval=0.2)
    everything = [e for e in m.stream_output(r["request_id"], follow=False) if isinstance(e, OutputChunk)]
    assert [(e.stream, e.text) for e in everything] == [("stdout", "one\n"), ("stderr", "two\n")]
    rest = [
        e
        for e in m.stream_output(r["request_id"], after=everything[0].seq, follow=False)
        if isinstance(e, OutputChunk)
    ]
    assert [e.text for e in rest] == ["two\n"]


def test_usage_and_pool_status(m):
    m.run_and_wait("true", timeout=WAIT, poll_interval=0.2)
    u = m.usage()
    assert u["total_jobs"] >= 1
    assert u["vm_seconds"] > 0
    p = m.pool_status()
    assert {"idle_vms", "busy_vms", "total_vms", "min_pool_size", "max_pool_size"} <= set(p)


def test_delete_job_removes_an_ended_job_and_refuses_a_live_one(m, unique):
    job_id = m.run("echo gone", name=unique)["request_id"]
    for _ in m.stream_output(job_id):
        pass
    assert m.status(job_id)["output_bytes"] == 5
    box = unique + "-box"
    m.new(box)
    with pytest.raises(Conflict) as e:
        m.delete_job(box)
    assert e.value.status_code == 409 and "stop it first" in str(e.value)
    assert m.status(m.find_job(box)["request_id"])["status"] == "running"
    m.stop(box)

    r = m.delete_job(unique)
    assert (r["success"], r["request_id"], r["output_bytes"]) == (True, job_id, 5)
    with pytest.raises(NotFound):
        m.status(job_id)
    with pytest.raises(NotFound):
        m.delete_job(job_id)
