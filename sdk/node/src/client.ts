/**
 * The client, {@link Mags}. Same operations as the published Python client
 * (camelCase names, options objects), plus streaming output and exec, and
 * URLs taken from the server's answers (no built-in domain).
 */

import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { resolveConfig } from "./config.js";
import { MagsError, errorForStatus } from "./errors.js";
import { ExecStream, OutputStream } from "./streams.js";
import type {
  AccessInfo,
  ActionResult,
  AuditList,
  CreatedToken,
  BrowserInfo,
  CronJob,
  CronList,
  DeleteResult,
  ExecResult,
  JobList,
  JobStatus,
  JobSubmitted,
  Logs,
  NewResult,
  PoolStatus,
  RunResult,
  TokenList,
  UrlAlias,
  UrlAliasList,
  Usage,
  WorkspaceAction,
  WorkspaceList,
} from "./types.js";

export interface MagsOptions {
  /** Else `MAGS_API_TOKEN`, `MAGS_TOKEN`, `~/.mags/config.json` or the local server's token. */
  apiToken?: string;
  /** Server base URL (`http://host:7070`); else `MAGS_API_URL`, `~/.mags/config.json` or the local server. */
  apiUrl?: string;
  /** Default request timeout, seconds (30). */
  timeout?: number;
}

export interface RunOptions {
  name?: string;
  /** Keep the disk under this name (local; synced too with `persistent`). */
  workspaceId?: string;
  /** Mount this workspace read-only (a fork with `workspaceId`). */
  baseWorkspaceId?: string;
  /** Keep the VM after the script. */
  persistent?: boolean;
  /** Never sleep (needs `persistent`). */
  noSleep?: boolean;
  /** Nothing kept (not with `workspaceId` or `persistent`). */
  ephemeral?: boolean;
  /** Run after every wake. */
  startupCommand?: string;
  environment?: Record<string, string>;
  /** From {@link Mags.uploadFiles}; the files appear at `/root/<name>`. */
  fileIds?: string[];
  diskGb?: number;
  /** Keep the workspace on this host only. */
  noSync?: boolean;
  rootfsType?: string;
  idleTimeoutSecs?: number;
  /** The sandbox reaches nothing outside itself. */
  noInternet?: boolean;
  /** The only destinations it may reach (hostnames or CIDRs); the server's denials still hold. */
  egressAllow?: string[];
  /** Destinations it may not reach, on top of the server's denials. */
  egressDeny?: string[];
  /** Kill the script after this many seconds (sent as `timeout`); the job
   * ends in `error`. Without it the server's default applies to one-shot jobs. */
  scriptTimeout?: number;
}

export interface WaitOptions {
  /** Seconds to wait (runAndWait 60, new 30). */
  timeout?: number;
  /** Seconds between status checks (1). */
  pollInterval?: number;
}

export interface NewOptions extends WaitOptions {
  /** Sync the workspace to object storage too. */
  persistent?: boolean;
  baseWorkspaceId?: string;
  diskGb?: number;
}

export interface CronCreateOptions {
  name: string;
  cronExpression: string;
  script: string;
  workspaceId?: string;
  environment?: Record<string, string>;
  persistent?: boolean;
}

export interface CronUpdateOptions {
  name?: string;
  cronExpression?: string;
  script?: string;
  workspaceId?: string;
  environment?: Record<string, string>;
  persistent?: boolean;
  enabled?: boolean;
}

const LIVE = new Set(["running", "sleeping"]);
const FINAL = new Set(["completed", "error"]);
/** Extra HTTP seconds over an exec's own timeout (a sleeping sandbox wakes first). */
const EXEC_HTTP_SLACK = 60;

const seg = (s: string) => encodeURIComponent(s);
const sleep = (secs: number) => new Promise((r) => setTimeout(r, secs * 1000));
/** The clients' rule: 32+ characters with a `-` is a job id. */
const looksLikeId = (s: string) => s.length >= 32 && s.includes("-");

