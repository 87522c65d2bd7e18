import { test } from "node:test";
import assert from "node:assert/strict";
import { WAIT, client, messages, unique } from "./helpers.mjs";

test("runAndWait reports the exit code and the logs", async () => {
  const m = client();
  const ok = await m.runAndWait("echo hi; echo warn >&2", { timeout: WAIT, pollInterval: 0.2 });
  assert.equal(ok.status, "completed");
  assert.equal(ok.exit_code, 0);
  assert.equal(typeof ok.duration_ms, "number");
  assert.deepEqual(messages(ok, "stdout"), ["hi"]);
  assert.deepEqual(messages(ok, "stderr"), ["warn"]);
  assert.deepEqual(Object.keys(ok).sort(), ["duration_ms", "exit_code", "logs", "request_id", "status"]);

  const bad = await m.runAndWait("echo nope >&2; exit 7", {
    timeout: WAIT,
    pollInterval: 0.2,
    environment: { X: "1" },
  });
  assert.equal(bad.status, "error");
  assert.equal(bad.exit_code, 7);
  assert.deepEqual(messages(bad, "stderr"), ["nope"]);
});

test("scriptTimeout ends the job in error with the reason", async () => {
  const m = client();
  const r = await m.runAndWait("echo started; sleep 600", { scriptTimeout: 2, timeout: WAIT, pollInterval: 0.2 });
  assert.equal(r.status, "error");
  assert.deepEqual(messages(r, "stdout"), ["started"]);
  const st = await m.status(r.request_id);
  assert.equal(st.timeout, 2);
  assert.match(st.error, /timed out after 2 s/);
});

test("status, logs, listJobs and findJob", async () => {
  const m = client();
  const name = unique();
  const sub = await m.run('echo "hello $WHO"', { name, environment: { WHO: "node" } });
  assert.equal(sub.status, "accepted");
  for await (const _ of await m.streamOutput(sub.request_id));
  const st = await m.status(sub.request_id);
  assert.equal(st.name, name);
  assert.equal(st.status, "completed");
  assert.equal(st.exit_code, 0);
  assert.ok(st.started_at);
  // Other test files run at the same time: look among the newest few.
  const list = await m.listJobs({ pageSize: 20 });
  assert.ok(list.jobs.some((j) => j.request_id === sub.request_id));
  const created = list.jobs.map((j) => j.created_at);
  assert.deepEqual(created, [...created].sort().reverse(), "newest first");
  assert.equal(list.page_size, 20);
  assert.equal((await m.findJob(name)).request_id, sub.request_id);
  assert.equal(await m.findJob("no-such-" + name), null);
  assert.deepEqual((await m.logs(sub.request_id)).logs.map((l) => l.message), ["hello node"]);
  assert.deepEqual((await m.logs(sub.request_id, { offset: 0, limit: 1 })).logs.map((l) => l.message), ["hello node"]);
  assert.deepEqual((await m.logs(sub.request_id, { offset: 1000 })).logs, []);
  const usage = await m.usage();
  assert.ok(usage.total_jobs >= 1 && usage.vm_seconds > 0);
});

test("streamOutput yields output before the job ends", async () => {
  const m = client();
  const { request_id } = await m.run("echo a; sleep 2; echo b; exit 4");
  const stream = await m.streamOutput(request_id);
  const seen = [];
  let statusWhenA;
  for await (const ev of stream) {
    seen.push([performance.now(), ev]);
    if (ev.type === "output" && ev.text === "a\n") statusWhenA = (await m.status(request_id)).status;
  }
  const chunks = seen.filter(([, e]) => e.type === "output");
  assert.equal(chunks.map(([, e]) => e.text).join(""), "a\nb\n");
  assert.equal(statusWhenA, "running", "the first line arrived while the job still ran");
  const tA = chunks.find(([, e]) => e.text.includes("a"))[0];
  const tB = chunks.find(([, e]) => e.text.includes("b"))[0];
  assert.ok(tB - tA >= 1500, `lines arrive as written (${tB - tA} ms apart)`);
  assert.equal(seen[0][1].type, "status");
  const last = seen.at(-1)[1];
  assert.deepEqual(last, stream.exit);
  assert.equal(last.status, "error");
  assert.equal(last.exit_code, 4);

  // Resuming after a seq skips what was seen.
  const first = chunks[0][1].seq;
  const rest = [];
  for await (const ev of await m.streamOutput(request_id, { after: first, follow: false })) {
    if (ev.type === "output") rest.push(ev.text);
  }
  assert.deepEqual(rest, ["b\n"]);
});

test("deleteJob removes an ended job and refuses a live one", async () => {
  const m = client();
  const name = unique();
  const { request_id } = await m.run("echo gone", { name });
  for await (const _ of await m.streamOutput(request_id));
  assert.equal((await m.status(request_id)).output_bytes, 5);
  const box = name + "-box";
  await m.new(box);
  await assert.rejects(m.deleteJob(box), (e) => e.statusCode === 409 && /stop it first/.test(e.message));
  await m.stop(box);
  const r = await m.deleteJob(name);
  assert.deepEqual([r.success, r.request_id, r.output_bytes], [true, request_id, 5]);
  await assert.rejects(m.status(request_id), (e) => e.statusCode === 404);
  await assert.rejects(m.deleteJob(request_id), (e) => e.statusCode === 404);
});
