import { test } from "node:test";
import assert from "node:assert/strict";
import { MagsError } from "../dist/esm/index.js";
import { client, unique } from "./helpers.mjs";

test("new, exec (buffered and streamed), updateJob, sync, stop", async () => {
  const m = client();
  const name = unique();
  const created = await m.new(name, { timeout: 300, pollInterval: 0.2 });
  assert.deepEqual(Object.keys(created).sort(), ["request_id", "status"]);
  assert.equal(created.status, "running");
  const found = await m.findJob(name);
  assert.equal(found.request_id, created.request_id);
  assert.equal(found.workspace_id, name);

  assert.deepEqual(await m.exec(name, "echo hi; echo oops >&2; pwd; hostname; exit 3"), {
    exit_code: 3,
    output: "hi\n/root\nmags-vm\n",
    stderr: "oops\n",
  });
  assert.equal((await m.exec(name, "sleep 60", { timeout: 2 })).exit_code, 124);

  const stream = await m.execStream(name, "echo one; sleep 2; echo two >&2; exit 5");
  const arrivals = [];
  for await (const c of stream) {
    arrivals.push([performance.now(), c.stream, c.text]);
    assert.equal(stream.exitCode, undefined);
  }
  assert.deepEqual(
    arrivals.map(([, s, t]) => [s, t]),
    [
      ["stdout", "one\n"],
      ["stderr", "two\n"],
    ],
  );
  assert.ok(arrivals[1][0] - arrivals[0][0] >= 1500, "output arrives as it is written");
  assert.equal(stream.exitCode, 5);
  assert.equal(stream.timedOut, false);

  const waited = await (await m.execStream(name, "seq 3; echo done >&2")).wait();
  assert.deepEqual(waited, { exit_code: 0, output: "1\n2\n3\n", stderr: "done\n" });

  // Closing a stream early kills the command.
  const long = await m.execStream(name, "echo started; sleep 3; touch /root/not-killed");
  for await (const c of long) {
    assert.equal(c.text, "started\n");
    break;
  }
  await new Promise((r) => setTimeout(r, 4000));
  assert.equal((await m.exec(name, "test -e /root/not-killed")).exit_code, 1);

  const upd = await m.updateJob(created.request_id, { noSleep: true, startupCommand: "echo up" });
  assert.equal(upd.no_sleep, true);
  assert.equal(upd.startup_command, "echo up");
  assert.equal((await m.sync(name)).success, true);

  assert.equal((await m.stop(name)).status, "completed");
  assert.equal((await m.findJob(name)).status, "completed");
  await assert.rejects(m.exec(name, "echo"), (e) => e instanceof MagsError && /completed/.test(e.message));
  await assert.rejects(m.exec("nosuch-" + name, "echo"), /No running or sleeping VM/);
});
