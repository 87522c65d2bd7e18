// The CommonJS build, through require(): errors with status codes and the
// CLI's configuration order.
const { test } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");
const { Mags, MagsError } = require("../dist/cjs/index.js");

test("server errors carry their status code", async () => {
  const m = new Mags();
  await assert.rejects(m.status("00000000-0000-0000-0000-000000000000"), (e) => {
    assert.ok(e instanceof MagsError);
    assert.equal(e.statusCode, 404);
    assert.ok(e.message && !e.message.includes("<"));
    return true;
  });
  await assert.rejects(m.run("echo", { diskGb: 100000 }), (e) => e.statusCode === 400 && /disk_gb/.test(e.message));
  await assert.rejects(m.stop("no-such-job"), (e) => e.statusCode === undefined && /No job found/.test(e.message));
  await assert.rejects(m.run("true", { noSleep: true }), /noSleep requires persistent/);
  const bad = new Mags({ apiUrl: process.env.MAGS_API_URL, apiToken: "mags_wrong" });
  await assert.rejects(bad.listJobs(), (e) => e.statusCode === 401);
});

test("an unreachable server is a clear error", async () => {
  const port = await new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
  const m = new Mags({ apiUrl: `http://127.0.0.1:${port}`, apiToken: "x" });
  await assert.rejects(m.listJobs(), (e) => e instanceof MagsError && e.message.includes(`127.0.0.1:${port}`));
});

test("configuration follows the CLI's order", () => {
  const saved = { ...process.env };
  try {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), "mags-home-"));
    fs.mkdirSync(path.join(home, "local"));
    process.env.MAGS_HOME = home;
    for (const k of ["MAGS_API_URL", "MAGS_API_TOKEN", "MAGS_TOKEN"]) delete process.env[k];
    assert.throws(() => new Mags(), /No Mags server configured/);

    fs.writeFileSync(path.join(home, "local", "server.json"), JSON.stringify({ url: "http://127.0.0.1:1/", pid: 1 }));
    fs.writeFileSync(path.join(home, "local", "token"), "local-token\n");
    let m = new Mags();
    assert.deepEqual([m.apiUrl, m.apiToken], ["http://127.0.0.1:1", "local-token"]);

    fs.writeFileSync(path.join(home, "config.json"), JSON.stringify({ api_url: "http://file:2", api_token: "file-token" }));
    m = new Mags();
    assert.deepEqual([m.apiUrl, m.apiToken], ["http://file:2", "file-token"]);

    process.env.MAGS_API_URL = "http://env:3";
    process.env.MAGS_TOKEN = "env-token";
    m = new Mags();
    assert.deepEqual([m.apiUrl, m.apiToken], ["http://env:3", "env-token"]);
    process.env.MAGS_API_TOKEN = "api-token";
    assert.equal(new Mags().apiToken, "api-token");

    m = new Mags({ apiUrl: "http://arg:4/", apiToken: "arg" });
    assert.deepEqual([m.apiUrl, m.apiToken], ["http://arg:4", "arg"]);
  } finally {
    process.env = saved;
  }
});

test("url() and aliases use the server's own URLs (stub server: main has no /access yet)", async () => {
  const JOB = "11111111-2222-3333-4444-555555555555";
  const seen = [];
  const http = require("node:http");
  const server = http.createServer((req, res) => {
    let raw = "";
    req.on("data", (d) => (raw += d));
    req.on("end", () => {
      const body = raw ? JSON.parse(raw) : null;
      seen.push([req.method, req.url, body]);
      let answer;
      if (req.method === "GET") answer = { request_id: JOB, status: "running", url: null };
      else if (req.url.endsWith("/access") && body.port === 9999) answer = { success: false, error: "port 9999 is not open" };
      else if (req.url.endsWith("/access")) answer = { success: true, url: "http://sub.apps.example.test:7070", port: body.port };
      else answer = { id: "a1", subdomain: body.subdomain, url: `http://${body.subdomain}.apps.example.test` };
      res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(answer));
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  try {
    const m = new Mags({ apiUrl: `http://127.0.0.1:${server.address().port}`, apiToken: "t" });
    assert.equal((await m.url(JOB, { port: 3000 })).url, "http://sub.apps.example.test:7070");
    assert.deepEqual(seen[0], ["POST", `/api/v1/mags-jobs/${JOB}/access`, { port: 3000 }]);
    await assert.rejects(m.url(JOB, { port: 9999 }), /port 9999 is not open/);
    assert.equal((await m.urlAliasCreate("docs", "ws1")).url, "http://docs.apps.example.test");
    assert.deepEqual(seen.at(-1), ["POST", "/api/v1/mags-url-aliases", { subdomain: "docs", workspace_id: "ws1" }]);
  } finally {
    server.close();
  }
});

test("the whole surface is there", () => {
  const methods = [
    "run", "runAndWait", "status", "logs", "listJobs", "new", "exec", "execStream", "streamOutput",
    "findJob", "url", "enableAccess", "stop", "updateJob", "uploadFile", "uploadFiles", "cronCreate",
    "cronList", "cronGet", "cronUpdate", "cronDelete", "urlAliasCreate", "urlAliasList",
    "urlAliasDelete", "listWorkspaces", "deleteWorkspace", "sync", "browser", "usage", "poolStatus",
  ];
  for (const name of methods) assert.equal(typeof Mags.prototype[name], "function", name);
});
