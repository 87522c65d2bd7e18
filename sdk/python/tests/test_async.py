"""The asyncio client against the same server."""

from __future__ import annotations

import asyncio

import pytest

from conftest import WAIT, messages

from mags import AsyncMags, JobExit, NotFound, OutputChunk


def test_async_run_stream_exec_and_errors(unique):
    async def main():
        async with AsyncMags() as m:
            r, r2 = await asyncio.gather(
                m.run_and_wait("echo async; exit 2", timeout=WAIT, poll_interval=0.2),
                m.run_and_wait("echo twin", timeout=WAIT, poll_interval=0.2),
            )
            assert (r["status"], r["exit_code"]) == ("error", 2)
            assert messages(r, "stdout") == ["async"]
            assert messages(r2, "stdout") == ["twin"]

            job_id = (await m.run("echo x; sleep 1; echo y"))["request_id"]
            events = [ev async for ev in await m.stream_output(job_id)]
            text = "".join(e.text for e in events if isinstance(e, OutputChunk))
            assert text == "x\ny\n"
            assert isinstance(events[-1], JobExit) and events[-1].exit_code == 0

            await m.new(unique, timeout=300, poll_interval=0.2)
            assert (await m.exec(unique, "echo hi"))["output"] == "hi\n"
            stream = await m.exec_stream(unique, "echo s1; echo s2 >&2; exit 1")
            got = [(c.stream, c.text) async for c in stream]
            assert got == [("stdout", "s1\n"), ("stderr", "s2\n")]
            assert stream.exit_code == 1
            assert (await m.stop(unique))["status"] == "completed"

            with pytest.raises(NotFound) as e:
                await m.status("00000000-0000-0000-0000-000000000000")
            assert e.value.status_code == 404

    asyncio.run(main())
