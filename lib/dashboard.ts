/**
 * The tracker's live dashboard over HTTP (`tracker.ts --http <port>`):
 *
 * | route | answer |
 * | --- | --- |
 * | `/` | the web page (lib/dashboard_page.ts) |
 * | `/api/state` | the current {@link TrackerSnapshot} as JSON |
 * | `/api/events` | server-sent events: an `event: state` with the snapshot at once, then every second |
 * | `/metrics` | Prometheus text format (lib/metrics.ts) |
 *
 * Only GET and HEAD are served (others get 405), any other path gets 404.
 * It is read-only and listens on loopback unless told otherwise: the
 * snapshot shows every peer's address, so exposing it is the operator's
 * choice. Event streams are bounded in number and each is cut off when
 * its reader falls behind, so a slow browser cannot make the tracker
 * buffer without end.
 *
 * @module
 */

import { formatAddress } from "./connection.ts";
import { ShoalError } from "./errors.ts";
import { dashboardPage } from "./dashboard_page.ts";
import { METRICS_CONTENT_TYPE, renderMetrics } from "./metrics.ts";
import type { TrackerSnapshot } from "./tracker.ts";

/** Where the dashboard listens unless told otherwise: loopback only. */
export const DEFAULT_DASHBOARD_HOST = "127.0.0.1";
/** How often `/api/events` pushes a snapshot. */
export const EVENT_INTERVAL_MS = 1_000;
/** Most event streams open at once; more are answered 503 (the page then polls). */
export const MAX_EVENT_STREAMS = 64;
/** Events queued for one stream before it is closed as a reader that fell behind. */
export const MAX_QUEUED_EVENTS = 10;
/** The reconnect delay an EventSource is told to use (`retry:`). */
export const EVENT_RETRY_MS = 2_000;

/** What the dashboard shows: a Tracker, or anything else that makes snapshots (tests). */
export interface SnapshotSource {
  snapshot(): TrackerSnapshot;
}

/** How long a snapshot answers every request that comes: four a second at most, whoever asks. */
export const SNAPSHOT_REUSE_MS = 250;

/** Options for {@link Dashboard.start}. */
export interface DashboardOptions {
  /** Default {@link DEFAULT_DASHBOARD_HOST}. */
  hostname?: string;
  /** 0 (the default) picks a free port. */
  port?: number;
  /** Default {@link EVENT_INTERVAL_MS}. */
  intervalMs?: number;
  /** Default {@link MAX_EVENT_STREAMS}. */
  maxStreams?: number;
}

const encoder = new TextEncoder();

/** Headers every answer carries: nothing is cached, nothing is sniffed. */
const COMMON_HEADERS = { "cache-control": "no-store", "x-content-type-options": "nosniff" };

