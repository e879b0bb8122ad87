/**
 * Keeps a peer's shares in step with its shared directory while it runs:
 * files added, changed or removed are announced or withdrawn within
 * seconds, without a restart.
 *
 * How a change reaches the tracker:
 *
 * 1. `Deno.watchFs` (recursive) marks the paths it reports dirty. It
 *    reports raw events, many per write and duplicated, so each event only
 *    pushes the path's next look {@link QUIET_MS} into the future
 *    (debounce).
 * 2. Every {@link RESCAN_INTERVAL_MS}, after the watcher fails or
 *    overflows, and when too many paths are pending, a full walk compares
 *    every file's size and mtime with what is shared and marks the
 *    differences dirty. inotify can lose events (queue overflow, a
 *    directory filled before its watch was added, link targets), so the
 *    walk is the ground truth and the events only make it prompt.
 * 3. Stability rule: a dirty file is hashed only when two looks
 *    {@link QUIET_MS} apart see the same size and mtime, and is announced
 *    only when a third look after hashing still agrees. Anything else
 *    starts the wait again. A file being written is therefore not announced
 *    half-written, unless its writer pauses longer than {@link QUIET_MS}
 *    with nothing to show for it; then the final version replaces it.
 * 4. A changed file's new id is announced before the old one is withdrawn;
 *    a removed file is withdrawn. An id stays shared while any path still
 *    holds that content (ids ignore names, so copies share one).
 *
 * What is shareable (regular files, safe names, links that stay inside the
 * directory) is decided by {@link inspectPath}, the indexer's own rules.
 *
 * @module
 */

import { basename, dirname, join, relative, resolve, sep as SEPARATOR } from "node:path";
import { delay } from "./async.ts";
import { formatBytes } from "./cli.ts";
import { describeError } from "./errors.ts";
import {
  hashShareable,
  inspectPath,
  isInside,
  saveIndexCache,
  type ShareableFile,
  type SharedFile,
  walkShared,
} from "./indexer.ts";
import { DEFAULT_CHUNK_SIZE } from "./manifest.ts";
import { printable } from "./names.ts";
import type { PeerNode } from "./peer.ts";

/** Debounce and stability interval: a path must be quiet this long before it is looked at, and stable across it. */
export const QUIET_MS = 500;
/** Full rescan period: the safety net for events inotify lost. */
export const RESCAN_INTERVAL_MS = 30_000;
/** Most paths waiting for a look; beyond it events are dropped and a full rescan takes over. */
export const MAX_PENDING_PATHS = 10_000;
/** Wait before watching again after `Deno.watchFs` failed or ended. */
export const WATCH_RETRY_MS = 5_000;
/** The hash cache is rewritten at most this often while files change (and once more on close). */
export const CACHE_SAVE_INTERVAL_MS = 10_000;

/** What the watcher did, for output; the library prints nothing. */
export type WatchEvent =
  | { kind: "added"; file: SharedFile }
  | { kind: "changed"; file: SharedFile; oldId: string }
  | { kind: "removed"; relPath: string; id: string }
  | { kind: "skipped"; relPath: string; reason: string }
  | { kind: "error"; error: unknown };

/** Options for {@link watchShared}. */
export interface WatchOptions {
  /** Chunk size for newly hashed files. */
  chunkSize?: number;
  /** Hash cache kept up to date with what is shared (the indexer's format); none when omitted. */
  cachePath?: string;
  /** Default {@link QUIET_MS}. */
  quietMs?: number;
  /** Default {@link RESCAN_INTERVAL_MS}. */
  rescanIntervalMs?: number;
  /** Default {@link MAX_PENDING_PATHS}. */
  maxPending?: number;
  /** Use `Deno.watchFs` (default true); false leaves the periodic rescan alone. */
  fsEvents?: boolean;
  onEvent?: (e: WatchEvent) => void;
  /** Closes the watcher when it aborts. */
  signal?: AbortSignal;
}

