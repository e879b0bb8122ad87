/**
 * Throughput benchmark on loopback: Shoal against two references, side by
 * side in the same run.
 *
 *   deno task bench [--size 1g] [--runs 3] [--workers N] [--chunk-size 1m] [--timeout S] [--json FILE] [--keep]
 *
 * - shoal: a tracker and 4 peers sharing one random file; `client.ts get`
 *   downloads it from all four. `--chunk-size` is the peers' (more, smaller
 *   chunks: more per-chunk work for the same bytes).
 * - aria2c-http: aria2c `-x4 -s4 -k1M` from 4 nginx servers, one URI each.
 * - aria2c-bt: aria2c over BitTorrent from 4 aria2c seeders, found through
 *   a minimal in-process HTTP tracker (`bench_torrent.ts`), 1 MiB pieces.
 *
 * Every download's SHA-256 is checked against the source. MB/s is the file
 * size (10^6 bytes) over the wall time the bench measures around the
 * downloading process, so process start-up counts for every tool; Shoal's
 * own figure is shown beside it. Peak RSS comes from `/usr/bin/time -v`.
 * The tools take turns within each run, and the first of them rotates from
 * run to run; the table shows medians.
 *
 * Every child is tracked and killed by PID (with its descendants) at the
 * end, on failure and on SIGINT/SIGTERM; every wait has a deadline. The
 * helpers are exported for `bench_wan.ts`.
 *
 * @module
 */

import { createHash, randomFillSync } from "node:crypto";
import { basename, dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { formatBytes, parseIntOption, parseSize } from "../lib/cli.ts";
import { makeTorrent, MiniTracker } from "./bench_torrent.ts";
import { buildNative } from "./build_native.ts";
import { chooseHasher } from "../lib/chunk_hasher.ts";
import { NativeHasher, nativeLibraryPath } from "../lib/sha256_native.ts";

/** The repository root. */
export const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");
/** The shared netlab directory (nginx_serve.sh, netlab.sh). */
export const NETLAB_DIR = Deno.env.get("SHOAL_NETLAB_DIR") ?? resolve(ROOT, "..", "shared", "netlab");
/** GNU time, for peak RSS. */
export const TIME_BIN = "/usr/bin/time";
/** 10^6, the MB of every MB/s here (Shoal's client uses the same). */
export const MB = 1e6;

/** How long a stopped process gets between SIGTERM and SIGKILL. */
const KILL_GRACE_MS = 3_000;
/** Cap on the stdout text kept in memory per process (all of it goes to its log). */
const MAX_KEPT_STDOUT = 1024 * 1024;
/** How much of stderr is kept for error messages. */
const STDERR_TAIL = 4096;

// ---------------------------------------------------------------- processes

/** A child process started through {@link Procs}. */
export interface Proc {
  name: string;
  pid: number;
  argv: string[];
  child: Deno.ChildProcess;
  status: Promise<Deno.CommandStatus>;
  exited: boolean;
  stdout: string;
  stderrTail: string;
  logPath: string;
  /** Resolved when both output pipes are drained. */
  drained: Promise<void>;
  waiters: Set<() => void>;
}

/** Options of {@link Procs.spawn}. */
export interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** a clean-up step: may start after `stopAll` began */
  whileStopping?: boolean;
}

/** Result of {@link Procs.run}. */
export interface RunResult {
  code: number;
  stdout: string;
  stderrTail: string;
}

