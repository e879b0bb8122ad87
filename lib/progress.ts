/**
 * Download progress for people: a live bar on a terminal, a line every few
 * seconds on a pipe. The rate is measured over the last few seconds, and
 * the ETA counts down steadily, easing towards what the rate implies, so
 * it does not jump with every chunk that lands.
 *
 * @module
 */

import { formatBytes } from "./cli.ts";
import type { DownloadEvent } from "./download.ts";
import { printable } from "./names.ts";

/** How often a line is printed when stderr is not a terminal. */
const PIPE_INTERVAL_MS = 3_000;
/**
 * The rate shown is the bytes of the last this many milliseconds over their
 * time. Whole chunks land now and then on a slow link (a 1 MiB chunk every
 * third of a second at 3 MiB/s), so a shorter window, or a moving average
 * of each update's bytes, swung by a tenth and the ETA with it.
 */
const RATE_WINDOW_MS = 10_000;
/**
 * The ETA shown counts down by the time passed and moves towards the one the
 * rate implies with this time constant: a lasting change of rate carries
 * through within a few seconds, noise mostly does not.
 */
const ETA_EASE_MS = 3_000;
/** An ETA this far from the one shown (a factor) is taken at once: a peer joined or left. */
const ETA_SNAP_FACTOR = 2;
/** No ETA before bytes have flowed this long: the first second's rate says little. */
const ETA_AFTER_MS = 1_000;
/** No new bytes for this long and the ETA says "stalled" instead of a time that keeps growing. */
const STALLED_MS = 5_000;

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
/** Width assumed for a terminal that does not say, or says 0 (`script` without a size, some serial consoles). */
const DEFAULT_COLUMNS = 80;

function stderrOutput(): ProgressOutput {
  return {
    tty: Deno.stderr.isTerminal(),
    columns: () => {
      try {
        return Deno.consoleSize().columns || DEFAULT_COLUMNS;
      } catch {
        return DEFAULT_COLUMNS; // not a terminal after all, or it would not say
      }
    },
    write: (text) => void Deno.stderr.writeSync(enc.encode(text)),
    now: () => performance.now(),
  };
}

/** Bytes done at a moment, for the rate window. */
interface Sample {
  at: number;
  bytes: number;
}