/** The part of a peer the watcher drives. */
export type ShareTarget = Pick<PeerNode, "share" | "unshareCopy">;

/** Size and mtime: what tells a file changed without reading it. */
interface Stamp {
  size: number;
  mtimeMs: number;
}

/** A path waiting for a look. */
interface Pending {
  /** When to look (ms since the epoch). */
  due: number;
  /** What the previous look saw, if it saw a file. */
  last: Stamp | null;
}

function sameStamp(a: Stamp, b: Stamp): boolean {
  return a.size === b.size && a.mtimeMs === b.mtimeMs;
}

/** True when `relPath` is `prefix` or below it ("" is the whole directory). */
function isUnder(prefix: string, relPath: string): boolean {
  return prefix === "" || relPath === prefix || relPath.startsWith(prefix + SEPARATOR);
}

/**
 * Watches `dir` and keeps `node`'s shares in step with it. `files` is what
 * is already shared from it (from {@link indexDirectory}); the first
 * rescan, right away, catches changes made since they were indexed.
 *
 * @example
 * ```ts
 * const files = await indexDirectory("./files");
 * await using node = PeerNode.start(files);
 * await using watcher = watchShared(node, "./files", files, { onEvent: (e) => console.log(e.kind) });
 * ```
 */
export function watchShared(
  node: ShareTarget,
  dir: string,
  files: readonly SharedFile[],
  options: WatchOptions = {},
): SharedFolderWatcher {
  return new SharedFolderWatcher(node, dir, files, options);
}

/** A running watch of a shared directory; see {@link watchShared}. */
export class SharedFolderWatcher implements AsyncDisposable {
  #node: ShareTarget;
  #dir: string;
  #chunkSize: number;
  #quietMs: number;
  #rescanIntervalMs: number;
  #maxPending: number;
  #opts: WatchOptions;
  /** The real path of the shared directory, once resolved. */
  #root = "";
  /** What we share, by path relative to the root. */
  #shared = new Map<string, SharedFile>();
  /** Paths waiting for a look, by path relative to the root (as reported: not yet resolved). */
  #pending = new Map<string, Pending>();
  /** Skips reported already, so a rescan does not repeat them. */
  #skipped = new Map<string, string>();
  #lastError = "";
  #rescanAt = 0;
  /** A rescan was cut short by the pending cap: run another once the queue drains. */
  #overflowed = false;
  #cacheDirty = false;
  #cacheSavedAt = 0;
  #abort = new AbortController();
  #fsWatcher: Deno.FsWatcher | null = null;
  #wake: (() => void) | null = null;
  #rescanWaiters: (() => void)[] = [];
  #running: Promise<void>;
  #watching: Promise<void> = Promise.resolve();
  #closing: Promise<void> | null = null;

