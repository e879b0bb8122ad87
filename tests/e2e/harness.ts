/**
 * The end-to-end harness: spawns the real entry points (`tracker.ts`,
 * `peer.ts`, `client.ts`) as a user would, watches their output, and
 * cleans up after every test, even a failing one.
 *
 * Rules it keeps, so the suite stays reliable on a loaded 2-core machine:
 *
 * - ports are always 0 (picked by the OS) and read back from the
 *   `... listening on HOST:PORT` line;
 * - no fixed sleeps: every wait is for a line, a process exit or a
 *   condition polled by {@link waitUntil}, each with a deadline;
 * - every child is killed by its PID on cleanup, its stdout and stderr are
 *   read to the end and its status is awaited (the op and resource
 *   sanitizers check this);
 * - children get `NO_COLOR=1`, `RUST_BACKTRACE=0`, and no `SHOAL_*`
 *   variables from the environment that runs the tests.
 *
 * @module
 */

import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (two levels above this file). */
export const ROOT: string = fileURLToPath(new URL("../../", import.meta.url));
/**
 * The build the suite runs by default: the source, or with SHOAL_E2E_BUNDLE
 * set to a directory of `deno task bundle` output, those bundles
 * (`deno task e2e:bundle` runs the whole suite that way).
 */
const BUNDLE_DIR = Deno.env.get("SHOAL_E2E_BUNDLE");
/** The Deno running the tests runs the children too. */
export const DENO: string = Deno.execPath();

/** Default deadline for a process to print its listening line. */
export const START_TIMEOUT_MS = 30_000;
/** Default deadline for a one-shot client command. */
export const RUN_TIMEOUT_MS = 60_000;
/** Default deadline for a process to exit after a kill. */
export const EXIT_TIMEOUT_MS = 15_000;

const KiB = 1024;
/** 1 MiB. */
export const MiB: number = 1024 * KiB;

/** The environment every child gets. */
function childEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (!k.startsWith("SHOAL_")) env[k] = v;
  }
  env.NO_COLOR = "1";
  env.RUST_BACKTRACE = "0";
  return env;
}

/** Resolves after `ms`; only for use inside bounded polling loops. */
function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `fn` until it returns a truthy value (which is returned), or
 * throws after `timeoutMs` naming `what`. `fn` may be async; a throw from
 * it counts as "not yet" and is reported if the deadline passes.
 */
export async function waitUntil<T>(
  fn: () => T | Promise<T>,
  timeoutMs: number,
  what = "a condition",
  intervalMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  while (true) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
      lastError = null;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError === null
        ? ""
        : ` (last error: ${lastError instanceof Error ? lastError.message : lastError})`;
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await pause(intervalMs);
  }
}

/** Which output of a child. */
export type StreamName = "stdout" | "stderr";

/**
 * Which build of the entry points a test runs: the TypeScript source
 * (default), `deno task bundle`'s `.js` files in `dir`, or `deno task
 * compile`'s binaries in `dir`.
 */
export type Entries = { kind: "source" } | { kind: "bundle"; dir: string } | { kind: "compiled"; dir: string };

const DEFAULT_ENTRIES: Entries = BUNDLE_DIR ? { kind: "bundle", dir: resolve(ROOT, BUNDLE_DIR) } : { kind: "source" };

/** The command line that starts `script` ("client.ts", ...) of `entries` with `args`. */
function entryCommand(entries: Entries, script: string, args: string[]): { command: string; args: string[] } {
  const name = script.replace(/\.ts$/, "");
  switch (entries.kind) {
    case "source":
      return { command: DENO, args: ["run", "-A", "--config", `${ROOT}deno.json`, `${ROOT}${script}`, ...args] };
    case "bundle":
      return { command: DENO, args: ["run", "-A", "--no-config", `${entries.dir}/${name}.js`, ...args] };
    case "compiled":
      return { command: `${entries.dir}/${name}`, args };
  }
}

/** A spawned entry point with its output collected line by line. */
export class Proc {
  readonly name: string;
  readonly pid: number;
  readonly args: string[];
  #child: Deno.ChildProcess;
  #text: Record<StreamName, string> = { stdout: "", stderr: "" };
  #listeners = new Set<() => void>();
  #status: Deno.CommandStatus | null = null;
  #finished: Promise<Deno.CommandStatus>;
  /** Writes to the child's stdin, when spawned with `stdin: "piped"`. */
  #stdin: WritableStreamDefaultWriter<Uint8Array> | null = null;

