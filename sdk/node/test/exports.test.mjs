// The package's ES module shapes, imported by its own name (no server
// needed): a default import and a named one are the same class.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import Mags, { Mags as Named, MagsError } from "mags-sdk";

test("import Mags from and import { Mags } from are the class", () => {
  assert.equal(Mags, Named);
  const m = new Mags({ apiUrl: "http://127.0.0.1:9", apiToken: "mags_x" });
  assert.equal(typeof m.runAndWait, "function");
  assert.ok(new MagsError("x") instanceof Error);
});

test("the type declarations accept every documented form", () => {
  // test/types/ holds one file per form; tsc resolves "mags-sdk" to this
  // package by its own name, through package.json's "exports".
  const require = createRequire(import.meta.url);
  const tsc = require.resolve("typescript/bin/tsc");
  const project = fileURLToPath(new URL("types/tsconfig.json", import.meta.url));
  execFileSync(process.execPath, [tsc, "-p", project], { stdio: "pipe" });
});
