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
 * The meter is unbiased: seeded with the first update's rate, which counts
 * the start-up, the bar showed half the real rate 3 s into a download.
 */
const ALPHA = 0.06;

/** Where a {@link ProgressView} writes and what time it is: stderr and the real clock unless a test says otherwise. */
export interface ProgressOutput {
  /** Whether the output is a terminal: a bar redrawn in place, else a line every few seconds. */
  tty: boolean;
  /** The terminal's width: a bar that wrapped could no longer be redrawn in place. */
  columns(): number;
  write(text: string): void;
  now(): number;
}

const enc = new TextEncoder();

function stderrOutput(): ProgressOutput {
  return {
    tty: Deno.stderr.isTerminal(),
    columns: () => {
      try {
        return Deno.consoleSize().columns;
      } catch {
        return 80; // not a terminal after all, or it would not say
      }
    },
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
  /** The last reason each dropped peer was dropped for (at most the download's MAX_KNOWN_PEERS). */
  readonly #dropReasons = new Map<string, string>();
  /** Whether the terminal's current line holds the bar (so something printed next must end it first). */
  #barOnLine = false;

  constructor(readonly label: string, readonly quiet = false, out: ProgressOutput = stderrOutput()) {
    this.#out = out;
    this.#started = out.now();
    this.#lastPrint = this.#started;
    this.#meter = new RateMeter(this.#started, ALPHA, true);
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
      this.#out.write(`\r\x1b[2K${fitBar(this.label, pct, stats, this.#out.columns())}`);
      this.#barOnLine = true;
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
        this.#lastBytes = e.reusedBytes; // on disk already: not part of this run's rate
        return this.note(
          `resuming: reused ${e.reused} of ${e.total} chunks${
            e.discarded ? `, ${e.discarded} failed their check` : ""
          }`,
        );
      case "restart":
        return this.note(`starting over: ${e.reason}`);
      case "checking":
        return this.note(`${e.path} is there already: checking it against the file's hashes`);
      case "peer-dropped": {
        // A dead peer fails each retry the same way: say so once, and again only if the reason changes.
        if (this.#dropReasons.get(e.peer) === e.reason) return;
        this.#dropReasons.set(e.peer, e.reason);
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
    this.#barOnLine = false;
  }

  /**
   * Ends the bar's line, if the bar is on it: call it however the work
   * ended, so an error printed next starts a line of its own. Twice is safe.
   */
  done(): void {
    if (this.#barOnLine) this.#out.write("\n");
    this.#barOnLine = false;
  }

  get elapsedSeconds(): number {
    return (this.#out.now() - this.#started) / 1000;
  }
}

/** Widest bar, in cells. */
const BAR_WIDTH = 24;
/** Narrowest bar worth drawing; below it the line goes without one. */
const MIN_BAR_WIDTH = 8;

/**
 * The bar line, one cell short of `columns` at most: the bar narrows first,
 * then goes, then the line is cut. A line that wrapped would leave a copy of
 * itself above at every redraw.
 */
export function fitBar(label: string, pct: number, stats: string, columns: number): string {
  const room = columns - 1 - `${label} [] ${stats}`.length;
  const width = Math.min(BAR_WIDTH, room);
  if (width < MIN_BAR_WIDTH) return `${label} ${stats}`.slice(0, Math.max(0, columns - 1));
  const filled = Math.round((width * pct) / 100);
  return `${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${stats}`;
}

function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds)) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h > 0
    ? `${h}:${String(m).padStart(2, "0")}:${String(r).padStart(2, "0")}`
    : `${m}:${String(r).padStart(2, "0")}`;
}
