/**
 * Where the client finds its server and token, in the `mags` CLI's order.
 *
 * URL: the `apiUrl` option, `MAGS_API_URL`, `api_url` in
 * `~/.mags/config.json`, then the local server the CLI starts
 * (`~/.mags/local/server.json`). Token: `apiToken`, `MAGS_API_TOKEN`,
 * `MAGS_TOKEN`, `api_token` in the config file, then the local server's
 * token. `MAGS_HOME` relocates `~/.mags`. There is no default server.
 */

import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { MagsError } from "./errors.js";

export interface ResolvedConfig {
  apiUrl: string;
  apiToken: string;
}

/** `$MAGS_HOME` or `~/.mags`. */
export function magsHome(): string {
  const h = (process.env.MAGS_HOME ?? "").trim();
  return h || join(homedir(), ".mags");
}

function env(name: string): string | undefined {
  const v = (process.env[name] ?? "").trim();
  return v || undefined;
}

function readJson(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return {};
  }
  try {
    const v = JSON.parse(text);
    return v && typeof v === "object" ? v : {};
  } catch (e) {
    throw new MagsError(`cannot read ${path}: ${(e as Error).message}`);
  }
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

export function resolveConfig(apiUrl?: string, apiToken?: string): ResolvedConfig {
  const home = magsHome();
  const file = readJson(join(home, "config.json"));
  let url = apiUrl || env("MAGS_API_URL") || (file.api_url as string) || undefined;
  let token =
    apiToken || env("MAGS_API_TOKEN") || env("MAGS_TOKEN") || (file.api_token as string) || undefined;
  if (!url) {
    const local = join(home, "local");
    url = (readJson(join(local, "server.json")).url as string) || undefined;
    if (url && !token) token = readText(join(local, "token"));
  }
  if (!url) {
    throw new MagsError(
      "No Mags server configured. Pass apiUrl, set MAGS_API_URL, run " +
        "`mags login --url URL --token TOKEN`, or start a local server with any `mags` command.",
    );
  }
  if (!token) {
    throw new MagsError(
      "API token required. Set MAGS_API_TOKEN env var or pass apiToken " +
        "(`magsd token create --user NAME` makes one).",
    );
  }
  return { apiUrl: String(url).replace(/\/+$/, ""), apiToken: String(token) };
}
