/**
 * Shapes of what the client returns. Objects from the server are its JSON
 * as sent (snake_case field names, the REST contract); results the client
 * assembles (`runAndWait`, `exec`) have the published Python client's
 * shapes. Servers may omit optional fields and add new ones.
 */

export type JobState = "accepted" | "queued" | "running" | "sleeping" | "completed" | "error";
export type StreamName = "stdout" | "stderr" | "system";

export interface JobSubmitted {
  request_id: string;
  status: string;
  message?: string;
}

export interface JobStatus {
  request_id: string;
  id?: string;
  name?: string | null;
  status: JobState;
  vm_id?: string | null;
  workspace_id?: string | null;
  base_workspace_id?: string | null;
  persistent?: boolean;
  no_sleep?: boolean;
  startup_command?: string | null;
  idle_timeout_secs?: number | null;
  /** Seconds the script may run before it is killed. */
  timeout?: number | null;
  subdomain?: string | null;
  url?: string | null;
  exit_code?: number | null;
  script_duration_ms?: number | null;
  disk_gb?: number;
  created_at?: string;
  started_at?: string | null;
  finished_at?: string | null;
  error?: string | null;
  vm_seconds?: number;
  /** Bytes of stored output (counted in the user's disk quota). */
  output_bytes?: number;
  /** The server's retention deleted this ended job's output. */
  output_pruned?: boolean;
}

export interface LogEntry {
  timestamp: string;
  level: string;
  message: string;
  source?: StreamName;
}

export interface Logs {
  logs: LogEntry[];
}

export interface JobList {
  jobs: JobStatus[];
  total: number;
  page: number;
  page_size: number;
}

export interface RunResult {
  request_id: string;
  status: JobState;
  exit_code: number | null;
  duration_ms: number | null;
  logs: LogEntry[];
}

/** `exec`'s result; `output` is stdout (as in the published clients). */
export interface ExecResult {
  exit_code: number;
  output: string;
  stderr: string;
}

export interface NewResult {
  request_id: string;
  status: "running";
}

export interface ActionResult {
  success: boolean;
  request_id: string;
  status: JobState;
  message: string;
}

/** Answer of `deleteJob`: the ended job and its output are gone. */
export interface DeleteResult {
  success: boolean;
  request_id: string;
  output_bytes: number;
  message: string;
}

export interface Usage {
  window_days?: number;
  total_jobs: number;
  vm_seconds: number;
}

export interface PoolStatus {
  idle_vms: number;
  busy_vms: number;
  total_vms: number;
  min_pool_size: number;
  max_pool_size: number;
  queued_jobs?: number;
  accel?: string | null;
}

/** `url` for HTTP ports; `ssh_*` for port 22. */
export interface AccessInfo {
  success: boolean;
  url?: string;
  port?: number;
  subdomain?: string;
  ssh_host?: string;
  ssh_port?: number;
  ssh_user?: string;
  ssh_private_key?: string;
  error?: string;
}

export interface Workspace {
  workspace_id: string;
  persistent?: boolean;
  size?: number;
  disk_gb?: number;
  last_used?: string;
  created_at?: string;
  versions?: number;
  latest_version?: number | null;
  cached?: boolean;
  live_job_id?: string | null;
}

export interface WorkspaceList {
  workspaces: Workspace[];
  total: number;
}

export interface WorkspaceAction {
  success: boolean;
  workspace_id: string;
  message: string;
}

export interface CronJob {
  id: string;
  name: string;
  cron_expression: string;
  script: string;
  persistent: boolean;
  workspace_id?: string | null;
  environment: Record<string, string>;
  enabled: boolean;
  next_run_at?: string | null;
  last_run_at?: string | null;
  last_job_id?: string | null;
  last_status?: string | null;
  last_skip_reason?: string | null;
  run_count?: number;
  skipped_runs?: number;
  created_at?: string;
  updated_at?: string;
}

export interface CronList {
  cron_jobs: CronJob[];
  total: number;
}

export interface UrlAlias {
  id: string;
  subdomain: string;
  url: string;
  workspace_id?: string;
  created_at?: string | null;
}

export interface UrlAliasList {
  aliases: UrlAlias[];
  total: number;
}

/** `browser()`'s result: Chrome DevTools Protocol endpoints through the URL proxy. */
export interface BrowserInfo {
  success: boolean;
  /** The job behind the session. */
  request_id: string;
  name?: string | null;
  status: string;
  subdomain: string;
  /** The browser's DevTools WebSocket (`ws(s)://.../devtools/browser/<id>`). */
  cdpUrl: string;
  /** `http(s)://.../json/version`. */
  cdpHttpUrl: string;
  /** The same WebSocket as `cdpUrl` (for puppeteer/playwright `connect`). */
  wsEndpoint: string;
}

// ── stream events ──────────────────────────────────────────────────

/** Bytes a job or command wrote; `seq`/`timestamp` only for job output. */
export interface OutputChunk {
  type: "output";
  stream: StreamName;
  data: Uint8Array;
  /** `data` as UTF-8 (invalid bytes replaced). */
  text: string;
  seq?: number;
  timestamp?: string;
}

/** The job's status changed (also sent once when the stream opens). */
export interface StatusChange {
  type: "status";
  status: JobState;
}

/** The job is final (or a persistent job's script ended): the last event. */
export interface JobExit {
  type: "exit";
  status: JobState;
  exit_code: number | null;
  error?: string | null;
}

export type OutputEvent = OutputChunk | StatusChange | JobExit;

/** One of your API tokens (never the secret). */
export interface TokenInfo {
  id: string;
  prefix: string;
  user: string;
  created_at: string;
  last_used_at: string | null;
  revoked: boolean;
}

export interface TokenList {
  tokens: TokenInfo[];
  total: number;
}

/** A new token: `token` is shown only this once. */
export interface CreatedToken {
  token: string;
  id: string;
  prefix: string;
  user: string;
  created_at: string;
}

export interface AuditEvent {
  id: string;
  time: string;
  user: string | null;
  user_id: string | null;
  token_prefix: string | null;
  action: string;
  target_kind: string | null;
  target_id: string | null;
  detail: string | null;
  source_ip: string | null;
}

export interface AuditList {
  events: AuditEvent[];
  total: number;
}
