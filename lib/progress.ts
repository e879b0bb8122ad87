/**
 * Download progress for people: a live bar on a terminal, a line every few
 * seconds on a pipe. The rate is smoothed (exponential moving average) so
 * the ETA does not jump.
 *
 * @module
 */

import { formatBytes } from "./cli.ts";
import type { DownloadEvent } from "./download.ts";
import { RateMeter } from "./rate_meter.ts";

/** How often a line is printed when stderr is not a terminal. */
const PIPE_INTERVAL_MS = 3_000;
/**
 * Smoothing factor of the rate average per update: at the download's 4
 * updates a second, a time constant of about 4 s. Much smoother than the
 * scheduler's, because people read it: on a slow link a whole chunk lands
 * only every few updates, and 0.2 here made the ETA swing by half at each.
 */
const ALPHA = 0.06;

/** Where a {@link ProgressView} writes and what time it is: stderr and the real clock unless a test says otherwise. */
export interface ProgressOutput {
  /** Whether the output is a terminal: a bar redrawn in place, else a line every few seconds. */
  tty: boolean;
  write(text: string): void;
  now(): number;
}

const enc = new TextEncoder();

function stderrOutput(): ProgressOutput {
  return {
    tty: Deno.stderr.isTerminal(),
    write: (text) => void Deno.stderr.writeSync(enc.encode(text)),
    now: () => performance.now(),
  };
}

/** Renders progress to stderr. */
export class ProgressView {
  readonly #out: ProgressOutput;
  readonly #started: number;
  #lastBytes = 0;
  readonly #meter: RateMeter;
  /** When the last pipe line was printed: the first comes a whole interval after the start. */
  #lastPrint: number;

  constructor(readonly label: string, readonly quiet = false, out: ProgressOutput = stderrOutput()) {
    this.#out = out;
    this.#started = out.now();
    this.#lastPrint = this.#started;
    this.#meter = new RateMeter(this.#started, ALPHA);
  }

  /** Shows `doneBytes` of `totalBytes` with `peers` peers connected. */
  update(doneBytes: number, totalBytes: number, peers: number): void {
    if (this.quiet) return;
    const now = this.#out.now();
    this.#meter.add(Math.max(0, doneBytes - this.#lastBytes));
    this.#lastBytes = doneBytes;
    const rate = this.#meter.sample(now);
    const pct = totalBytes === 0 ? 100 : (100 * doneBytes) / totalBytes;
    const eta = rate > 0 ? (totalBytes - doneBytes) / rate : Infinity;
    const stats = `${pct.toFixed(1).padStart(5)}%  ${formatBytes(doneBytes)}/${formatBytes(totalBytes)}  ` +
      `${formatBytes(rate)}/s  ETA ${formatEta(eta)}  ${peers} peer(s)`;
    if (this.#out.tty) {
      const width = 24;
      const filled = Math.round((width * pct) / 100);
      const bar = "#".repeat(filled) + "-".repeat(width - filled);
      this.#out.write(`\r\x1b[2K${this.label} [${bar}] ${stats}`);
    } else if (now - this.#lastPrint >= PIPE_INTERVAL_MS) {
      this.#lastPrint = now;
      this.#out.write(`${this.label}: ${stats}\n`);
    }
  }

  /** Shows what a download reports: progress on the bar, anything else on a line of its own. */
  event(e: DownloadEvent): void {
    switch (e.kind) {
      case "progress":
        return this.update(e.doneBytes, e.totalBytes, e.peers);
      case "resumed":
        return this.note(
          `resuming: reused ${e.reused} of ${e.total} chunks${
            e.discarded ? `, ${e.discarded} failed their check` : ""
          }`,
        );
      case "restart":
        return this.note(`starting over: ${e.reason}`);
      case "peer-dropped": {
        const then = e.retryInMs === undefined ? "" : ` (trying again in ${Math.round(e.retryInMs / 1000)} s)`;
        return this.note(`dropped peer ${e.peer}: ${e.reason}${then}`);
      }
      case "bad-chunk":
        return; // the drop that follows names the peer
    }
  }

  /** Prints a message on its own line (clearing the bar). */
  note(text: string): void {
    if (this.quiet) return;
    this.#out.write(this.#out.tty ? `\r\x1b[2K${text}\n` : `${text}\n`);
  }

  /** Ends the bar line. */
  done(): void {
    if (!this.quiet && this.#out.tty) this.#out.write("\n");
  }

  get elapsedSeconds(): number {
    return (this.#out.now() - this.#started) / 1000;
  }
}

function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds)) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h > 0
    ? `${h}:${String(m).padStart(2, "0")}:${String(r).padStart(2, "0")}`
    : `${m}:${String(r).padStart(2, "0")}`;
}