function dropUndefined(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

/** A client for a Mags server. */
export class Mags {
  readonly apiUrl: string;
  readonly apiToken: string;
  readonly timeout: number;

  constructor(opts: MagsOptions = {}) {
    const cfg = resolveConfig(opts.apiUrl, opts.apiToken);
    this.apiUrl = cfg.apiUrl;
    this.apiToken = cfg.apiToken;
    this.timeout = opts.timeout ?? 30;
  }

  // ── transport ────────────────────────────────────────────────────

  private endpoint(path: string, params?: Record<string, string | number | boolean | undefined>): string {
    const u = new URL(`${this.apiUrl}/api/v1${path}`);
    for (const [k, v] of Object.entries(params ?? {})) if (v !== undefined) u.searchParams.set(k, String(v));
    return u.toString();
  }

  private async fetch(method: string, url: string, init: RequestInit, signal: AbortSignal): Promise<Response> {
    try {
      return await fetch(url, {
        ...init,
        method,
        signal,
        headers: { Authorization: `Bearer ${this.apiToken}`, ...(init.headers as Record<string, string>) },
      });
    } catch (e) {
      const err = e as Error & { cause?: Error };
      if (err.name === "TimeoutError" || (err.name === "AbortError" && signal.aborted)) {
        throw new MagsError(`${method} ${url}: no answer from ${this.apiUrl} in time`);
      }
      const why = err.cause?.message ?? err.message;
      throw new MagsError(`cannot reach the Mags server at ${this.apiUrl}: ${why}`);
    }
  }

  /** One JSON request; the answer's body (`{}` when empty) or a {@link MagsError}. */
  async request<T = unknown>(
    method: string,
    path: string,
    opts: { json?: unknown; params?: Record<string, string | number | boolean | undefined>; timeout?: number; body?: FormData } = {},
  ): Promise<T> {
    const init: RequestInit = {};
    if (opts.json !== undefined) {
      init.body = JSON.stringify(opts.json);
      init.headers = { "Content-Type": "application/json" };
    } else if (opts.body) {
      init.body = opts.body;
    }
    const signal = AbortSignal.timeout((opts.timeout ?? this.timeout) * 1000);
    const resp = await this.fetch(method, this.endpoint(path, opts.params), init, signal);
    let text: string;
    try {
      text = await resp.text();
    } catch (e) {
      throw new MagsError(`${method} ${path}: the answer broke off: ${(e as Error).message}`);
    }
    if (resp.status >= 400) throw errorForStatus(resp.status, text);
    if (!text) return {} as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new MagsError(`the server answered ${resp.status} with a body that is not JSON`, resp.status);
    }
  }

  /** Sends a request whose NDJSON answer is read as it arrives (no read timeout). */
  private async openStream(
    method: string,
    path: string,
    opts: { json?: unknown; params?: Record<string, string | number | boolean | undefined> },
    abort: AbortController,
  ): Promise<Response> {
    const init: RequestInit = {};
    if (opts.json !== undefined) {
      init.body = JSON.stringify(opts.json);
      init.headers = { "Content-Type": "application/json" };
    }
    const timer = setTimeout(() => abort.abort(new Error("timeout")), this.timeout * 1000);
    let resp: Response;
    try {
      resp = await this.fetch(method, this.endpoint(path, opts.params), init, abort.signal);
    } finally {
      clearTimeout(timer);
    }
    if (resp.status >= 400 || !resp.body) {
      const text = await resp.text().catch(() => "");
      if (resp.status >= 400) throw errorForStatus(resp.status, text);
      throw new MagsError(`${method} ${path}: the server sent no stream`);
    }
    return resp;
  }

  // ── jobs ─────────────────────────────────────────────────────────

  /** Submits `script` (`bash -c` in `/root` of a fresh VM); `{request_id, status: "accepted"}`. */
  async run(script: string, opts: RunOptions = {}): Promise<JobSubmitted> {
    if (typeof script !== "string" || !script.trim()) throw new MagsError("script is required");
    if (opts.ephemeral && opts.workspaceId) throw new MagsError("Cannot use ephemeral with workspaceId");
    if (opts.ephemeral && opts.persistent) throw new MagsError("Cannot use ephemeral with persistent");
    if (opts.noSleep && !opts.persistent) throw new MagsError("noSleep requires persistent: true");
    const body = dropUndefined({
      script,
      type: "inline",
      persistent: Boolean(opts.persistent),
      name: opts.name || undefined,
      workspace_id: opts.ephemeral ? undefined : opts.workspaceId || undefined,
      base_workspace_id: opts.baseWorkspaceId || undefined,
      startup_command: opts.startupCommand || undefined,
      environment: opts.environment && Object.keys(opts.environment).length ? opts.environment : undefined,
      file_ids: opts.fileIds?.length ? opts.fileIds : undefined,
      disk_gb: opts.diskGb || undefined,
      rootfs_type: opts.rootfsType || undefined,
      idle_timeout_secs: opts.idleTimeoutSecs,
      timeout: opts.scriptTimeout,
      no_sleep: opts.noSleep ? true : undefined,
      no_sync: opts.noSync ? true : undefined,
      no_internet: opts.noInternet ? true : undefined,
      egress_allow: opts.egressAllow?.length ? opts.egressAllow : undefined,
      egress_deny: opts.egressDeny?.length ? opts.egressDeny : undefined,
    });
    return this.request("POST", "/mags-jobs", { json: body });
  }

  /** Submits a job and waits until it is `completed` or `error`. */
  async runAndWait(script: string, opts: RunOptions & WaitOptions = {}): Promise<RunResult> {
    const { timeout = 60, pollInterval = 1, ...runOpts } = opts;
    const { request_id } = await this.run(script, runOpts);
    const deadline = Date.now() + timeout * 1000;
    for (;;) {
      const st = await this.status(request_id);
      if (FINAL.has(st.status)) {
        const logs = await this.logs(request_id);
        return {
          request_id,
          status: st.status,
          exit_code: st.exit_code ?? 0,
          duration_ms: st.script_duration_ms ?? 0,
          logs: logs.logs ?? [],
        };
      }
      if (Date.now() >= deadline) throw new MagsError(`Job ${request_id} timed out after ${timeout}s`);
      await sleep(pollInterval);
    }
  }

  status(requestId: string): Promise<JobStatus> {
    return this.request("GET", `/mags-jobs/${seg(requestId)}/status`);
  }

  /** `{logs: [{timestamp, level, message, source}]}`; `offset` skips that
   * many lines, `limit` returns at most that many (default: all). */
  logs(requestId: string, opts: { offset?: number; limit?: number } = {}): Promise<Logs> {
    return this.request("GET", `/mags-jobs/${seg(requestId)}/logs`, {
      params: { offset: opts.offset, limit: opts.limit },
    });
  }

  /** Recent jobs, newest first. */
  listJobs(opts: { page?: number; pageSize?: number } = {}): Promise<JobList> {
    return this.request("GET", "/mags-jobs", { params: { page: opts.page ?? 1, page_size: opts.pageSize ?? 20 } });
  }

  /**
   * A job's output as it is produced (`for await`): chunks, status
   * changes, then the exit. `after` skips chunks up to that `seq`;
   * `follow: false` returns what exists now.
   */
  async streamOutput(nameOrId: string, opts: { after?: number; follow?: boolean } = {}): Promise<OutputStream> {
    const id = await this.resolveJobId(nameOrId);
    const follow = opts.follow ?? true;
    return new OutputStream(
      id,
      (after, signal) => {
        const abort = new AbortController();
        signal.addEventListener("abort", () => abort.abort(), { once: true });
        return this.openStream("GET", `/mags-jobs/${seg(id)}/output`, { params: { follow, after } }, abort);
      },
      follow,
      opts.after,
    );
  }

  /** Changes a live job's `startupCommand` (`""` removes it), `noSleep` or `idleTimeoutSecs`. */
  updateJob(
    requestId: string,
    opts: { startupCommand?: string; noSleep?: boolean; idleTimeoutSecs?: number },
  ): Promise<JobStatus> {
    const body = dropUndefined({
      startup_command: opts.startupCommand,
      no_sleep: opts.noSleep,
      idle_timeout_secs: opts.idleTimeoutSecs,
    });
    return this.request("PATCH", `/mags-jobs/${seg(requestId)}`, { json: body });
  }

  /** Stops a job by id, name or workspace (a persistent sandbox is synced first). */
  async stop(nameOrId: string): Promise<ActionResult> {
    const id = await this.resolveJobId(nameOrId);
    return this.request("POST", `/mags-jobs/${seg(id)}/stop`);
  }

  /** Deletes an ended job and its stored output (409 while it is live: stop it first). */
  async deleteJob(nameOrId: string): Promise<DeleteResult> {
    const id = await this.resolveJobId(nameOrId);
    return this.request("DELETE", `/mags-jobs/${seg(id)}`);
  }

  /** Stores a live sandbox's workspace now, without stopping it. */
  async sync(nameOrId: string): Promise<ActionResult> {
    const id = await this.resolveJobId(nameOrId);
    return this.request("POST", `/mags-jobs/${seg(id)}/sync`);
  }

  usage(opts: { windowDays?: number } = {}): Promise<Usage> {
    return this.request("GET", "/mags-jobs/usage", { params: { window_days: opts.windowDays ?? 30 } });
  }

  poolStatus(): Promise<PoolStatus> {
    return this.request("GET", "/mags-jobs/pool-status");
  }

  // ── sandboxes ────────────────────────────────────────────────────

  /** Starts a sandbox on workspace `name` and waits until it runs. */
  async new(name: string, opts: NewOptions = {}): Promise<NewResult> {
    const { timeout = 30, pollInterval = 1 } = opts;
    const { request_id } = await this.run("sleep infinity", {
      workspaceId: name,
      persistent: true,
      noSync: !opts.persistent,
      baseWorkspaceId: opts.baseWorkspaceId,
      diskGb: opts.diskGb,
    });
    const deadline = Date.now() + timeout * 1000;
    for (;;) {
      const st = await this.status(request_id);
      if (st.status === "running" && st.vm_id) return { request_id, status: "running" };
      if (FINAL.has(st.status)) {
        throw new MagsError(`Job ${request_id} ended unexpectedly: ${st.status}${st.error ? ` (${st.error})` : ""}`);
      }
      if (Date.now() >= deadline) throw new MagsError(`Job ${request_id} did not start within ${timeout}s`);
      await sleep(pollInterval);
    }
  }

  /** The job a name, workspace or id means (live name, live workspace, then any status), or `null`. */
  async findJob(nameOrId: string): Promise<JobStatus | null> {
    const { jobs = [] } = await this.listJobs({ pageSize: 50 });
    const live = jobs.filter((j) => LIVE.has(j.status));
    for (const [pool, key] of [
      [live, "name"],
      [live, "workspace_id"],
      [jobs, "name"],
      [jobs, "workspace_id"],
    ] as const) {
      const j = pool.find((j) => j[key] === nameOrId);
      if (j) return j;
    }
    return jobs.find((j) => j.request_id === nameOrId || j.id === nameOrId) ?? null;
  }

  private async execTarget(nameOrId: string): Promise<string> {
    const job = await this.findJob(nameOrId);
    if (!job) throw new MagsError(`No running or sleeping VM found for '${nameOrId}'`);
    if (!LIVE.has(job.status)) {
      throw new MagsError(`VM for '${nameOrId}' is ${job.status}, needs to be running or sleeping`);
    }
    return job.request_id ?? (job.id as string);
  }

  /**
   * Runs `command` (`bash -c`, in `/root`) in a running or sleeping sandbox
   * (woken first): `{exit_code, output, stderr}`; a command killed by
   * `timeout` (seconds, default 30) exits 124.
   */
  async exec(nameOrId: string, command: string, opts: { timeout?: number } = {}): Promise<ExecResult> {
    if (typeof command !== "string" || !command.trim()) throw new MagsError("command is required");
    const id = await this.execTarget(nameOrId);
    const timeout = opts.timeout ?? 30;
    const resp = await this.request<{ exit_code?: number; stdout?: string; stderr?: string }>(
      "POST",
      `/mags-jobs/${seg(id)}/exec`,
      { json: { command, timeout }, timeout: timeout + EXEC_HTTP_SLACK },
    );
    return { exit_code: resp.exit_code ?? -1, output: resp.stdout ?? "", stderr: resp.stderr ?? "" };
  }

  /** Runs `command` with its output arriving as produced; no limit unless `timeout` (seconds). */
  async execStream(nameOrId: string, command: string, opts: { timeout?: number } = {}): Promise<ExecStream> {
    if (typeof command !== "string" || !command.trim()) throw new MagsError("command is required");
    const id = await this.execTarget(nameOrId);
    const abort = new AbortController();
    const resp = await this.openStream(
      "POST",
      `/mags-jobs/${seg(id)}/exec/stream`,
      { json: dropUndefined({ command, timeout: opts.timeout }) },
      abort,
    );
    return new ExecStream(resp, abort);
  }

  // ── access and URLs ──────────────────────────────────────────────

  /** Opens `port` of the job's VM: a public `url` for HTTP ports, `ssh_*` for 22. */
  enableAccess(requestId: string, opts: { port?: number } = {}): Promise<AccessInfo> {
    return this.request("POST", `/mags-jobs/${seg(requestId)}/access`, { json: { port: opts.port ?? 8080 } });
  }

  /** The public URL of `port` in a job's VM, as the server names it (never rewritten). */
  async url(nameOrId: string, opts: { port?: number } = {}): Promise<AccessInfo> {
    const id = await this.resolveJobId(nameOrId);
    const resp = await this.enableAccess(id, opts);
    if (!resp.url) {
      const st = await this.status(id);
      if (st.url) resp.url = st.url;
    }
    if (!resp.url && resp.success === false) throw new MagsError(resp.error ?? "the server refused access", undefined, resp);
    return resp;
  }

  /** A stable subdomain following whichever job is live in `workspaceId`; `domain` defaults to the server's. */
  urlAliasCreate(subdomain: string, workspaceId: string, domain?: string): Promise<UrlAlias> {
    return this.request("POST", "/mags-url-aliases", {
      json: dropUndefined({ subdomain, workspace_id: workspaceId, domain: domain || undefined }),
    });
  }

  urlAliasList(): Promise<UrlAliasList> {
    return this.request("GET", "/mags-url-aliases");
  }

  urlAliasDelete(subdomain: string): Promise<Record<string, unknown>> {
    return this.request("DELETE", `/mags-url-aliases/${seg(subdomain)}`);
  }

  /**
   * A browser session: a sandbox of the browser image running headless
   * Chromium, its DevTools endpoint published through the URL proxy (a
   * live session of the same name is reused). Connect with
   * `chromium.connectOverCDP(info.wsEndpoint)` or
   * `puppeteer.connect({browserWSEndpoint: info.wsEndpoint})`. The URLs
   * carry the session's secret: treat them like a token. `stop()` ends it.
   * Starting Chromium takes a while under TCG: `timeout` (seconds) defaults to 300.
   */
  browser(name?: string, opts: { timeout?: number } = {}): Promise<BrowserInfo> {
    return this.request("POST", "/mags-browser", {
      json: dropUndefined({ name: name || undefined }),
      timeout: opts.timeout ?? 300,
    });
  }

  // ── files and workspaces ─────────────────────────────────────────

  /** Uploads one file (100 MB at most); its file id. */
  async uploadFile(path: string): Promise<string> {
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch {
      throw new MagsError(`File not found: ${path}`);
    }
    const form = new FormData();
    form.append("file", new Blob([new Uint8Array(data)], { type: "application/octet-stream" }), basename(path));
    const resp = await this.request<{ file_id?: string }>("POST", "/mags-files", {
      body: form,
      timeout: Math.max(this.timeout, 300),
    });
    if (!resp.file_id) throw new MagsError(`Upload failed for ${basename(path)}: ${JSON.stringify(resp)}`);
    return resp.file_id;
  }

  /** Uploads each file in turn; their ids in the same order. */
  async uploadFiles(paths: string[]): Promise<string[]> {
    const ids: string[] = [];
    for (const p of paths) ids.push(await this.uploadFile(p));
    return ids;
  }

  listWorkspaces(): Promise<WorkspaceList> {
    return this.request("GET", "/mags-workspaces");
  }

  /** Deletes a workspace and its stored data (409 while a job is live on it). */
  deleteWorkspace(workspaceId: string): Promise<WorkspaceAction> {
    return this.request("DELETE", `/mags-workspaces/${seg(workspaceId)}`);
  }

  // ── cron ─────────────────────────────────────────────────────────

  /** Schedules `script` (5-field expression in UTC, or `@hourly`...). */
  cronCreate(opts: CronCreateOptions): Promise<CronJob> {
    return this.request("POST", "/mags-cron", {
      json: dropUndefined({
        name: opts.name,
        cron_expression: opts.cronExpression,
        script: opts.script,
        persistent: Boolean(opts.persistent),
        workspace_id: opts.workspaceId || undefined,
        environment: opts.environment && Object.keys(opts.environment).length ? opts.environment : undefined,
      }),
    });
  }

  cronList(): Promise<CronList> {
    return this.request("GET", "/mags-cron");
  }

  cronGet(cronId: string): Promise<CronJob> {
    return this.request("GET", `/mags-cron/${seg(cronId)}`);
  }

  /** Changes any fields, e.g. `cronUpdate(id, {enabled: false})`. */
  cronUpdate(cronId: string, updates: CronUpdateOptions): Promise<CronJob> {
    const body = dropUndefined({
      name: updates.name,
      cron_expression: updates.cronExpression,
      script: updates.script,
      workspace_id: updates.workspaceId,
      environment: updates.environment,
      persistent: updates.persistent,
      enabled: updates.enabled,
    });
    return this.request("PATCH", `/mags-cron/${seg(cronId)}`, { json: body });
  }

  cronDelete(cronId: string): Promise<Record<string, unknown>> {
    return this.request("DELETE", `/mags-cron/${seg(cronId)}`);
  }

  // ── tokens and audit ─────────────────────────────────────────────

  /** Your API tokens (never the secrets). */
  listTokens(): Promise<TokenList> {
    return this.request("GET", "/mags-tokens");
  }

  /** A new token for you; `token` is shown only this once. */
  createToken(): Promise<CreatedToken> {
    return this.request("POST", "/mags-tokens", { json: {} });
  }

  /** Revokes one of your tokens (id or display prefix); refused from its next request on. */
  revokeToken(tokenId: string): Promise<{ success: boolean; id: string; prefix: string; message: string }> {
    return this.request("DELETE", `/mags-tokens/${seg(tokenId)}`);
  }

  /** Your audit events, oldest first; `since` is RFC 3339 or an age like `"24h"`. */
  audit(opts: { since?: string; limit?: number } = {}): Promise<AuditList> {
    return this.request("GET", "/mags-audit", { params: { since: opts.since, limit: opts.limit ?? 100 } });
  }

  // ── helpers ──────────────────────────────────────────────────────

  private async resolveJobId(nameOrId: string): Promise<string> {
    if (looksLikeId(nameOrId)) return nameOrId;
    const job = await this.findJob(nameOrId);
    if (!job) throw new MagsError(`No job found for '${nameOrId}'`);
    return job.request_id ?? (job.id as string);
  }
}
