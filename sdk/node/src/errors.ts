/** The one error type of the client. */

/**
 * An error from the Mags API (`statusCode` is its HTTP status) or from the
 * client itself (`statusCode` undefined: bad arguments, network, timeouts).
 */
export class MagsError extends Error {
  readonly statusCode?: number;
  /** The decoded error body (usually `{"error": "..."}`), if any. */
  readonly body?: unknown;

  constructor(message: string, statusCode?: number, body?: unknown) {
    super(message);
    this.name = "MagsError";
    this.statusCode = statusCode;
    this.body = body;
  }
}

/** The error for an HTTP answer >= 400: the body's `error`, then `message`. */
export function errorForStatus(status: number, text: string): MagsError {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  let message: string | undefined;
  if (body && typeof body === "object") {
    const b = body as Record<string, unknown>;
    message = (b.error as string) || (b.message as string) || undefined;
  }
  // Not our server's JSON (a proxy's HTML page, say): keep it short.
  const trimmed = text.trim();
  const fallback = trimmed ? `HTTP ${status}: ${trimmed.slice(0, 300)}` : `HTTP ${status}`;
  return new MagsError(message ? String(message) : fallback, status, body);
}
