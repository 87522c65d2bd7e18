import { test } from "node:test";
import assert from "node:assert/strict";
import { get } from "node:http";
import { client, unique } from "./helpers.mjs";

/** GET `url` at loopback with its own Host (`<sub>.localhost` needs no DNS). */
function getJson(url) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    get({ host: "127.0.0.1", port: u.port, path: u.pathname, headers: { Host: u.host } }, (res) => {
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => (res.statusCode === 200 ? resolve(JSON.parse(body)) : reject(new Error(`${res.statusCode} ${body}`))));
    }).on("error", reject);
  });
}

test("a browser session answers CDP through the URL proxy and is reused by name", async () => {
  const m = client();
  const name = unique();
  const b = await m.browser(name);
  try {
    assert.equal(b.success, true);
    assert.equal(b.name, name);
    assert.match(b.wsEndpoint, /^wss?:\/\/.+\/devtools\/browser\//);
    assert.equal(b.cdpUrl, b.wsEndpoint);
    const version = await getJson(b.cdpHttpUrl);
    assert.match(version.Browser, /Chrom/);
    const again = await m.browser(name);
    assert.equal(again.request_id, b.request_id, "a live session of that name is reused");
  } finally {
    await m.stop(b.request_id);
  }
});
