/**
 * What the three entry points share: argument parsing helpers, one-line
 * error reporting with exit codes, human-readable sizes, and shutdown on
 * SIGINT/SIGTERM/SIGHUP.
 *
 * @module
 */

import { CommanderError } from "commander";
import type { Address } from "./connection.ts";
import type { DownloadSummary } from "./download.ts";
import { describeError, exitCodeOf, UsageError } from "./errors.ts";
import type { FileSummary } from "./messages.ts";
import { printable } from "./names.ts";

/** Default tracker address. */
export const DEFAULT_TRACKER = "127.0.0.1:7070";

/** Parses `host:port` or `[v6]:port`; throws UsageError. */
export function parseAddress(text: string, what = "address"): Address {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:\s]+):(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new UsageError(`Invalid ${what} ${JSON.stringify(text)}: expected host:port`);
  }
  return { host: m[1]!, port };
}

/** `n` and the noun, singular for 1: "1 chunk", "16 chunks". */
export function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

/** `text`, unless it is empty (`-o ''` is a slip, not "the default"); throws UsageError naming the option. */
export function nonEmpty(text: string, name: string): string {
  if (text.trim() === "") throw new UsageError(`${name} needs a value; it was given an empty one`);
  return text;
}

/** Parses a positive integer option; throws UsageError naming the option. */
export function parseIntOption(text: string, name: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`Invalid ${name} ${JSON.stringify(text)}: expected an integer in [${min}, ${max}]`);
  }
  return n;
}

/** Parses a size like `1048576`, `64k`, `1m`, `1g` (binary units). */
export function parseSize(text: string, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const m = /^(\d+)([kKmMgG]?)(i?[bB])?$/.exec(text.trim());
  if (!m) throw new UsageError(`Invalid ${name} ${JSON.stringify(text)}: expected a size like 1048576, 256k or 1m`);
  const mult = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase()]!;
  const size = Number(m[1]) * mult;
  if (size < min || size > max) {
    throw new UsageError(
      `Invalid ${name} ${JSON.stringify(text)}: must be from ${formatBytes(min)} to ${formatBytes(max)}`,
    );
  }
  return size;
}

/** `1.5 MiB`, `532 B`. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return u === 0 ? `${Math.round(n)} B` : `${n.toFixed(n < 10 ? 2 : 1)} ${units[u]}`;
}

/**
 * The line a finished download ends with. The rate counts only what this run
 * fetched: chunks reused from an earlier run took no time here. An output
 * that was complete already says so.
 */
export function formatSaved(s: DownloadSummary): string {
  if (s.alreadyComplete) {
    const checked = `${s.chunksReused === 1 ? "" : "all "}${count(s.chunksReused, "chunk")} checked in ${
      s.seconds.toFixed(2)
    } s`;
    return `${s.path} is already complete (${formatBytes(s.bytes)}, ${checked})`;
  }
  const rate = `${formatBytes(s.seconds > 0 ? s.bytesFetched / s.seconds : 0)}/s`;
  const head = `saved ${s.path} (${formatBytes(s.bytes)}) in ${s.seconds.toFixed(2)} s`;
  if (s.chunksReused === 0) return `${head} at ${rate}`;
  const total = s.chunksReused + s.chunksFetched;
  return `${head}: ${s.chunksReused} of ${count(total, "chunk")} reused, ${
    formatBytes(s.bytesFetched)
  } fetched at ${rate}`;
}

/** One catalog entry as one line: id, size, sources, name (`client.ts files` and the peer shell's `files`). */
export function formatFileSummary(f: FileSummary): string {
  const sources = f.partial > 0 ? `${f.peers}+${f.partial} peers` : `${f.peers} peer(s)`;
  return `${f.id}  ${formatBytes(f.size).padStart(10)}  ${sources.padEnd(12)}  ${printable(f.name)}`;
}

/**
 * Runs an entry point: any error becomes one line on stderr and its exit
 * code, never a stack trace (set SHOAL_DEBUG=1 to see one).
 */
export async function runMain(main: () => Promise<number | void>): Promise<never> {
  try {
    const code = await main();
    Deno.exit(code ?? 0);
  } catch (err) {
    // commander has printed its own message (or the help) already
    if (err instanceof CommanderError) Deno.exit(err.exitCode === 0 ? 0 : 2);
    if (Deno.env.get("SHOAL_DEBUG")) console.error(err);
    // One line, whatever a peer or tracker put in its message (a newline, an escape sequence).
    console.error(`${paint("error", "red", Deno.stderr)}: ${printable(describeError(err))}`);
    Deno.exit(exitCodeOf(err));
  }
}

const COLORS = { red: 31, green: 32, yellow: 33 } as const;

/**
 * `text` in a colour when `stream` is a terminal and colour is not turned
 * off (NO_COLOR set to anything non-empty, see no-color.org); else plain.
 */
export function paint(
  text: string,
  color: keyof typeof COLORS,
  stream: { isTerminal(): boolean } = Deno.stdout,
): string {
  const off = (Deno.env.get("NO_COLOR") ?? "") !== "" || !stream.isTerminal();
  return off ? text : `\x1b[${COLORS[color]}m${text}\x1b[0m`;
}

/**
 * Whether a `SigIgn` mask from `/proc/<pid>/status` ignores SIGHUP (signal
 * 1: bit 0). No mask counts as ignored: a hang-up is then left alone.
 */
export function hangupIgnored(status: string): boolean {
  const m = /^SigIgn:\s*([0-9a-fA-F]+)$/m.exec(status);
  return m === null || (BigInt(`0x${m[1]}`) & 1n) === 1n;
}

/**
 * Whether this process was started ignoring SIGHUP (under `nohup`), read as
 * this module loads: Deno sets SIGHUP back to its default (the end of the
 * process) soon after it starts, so nohup alone does not keep it running.
 * Null when unknown (not Linux, no permission to read it): SIGHUP is then
 * left as it is.
 */
const STARTED_IGNORING_HANGUP: boolean | null = (() => {
  const path = "/proc/self/status";
  try {
    if (Deno.build.os !== "linux" || Deno.permissions.querySync({ name: "read", path }).state !== "granted") {
      return null;
    }
    return hangupIgnored(Deno.readTextFileSync(path));
  } catch {
    return null;
  }
})();

/**
 * An AbortSignal that fires on the first SIGINT or SIGTERM, or SIGHUP (the
 * terminal closed): a download then saves its progress, and a peer
 * unregisters, instead of dying mid-write. A process started under nohup
 * ignores SIGHUP, as nohup means.
 */
export function shutdownSignal(): AbortSignal {
  const ac = new AbortController();
  const stop = () => ac.abort(new Error("interrupted"));
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  if (STARTED_IGNORING_HANGUP === false) signals.push("SIGHUP");
  if (STARTED_IGNORING_HANGUP === true) Deno.addSignalListener("SIGHUP", () => {}); // caught and dropped: ignored again
  for (const sig of signals) {
    try {
      Deno.addSignalListener(sig, stop);
    } catch {
      // signals are not available on every platform
    }
  }
  return ac.signal;
}