  constructor(
    script: string,
    args: string[],
    cwd: string,
    entries: Entries = DEFAULT_ENTRIES,
    options: SpawnOptions = {},
  ) {
    this.name = script;
    this.args = args;
    const cmd = entryCommand(entries, script, args);
    this.#child = new Deno.Command(cmd.command, {
      args: cmd.args,
      cwd,
      env: { ...childEnv(), ...options.env },
      clearEnv: true,
      stdin: options.stdin ?? "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.pid = this.#child.pid;
    if (options.stdin === "piped") this.#stdin = this.#child.stdin.getWriter();
    const readers = [this.#pump("stdout", this.#child.stdout), this.#pump("stderr", this.#child.stderr)];
    this.#finished = Promise.all([this.#child.status, ...readers]).then(([status]) => {
      this.#status = status;
      this.#notify();
      return status;
    });
  }

  async #pump(which: StreamName, stream: ReadableStream<Uint8Array>): Promise<void> {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      this.#text[which] += text;
      this.#notify();
    }
  }

  #notify(): void {
    for (const l of [...this.#listeners]) l();
  }

  /** Everything printed on stdout so far. */
  get stdout(): string {
    return this.#text.stdout;
  }

  /** Everything printed on stderr so far. */
  get stderr(): string {
    return this.#text.stderr;
  }

  /** The exit status, once the process has exited and its output is read. */
  get status(): Deno.CommandStatus | null {
    return this.#status;
  }

  /** A short description for failure messages. */
  describe(): string {
    return `${this.name} ${
      this.args.join(" ")
    } (pid ${this.pid})\n--- stdout ---\n${this.stdout}\n--- stderr ---\n${this.stderr}`;
  }

  /**
   * Waits for a whole line on `stream` matching `re`; returns its match.
   * Throws if the process exits first or `timeoutMs` passes.
   */
  waitForLine(re: RegExp, timeoutMs = START_TIMEOUT_MS, stream: StreamName = "stdout"): Promise<RegExpExecArray> {
    const find = (): RegExpExecArray | null => {
      const text = this.#text[stream];
      const whole = text.endsWith("\n") || this.#status !== null ? text : text.slice(0, text.lastIndexOf("\n") + 1);
      for (const line of whole.split("\n")) {
        const m = re.exec(line);
        if (m) return m;
      }
      return null;
    };
    const { promise, resolve, reject } = Promise.withResolvers<RegExpExecArray>();
    const check = () => {
      const m = find();
      if (m) return finish(() => resolve(m));
      if (this.#status !== null) {
        finish(() =>
          reject(
            new Error(
              `Process exited (code ${this.#status!.code}) before printing ${re} on ${stream}: ${this.describe()}`,
            ),
          )
        );
      }
    };
    const timer = setTimeout(
      () =>
        finish(() =>
          reject(new Error(`Timed out after ${timeoutMs} ms waiting for ${re} on ${stream}: ${this.describe()}`))
        ),
      timeoutMs,
    );
    const finish = (settle: () => void) => {
      clearTimeout(timer);
      this.#listeners.delete(check);
      settle();
    };
    this.#listeners.add(check);
    check();
    return promise;
  }

  /** Writes `text` to the child's stdin (spawned with `stdin: "piped"`). */
  async write(text: string): Promise<void> {
    if (!this.#stdin) throw new Error(`${this.name} was not spawned with a piped stdin`);
    await this.#stdin.write(new TextEncoder().encode(text));
  }

  /** Closes the child's stdin (end of input); safe to call twice. */
  async closeStdin(): Promise<void> {
    const w = this.#stdin;
    this.#stdin = null;
    await w?.close().catch(() => {}); // the child may be gone already
  }

  /** Sends `signal` to the child by its PID; a no-op once it has exited. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    if (this.#status !== null) return;
    try {
      Deno.kill(this.pid, signal);
    } catch (err) {
      // it exited between the check and the kill
      if (!(err instanceof Deno.errors.NotFound) && !(err instanceof TypeError)) throw err;
    }
  }

  /** Waits for the exit (and the end of its output); throws after `timeoutMs`. */
  async wait(timeoutMs = EXIT_TIMEOUT_MS): Promise<Deno.CommandStatus> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`Timed out after ${timeoutMs} ms waiting for exit: ${this.describe()}`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.#finished, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Kills with SIGKILL and waits for the exit; never throws. */
  async destroy(): Promise<void> {
    this.kill("SIGKILL");
    await this.closeStdin();
    await this.#finished.catch(() => {});
  }
}

/** Options for {@link E2E.spawn}. */
export interface SpawnOptions {
  /** "piped" to drive the child through {@link Proc.write} (e.g. `peer.ts --shell`); default "null". */
  stdin?: "piped" | "null";
  /** Variables set for the child on top of {@link childEnv}'s. */
  env?: Record<string, string>;
}

/** The outcome of a one-shot command. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON. */
  json<T = unknown>(): T;
}