/** The pids below `pid` (children, grandchildren, ...), read from /proc. */
export function descendants(pid: number): number[] {
  const kids = new Map<number, number[]>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = kids.get(ppid) ?? [];
      list.push(Number(e.name));
      kids.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const todo = [pid];
  while (todo.length > 0) {
    for (const k of kids.get(todo.pop()!) ?? []) {
      out.push(k);
      todo.push(k);
    }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

function signal(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Resolves after `ms`, or with the promise's value if it settles first (`undefined` on timeout). */
export async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), ms))]);
  } finally {
    clearTimeout(timer);
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Starts, watches and stops child processes. Each one's stdout and stderr
 * go to `<logDir>/<name>.log`; stdout is also kept for matching. `stopAll`
 * kills every child still running, and any adopted pid, by PID.
 */
export class Procs {
  readonly #all: Proc[] = [];
  readonly #adopted = new Map<number, string>();
  readonly #names = new Map<string, number>();
  #closing = false;

  constructor(readonly logDir: string, readonly env: Record<string, string> = {}) {}

  /** Starts `argv`; its output is logged and kept. */
  spawn(name: string, argv: string[], opts: SpawnOptions = {}): Proc {
    if (this.#closing && !opts.whileStopping) throw new Error(`not starting ${name}: stopping every child`);
    const n = (this.#names.get(name) ?? 0) + 1;
    this.#names.set(name, n);
    const logPath = join(this.logDir, `${n === 1 ? name : `${name}.${n}`}.log`);
    const log = Deno.openSync(logPath, { create: true, append: true });
    log.writeSync(new TextEncoder().encode(`$ ${argv.join(" ")}\n`));
    const child = new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", RUST_BACKTRACE: "0", ...this.env, ...opts.env },
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    }).spawn();
    const p: Proc = {
      name,
      pid: child.pid,
      argv,
      child,
      status: child.status,
      exited: false,
      stdout: "",
      stderrTail: "",
      logPath,
      drained: Promise.resolve(),
      waiters: new Set(),
    };
    const notify = () => {
      for (const w of p.waiters) w();
    };
    p.status = child.status.finally(() => {
      p.exited = true;
      notify();
    });
    const pump = async (stream: ReadableStream<Uint8Array>, isOut: boolean) => {
      const dec = new TextDecoder();
      for await (const chunk of stream) {
        try {
          log.writeSync(chunk);
        } catch {
          // the log is best effort
        }
        const text = dec.decode(chunk, { stream: true });
        if (isOut) {
          if (p.stdout.length < MAX_KEPT_STDOUT) p.stdout += text;
        } else p.stderrTail = (p.stderrTail + text).slice(-STDERR_TAIL);
        notify();
      }
    };
    p.drained = Promise.allSettled([pump(child.stdout, true), pump(child.stderr, false)]).then(() => log.close());
    this.#all.push(p);
    return p;
  }

  /** Waits until the process's stdout matches `re`; throws if it exits or `ms` pass first. */
  async waitFor(p: Proc, re: RegExp, ms: number): Promise<RegExpMatchArray> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = p.stdout.match(re);
      if (m) return m;
      if (p.exited) {
        await within(p.drained, 1000);
        const m2 = p.stdout.match(re);
        if (m2) return m2;
        throw new Error(
          `${p.name} exited before printing ${re}: ${lastLine(p.stderrTail || p.stdout)} (log: ${p.logPath})`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${p.name} did not print ${re} within ${ms} ms (log: ${p.logPath})`);
      const { promise, resolve } = Promise.withResolvers<void>();
      p.waiters.add(resolve);
      await within(promise, Math.min(left, 1000));
      p.waiters.delete(resolve);
    }
  }

  /** Waits for the process to exit; past `ms` it is killed and this throws. */
  async exit(p: Proc, ms: number): Promise<Deno.CommandStatus> {
    const status = await within(p.status, ms);
    if (status === undefined) {
      await this.stop(p);
      throw new Error(`${p.name} did not finish within ${(ms / 1000).toFixed(1)} s; killed (log: ${p.logPath})`);
    }
    await within(p.drained, 2000);
    return status;
  }

  /** Runs `argv` to the end (bounded by `ms`) and returns its exit code and output. */
  async run(name: string, argv: string[], ms: number, opts: SpawnOptions = {}): Promise<RunResult> {
    const p = this.spawn(name, argv, opts);
    const status = await this.exit(p, ms);
    return { code: status.code, stdout: p.stdout, stderrTail: p.stderrTail };
  }

  /** Like {@link run} but throws on a non-zero exit. */
  async check(name: string, argv: string[], ms: number, opts: SpawnOptions = {}): Promise<string> {
    const r = await this.run(name, argv, ms, opts);
    if (r.code !== 0) throw new Error(`${name} failed (exit ${r.code}): ${lastLine(r.stderrTail || r.stdout)}`);
    return r.stdout;
  }

  /** A process not started here (e.g. a daemon's master) that `stopAll` must also kill. */
  adopt(pid: number, name: string): void {
    this.#adopted.set(pid, name);
  }

  /** SIGTERM to the process and its descendants, SIGKILL to whatever is left after a grace period. */
  async stop(p: Proc): Promise<void> {
    if (p.exited) return;
    await killTree(p.pid, p.status);
  }

  /** Stops every child still running and every adopted pid; no child can be started after. Safe to call twice. */
  async stopAll(): Promise<void> {
    this.#closing = true;
    await Promise.allSettled(this.#all.map((p) => this.stop(p)));
    await Promise.allSettled([...this.#adopted.keys()].map((pid) => killTree(pid)));
    this.#adopted.clear();
    await Promise.allSettled(this.#all.map((p) => within(p.drained, 1000)));
  }
}

/** Kills `pid` and its descendants: SIGTERM, then SIGKILL after {@link KILL_GRACE_MS}. */
export async function killTree(pid: number, exited?: Promise<unknown>): Promise<void> {
  const pids = [pid, ...descendants(pid)];
  for (const q of pids.slice().reverse()) signal(q, "SIGTERM");
  const deadline = Date.now() + KILL_GRACE_MS;
  if (exited) await within(exited, KILL_GRACE_MS);
  while (Date.now() < deadline && pids.some(alive)) await sleep(50);
  for (const q of pids) if (alive(q)) signal(q, "SIGKILL");
  if (exited) await within(exited, 2000);
}

function lastLine(text: string): string {
  const lines = text.trim().split("\n");
  return lines[lines.length - 1]?.trim() || "(no output)";
}

// ---------------------------------------------------------------- files

/** Writes `bytes` random bytes to `path` and returns their SHA-256 (hex). */
export async function writeRandomFile(path: string, bytes: number): Promise<string> {
  const h = createHash("sha256");
  using f = await Deno.open(path, { write: true, create: true, truncate: true });
  const buf = new Uint8Array(8 * 1024 * 1024);
  for (let left = bytes; left > 0;) {
    const n = Math.min(left, buf.length);
    const part = buf.subarray(0, n);
    randomFillSync(part);
    h.update(part);
    for (let at = 0; at < n;) at += await f.write(part.subarray(at));
    left -= n;
  }
  return h.digest("hex");
}

/** SHA-256 (hex) of a file. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  using f = await Deno.open(path);
  const buf = new Uint8Array(8 * 1024 * 1024);
  for (let n = await f.read(buf); n !== null; n = await f.read(buf)) h.update(buf.subarray(0, n));
  return h.digest("hex");
}

/** Hard-links `src` into `dir` (copies if linking fails); returns the new path. */
export async function linkInto(src: string, dir: string): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.chmod(dir, 0o755); // nginx's workers (nobody) read it whatever the umask
  const dst = join(dir, basename(src));
  try {
    await Deno.link(src, dst);
  } catch {
    await Deno.copyFile(src, dst);
  }
  return dst;
}

/**
 * Removes the work dir; with `keepLogs` only its big files go and `logs/`
 * stays, so a failure can be read afterwards. Returns what it kept.
 */
export async function removeWork(work: string, keepLogs: boolean): Promise<string | undefined> {
  if (!keepLogs) {
    await Deno.remove(work, { recursive: true }).catch(() => {});
    return undefined;
  }
  for await (const e of Deno.readDir(work)) {
    if (e.name !== "logs") await Deno.remove(join(work, e.name), { recursive: true }).catch(() => {});
  }
  return join(work, "logs");
}

/** At the end of a bench: keeps the work dir with `--keep`, else removes it but a failed run's logs; says what stays. */
export async function leaveWork(work: string, keep: boolean, failed: boolean): Promise<void> {
  if (keep) return console.log(`work dir kept: ${work}`);
  const kept = await removeWork(work, failed);
  if (kept) console.log(`logs kept: ${kept}`);
}

/** A free TCP port on `host` (closed again at once: a small race, fine for a bench). */
export function freePort(host = "127.0.0.1"): number {
  const l = Deno.listen({ hostname: host, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

// ---------------------------------------------------------------- tools

/** The path of `cmd` on PATH, or undefined. */
export function which(cmd: string): string | undefined {
  if (cmd.includes("/")) return exists(cmd) ? cmd : undefined;
  for (const d of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    const p = join(d, cmd);
    if (exists(p)) return p;
  }
  return undefined;
}

function exists(p: string): boolean {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
}

/**
 * Makes sure each command exists, installing its Debian package with
 * apt-get when it does not. Returns, per command, `undefined` when present
 * or the reason it is missing.
 */
export async function ensureCommands(
  procs: Procs,
  wanted: Record<string, string>,
  say: (s: string) => void,
): Promise<Record<string, string | undefined>> {
  const missing = Object.entries(wanted).filter(([cmd]) => which(cmd) === undefined);
  const result: Record<string, string | undefined> = {};
  if (missing.length > 0) {
    const pkgs = [...new Set(missing.map(([, pkg]) => pkg))];
    say(`installing ${pkgs.join(" ")} (missing: ${missing.map(([c]) => c).join(", ")})`);
    const r = await aptInstall(procs, pkgs);
    if (r) say(`apt-get failed: ${r}`);
  }
  for (const cmd of Object.keys(wanted)) {
    result[cmd] = which(cmd) ? undefined : `${cmd} is not installed and apt-get install ${wanted[cmd]} failed`;
  }
  return result;
}

/** `apt-get install -y` (with one `apt-get update` retry); returns an error text or undefined. */
export async function aptInstall(procs: Procs, pkgs: string[]): Promise<string | undefined> {
  if (Deno.uid() !== 0) return "not root";
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  const install = ["apt-get", "install", "-y", "--no-install-recommends", ...pkgs];
  let r = await procs.run("apt-get-install", install, 600_000, { env });
  if (r.code !== 0) {
    await procs.run("apt-get-update", ["apt-get", "update"], 300_000, { env });
    r = await procs.run("apt-get-install", install, 600_000, { env });
  }
  return r.code === 0 ? undefined : lastLine(r.stderrTail || r.stdout);
}

// ---------------------------------------------------------------- measuring

/** One timed download. */
export interface Sample {
  /** size / wall time measured here, MB/s */
  mbps: number;
  seconds: number;
  /** the tool's own figure, if it reports one */
  toolMbps?: number;
  /** peak RSS in MB (10^6 bytes) */
  rssMB?: number;
}

/** Peak RSS in KiB from a `time -v` report. */
export function parseMaxRss(text: string): number | undefined {
  const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * Runs a downloader under `/usr/bin/time -v` (when present), timing it from
 * spawn to exit. `wrap` prefixes the command line (e.g. to enter a network
 * namespace) around the `time` call. Throws on a non-zero exit.
 */
export async function measure(
  procs: Procs,
  name: string,
  argv: string[],
  opts: { timeoutMs: number; bytes: number; rssFile: string; wrap?: (argv: string[]) => string[] },
): Promise<{ sample: Sample; stdout: string; argv: string[] }> {
  await Deno.remove(opts.rssFile).catch(() => {});
  const timed = exists(TIME_BIN) ? [TIME_BIN, "-v", "-o", opts.rssFile, ...argv] : argv;
  const full = opts.wrap ? opts.wrap(timed) : timed;
  const t0 = performance.now();
  const p = procs.spawn(name, full);
  const status = await procs.exit(p, opts.timeoutMs);
  const seconds = (performance.now() - t0) / 1000;
  if (status.code !== 0) {
    throw new Error(`${name} failed (exit ${status.code}): ${lastLine(p.stderrTail || p.stdout)} (log: ${p.logPath})`);
  }
  const rssKiB = parseMaxRss(await Deno.readTextFile(opts.rssFile).catch(() => ""));
  return {
    sample: {
      mbps: opts.bytes / MB / seconds,
      seconds,
      ...(rssKiB !== undefined ? { rssMB: (rssKiB * 1024) / MB } : {}),
    },
    stdout: p.stdout,
    argv: full,
  };
}

/** The JSON object a `client.ts get --json` printed. */
export function parseClientSummary(stdout: string): { bytes: number; seconds: number; mbPerSecond: number } {
  const at = stdout.indexOf("{");
  if (at < 0) throw new Error(`client printed no JSON summary: ${lastLine(stdout)}`);
  return JSON.parse(stdout.slice(at));
}

/** The average speed aria2c reports in its "Download Results" (e.g. `|OK  |    55MiB/s|`), in MB/s. */
export function parseAria2Speed(stdout: string): number | undefined {
  const m = /\|OK\s*\|\s*([\d.]+)(B|KiB|MiB|GiB)\/s\|/.exec(stdout);
  if (!m) return undefined;
  const unit = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[m[2] as "B" | "KiB" | "MiB" | "GiB"];
  return (Number(m[1]) * unit) / MB;
}

/** Median of a non-empty list. */
export function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** A tool's results over all runs. */
export interface ToolResult {
  tool: string;
  what: string;
  samples: Sample[];
  errors: string[];
  /** why the tool could not run at all */
  missing?: string;
  argv?: string[];
}

/** Median MB/s of a tool, or undefined with no successful run. */
export function medianMbps(r: ToolResult): number | undefined {
  return r.samples.length > 0 ? median(r.samples.map((s) => s.mbps)) : undefined;
}

/** One line per machine fact. */
export function machineLines(): string[] {
  let cpu = "unknown cpu";
  try {
    cpu = /model name\s*:\s*(.+)/.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? cpu;
  } catch {
    // not Linux
  }
  const mem = Deno.systemMemoryInfo().total;
  return [
    `machine: nproc ${navigator.hardwareConcurrency} (${cpu}), ${formatBytes(mem)} RAM, Linux ${Deno.osRelease()}, ` +
    `deno ${Deno.version.deno}`,
  ];
}

/**
 * Builds the native SHA-256 library when it is missing (a missing piece is
 * built, never silently left out), then says how Shoal's clients will hash
 * chunks on this machine (lib/chunk_hasher.ts): the same choice they make.
 */
export async function hasherLine(): Promise<string> {
  let note = "";
  const path = nativeLibraryPath();
  if (path !== null && !exists(path)) {
    try {
      await buildNative(path);
    } catch (err) {
      note = ` (${(err as Error).message.split("\n")[0]})`;
    }
  }
  const kind = chooseHasher();
  if (kind !== "native") return `shoal hashes chunks with: ${kind}${note}`;
  const native = NativeHasher.open()!;
  native.close();
  return `shoal hashes chunks with: native (${native.kernel}, ${native.lanes} at a time)`;
}

/** The results table: tool, median MB/s, every run, the tool's own figure, peak RSS, Shoal's ratio. */
export function table(results: ToolResult[], shoalTool = "shoal"): string[] {
  const shoal = results.find((r) => r.tool === shoalTool);
  const shoalMed = shoal ? medianMbps(shoal) : undefined;
  const head = ["tool", "MB/s median", "runs (MB/s)", "own MB/s", "peak RSS MB", "shoal ratio"];
  const rows: string[][] = [head];
  for (const r of results) {
    const med = medianMbps(r);
    const runs = r.samples.map((s) => s.mbps.toFixed(1)).concat(r.errors.map(() => "FAIL")).join(", ");
    const own = r.samples.filter((s) => s.toolMbps !== undefined).map((s) => s.toolMbps!.toFixed(1)).join(", ");
    const rss = r.samples.filter((s) => s.rssMB !== undefined).map((s) => s.rssMB!);
    let ratio = "";
    if (r.tool !== shoalTool && med !== undefined && shoalMed !== undefined) ratio = `${(shoalMed / med).toFixed(2)}x`;
    rows.push([
      `${r.tool} (${r.what})`,
      r.missing ? "MISSING" : med === undefined ? "FAILED" : med.toFixed(1),
      r.missing ? r.missing : runs || "-",
      own || "-",
      rss.length > 0 ? Math.max(...rss).toFixed(0) : "-",
      ratio || "-",
    ]);
  }
  const widths = head.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  const lines = rows.map((row) =>
    row.map((c, i) => (i === 0 || i === 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")
  );
  lines.splice(1, 0, widths.map((w) => "-".repeat(w)).join("  "));
  return lines;
}

// ---------------------------------------------------------------- the loopback bench

const SEEDS = 4;

/** Shoal's row of a bench's results, named with the peers' chunk size when one was given. */
export function shoalResult(chunkSize?: number): ToolResult {
  const what = `client.ts get, ${SEEDS} peers` + (chunkSize ? `, ${formatBytes(chunkSize)} chunks` : "");
  return { tool: "shoal", what, samples: [], errors: [] };
}

/** Options shared by the loopback and WAN benchmarks. */
export interface Options {
  size: number;
  runs: number;
  workers?: number;
  /** The Shoal peers' `--chunk-size`, where the bench takes one. */
  chunkSize?: number;
  /** The WAN lab's one-way delay in ms (`bench:wan` only). */
  delayMs?: number;
  timeoutMs: number;
  keep: boolean;
  json?: string;
  outDir?: string;
}

/**
 * Parses a benchmark's command line. `outDir` says whether `--out-dir` is
 * accepted; the default deadline per download is start-up plus the file at
 * `slowMBps`.
 */
export function benchOptions(
  args: string[],
  o: { usage: string; defaultSize: string; slowMBps: number; outDir: boolean; chunkSize?: boolean; delayMs?: boolean },
): Options {
  const { values } = parseArgs({
    args,
    options: {
      size: { type: "string", default: o.defaultSize },
      runs: { type: "string", default: "3" },
      workers: { type: "string" },
      timeout: { type: "string" },
      json: { type: "string" },
      keep: { type: "boolean", default: false },
      ...(o.outDir ? { "out-dir": { type: "string" as const } } : {}),
      ...(o.chunkSize ? { "chunk-size": { type: "string" as const } } : {}),
      ...(o.delayMs ? { "delay-ms": { type: "string" as const } } : {}),
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(o.usage);
    Deno.exit(0);
  }
  const size = parseSize(values.size!, "--size");
  const runs = Number(values.runs);
  if (!(size > 0) || !Number.isInteger(runs) || runs < 1) throw new Error("--size must be > 0 and --runs >= 1");
  const workers = values.workers === undefined ? undefined : parseIntOption(values.workers, "--workers", 1, 64);
  if (values.timeout !== undefined && !(Number(values.timeout) > 0)) {
    throw new Error("--timeout must be a number of seconds > 0");
  }
  const timeoutMs = values.timeout ? Number(values.timeout) * 1000 : 60_000 + (size / (o.slowMBps * MB)) * 1000;
  const outDir = (values as { "out-dir"?: string })["out-dir"];
  const chunkText = (values as { "chunk-size"?: string })["chunk-size"];
  const chunkSize = chunkText === undefined ? undefined : parseSize(chunkText, "--chunk-size");
  const delayText = (values as { "delay-ms"?: string })["delay-ms"];
  const delayMs = delayText === undefined ? undefined : parseIntOption(delayText, "--delay-ms", 0, 1000);
  return {
    size,
    runs,
    ...(workers !== undefined ? { workers } : {}),
    ...(chunkSize !== undefined ? { chunkSize } : {}),
    ...(delayMs !== undefined ? { delayMs } : {}),
    timeoutMs,
    keep: values.keep!,
    ...(outDir ? { outDir } : {}),
    ...(values.json ? { json: values.json } : {}),
  };
}

function options(args: string[]): Options {
  return benchOptions(args, {
    usage: "usage: deno task bench [--size 1g] [--runs 3] [--workers N] [--timeout SECONDS] [--json FILE] [--keep]\n" +
      "                       [--out-dir DIR]   where downloads are written (default: the work dir on disk;\n" +
      "                                         /dev/shm compares the engines without the disk)\n" +
      "                       [--chunk-size SIZE]  the Shoal peers' chunk size (default 1m)",
    defaultSize: "1g",
    slowMBps: 5, // generous
    outDir: true,
    chunkSize: true,
  });
}

/**
 * Tracker + 4 peers on loopback sharing `files` (in chunks of `chunkSize`
 * when given); returns their ids once the tracker lists 4 peers for each.
 */
export async function startShoal(
  procs: Procs,
  work: string,
  files: { path: string; size: number }[],
  chunkSize?: number,
): Promise<{ tracker: string; ids: string[] }> {
  const deno = Deno.execPath();
  const tracker = procs.spawn("shoal-tracker", [
    deno,
    "run",
    "-A",
    join(ROOT, "tracker.ts"),
    "--port",
    "0",
    "--db",
    ":memory:",
  ]);
  const [, host, port] = await procs.waitFor(tracker, /tracker listening on (\S+):(\d+)/, 30_000);
  const addr = `${host}:${port}`;
  const total = files.reduce((sum, f) => sum + f.size, 0);
  const hashMs = 60_000 + (SEEDS * total / (50 * MB)) * 1000;
  const peers = [];
  for (let i = 1; i <= SEEDS; i++) {
    const dir = join(work, `shoal-peer${i}`);
    for (const f of files) await linkInto(f.path, join(dir, "shared"));
    peers.push(procs.spawn(`shoal-peer${i}`, [
      deno,
      "run",
      "-A",
      join(ROOT, "peer.ts"),
      "--shared",
      join(dir, "shared"),
      "--tracker",
      addr,
      "--port",
      "0",
      "--cache-dir",
      join(dir, "cache"),
      "--quiet",
      ...(chunkSize === undefined ? [] : ["--chunk-size", String(chunkSize)]),
    ]));
  }
  for (const p of peers) await procs.waitFor(p, /peer listening on (\S+):(\d+)/, hashMs);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const out = await procs.check("shoal-files", [
      deno,
      "run",
      "-A",
      join(ROOT, "client.ts"),
      "--tracker",
      addr,
      "files",
      "--json",
    ], 30_000);
    const listed = JSON.parse(out) as { id: string; name: string; size: number; peers: number }[];
    const found = files.map((f) => listed.find((x) => x.name === basename(f.path) && x.size === f.size));
    if (found.every((x) => x && x.peers >= SEEDS)) return { tracker: addr, ids: found.map((x) => x!.id) };
    if (Date.now() > deadline) {
      const short = files.filter((_, i) => (found[i]?.peers ?? 0) < SEEDS).map((f) => basename(f.path));
      throw new Error(`the tracker lists fewer than ${SEEDS} peers for ${short.join(", ")} after 30 s`);
    }
    await sleep(250);
  }
}

/** 4 nginx servers, each serving a directory holding (links to) `srcs`; returns the 4 URLs of each file. */
export async function startNginx(procs: Procs, work: string, srcs: string[]): Promise<string[][]> {
  const script = join(NETLAB_DIR, "nginx_serve.sh");
  const env = { NGINX_STATE: join(work, "nginx") };
  const urls: string[][] = srcs.map(() => []);
  for (let i = 1; i <= SEEDS; i++) {
    const root = join(work, `http${i}`);
    for (const src of srcs) await linkInto(src, root);
    const port = freePort();
    const name = `bench${i}`;
    try {
      await procs.check(`nginx${i}-start`, [script, "start", name, root, `127.0.0.1:${port}`], 30_000, { env });
    } finally {
      const pid = Number(await Deno.readTextFile(join(work, "nginx", name, "master.pid")).catch(() => ""));
      if (pid > 0) procs.adopt(pid, `nginx${i}`);
    }
    srcs.forEach((src, k) => urls[k]!.push(`http://127.0.0.1:${port}/${basename(src)}`));
  }
  // nginx_serve.sh waits for the port but not for an error: check each URL answers 200
  for (const u of urls.flat()) {
    const res = await within(fetch(u, { method: "HEAD" }), 10_000);
    await res?.body?.cancel();
    if (!res?.ok) throw new Error(`nginx does not serve ${u}: ${res ? res.status : "no answer in 10 s"}`);
  }
  return urls;
}

/** The aria2c options every BitTorrent instance here shares: no DHT, no LPD, no PEX, no config file. */
const ARIA2_BT_COMMON = [
  "--no-conf=true",
  "--enable-dht=false",
  "--enable-dht6=false",
  "--bt-enable-lpd=false",
  "--enable-peer-exchange=false",
  "--file-allocation=none",
  "--summary-interval=0",
  "--show-console-readout=false",
  "--console-log-level=warn",
  "--disable-ipv6=true",
];

/** A torrent, a mini tracker and 4 aria2c seeders; resolves once all 4 announced as seeders. */
async function startBt(
  procs: Procs,
  work: string,
  src: string,
  size: number,
): Promise<{ torrent: string; tracker: MiniTracker }> {
  const tracker = MiniTracker.start("127.0.0.1", 0, 5);
  const torrent = join(work, "bench.torrent");
  try {
    await makeTorrent(src, torrent, tracker.url);
    for (let i = 1; i <= SEEDS; i++) {
      const dir = join(work, `bt-seed${i}`);
      await linkInto(src, dir);
      procs.spawn(`bt-seed${i}`, [
        "aria2c",
        ...ARIA2_BT_COMMON,
        `--dir=${dir}`,
        `--listen-port=${freePort()}`,
        "--seed-ratio=0.0",
        "--bt-seed-unverified=true",
        "--bt-max-peers=0",
        torrent,
      ]);
    }
    const deadline = Date.now() + 30_000 + (size / (100 * MB)) * 1000;
    while (tracker.seeders().length < SEEDS) {
      if (Date.now() > deadline) {
        throw new Error(
          `only ${tracker.seeders().length} of ${SEEDS} aria2c seeders announced (logs: ${procs.logDir})`,
        );
      }
      await sleep(200);
    }
  } catch (err) {
    await tracker[Symbol.asyncDispose]();
    throw err;
  }
  return { torrent, tracker };
}

/**
 * On the first SIGINT or SIGTERM: says `message`, calls `mark`, runs
 * `cleanup` and exits 130. Returns the function that removes the handlers.
 */
export function onInterrupt(message: string, mark: () => void, cleanup: () => Promise<void>): () => void {
  const onSignal = () => {
    console.error(message);
    mark();
    cleanup().finally(() => Deno.exit(130));
  };
  const signals = ["SIGINT", "SIGTERM"] as const;
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  return () => {
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  };
}

/**
 * A bench's entry point: runs `main`, prints a failure as one line, and
 * exits with its code, or 130 once `interrupted()` says a signal came.
 */
export async function runBench(label: string, main: () => Promise<number>, interrupted: () => boolean): Promise<void> {
  let code = 1;
  try {
    code = await main();
  } catch (err) {
    console.error(`${label} failed: ${(err as Error).message}`);
  }
  Deno.exit(interrupted() ? 130 : code);
}

/** `xs` rotated left by `k`: run k of a bench starts with tool k. */
export function rotate<T>(xs: T[], k: number): T[] {
  const at = xs.length === 0 ? 0 : k % xs.length;
  return [...xs.slice(at), ...xs.slice(0, at)];
}

/** Removes `dir` with its contents and creates it again, empty. */
export async function emptyDir(dir: string): Promise<void> {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.mkdir(dir, { recursive: true });
}

/** Checks the downloaded file, then removes it and flushes, so the next tool starts from the same state. */
export async function verifyAndDrop(procs: Procs, path: string, want: string): Promise<void> {
  const have = await sha256File(path).catch((e) => `unreadable (${(e as Error).message})`);
  await Deno.remove(path).catch(() => {});
  await procs.run("sync", ["sync"], 120_000).catch(() => {});
  if (have !== want) throw new Error(`sha256 of the download is ${have}, expected ${want}`);
}

async function main(): Promise<number> {
  const o = options(Deno.args);
  const work = await Deno.makeTempDir({ prefix: "shoal-bench-", dir: "/tmp" });
  // nginx workers run as nobody: the tree must be readable by others
  await Deno.chmod(work, 0o755);
  const logs = join(work, "logs");
  await Deno.mkdir(logs);
  const procs = new Procs(logs);
  let tracker: MiniTracker | undefined;
  let cleaning: Promise<void> | undefined;
  let failed = true; // until main reaches its end without a failure
  // one clean-up, shared by the signal handler and main's finally (both await it to the end)
  const cleanup = () =>
    cleaning ??= (async () => {
      // every child, and each nginx master (adopted by PID: what nginx_serve.sh stop does)
      await procs.stopAll();
      if (o.outDir) {
        await Deno.remove(join(o.outDir, `shoal-bench-out-${Deno.pid}`), { recursive: true }).catch(() => {});
      }
      await tracker?.[Symbol.asyncDispose]();
      await leaveWork(work, o.keep, failed);
    })();
  const unlisten = onInterrupt("interrupted: stopping every child", () => interrupted = true, cleanup);

  const say = (s: string) => console.log(s);
  const results: ToolResult[] = [
    shoalResult(o.chunkSize),
    { tool: "aria2c-http", what: `-x4 -s4 -k1M, ${SEEDS} nginx`, samples: [], errors: [] },
    { tool: "aria2c-bt", what: `BitTorrent, ${SEEDS} aria2c seeders`, samples: [], errors: [] },
    // aria2c leaves its output in the page cache; Shoal fdatasyncs before it renames the file into place.
    // This row times the same aria2c-http runs up to the same end state: data on disk (fdatasync after exit).
    { tool: "aria2c-http+sync", what: "aria2c-http runs + fdatasync of the output", samples: [], errors: [] },
  ];
  const [shoal, http, bt, httpDurable] = results as [ToolResult, ToolResult, ToolResult, ToolResult];
  try {
    const cmdline = `deno run -A scripts/bench.ts ${Deno.args.join(" ")}`.trim();
    say(machineLines()[0]!);
    say(await hasherLine());
    say(`file: ${formatBytes(o.size)} (${o.size} bytes), runs: ${o.runs}, work dir: ${work}`);
    say(`command: ${cmdline}`);

    const missing = await ensureCommands(procs, {
      aria2c: "aria2",
      nginx: "nginx-light",
      curl: "curl",
      [TIME_BIN]: "time",
    }, say);
    if (missing[TIME_BIN]) say(`warning: ${missing[TIME_BIN]}; peak RSS will not be measured`);
    if (missing.aria2c) http.missing = bt.missing = missing.aria2c;
    if (!http.missing && (missing.nginx || missing.curl)) http.missing = missing.nginx ?? missing.curl;

    const src = join(work, "data", `bench-${o.size}.bin`);
    await Deno.mkdir(dirname(src), { recursive: true });
    let t = performance.now();
    const want = await writeRandomFile(src, o.size);
    await Deno.chmod(src, 0o644);
    say(`generated ${src} in ${((performance.now() - t) / 1000).toFixed(1)} s, sha256 ${want}`);

    t = performance.now();
    let swarm: { tracker: string; id: string } | undefined;
    try {
      const started = await startShoal(procs, work, [{ path: src, size: o.size }], o.chunkSize);
      swarm = { tracker: started.tracker, id: started.ids[0]! };
      say(
        `shoal: tracker ${swarm.tracker}, ${SEEDS} peers list file ${swarm.id.slice(0, 16)}… ` +
          `(ready in ${((performance.now() - t) / 1000).toFixed(1)} s)`,
      );
    } catch (err) {
      shoal.missing = `setup failed: ${(err as Error).message}`;
      say(`shoal: ${shoal.missing}`);
    }
    let urls: string[] = [];
    if (!http.missing) {
      try {
        urls = (await startNginx(procs, work, [src]))[0]!;
        say(`aria2c-http: ${SEEDS} nginx on ${urls.map((u) => new URL(u).host).join(", ")}`);
      } catch (err) {
        http.missing = `setup failed: ${(err as Error).message}`;
        say(`aria2c-http: ${http.missing}`);
      }
    }
    let torrent = "";
    if (!bt.missing) {
      try {
        t = performance.now();
        const b = await startBt(procs, work, src, o.size);
        tracker = b.tracker;
        torrent = b.torrent;
        say(
          `aria2c-bt: tracker ${tracker.url}, ${SEEDS} seeders announced ` +
            `(ready in ${((performance.now() - t) / 1000).toFixed(1)} s)`,
        );
      } catch (err) {
        bt.missing = `setup failed: ${(err as Error).message}`;
        say(`aria2c-bt: ${bt.missing}`);
      }
    }

    const outDir = o.outDir ? join(o.outDir, `shoal-bench-out-${Deno.pid}`) : join(work, "out");
    say(`downloads go to ${outDir}`);
    if (http.missing) httpDurable.missing = http.missing;
    const rssFile = join(work, "rss.txt");
    const m = { timeoutMs: o.timeoutMs, bytes: o.size, rssFile };
    // The tools take turns, and who goes first rotates from run to run: this VM hands freed memory back to
    // the host (free page reporting), so the first writer after a pause pays for fresh pages.
    const shoalTurn = async (run: number) => {
      if (shoal.missing || !swarm) return;
      await emptyDir(outDir);
      const out = join(outDir, basename(src));
      const argv = shoalGetArgv(swarm.tracker, swarm.id, out, o.workers);
      await timedDownload(procs, shoal, run, "shoal-client", argv, m, out, want, shoalOwnMbps);
    };
    const httpTurn = async (run: number) => {
      if (http.missing) return;
      await emptyDir(outDir);
      const argv = aria2HttpArgv(outDir, basename(src), urls);
      const out = join(outDir, basename(src));
      await timedDownload(procs, http, run, "aria2c-http", argv, m, out, want, parseAria2Speed, {
        afterExit: async (sample) => {
          const t0 = performance.now();
          using f = await Deno.open(out, { read: true, write: true });
          await f.syncData();
          const seconds = sample.seconds + (performance.now() - t0) / 1000;
          const durable = { mbps: o.size / MB / seconds, seconds, ...(sample.rssMB ? { rssMB: sample.rssMB } : {}) };
          await step(httpDurable, run, () => Promise.resolve(durable));
        },
      });
    };
    const btTurn = async (run: number) => {
      if (bt.missing) return;
      await emptyDir(outDir);
      const argv = ["aria2c", ...ARIA2_BT_COMMON, `--dir=${outDir}`, `--listen-port=${freePort()}`, "--seed-time=0"];
      argv.push("--bt-max-peers=0", "--allow-overwrite=true", torrent);
      await timedDownload(procs, bt, run, "aria2c-bt", argv, m, join(outDir, basename(src)), want, parseAria2Speed);
    };
    for (let run = 1; run <= o.runs && !interrupted; run++) {
      const order = rotate([shoalTurn, httpTurn, btTurn], run - 1);
      for (const turn of order) if (!interrupted) await turn(run);
    }

    say("");
    say(
      `results: ${formatBytes(o.size)} file, ${o.runs} run(s), nproc ${navigator.hardwareConcurrency}, MB = 10^6 bytes`,
    );
    for (const line of table(results)) say(line);
    for (const r of results) {
      for (const e of r.errors) say(`${r.tool} error: ${e}`);
    }
    const sm = medianMbps(shoal);
    for (const r of [http, httpDurable, bt]) {
      const rm = medianMbps(r);
      if (sm !== undefined && rm !== undefined) say(`shoal / ${r.tool}: ${(sm / rm).toFixed(2)}x`);
    }
    failed = await endReport(say, cmdline, results, o.json, {
      size: o.size,
      runs: o.runs,
      nproc: navigator.hardwareConcurrency,
    });
    return failed ? 1 : 0;
  } finally {
    unlisten();
    await cleanup();
  }
}

/**
 * The end of a bench's report: each tool's command line, then the JSON file
 * when asked for (`facts` first). True when a tool was missing or failed.
 */
export async function endReport(
  say: (s: string) => void,
  cmdline: string,
  results: ToolResult[],
  json: string | undefined,
  facts: Record<string, unknown>,
): Promise<boolean> {
  say(`command: ${cmdline}`);
  for (const r of results) if (r.argv) say(`  ${r.tool}: ${r.argv.join(" ")}`);
  if (json) await Deno.writeTextFile(json, JSON.stringify({ ...facts, command: cmdline, results }, null, 2));
  return results.some((r) => r.missing !== undefined || r.errors.length > 0);
}

/** `client.ts get` as the benchmarks run it: JSON summary, no progress output. */
export function shoalGetArgv(tracker: string, fileId: string, out: string, workers?: number): string[] {
  const argv = [Deno.execPath(), "run", "-A", join(ROOT, "client.ts"), "--tracker", tracker, "get", fileId];
  argv.push("-o", out, "--json", "--quiet", ...(workers ? ["--workers", String(workers)] : []));
  return argv;
}

/** aria2c over HTTP from every URL at once, 1 MiB pieces, quiet. */
export function aria2HttpArgv(outDir: string, name: string, urls: string[]): string[] {
  const argv = ["aria2c", "--no-conf=true", "-x4", "-s4", "-k1M", "--file-allocation=none"];
  argv.push("--summary-interval=0", "--show-console-readout=false", "--console-log-level=warn");
  argv.push("--allow-overwrite=true", `--dir=${outDir}`, `--out=${name}`, ...urls);
  return argv;
}

/** The client's own MB/s from its `--json` summary. */
export function shoalOwnMbps(stdout: string): number {
  return parseClientSummary(stdout).mbPerSecond;
}

/**
 * One timed download: measures `argv`, records the tool's own figure, then
 * checks and removes `out`. Failures are recorded by {@link step}.
 */
export function timedDownload(
  procs: Procs,
  r: ToolResult,
  run: number,
  name: string,
  argv: string[],
  m: Parameters<typeof measure>[3],
  out: string,
  want: string,
  ownMbps: (stdout: string) => number | undefined,
  hooks: { afterExit?: (sample: Sample) => Promise<void> } = {},
): Promise<void> {
  return step(r, run, async () => {
    const x = await measure(procs, name, argv, m);
    r.argv = x.argv;
    const own = ownMbps(x.stdout);
    if (own !== undefined) x.sample.toolMbps = own;
    await hooks.afterExit?.(x.sample);
    await verifyAndDrop(procs, out, want);
    return x.sample;
  });
}

/** Runs one measurement, recording a sample or the error; prints one line. */
export async function step(r: ToolResult, run: number, fn: () => Promise<Sample>): Promise<void> {
  try {
    const s = await fn();
    r.samples.push(s);
    const own = s.toolMbps !== undefined ? ` (own ${s.toolMbps.toFixed(1)})` : "";
    const rss = s.rssMB !== undefined ? `, peak RSS ${s.rssMB.toFixed(0)} MB` : "";
    console.log(`run ${run} ${r.tool}: ${s.mbps.toFixed(1)} MB/s${own} in ${s.seconds.toFixed(2)} s${rss}, sha256 ok`);
  } catch (err) {
    r.errors.push(`run ${run}: ${(err as Error).message}`);
    console.log(`run ${run} ${r.tool}: FAILED: ${(err as Error).message}`);
  }
}

/** Set by SIGINT/SIGTERM: the exit code is then 130 whoever exits first. */
let interrupted = false;

if (import.meta.main) await runBench("bench", main, () => interrupted);
