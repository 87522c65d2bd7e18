/**
 * The NDJSON streams of our server: `GET /mags-jobs/{id}/output` (a job's
 * output, resumable by `seq`) and `POST /mags-jobs/{id}/exec/stream` (a
 * command's output). Output bytes arrive as text (`data`) or base64
 * (`data_b64`).
 */

import { MagsError } from "./errors.js";
import type { JobExit, JobState, OutputChunk, OutputEvent, StreamName } from "./types.js";

const utf8 = new TextDecoder("utf-8");

/** Lines of an NDJSON body as they arrive. */
export async function* ndjsonLines(body: ReadableStream<Uint8Array>): AsyncGenerator<Record<string, unknown>> {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8");
  let buf = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) yield parse(line);
      }
    }
    const rest = (buf + decoder.decode()).trim();
    if (rest) yield parse(rest);
  } finally {
    // Ends the request (and, for exec, the command) when the reader stops early.
    await reader.cancel().catch(() => undefined);
  }
}

function parse(line: string): Record<string, unknown> {
  try {
    const v = JSON.parse(line);
    if (v && typeof v === "object") return v;
  } catch {
    // fall through
  }
  throw new MagsError(`the server sent an unexpected stream line: ${line.slice(0, 200)}`);
}

function bytes(obj: Record<string, unknown>): Uint8Array {
  if (typeof obj.data === "string") return new TextEncoder().encode(obj.data);
  if (typeof obj.data_b64 === "string") return new Uint8Array(Buffer.from(obj.data_b64, "base64"));
  return new Uint8Array();
}

function chunk(obj: Record<string, unknown>): OutputChunk {
  const data = bytes(obj);
  const c: OutputChunk = {
    type: "output",
    stream: (obj.stream as StreamName) ?? "stdout",
    data,
    text: utf8.decode(data),
  };
  if (typeof obj.seq === "number") c.seq = obj.seq;
  if (typeof obj.timestamp === "string") c.timestamp = obj.timestamp;
  return c;
}

/** Opens a stream's HTTP response (`after` is the last `seq` seen). */
export type Opener = (after: number | undefined, signal: AbortSignal) => Promise<Response>;

/**
 * A job's output as it happens: `for await (const ev of stream)` yields
 * output chunks, status changes and, last, the {@link JobExit} (also kept
 * as `exit`). A dropped connection is resumed after the last `seq`.
 */
export class OutputStream implements AsyncIterable<OutputEvent> {
  /** The final event, once seen. */
  exit?: JobExit;
  /** The last `seq` seen. */
  after?: number;
  private closed = false;
  private abort?: AbortController;

  constructor(
    readonly requestId: string,
    private readonly open: Opener,
    private readonly follow: boolean,
    after?: number,
  ) {
    this.after = after;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<OutputEvent> {
    let failures = 0;
    while (!this.closed) {
      const seen = this.after;
      let err: unknown;
      this.abort = new AbortController();
      try {
        const resp = await this.open(seen, this.abort.signal);
        for await (const obj of ndjsonLines(resp.body!)) {
          const ev = this.decode(obj);
          if (ev) yield ev;
          if (this.exit || this.closed) return;
        }
        if (!this.follow) return;
        err = new MagsError("the output stream ended before the job did");
      } catch (e) {
        if (this.closed) return;
        if (e instanceof MagsError && e.statusCode !== undefined) throw e;
        err = e;
      } finally {
        this.abort.abort();
      }
      failures = this.after !== seen ? 0 : failures + 1;
      if (failures >= 5) {
        throw new MagsError(`lost the output stream of job ${this.requestId}: ${(err as Error)?.message ?? err}`);
      }
      await new Promise((r) => setTimeout(r, 200 * (failures + 1)));
    }
  }

  /** Stops reading; a pending read ends at once. */
  close(): void {
    this.closed = true;
    this.abort?.abort();
  }

  private decode(obj: Record<string, unknown>): OutputEvent | undefined {
    switch (obj.event) {
      case "output": {
        const c = chunk(obj);
        if (c.seq !== undefined) {
          if (this.after !== undefined && c.seq <= this.after) return undefined;
          this.after = c.seq;
        }
        return c;
      }
      case "status":
        return { type: "status", status: obj.status as JobState };
      case "exit":
        this.exit = {
          type: "exit",
          status: obj.status as JobState,
          exit_code: (obj.exit_code as number | null) ?? null,
          error: (obj.error as string | null) ?? null,
        };
        return this.exit;
      default:
        return undefined; // an event kind newer than this client
    }
  }
}

/**
 * A command running in a sandbox, read as it runs: `for await (const c of
 * stream)` yields output chunks; afterwards `exitCode` and `timedOut` are
 * set. `wait()` reads the rest and returns `{exit_code, output, stderr}` of
 * what was not yet iterated. `close()` (or leaving the loop early) kills
 * the command. A sandbox failure throws {@link MagsError}.
 */
export class ExecStream implements AsyncIterable<OutputChunk> {
  exitCode?: number;
  timedOut = false;
  private closed = false;

  constructor(
    private readonly resp: Response,
    private readonly abort: AbortController,
  ) {}

  async *[Symbol.asyncIterator](): AsyncGenerator<OutputChunk> {
    try {
      for await (const obj of ndjsonLines(this.resp.body!)) {
        if (obj.event === "output") {
          yield chunk(obj);
        } else if (obj.event === "exit") {
          this.exitCode = Number(obj.exit_code);
          this.timedOut = Boolean(obj.timed_out);
          return;
        } else if (obj.event === "error") {
          throw new MagsError(String(obj.error ?? "the command failed"), undefined, obj);
        }
      }
      if (this.exitCode === undefined) throw new MagsError("the exec stream ended before the command did");
    } catch (e) {
      if (this.closed && !(e instanceof MagsError)) return;
      throw e;
    } finally {
      this.close();
    }
  }

  /** Reads to the end: `{exit_code, output, stderr}` of what was not yet iterated. */
  async wait(): Promise<{ exit_code: number; output: string; stderr: string }> {
    const out: Uint8Array[] = [];
    const err: Uint8Array[] = [];
    for await (const c of this) (c.stream === "stdout" ? out : err).push(c.data);
    return {
      exit_code: this.exitCode as number,
      output: utf8.decode(Buffer.concat(out)),
      stderr: utf8.decode(Buffer.concat(err)),
    };
  }

  /** Stops reading; a command still running is killed (its connection closes). */
  close(): void {
    this.closed = true;
    this.abort.abort();
  }
}