/** A `host:port` a process listens on, split. */
export interface Endpoint {
  host: string;
  port: number;
  /** `host:port`. */
  addr: string;
}

/** Splits `host:port`. */
export function endpoint(addr: string): Endpoint {
  const i = addr.lastIndexOf(":");
  return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)), addr };
}

/** A running tracker or peer. */
export interface Server extends Endpoint {
  proc: Proc;
}

/** Options for {@link E2E.peer}. */
export interface PeerOptions {
  shared: string;
  /** `host:port` of the tracker; none for a direct-mode peer. */
  tracker?: string;
  chunkSize?: string;
  uploadLimit?: string;
  corrupt?: boolean;
}

/** What `client.ts get --json` prints. */
export interface GetSummary {
  path: string;
  bytes: number;
  bytesFetched: number;
  seconds: number;
  mbPerSecond: number;
  alreadyComplete: boolean;
  chunksReused: number;
  chunksFetched: number;
  chunksRefetched: number;
  chunksWrittenDirect: number;
  bytesPerPeer: Record<string, number>;
  peersDropped: { peer: string; reason: string }[];
  chunkBuffers: { made: number; dropped: number };
  chunksHashedInLanes: number;
  hasher: "native" | "lanes" | "node" | null;
}

/** One entry of `files --json` / `search --json`. */
export interface FileEntry {
  id: string;
  name: string;
  size: number;
  chunkSize: number;
  peers: number;
  partial: number;
}

/** One entry of `peers --json`. */
export interface PeerEntry {
  host: string;
  port: number;
  complete: boolean;
}

/**
 * One test's world: its processes and temp dirs, all released by
 * `await using env = new E2E()` whatever happens in the test.
 */
export class E2E implements AsyncDisposable {
  #procs: Proc[] = [];
  readonly entries: Entries;
  #dirs: string[] = [];
  #cwd: string | null = null;

  constructor(entries: Entries = DEFAULT_ENTRIES) {
    this.entries = entries;
  }

  /** A fresh temp dir, removed at cleanup. */
  async tempDir(prefix = "shoal-e2e-"): Promise<string> {
    const dir = await Deno.makeTempDir({ prefix });
    this.#dirs.push(dir);
    return dir;
  }

  /** Children run here (a temp dir), so a stray default output never lands in the repository. */
  async cwd(): Promise<string> {
    this.#cwd ??= await this.tempDir("shoal-e2e-cwd-");
    return this.#cwd;
  }

  /** Spawns `deno run -A <ROOT>/<script> ...args` (or its build); the child is killed at cleanup. */
  async spawn(script: string, args: string[], options: SpawnOptions = {}): Promise<Proc> {
    const p = new Proc(script, args, await this.cwd(), this.entries, options);
    this.#procs.push(p);
    return p;
  }