/** Renders progress to stderr. */
export class ProgressView {
  readonly #out: ProgressOutput;
  readonly #started: number;
  /** Bytes done at each update of the last RATE_WINDOW_MS (and the one before it), oldest first. */
  #samples: Sample[] = [];
  /** When bytes first grew and last grew, and how often they did: to tell a stall from a slow link. */
  #firstGrowth: number | null = null;
  #lastGrowth = 0;
  #growths = 0;
  /** The ETA shown last, in seconds, and when; null when none was. */
  #eta: number | null = null;
  #etaAt = 0;
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
  }

  /** Shows `doneBytes` of `totalBytes` with `peers` peers connected. */
  update(doneBytes: number, totalBytes: number, peers: number): void {
    if (this.quiet) return;
    const now = this.#out.now();
    const rate = this.#rate(now, doneBytes);
    const pct = totalBytes === 0 ? 100 : (100 * doneBytes) / totalBytes;
    const fields: BarFields = {
      // Rounded down: 100.0% only when it is done.
      pct: `${(Math.floor(pct * 10) / 10).toFixed(1).padStart(5)}%`,
      done: formatBytes(doneBytes),
      total: formatBytes(totalBytes),
      rate: `${formatBytes(rate)}/s`,
      eta: this.#etaText(now, totalBytes - doneBytes, rate),
      peers: `${peers} peer(s)`,
    };
    if (this.#out.tty) {
      this.#out.write(`\r\x1b[2K${fitBar(this.label, pct, fields, this.#out.columns())}`);
      this.#barOnLine = true;
    } else if (now - this.#lastPrint >= PIPE_INTERVAL_MS) {
      this.#lastPrint = now;
      this.#out.write(`${this.label}: ${plainFields(fields)}\n`);
    }
  }

  /** Bytes a second over the last RATE_WINDOW_MS, from the updates' samples; 0 until two updates. */
  #rate(now: number, doneBytes: number): number {
    const samples = this.#samples;
    const prev = samples.at(-1);
    if (prev && doneBytes > prev.bytes) {
      this.#firstGrowth ??= prev.at;
      this.#lastGrowth = now;
      this.#growths++;
    }
    samples.push({ at: now, bytes: doneBytes });
    // Keep one sample at or before the window's start, so the rate spans the whole window once it can.
    while (samples.length > 2 && samples[1]!.at <= now - RATE_WINDOW_MS) samples.shift();
    const first = samples[0]!;
    const span = now - first.at;
    return span > 0 ? ((doneBytes - first.bytes) * 1000) / span : 0;
  }

  /** "ETA m:ss", counting down steadily; "ETA --:--" before there is a rate to go by; "stalled" when bytes stopped. */
  #etaText(now: number, remaining: number, rate: number): string {
    if (remaining <= 0) return "ETA 0:00";
    const first = this.#firstGrowth;
    // A slow link lands a chunk every few seconds: only a pause well past its usual gap between chunks is a stall.
    const usualGap = first === null || this.#growths < 2 ? 0 : (this.#lastGrowth - first) / (this.#growths - 1);
    if (first !== null && now - this.#lastGrowth >= Math.max(STALLED_MS, 3 * usualGap)) {
      this.#eta = null;
      return "stalled";
    }
    if (first === null || rate <= 0 || now - first < ETA_AFTER_MS) {
      this.#eta = null;
      return "ETA --:--";
    }
    const target = remaining / rate;
    const dt = now - this.#etaAt;
    const predicted = this.#eta === null ? target : Math.max(0, this.#eta - dt / 1000);
    const far = target > predicted * ETA_SNAP_FACTOR || target * ETA_SNAP_FACTOR < predicted;
    this.#eta = far ? target : predicted + (target - predicted) * (1 - Math.exp(-dt / ETA_EASE_MS));
    this.#etaAt = now;
    return `ETA ${formatEta(this.#eta)}`;
  }

  /** Shows what a download reports: progress on the bar, anything else on a line of its own. */
  event(e: DownloadEvent): void {
    switch (e.kind) {
      case "progress":
        return this.update(e.doneBytes, e.totalBytes, e.peers);
      case "resumed":
        this.#samples = []; // what was on disk already is not part of this run's rate
        return this.note(
          `resuming: reused ${e.reused} of ${e.total} chunks${
            // Every chunk checked (no usable sidecar): those that passed were "found intact", if any did.
            e.rechecked
              ? (e.reused > 0 ? ", found intact" : ", none found intact")
              : e.discarded
              ? `, ${e.discarded} failed their check`
              : ""}`,
        );
      case "recheck":
        return this.note(e.reason);
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
    text = printable(text); // it may quote a peer: a reason, a message, a host
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

/** The parts of a progress line. */
export interface BarFields {
  pct: string;
  /** Bytes done and in all, shown as done/total. */
  done: string;
  total: string;
  rate: string;
  eta: string;
  peers: string;
}

function plainFields(f: BarFields): string {
  return [f.pct, `${f.done}/${f.total}`, f.rate, f.eta, f.peers].join("  ");
}

/** Widest bar, in cells. */
const BAR_WIDTH = 24;
/** Narrowest bar worth drawing; below it the line goes without one. */
const MIN_BAR_WIDTH = 8;
/**
 * Widths the fields are padded to beside a bar, so that it keeps its width as
 * the numbers grow: "1023.5 MiB", "1023.5 MiB/s", "ETA 59:59".
 */
const BYTES_WIDTH = 10, RATE_WIDTH = 12, ETA_WIDTH = 9;

/**
 * The bar line, one cell short of `columns` at most: a line that wrapped
 * would leave a copy of itself above at every redraw. The bar narrows
 * first, then goes; then the fields go, the least telling first (the label,
 * the bytes, the peer count, the rate), so percent and ETA stay longest;
 * only then is the line cut.
 */
export function fitBar(label: string, pct: number, f: BarFields, columns: number): string {
  const limit = Math.max(0, columns - 1);
  const stats = [
    f.pct,
    `${f.done.padStart(BYTES_WIDTH)}/${f.total}`,
    f.rate.padStart(RATE_WIDTH),
    f.eta.padEnd(ETA_WIDTH),
    f.peers.padStart(10),
  ].join("  ");
  const width = Math.min(BAR_WIDTH, limit - `${label} [] ${stats}`.length);
  if (width >= MIN_BAR_WIDTH) {
    const filled = Math.floor((width * Math.min(100, pct)) / 100);
    return `${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${stats}`;
  }
  const layouts = [
    `${label} ${plainFields(f)}`,
    plainFields(f),
    [f.pct, f.rate, f.eta, f.peers].join("  "),
    [f.pct, f.rate, f.eta].join("  "),
    [f.pct, f.eta].join("  "),
  ];
  return layouts.find((line) => line.length <= limit) ?? layouts.at(-1)!.slice(0, limit);
}

function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds)) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h > 0
    ? `${h}:${String(m).padStart(2, "0")}:${String(r).padStart(2, "0")}`
    : `${m}:${String(r).padStart(2, "0")}`;
}