/** The page may run only its own nonce-tagged script and style, and talk only to this origin. */
function pagePolicy(nonce: string): string {
  return [
    "default-src 'none'",
    `script-src 'nonce-${nonce}'`,
    `style-src 'nonce-${nonce}'`,
    "connect-src 'self'",
    "img-src data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

/** More than `events` events wait in the stream's queue (desiredSize is the 1-chunk high-water mark minus the queue). */
function lagging(c: ReadableStreamDefaultController<Uint8Array>, events: number): boolean {
  return (c.desiredSize ?? 0) < -events;
}

/** A running dashboard server. Closing it ends every event stream, then the server. */
export class Dashboard implements AsyncDisposable {
  /** `http://host:port/` it listens on. */
  readonly url: string;
  readonly #source: SnapshotSource;
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  readonly #intervalMs: number;
  readonly #maxStreams: number;
  readonly #streams = new Set<ReadableStreamDefaultController<Uint8Array>>();
  #timer: ReturnType<typeof setInterval> | null = null;
  #closing: Promise<void> | null = null;
  /** The last snapshot and when it was taken (see {@link SNAPSHOT_REUSE_MS}). */
  #last: { at: number; snapshot: TrackerSnapshot } | null = null;

  /**
   * The tracker's snapshot, taken at most once per {@link SNAPSHOT_REUSE_MS}
   * (or event interval, if shorter) however many requests come: one costs
   * up to files x chunks x sources on the tracker's own thread.
   */
  #snapshot(): TrackerSnapshot {
    const now = performance.now();
    if (this.#last && now - this.#last.at < Math.min(SNAPSHOT_REUSE_MS, this.#intervalMs)) return this.#last.snapshot;
    this.#last = { at: now, snapshot: this.#source.snapshot() };
    return this.#last.snapshot;
  }

  private constructor(source: SnapshotSource, options: DashboardOptions) {
    this.#source = source;
    this.#intervalMs = options.intervalMs ?? EVENT_INTERVAL_MS;
    this.#maxStreams = options.maxStreams ?? MAX_EVENT_STREAMS;
    const hostname = options.hostname ?? DEFAULT_DASHBOARD_HOST;
    const port = options.port ?? 0;
    try {
      this.#server = Deno.serve({
        hostname,
        port,
        onListen: () => {}, // the entry point prints the URL
        onError: () => new Response("Internal Server Error\n", { status: 500, headers: COMMON_HEADERS }),
      }, (req) => this.#handle(req));
    } catch (err) {
      throw new ShoalError(
        "listen",
        `Cannot serve the dashboard on ${formatAddress({ host: hostname, port })}: ${(err as Error).message}`,
        undefined,
        { cause: err },
      );
    }
    const addr = this.#server.addr;
    this.url = `http://${formatAddress({ host: addr.hostname, port: addr.port })}/`;
  }

  /** Starts serving `source`'s snapshots; throws ShoalError when it cannot listen. */
  static start(source: SnapshotSource, options: DashboardOptions = {}): Dashboard {
    return new Dashboard(source, options);
  }

  /** Event streams open now. */
  get streams(): number {
    return this.#streams.size;
  }

  #handle(req: Request): Response {
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("Method Not Allowed\n", { status: 405, headers: { ...COMMON_HEADERS, allow: "GET, HEAD" } });
    }
    const head = req.method === "HEAD";
    const path = new URL(req.url).pathname;
    switch (path) {
      case "/": {
        const nonce = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
        return new Response(head ? null : dashboardPage(this.#snapshot(), nonce), {
          headers: {
            ...COMMON_HEADERS,
            "content-type": "text/html; charset=utf-8",
            "content-security-policy": pagePolicy(nonce),
            "referrer-policy": "no-referrer",
          },
        });
      }
      case "/api/state":
        return new Response(head ? null : JSON.stringify(this.#snapshot()), {
          headers: { ...COMMON_HEADERS, "content-type": "application/json; charset=utf-8" },
        });
      case "/metrics":
        return new Response(head ? null : renderMetrics(this.#snapshot()), {
          headers: { ...COMMON_HEADERS, "content-type": METRICS_CONTENT_TYPE },
        });
      case "/api/events":
        return this.#events(head);
      default:
        return new Response("Not Found\n", { status: 404, headers: COMMON_HEADERS });
    }
  }

  #events(head: boolean): Response {
    const headers = { ...COMMON_HEADERS, "content-type": "text/event-stream; charset=utf-8" };
    if (head) return new Response(null, { headers });
    if (this.#closing || this.#streams.size >= this.#maxStreams) {
      return new Response("Too many event streams; poll /api/state\n", {
        status: 503,
        headers: { ...COMMON_HEADERS, "retry-after": String(Math.ceil(EVENT_RETRY_MS / 1000)) },
      });
    }
    let controller: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({
      start: (c) => {
        controller = c;
        this.#streams.add(c);
        c.enqueue(encoder.encode(`retry: ${EVENT_RETRY_MS}\n\n`));
        c.enqueue(this.#event(this.#snapshot()));
        this.#timer ??= setInterval(() => this.#tick(), this.#intervalMs);
      },
      cancel: () => this.#end(controller), // the browser went away
    });
    return new Response(body, { headers });
  }

  #event(s: TrackerSnapshot): Uint8Array {
    // JSON.stringify writes no line breaks, so the snapshot is one `data:` line.
    return encoder.encode(`event: state\ndata: ${JSON.stringify(s)}\n\n`);
  }

  /** One snapshot, encoded once, to every stream. */
  #tick(): void {
    if (this.#streams.size === 0) return this.#stopTimer();
    const event = this.#event(this.#snapshot());
    for (const c of this.#streams) {
      // desiredSize goes negative by one per event queued past the (1-chunk) high-water mark.
      if (lagging(c, MAX_QUEUED_EVENTS)) this.#end(c);
      else c.enqueue(event);
    }
  }

  /**
   * Ends a stream: a reader keeping up gets a clean end; one with events
   * still queued gets an error, which drops them and aborts the response,
   * so neither the stream nor the server's shutdown waits on a stalled reader.
   */
  #end(c: ReadableStreamDefaultController<Uint8Array>): void {
    if (!this.#streams.delete(c)) return;
    try {
      if (lagging(c, 0)) c.error(new Error("event stream ended: the reader fell behind"));
      else c.close();
    } catch {
      // already closed or cancelled
    }
    if (this.#streams.size === 0) this.#stopTimer();
  }

  #stopTimer(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Ends every event stream and stops the server; safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const c of [...this.#streams]) this.#end(c);
      this.#stopTimer();
      await this.#server.shutdown();
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
