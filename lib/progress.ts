/**
 * Download progress for people: a live bar on a terminal, a line every few
 * seconds on a pipe. The rate is smoothed (exponential moving average) so
 * the ETA does not jump.
 *
 * @module
 */

import { formatBytes } from "./cli.ts";
import { RateMeter } from "./rate_meter.ts";

/** How often a line is printed when stderr is not a terminal. */
const PIPE_INTERVAL_MS = 3_000;
/** Smoothing factor of the rate average per update (smoother than the scheduler's: people read it). */
const ALPHA = 0.2;

/** Renders progress to stderr. */
export class ProgressView {
  #tty = Deno.stderr.isTerminal();
  #started = performance.now();
  #lastBytes = 0;
  #meter = new RateMeter(performance.now(), ALPHA);
  #lastPrint = 0;
  #enc = new TextEncoder();

  constructor(readonly label: string, readonly quiet = false) {}

  update(doneBytes: number, totalBytes: number, peers: number): void {
    if (this.quiet) return;
    const now = performance.now();
    this.#meter.add(Math.max(0, doneBytes - this.#lastBytes));
    this.#lastBytes = doneBytes;
    const rate = this.#meter.sample(now);
    const pct = totalBytes === 0 ? 100 : (100 * doneBytes) / totalBytes;
    const eta = rate > 0 ? (totalBytes - doneBytes) / rate : Infinity;
    const stats = `${pct.toFixed(1).padStart(5)}%  ${formatBytes(doneBytes)}/${formatBytes(totalBytes)}  ` +
      `${formatBytes(rate)}/s  ETA ${formatEta(eta)}  ${peers} peer(s)`;
    if (this.#tty) {
      const width = 24;
      const filled = Math.round((width * pct) / 100);
      const bar = "#".repeat(filled) + "-".repeat(width - filled);
      this.#write(`\r\x1b[2K${this.label} [${bar}] ${stats}`);
    } else if (now - this.#lastPrint >= PIPE_INTERVAL_MS) {
      this.#lastPrint = now;
      this.#write(`${this.label}: ${stats}\n`);
    }
  }

  /** Prints a message on its own line (clearing the bar). */
  note(text: string): void {
    if (this.quiet) return;
    this.#write(this.#tty ? `\r\x1b[2K${text}\n` : `${text}\n`);
  }

  /** Ends the bar line. */
  done(): void {
    if (!this.quiet && this.#tty) this.#write("\n");
  }

  get elapsedSeconds(): number {
    return (performance.now() - this.#started) / 1000;
  }

  #write(s: string): void {
    Deno.stderr.writeSync(this.#enc.encode(s));
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
