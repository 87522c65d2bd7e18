// Shared by the tests: they run against a real, running magsd named by
// MAGS_API_URL and MAGS_API_TOKEN (crates/mags-e2e/tests/sdk_node.rs
// starts one, builds this package and runs `node --test`).
import { randomBytes } from "node:crypto";
import { Mags } from "../dist/esm/index.js";

for (const k of ["MAGS_API_URL", "MAGS_API_TOKEN"]) {
  if (!process.env[k]) {
    throw new Error(
      `${k} is not set: these tests need a running magsd. Run them with ` +
        "`cargo test -p mags-e2e --test sdk_node`, or start `magsd serve` and export MAGS_API_URL and MAGS_API_TOKEN.",
    );
  }
}

/** Seconds to wait for a job under TCG on a busy machine. */
export const WAIT = 300;

export const client = () => new Mags();

/** A fresh name, so tests sharing one server never collide. */
export const unique = () => "n" + randomBytes(5).toString("hex");

/** Log lines of a runAndWait result (of one source). */
export const messages = (r, source) =>
  r.logs.filter((e) => source === undefined || e.source === source).map((e) => e.message);
