/**
 * What a running `peer.ts --shared` peer does for its owner besides
 * serving: shares more local files, stops sharing some, and runs downloads
 * in the background that swarm through the peer itself (its chunks are
 * served while they arrive, and the finished file is shared).
 *
 * The interactive shell (shell.ts) and the local control channel
 * (peer_control.ts) drive one PeerSession together, so a download asked for
 * over the socket shows in the shell's `status` and `why`.
 *
 * @module
 */

import { basename, resolve, sep as SEP } from "node:path";
import { settledWithin } from "./async.ts";
import { isSha256Hex } from "./bytes.ts";
import { formatBytes } from "./cli.ts";
import { getFile, type GetOptions, pickFile, type Source } from "./client.ts";
import { PACING, RateLimiter } from "./rate_limit.ts";
import type { DownloadStatus, DownloadSummary } from "./download.ts";
import { describeError, DiskError, ExitCode, NotFoundError, ShoalError, UsageError } from "./errors.ts";
import type { SharedFile } from "./indexer.ts";
import {
  chunkSizeFor,
  DEFAULT_CHUNK_SIZE,
  fileIdOf,
  hashFile,
  isIdPrefix,
  type Manifest,
  nameKey,
} from "./manifest.ts";
import { type CtlDownload, type FileSummary, MAX_TEXT } from "./messages.ts";
import { fileNameProblem } from "./names.ts";
import type { PeerNode } from "./peer.ts";

/** How long {@link PeerSession.close} waits for downloads to save their progress. */
export const STOP_TIMEOUT_MS = 10_000;

/** Where a background download is. */
export type TransferState = CtlDownload["state"];

/** A background download of this session. */
export interface Transfer {
  /** 1, 2, ... in the order they started: `#1` in the shell. */
  readonly number: number;
  readonly fileId: string;
  readonly name: string;
  readonly size: number;
  /** Absolute output path. */
  readonly out: string;
  readonly startedAt: number;
  state: TransferState;
  /** Why it failed or stopped. */
  error: string | null;
  /** Set when done. */
  summary: DownloadSummary | null;
  /** When it ended (Unix ms); null while downloading. */
  endedAt: number | null;
  /** The live status while downloading, the last one seen once it ended; null before the first chunk work. */
  status(): DownloadStatus | null;
}

/** A download ended; for output that is not an answer to a command. */
export type SessionEvent = { kind: "done" | "failed" | "stopped"; transfer: Transfer };

/** Options for {@link PeerSession}. */
export interface SessionOptions {
  /** Where downloads go when no output path is given (default: the current directory). */
  downloadDir?: string;
  /** Chunk size for files shared later (as `--chunk-size`). */
  chunkSize?: number;
  /** Passed to every download (workers, timeouts). */
  download?: Pick<GetOptions, "workers" | "stallMs" | "giveUpMs" | "flushMs" | "pipeline" | "maxPeers">;
  /** Bytes a second all the session's downloads fetch together, at most (default 0: no limit). */
  downloadLimit?: number;
}

interface Running extends Transfer {
  abort: AbortController;
  done: Promise<void>;
}

/** The owner's side of a running peer: shares and background downloads. */
export class PeerSession {
  #transfers: Running[] = [];
  #listeners = new Set<(e: SessionEvent) => void>();
  #closing = false;
  /** One bucket for every download, as a BitTorrent client's global limit; its rate changes with {@link setLimits}. */
  #downloadLimiter: RateLimiter;
  readonly downloadDir: string;

  /** `source` is where files are looked up (the peer's tracker); null for a peer without one. */
  constructor(readonly node: PeerNode, readonly source: Source | null, readonly options: SessionOptions = {}) {
    this.downloadDir = resolve(options.downloadDir ?? ".");
    this.#downloadLimiter = new RateLimiter(options.downloadLimit ?? 0, PACING);
  }

