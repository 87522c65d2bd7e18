import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MagsError } from "../dist/esm/index.js";
import { WAIT, client, messages, unique } from "./helpers.mjs";

test("uploaded files appear in the VM", async () => {
  const m = client();
  const dir = mkdtempSync(join(tmpdir(), "mags-node-"));
  writeFileSync(join(dir, "a.txt"), "alpha\n");
  const bin = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  writeFileSync(join(dir, "b.bin"), bin);
  const ids = await m.uploadFiles([join(dir, "a.txt"), join(dir, "b.bin")]);
  assert.equal(ids.length, 2);
  assert.notEqual(ids[0], ids[1]);
  const r = await m.runAndWait("cat /root/a.txt /uploads/a.txt; sha256sum < /root/b.bin | cut -c1-16", {
    fileIds: ids,
    timeout: WAIT,
    pollInterval: 0.2,
  });
  assert.equal(r.status, "completed");
  const sha = createHash("sha256").update(bin).digest("hex").slice(0, 16);
  assert.deepEqual(messages(r, "stdout"), ["alpha", "alpha", sha]);
  await assert.rejects(m.uploadFile(join(dir, "missing")), /File not found/);
});

test("workspaces are listed, reused and deleted", async () => {
  const m = client();
  const ws = unique();
  const first = await m.runAndWait("echo kept > /root/f", { workspaceId: ws, timeout: WAIT, pollInterval: 0.2 });
  assert.equal(first.status, "completed");
  const list = await m.listWorkspaces();
  assert.equal(list.total, list.workspaces.length);
  assert.ok(list.workspaces.some((w) => w.workspace_id === ws));
  const again = await m.runAndWait("cat /root/f", { workspaceId: ws, timeout: WAIT, pollInterval: 0.2 });
  assert.deepEqual(messages(again, "stdout"), ["kept"]);

  await m.new(ws, { timeout: 300, pollInterval: 0.2 });
  await assert.rejects(m.deleteWorkspace(ws), (e) => e instanceof MagsError && e.statusCode === 409);
  await m.stop(ws);
  assert.equal((await m.deleteWorkspace(ws)).success, true);
  assert.ok(!(await m.listWorkspaces()).workspaces.some((w) => w.workspace_id === ws));
  await assert.rejects(m.deleteWorkspace(ws), (e) => e.statusCode === 404);
});

test("cron create, list, get, update, delete", async () => {
  const m = client();
  const name = unique();
  const c = await m.cronCreate({
    name,
    cronExpression: "0 3 * * *",
    script: "echo nightly",
    workspaceId: name,
    environment: { A: "1" },
  });
  assert.equal(c.name, name);
  assert.equal(c.enabled, true);
  assert.ok(c.next_run_at);
  assert.deepEqual(c.environment, { A: "1" });
  assert.ok((await m.cronList()).cron_jobs.some((x) => x.id === c.id));
  assert.equal((await m.cronGet(c.id)).script, "echo nightly");
  const off = await m.cronUpdate(c.id, { enabled: false, cronExpression: "@hourly" });
  assert.equal(off.enabled, false);
  assert.equal(off.next_run_at, null);
  assert.equal(off.cron_expression, "@hourly");
  await assert.rejects(
    m.cronCreate({ name: "bad-" + name, cronExpression: "every day", script: "true" }),
    (e) => e instanceof MagsError && e.statusCode === 400,
  );
  assert.equal((await m.cronDelete(c.id)).success, true);
  await assert.rejects(m.cronGet(c.id), (e) => e.statusCode === 404);
});