  /** Runs a command to its end; it is killed after `timeoutMs`. */
  async run(
    script: string,
    args: string[],
    timeoutMs = RUN_TIMEOUT_MS,
    options: SpawnOptions = {},
  ): Promise<RunResult> {
    const p = await this.spawn(script, args, options);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      p.kill("SIGKILL");
    }, timeoutMs);
    let status: Deno.CommandStatus;
    try {
      status = await p.wait(timeoutMs + EXIT_TIMEOUT_MS);
    } finally {
      clearTimeout(timer);
    }
    if (timedOut) throw new Error(`Timed out after ${timeoutMs} ms: ${p.describe()}`);
    const { stdout, stderr } = p;
    return {
      code: status.code,
      stdout,
      stderr,
      json<T>(): T {
        try {
          return JSON.parse(stdout) as T;
        } catch {
          throw new Error(`stdout is not JSON (exit ${status.code}): ${p.describe()}`);
        }
      },
    };
  }

  /** `client.ts <source...> <args...>` to its end. `source` is e.g. `["--tracker", addr]`. */
  client(source: string[], ...args: string[]): Promise<RunResult> {
    return this.run("client.ts", [...source, ...args]);
  }

  /** Like {@link client}, but a non-zero exit throws with the output. */
  async clientOk(source: string[], ...args: string[]): Promise<RunResult> {
    const r = await this.client(source, ...args);
    if (r.code !== 0) {
      throw new Error(`client ${[...source, ...args].join(" ")} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
    }
    return r;
  }

  /** Starts a tracker on a free port (`extra` may name another port, a database, ...). */
  async tracker(heartbeatMs = 200, expiryMs = 1000, extra: string[] = ["--db", ":memory:"]): Promise<Server> {
    const proc = await this.spawn("tracker.ts", [
      "--port",
      "0",
      "--heartbeat-ms",
      String(heartbeatMs),
      "--expiry-ms",
      String(expiryMs),
      ...extra,
    ]);
    const m = await proc.waitForLine(/^tracker listening on (\S+:\d+)$/);
    return { proc, ...endpoint(m[1]!) };
  }

  /** Starts a peer on a free port; with a tracker, waits until it is registered. */
  async peer(o: PeerOptions): Promise<Server> {
    const args = ["--shared", o.shared, "--port", "0", "--cache-dir", await this.tempDir("shoal-e2e-cache-")];
    // Its control socket goes to a state directory of the test, not to the ~/.shoal of whoever runs the tests.
    args.push("--home", await this.tempDir("shoal-e2e-home-"));
    if (o.tracker) args.push("--tracker", o.tracker);
    if (o.chunkSize) args.push("--chunk-size", o.chunkSize);
    if (o.uploadLimit) args.push("--upload-limit", o.uploadLimit);
    if (o.corrupt) args.push("--corrupt");
    const proc = await this.spawn("peer.ts", args);
    const m = await proc.waitForLine(/^peer listening on (\S+:\d+)$/);
    if (o.tracker) await proc.waitForLine(/^registered with tracker as \S+/);
    return { proc, ...endpoint(m[1]!) };
  }

  /** Kills every child (SIGKILL by PID), waits for them, removes the temp dirs. */
  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.#procs.map((p) => p.destroy()));
    for (const d of this.#dirs.reverse()) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
}

// ---------------------------------------------------------------- files

// Random test files and their SHA-256: the benchmarks' own (scripts/bench.ts), which hash as they write.
export { sha256File, writeRandomFile } from "../../scripts/bench.ts";

/** True when `path` exists (file or directory). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Progress recorded in a resume sidecar `<out>.part.json`. */
export interface SidecarProgress {
  /** Chunks marked done. */
  done: number;
  /** Chunks in the file. */
  total: number;
  /** The done bitmap, most significant bit of byte 0 = chunk 0. */
  bits: Uint8Array;
}

/**
 * Reads how many chunks a client's sidecar marks done; null when there is
 * no sidecar (yet) or it cannot be read. Knows only the `done` (base64
 * bitmap) and `chunks` (count) fields of the format.
 */
export async function readSidecarProgress(path: string): Promise<SidecarProgress | null> {
  let o: { done?: unknown; chunks?: unknown };
  try {
    o = JSON.parse(await Deno.readTextFile(path));
  } catch {
    return null;
  }
  if (typeof o.done !== "string" || typeof o.chunks !== "number") return null;
  const bits = Uint8Array.from(atob(o.done), (c) => c.charCodeAt(0));
  let done = 0;
  for (const b of bits) for (let x = b; x; x &= x - 1) done++;
  return { done, total: o.chunks, bits };
}

/** Overwrites the byte ranges of the given chunks of `path` with zeros. */
export async function zeroChunks(path: string, chunkSize: number, indexes: number[]): Promise<void> {
  using f = await Deno.open(path, { read: true, write: true });
  const size = (await f.stat()).size;
  const zeros = new Uint8Array(chunkSize);
  for (const i of indexes) {
    const start = i * chunkSize;
    const len = Math.min(chunkSize, size - start);
    if (len <= 0) continue;
    await f.seek(start, Deno.SeekMode.Start);
    let at = 0;
    while (at < len) at += await f.write(zeros.subarray(at, len));
  }
}

// ---------------------------------------------------------------- output checks

/**
 * Checks that a failed command printed exactly one line, `error: ...`,
 * and nothing that looks like a stack trace. Returns that line.
 */
export function expectOneErrorLine(stderr: string): string {
  const lines = stderr.split("\n").filter((l) => l.trim() !== "");
  const trace = lines.filter((l) => /^\s+at\s/.test(l) || /Stack backtrace|Uncaught|panicked/.test(l));
  if (trace.length > 0) throw new Error(`stderr has a stack trace:\n${stderr}`);
  if (lines.length !== 1 || !lines[0]!.startsWith("error: ")) {
    throw new Error(`stderr is not one "error: ..." line:\n${stderr}`);
  }
  return lines[0]!;
}

/** A port nothing listens on (bound, then released). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

// ---------------------------------------------------------------- raw wire access

/** One frame as it crossed the wire: `<len u32 BE><type u8><payload>`. */
export interface RawFrame {
  type: number;
  payload: Uint8Array;
}

/** Wire type of HELLO. */
export const HELLO_TYPE = 0x01;
/** Wire type of ERROR. */
export const ERROR_TYPE = 0x02;

/** Encodes one frame by hand, independent of lib/. */
export function frame(type: number, payload: Uint8Array | string = new Uint8Array()): Uint8Array {
  const body = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
  const out = new Uint8Array(5 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out[4] = type;
  out.set(body, 5);
  return out;
}

/** A valid HELLO for protocol version 1. */
export function helloFrame(): Uint8Array {
  return frame(HELLO_TYPE, JSON.stringify({ protocol: "shoal", version: 1, agent: "shoal-e2e" }));
}

/** Splits bytes into whole frames; a trailing partial frame is returned as `rest`. */
export function parseFrames(bytes: Uint8Array): { frames: RawFrame[]; rest: number } {
  const frames: RawFrame[] = [];
  let at = 0;
  while (bytes.length - at >= 5) {
    const len = new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0);
    if (bytes.length - at - 5 < len) break;
    frames.push({ type: bytes[at + 4]!, payload: bytes.subarray(at + 5, at + 5 + len) });
    at += 5 + len;
  }
  return { frames, rest: bytes.length - at };
}

/** The `{code, message}` of an ERROR frame. */
export function errorOf(f: RawFrame): { code: string; message: string } {
  return JSON.parse(new TextDecoder().decode(f.payload));
}

/** What a server did with bytes sent on a raw connection. */
export interface RawOutcome {
  /** Everything the server sent before closing (or before the deadline). */
  received: Uint8Array;
  /** The server closed the connection (EOF or reset) before the deadline. */
  closed: boolean;
}

/**
 * Connects to `addr`, writes `parts` in order, optionally half-closes our
 * side, then reads until the server closes or `timeoutMs` passes.
 */
export async function rawExchange(
  addr: Endpoint,
  parts: Uint8Array[],
  options: { closeWrite?: boolean; timeoutMs?: number } = {},
): Promise<RawOutcome> {
  const conn = await Deno.connect({ hostname: addr.host, port: addr.port });
  const chunks: Uint8Array[] = [];
  let closed = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let pending: Promise<number | null> | null = null;
  try {
    try {
      for (const p of parts) {
        let at = 0;
        while (at < p.length) at += await conn.write(p.subarray(at));
      }
      if (options.closeWrite) await conn.closeWrite();
    } catch {
      // the server may close while we still write: that is an answer too
    }
    const deadline = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), options.timeoutMs ?? 5_000);
    });
    const buf = new Uint8Array(64 * KiB);
    while (true) {
      let n: number | null | "timeout";
      pending = conn.read(buf);
      try {
        n = await Promise.race([pending, deadline]);
      } catch {
        pending = null;
        closed = true; // reset by the server
        break;
      }
      if (n === "timeout") break;
      pending = null;
      if (n === null) {
        closed = true;
        break;
      }
      chunks.push(buf.slice(0, n));
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close(); // also ends a read still pending after a timeout
    } catch {
      // already closed
    }
    await pending?.catch(() => null); // let that read finish, for the op sanitizer
  }
  const total = chunks.reduce((s, c) => s + c.length, 0);
  const received = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    received.set(c, at);
    at += c.length;
  }
  return { received, closed };
}