  /** Bytes a second the downloads fetch together and the node sends, at most; 0 is no limit. */
  limits(): { download: number; upload: number } {
    return { download: this.#downloadLimiter.bytesPerSecond, upload: this.node.uploadLimit };
  }

  /** Changes the limits given; downloads in progress follow at once. */
  setLimits(limits: { download?: number; upload?: number }): void {
    if (limits.download !== undefined) this.#downloadLimiter.setRate(limits.download);
    if (limits.upload !== undefined) this.node.setUploadLimit(limits.upload);
  }

  /** Calls `fn` for each download that ends; returns the function that stops this. */
  subscribe(fn: (e: SessionEvent) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Hashes a local file and shares it publicly. */
  async share(path: string): Promise<SharedFile> {
    const f = await localSharedFile(path, this.options.chunkSize ?? DEFAULT_CHUNK_SIZE);
    await this.node.share(f);
    return f;
  }

  /**
   * Stops sharing a file of {@link shared}. By id or id prefix: every copy of
   * that content. By name: the copies shared under that name, and the same
   * content goes on under its other names (`kept`).
   */
  async unshare(file: string): Promise<{ file: FileSummary; stopped: string[]; kept: string[] }> {
    const f = pickFile(this.shared(), file);
    if (!f) throw new NotFoundError(`This peer does not share ${JSON.stringify(file)}`);
    const copies = this.node.copies(f.id);
    const names = (list: { name: string }[]) => [...new Set(list.map((c) => c.name))].sort();
    const byName = f.id !== file.toLowerCase() && nameKey(f.name) === nameKey(file);
    const named = copies.filter((c) => c.name === f.name);
    if (byName && named.length < copies.length) {
      for (const c of named) await this.node.unshareCopy(f.id, c.path);
      return { file: f, stopped: [f.name], kept: names(copies.filter((c) => c.name !== f.name)) };
    }
    await this.node.unshare(f.id);
    return { file: f, stopped: copies.length > 0 ? names(copies) : [f.name], kept: [] };
  }

  /** The complete files this peer shares publicly, by name. */
  shared(): FileSummary[] {
    return this.node.catalog().sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Every download of this session, oldest first. */
  transfers(): Transfer[] {
    return [...this.#transfers];
  }

  /** A download by `#n` or `n`, file id, id prefix or name (the latest of that name). */
  transfer(text: string): Transfer {
    return this.#find(text);
  }

  #find(text: string): Running {
    const n = /^#?(\d+)$/.exec(text);
    if (n && !isSha256Hex(text)) {
      const t = this.#transfers.find((t) => t.number === Number(n[1]));
      if (t) return t;
    }
    const latest = [...this.#transfers].reverse();
    const t = latest.find((t) => t.fileId === text || t.name === text) ??
      (isIdPrefix(text) ? latest.find((t) => t.fileId.startsWith(text.toLowerCase())) : undefined);
    if (!t) {
      const newest = latest.slice(0, 5).map((t) => `#${t.number} ${t.name}`);
      const more = latest.length > newest.length ? ", ..." : "";
      throw new NotFoundError(
        `No download of ${JSON.stringify(text)} in this peer` +
          (newest.length === 0 ? " (it has none)" : `; its downloads: ${newest.join(", ")}${more}`),
      );
    }
    return t;
  }

  /**
   * Starts downloading a file (id or exact name) in the background and
   * returns once it is resolved and the download has begun; errors before
   * that (unknown file, no live peer, output exists) are thrown. `out` is a
   * file path or an existing directory; default: {@link downloadDir}.
   */
  async download(idOrName: string, options: { out?: string; force?: boolean } = {}): Promise<Transfer> {
    if (this.#closing) throw new ShoalError("closing", "This peer is shutting down");
    if (this.source === null) {
      throw new UsageError("This peer has no tracker to find files with (start it with --tracker)");
    }
    const abort = new AbortController();
    // getFile saves into `out` under the file's name when it is a directory.
    const where: Pick<GetOptions, "out" | "outDir"> = options.out === undefined
      ? { outDir: this.downloadDir }
      : { out: resolve(options.out) + (/[\\/]$/.test(options.out) ? SEP : "") }; // "dir/" still means "in dir"
    let live: (() => DownloadStatus) | null = null;
    let last: DownloadStatus | null = null;
    const started = Promise.withResolvers<Running>();
    // A download that ends at once (its file was there already) is told on a later turn, after its caller said it began.
    let begun = false;
    const ended = (e: SessionEvent) => begun ? this.#emit(e) : setTimeout(() => this.#emit(e), 0);
    const run = getFile(this.source, idOrName, {
      ...this.options.download,
      downloadLimit: this.#downloadLimiter,
      ...where,
      force: options.force ?? false,
      peerNode: this.node,
      signal: abort.signal,
      inspect: (status) => live = status,
      onResolved: (fileId: string, manifest: Manifest, out: string) => {
        const path = resolve(out);
        const busy = this.#transfers.find((t) => t.state === "downloading" && t.out === path);
        if (busy) throw new ShoalError("busy", `Already downloading to ${path} (#${busy.number})`, ExitCode.busy);
        const t: Running = {
          number: this.#transfers.length + 1,
          fileId,
          name: manifest.name,
          size: manifest.size,
          out: path,
          startedAt: Date.now(),
          state: "downloading",
          error: null,
          summary: null,
          endedAt: null,
          status: () => live?.() ?? last,
          abort,
          done: run.then(() => {}, () => {}),
        };
        this.#transfers.push(t);
        started.resolve(t);
        setTimeout(() => begun = true, 0); // the caller has said it began by then
      },
    });
    run.then((summary) => {
      const t = this.#transfers.find((t) => t.abort === abort)!;
      last = live?.() ?? null;
      live = null;
      t.state = "done";
      t.summary = summary;
      t.endedAt = Date.now();
      ended({ kind: "done", transfer: t });
    }, (err) => {
      const t = this.#transfers.find((t) => t.abort === abort);
      if (!t) return started.reject(err); // failed before it began: the caller hears it
      last = live?.() ?? last;
      live = null;
      t.state = abort.signal.aborted ? "stopped" : "failed";
      t.endedAt = Date.now();
      t.error = abort.signal.aborted ? "progress saved; download it again to resume" : describeError(err);
      ended({ kind: t.state === "stopped" ? "stopped" : "failed", transfer: t });
    });
    return await started.promise;
  }

  /**
   * Stops one download in progress (by what {@link transfer} takes); its
   * progress is saved, so {@link download} of the same file resumes it.
   * Resolves once it has stopped, or after {@link STOP_TIMEOUT_MS}.
   */
  async stop(text: string): Promise<Transfer> {
    const t = this.#find(text);
    if (t.state !== "downloading") throw new UsageError(`#${t.number} ${t.name} is not downloading (it is ${t.state})`);
    t.abort.abort();
    await boundedWait([t.done]);
    return t;
  }

  /** Stops every download in progress (their progress is saved for a resume) and waits, bounded, for them. */
  async close(): Promise<void> {
    this.#closing = true;
    const running = this.#transfers.filter((t) => t.state === "downloading");
    for (const t of running) t.abort.abort();
    await boundedWait(running.map((t) => t.done));
  }

  #emit(e: SessionEvent): void {
    for (const fn of [...this.#listeners]) fn(e);
  }
}

/** `t` as plain data, at this moment (what CTL_DOWNLOADS carries). */
export function transferInfo(t: Transfer, now = Date.now()): CtlDownload {
  const s = t.status();
  const info: CtlDownload = {
    number: t.number,
    fileId: t.fileId,
    name: t.name,
    size: t.size,
    out: clip(t.out),
    state: t.state,
    doneBytes: t.state === "done" ? t.size : s?.doneBytes ?? 0,
    rate: 0,
    peers: 0,
    elapsedMs: Math.max(0, Math.round(t.summary ? t.summary.seconds * 1000 : (t.endedAt ?? now) - t.startedAt)),
  };
  if (t.summary) info.rate = Math.round(t.summary.seconds > 0 ? t.summary.bytesFetched / t.summary.seconds : 0);
  if (t.state === "downloading" && s) {
    info.rate = Math.round(s.rate);
    info.peers = s.peers.filter((p) => p.ready).length;
  }
  if (t.error !== null) info.error = clip(t.error);
  return info;
}

/** `text` cut to what a control message carries ({@link MAX_TEXT}): a long error must not spoil the whole list. */
function clip(text: string): string {
  return text.length <= MAX_TEXT ? text : `${text.slice(0, MAX_TEXT - 1)}…`;
}

/** How much of a download is there, as `42.0%`. */
export function percentDone(t: Pick<CtlDownload, "size" | "doneBytes">): string {
  return `${(t.size === 0 ? 100 : (100 * t.doneBytes) / t.size).toFixed(1)}%`;
}

/** One line of the shell's `status` and of `client.ts request-status`. */
export function describeTransfer(t: CtlDownload): string {
  const head = `#${t.number}  ${t.name}`;
  const rate = `${formatBytes(t.rate)}/s`;
  switch (t.state) {
    case "done":
      return `${head}  done  ${formatBytes(t.size)} in ${(t.elapsedMs / 1000).toFixed(1)} s (${rate})  ${t.out}`;
    case "downloading":
      return `${head}  downloading  ${percentDone(t)}  ${formatBytes(t.doneBytes)} of ${
        formatBytes(t.size)
      }  ${rate}  ${t.peers} peer(s)`;
    default:
      return `${head}  ${t.state} at ${percentDone(t)}: ${t.error}`;
  }
}

/** Waits for `done` to settle, at most {@link STOP_TIMEOUT_MS}. */
function boundedWait(done: Promise<void>[]): Promise<void> {
  return settledWithin(Promise.all(done), STOP_TIMEOUT_MS);
}

/**
 * Hashes one local file into what a peer shares: a regular file with a safe
 * name. Errors name the path: NotFoundError, UsageError (not a regular
 * file, unusable name), DiskError (unreadable).
 */
export async function localSharedFile(path: string, chunkSize = DEFAULT_CHUNK_SIZE): Promise<SharedFile> {
  const full = resolve(path);
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(full);
  } catch (err) {
    throw new NotFoundError(`Cannot share ${full}: ${describeError(err)}`);
  }
  if (!st.isFile) throw new UsageError(`Cannot share ${full}: not a regular file`);
  const name = basename(full);
  const problem = fileNameProblem(name);
  if (problem) throw new UsageError(`Cannot share ${full}: its name ${problem}`);
  let manifest: Manifest;
  try {
    manifest = await hashFile(full, name, chunkSizeFor(st.size, chunkSize));
  } catch (err) {
    throw new DiskError(`Cannot read ${full}: ${describeError(err)}`, { cause: err });
  }
  return {
    id: fileIdOf(manifest),
    path: full,
    relPath: name,
    manifest,
    size: manifest.size,
    mtimeMs: st.mtime?.getTime() ?? 0,
  };
}
