// Builds dist/esm (ES modules) and dist/cjs (CommonJS, marked so by its
// own package.json), both with .d.ts types, from src/.
//
// The CommonJS entry (`dist/cjs/main.js`) makes `require("mags-sdk")` the
// `Mags` class itself with every named export as a property, so both
// `const Mags = require("mags-sdk")` and `require("mags-sdk").Mags` work.
import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
rmSync("dist", { recursive: true, force: true });
for (const project of ["tsconfig.json", "tsconfig.cjs.json"]) {
  execFileSync(process.execPath, [tsc, "-p", project], { stdio: "inherit" });
}
writeFileSync("dist/cjs/package.json", JSON.stringify({ type: "commonjs" }) + "\n");
writeFileSync(
  "dist/cjs/main.js",
  `"use strict";
// require("mags-sdk") is the Mags class, with the named exports on it.
const sdk = require("./index.js");
for (const [name, value] of Object.entries(sdk)) {
  if (!(name in sdk.Mags)) Object.defineProperty(sdk.Mags, name, { value, enumerable: true });
}
module.exports = sdk.Mags;
`,
);
writeFileSync(
  "dist/cjs/main.d.ts",
  `import * as sdk from "./index.js";
declare const Mags: typeof sdk.Mags & typeof sdk;
export = Mags;
`,
);
