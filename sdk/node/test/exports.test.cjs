// The package's CommonJS shapes, loaded by its own name as users load it
// (no server needed): the public docs write
// `const Mags = require(...); new Mags({ apiToken })`.
const { test } = require("node:test");
const assert = require("node:assert/strict");

test("require() is the Mags class, with the named exports on it", () => {
  const Mags = require("mags-sdk");
  assert.equal(typeof Mags, "function");
  const m = new Mags({ apiUrl: "http://127.0.0.1:9", apiToken: "mags_x" });
  assert.equal(typeof m.runAndWait, "function");
  assert.equal(require("mags-sdk").Mags, Mags);
  const { Mags: Named } = require("mags-sdk");
  assert.ok(new Named({ apiUrl: "http://127.0.0.1:9", apiToken: "t" }) instanceof Mags);
  const { MagsError, OutputStream, ExecStream, resolveConfig } = require("mags-sdk");
  assert.ok(new MagsError("boom") instanceof Error);
  assert.equal(typeof OutputStream, "function");
  assert.equal(typeof ExecStream, "function");
  assert.equal(typeof resolveConfig, "function");
  assert.equal(require("mags-sdk").default, Mags);
});
