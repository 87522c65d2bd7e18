/**
 * Node client for Mags: run scripts and long-lived sandboxes in microVMs on
 * your own Mags server.
 *
 * ```ts
 * import { Mags } from "mags-sdk";   // or: import Mags from "mags-sdk"
 * const m = new Mags({ apiUrl: "http://127.0.0.1:7070", apiToken: "mags_..." });
 * console.log(await m.runAndWait("echo hi"));
 * ```
 *
 * From CommonJS, `require("mags-sdk")` is the `Mags` class itself (as the
 * public docs write it: `const Mags = require(...); new Mags({...})`),
 * carrying every other export as a property (`require("mags-sdk").Mags`).
 */

import { Mags } from "./client.js";

export { Mags };
export default Mags;
export type { MagsOptions, RunOptions, WaitOptions, NewOptions, CronCreateOptions, CronUpdateOptions } from "./client.js";
export { MagsError } from "./errors.js";
export { ExecStream, OutputStream } from "./streams.js";
export { resolveConfig, magsHome } from "./config.js";
export type * from "./types.js";