  constructor(node: ShareTarget, dir: string, files: readonly SharedFile[], options: WatchOptions) {
    this.#node = node;
    this.#dir = dir;
    this.#opts = options;
    this.#chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.#quietMs = options.quietMs ?? QUIET_MS;
    this.#rescanIntervalMs = options.rescanIntervalMs ?? RESCAN_INTERVAL_MS;
    this.#maxPending = options.maxPending ?? MAX_PENDING_PATHS;
    for (const f of files) this.#shared.set(f.relPath, f);
    this.#running = this.#run();
    if (options.signal?.aborted) this.close();
    options.signal?.addEventListener("abort", () => this.close(), { once: true, signal: this.#abort.signal });
  }

  /** Files shared from the directory now, by path relative to it. */
  get shared(): ReadonlyMap<string, SharedFile> {
    return this.#shared;
  }

  /**
   * Asks for a full rescan now instead of at the next period (e.g. from a
   * command). Resolves once the walk is done and has queued what changed
   * (the looks and hashes follow), or when the watcher closes.
   */
  rescan(): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    if (this.#closed) resolve();
    else this.#rescanWaiters.push(resolve);
    this.#rescanSoon();
    return promise;
  }

  #rescanSoon(): void {
    this.#rescanAt = 0;
    this.#wake?.();
  }

  /** Stops watching; waits for a hash or announce in progress to end. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#abort.abort();
      this.#wake?.();
      this.#closeFsWatcher();
      await Promise.allSettled([this.#running, this.#watching]);
      for (const resolve of this.#rescanWaiters.splice(0)) resolve();
      if (this.#cacheDirty) await this.#saveCache();
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  get #closed(): boolean {
    return this.#abort.signal.aborted;
  }

  async #run(): Promise<void> {
    try {
      this.#root = await Deno.realPath(resolve(this.#dir));
    } catch (error) {
      this.#report(error); // nothing to watch: the watcher is done (rescan() answers at once)
      this.#abort.abort();
      for (const resolve of this.#rescanWaiters.splice(0)) resolve();
      return;
    }
    // Watch first, then walk (#rescanAt starts at 0): a change made during the walk is seen by one or the other.
    if (this.#opts.fsEvents !== false) this.#watching = this.#watch();
    let first = true;
    while (!this.#closed) {
      if (Date.now() >= this.#rescanAt || (this.#overflowed && this.#pending.size === 0)) {
        this.#overflowed = false;
        this.#rescanAt = Date.now() + this.#rescanIntervalMs; // before the walk: a request during it is kept
        const waiters = this.#rescanWaiters.splice(0);
        // The first walk keeps quiet about skipped files: the indexer has just reported them.
        await this.#safely(() => this.#rescanTree(this.#root, !first));
        first = false;
        for (const resolve of waiters) resolve();
      }
      for (const [relPath, p] of this.#pending) {
        if (this.#closed) return;
        if (p.due > Date.now()) continue;
        this.#pending.delete(relPath);
        await this.#safely(() => this.#look(relPath, p.last));
      }
      if (this.#cacheDirty && Date.now() - this.#cacheSavedAt >= CACHE_SAVE_INTERVAL_MS) {
        await this.#safely(() => this.#saveCache());
      }
      await this.#sleep(this.#nextWakeAt() - Date.now());
    }
  }

  /** When the loop has work next: the earliest look, rescan or cache save. */
  #nextWakeAt(): number {
    let at = this.#overflowed && this.#pending.size === 0 ? Date.now() : this.#rescanAt;
    for (const p of this.#pending.values()) at = Math.min(at, p.due);
    if (this.#cacheDirty) at = Math.min(at, this.#cacheSavedAt + CACHE_SAVE_INTERVAL_MS);
    return at;
  }

  /** Sleeps up to `ms`; {@link #wake} or close ends it early. */
  #sleep(ms: number): Promise<void> {
    if (ms <= 0 || this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(), ms);
      const done = () => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
      this.#wake = done;
    });
  }

  async #safely(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (error) {
      if (!this.#closed) this.#report(error);
    }
  }

  /** Reports an error, once while it repeats (a watch retried every few seconds must not flood the log). */
  #report(error: unknown): void {
    const text = String(error);
    if (text === this.#lastError) return;
    this.#lastError = text;
    this.#opts.onEvent?.({ kind: "error", error });
  }

  // ------------------------------------------------------------ events

  async #watch(): Promise<void> {
    while (!this.#closed) {
      try {
        this.#fsWatcher = Deno.watchFs(this.#root, { recursive: true });
        for await (const e of this.#fsWatcher) {
          if (e.flag === "rescan") this.#rescanSoon(); // the kernel queue overflowed: events were lost
          for (const path of e.paths) this.#dirty(path);
        }
      } catch (error) {
        if (!this.#closed) this.#report(error);
      } finally {
        this.#closeFsWatcher();
      }
      if (this.#closed) return;
      this.#rescanSoon(); // nothing watched for a while: events may be lost
      await delay(WATCH_RETRY_MS, this.#abort.signal).catch(() => {});
    }
  }

  #closeFsWatcher(): void {
    try {
      this.#fsWatcher?.close();
    } catch {
      // already closed
    }
    this.#fsWatcher = null;
  }

  /** An event for `path`: look at it once it has been quiet for a while. */
  #dirty(path: string): void {
    if (!isInside(this.#root, path)) return;
    const relPath = relative(this.#root, path);
    if (relPath === "") return this.#rescanSoon(); // the directory itself (moved, attributes): walk it all
    this.#schedule(relPath, null);
  }

  /**
   * Puts `relPath` (back) in the queue, due one quiet interval from now.
   * `seen` is what a look saw just now, kept to compare with the next one;
   * null keeps what an earlier look saw.
   */
  #schedule(relPath: string, seen: Stamp | null): void {
    const p = this.#pending.get(relPath);
    const due = Date.now() + this.#quietMs;
    if (p) {
      p.due = due;
      if (seen) p.last = seen;
      return;
    }
    if (this.#pending.size >= this.#maxPending) {
      this.#overflowed = true; // dropped: the rescan after the queue drains finds it
      return;
    }
    this.#pending.set(relPath, { due, last: seen });
    this.#wake?.();
  }

  // ------------------------------------------------------------ looks

  /** Looks at one path: withdraws, walks, waits for stability, or hashes and announces. */
  async #look(reported: string, last: Stamp | null): Promise<void> {
    const full = await this.#resolveParent(join(this.#root, reported));
    if (full === null) return;
    const relPath = relative(this.#root, full);
    const info = await inspectPath(this.#root, full);
    switch (info.kind) {
      case "missing":
        this.#skipped.delete(relPath);
        if (this.#shared.has(relPath)) return await this.#withdraw(relPath);
        // perhaps a directory, with everything that was below it
        for (const key of [...this.#shared.keys()]) if (isUnder(relPath, key)) await this.#withdraw(key);
        for (const key of [...this.#skipped.keys()]) if (isUnder(relPath, key)) this.#skipped.delete(key);
        return;
      case "other":
        return await this.#withdraw(relPath);
      case "skipped":
        this.#skip(info.relPath, info.reason, true);
        return await this.#withdraw(relPath);
      case "dir":
        // new or moved in: what is below it may have had no events of its own
        return await this.#rescanTree(info.real, true);
      case "file":
        return await this.#lookAtFile(info, last);
    }
  }

  /** `full` with its parent directory resolved (events may name a path through a link); null when outside. */
  async #resolveParent(full: string): Promise<string | null> {
    const parent = dirname(full);
    let real: string;
    try {
      real = await Deno.realPath(parent);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return full; // the parent went too: withdraw by name
      throw err;
    }
    return real === parent ? full : isInside(this.#root, real) ? join(real, basename(full)) : null;
  }

  async #lookAtFile(f: ShareableFile, last: Stamp | null): Promise<void> {
    const current = this.#shared.get(f.relPath);
    if (current && sameStamp(current, f)) return; // unchanged (a duplicate event, a read)
    if (!last || !sameStamp(last, f)) return this.#schedule(f.relPath, f); // not stable yet: look again later
    let file: SharedFile;
    try {
      file = await hashShareable(f, this.#chunkSize, () => {
        if (this.#closed) throw new Error("closed"); // a big file must not hold up close
      });
    } catch (err) {
      if (this.#closed) return;
      const now = await inspectPath(this.#root, join(this.#root, f.relPath));
      if (now.kind === "file" && sameStamp(now, f)) {
        return this.#skip(f.relPath, `cannot be read: ${describeError(err)}`, true); // retried at the next rescan
      }
      return this.#schedule(f.relPath, null); // it changed or went while hashed: start over
    }
    const after = await inspectPath(this.#root, join(this.#root, f.relPath));
    if (after.kind !== "file" || !sameStamp(after, f) || file.size !== f.size) {
      return this.#schedule(f.relPath, after.kind === "file" ? after : null); // written to while hashed
    }
    await this.#announce(file);
  }

  /**
   * Walks `dirReal` (the root or a directory below it) and queues every
   * file whose size or mtime differs from what is shared, and every shared
   * file no longer there. Skips are reported only when `report` (the first
   * walk repeats what the indexer said).
   */
  async #rescanTree(dirReal: string, report: boolean): Promise<void> {
    const prefix = relative(this.#root, dirReal);
    const seen = new Set<string>();
    const onSkip = (relPath: string, reason: string) => {
      seen.add(relPath);
      this.#skip(relPath, reason, report);
    };
    for await (const f of walkShared(this.#root, dirReal, onSkip)) {
      if (this.#closed) return;
      seen.add(f.relPath);
      const current = this.#shared.get(f.relPath);
      if ((current && sameStamp(current, f)) || this.#pending.has(f.relPath)) continue;
      if (this.#pending.size >= this.#maxPending) {
        this.#overflowed = true; // the rest on the next pass, once these are done
        return; // and withdraw nothing: the walk was not complete
      }
      this.#schedule(f.relPath, f); // this stat is the first look: the file is hashed if the next one agrees
    }
    for (const key of this.#shared.keys()) if (isUnder(prefix, key) && !seen.has(key)) this.#schedule(key, null);
    for (const key of [...this.#skipped.keys()]) if (isUnder(prefix, key) && !seen.has(key)) this.#skipped.delete(key);
  }

  /** Records a skip and reports it when `report` and it is news (a rescan must not repeat it every period). */
  #skip(relPath: string, reason: string, report: boolean): void {
    if (this.#skipped.get(relPath) === reason) return;
    this.#skipped.set(relPath, reason);
    if (report) this.#opts.onEvent?.({ kind: "skipped", relPath, reason });
  }

  // ------------------------------------------------------------ shares

  async #announce(file: SharedFile): Promise<void> {
    const old = this.#shared.get(file.relPath);
    this.#shared.set(file.relPath, file);
    this.#skipped.delete(file.relPath);
    this.#cacheDirty = true;
    await this.#node.share(file); // the new id first: the content is never unlisted in between
    if (!old) return this.#opts.onEvent?.({ kind: "added", file });
    if (old.id === file.id) return; // touched, same content: nothing to tell
    await this.#release(old);
    this.#opts.onEvent?.({ kind: "changed", file, oldId: old.id });
  }

  async #withdraw(relPath: string): Promise<void> {
    const old = this.#shared.get(relPath);
    if (!old) return;
    this.#shared.delete(relPath);
    this.#cacheDirty = true;
    await this.#release(old);
    this.#opts.onEvent?.({ kind: "removed", relPath, id: old.id });
  }

  /** After a path stopped holding `old`: the peer serves its content from a copy still there, or stops. */
  async #release(old: SharedFile): Promise<void> {
    await this.#node.unshareCopy(old.id, old.path);
  }

  async #saveCache(): Promise<void> {
    this.#cacheDirty = false;
    this.#cacheSavedAt = Date.now();
    if (this.#opts.cachePath) await saveIndexCache(this.#opts.cachePath, this.#shared.values());
  }
}

/** One line for a person, e.g. `shared docs/a.pdf (1.20 MiB)` or `withdrew docs/a.pdf`. */
export function describeWatchEvent(e: WatchEvent): string {
  switch (e.kind) {
    case "added":
      return `shared ${printable(e.file.relPath)} (${formatBytes(e.file.size)})`;
    case "changed":
      return `updated ${printable(e.file.relPath)} (${formatBytes(e.file.size)})`;
    case "removed":
      return `withdrew ${printable(e.relPath)}`;
    case "skipped":
      return `skipped ${printable(e.relPath)}: ${e.reason}`;
    case "error":
      return `watching the shared directory: ${describeError(e.error)}`;
  }
}
