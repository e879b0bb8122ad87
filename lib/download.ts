/**
 * The download coordinator. It owns the schedule and the resume sidecar;
 * a pool of fetch workers owns the peer connections, the hashing and the
 * writes. The path of one chunk:
 *
 *   scheduler.next(peer) -> worker "request" -> peer PIECE -> worker checks
 *   SHA-256, writes at offset -> "done" -> scheduler.completed -> sidecar
 *   (after fdatasync) -> when every chunk is done: rename .part -> out.
 *
 * @module
 */

import { Bitfield } from "./bitfield.ts";
import {
  AccountError,
  DiskError,
  DownloadBusyError,
  ExitCode,
  IncompleteDownloadError,
  OutputExistsError,
  RemoteError,
  ShoalError,
  UsageError,
} from "./errors.ts";
import { chunkDigests, chunkLength, fileMatches, type Manifest } from "./manifest.ts";
import type { PeerNode } from "./peer.ts";
import { DEFAULT_PIPELINE, Scheduler } from "./scheduler.ts";
import { defaultHasher, type HasherKind } from "./chunk_hasher.ts";
import { defaultLibraryPath } from "./sha256_native.ts";
import { compactHeap, Compactor } from "./heap.ts";
import { nextDepth, RateMeter } from "./rate_meter.ts";
import { PACING, RateLimiter } from "./rate_limit.ts";
import { fetchWorkerUrl } from "./launch.ts";
import { ForeignSidecarError, readSidecar, SidecarError, type SidecarFile, SidecarWriter } from "./sidecar.ts";
import { type FromWorker, RECEIVING_MS, type ToWorker } from "./worker_messages.ts";
import { type PoolStats, sumPoolStats } from "./buffer_pool.ts";
import { newWriteLock } from "./write_queue.ts";
import { freeBytes } from "./file_io.ts";
import { formatBytes } from "./cli.ts";
import { type SourceAddress, Sources } from "./sources.ts";
import { basename, dirname, resolve } from "node:path";
import { utf8Encoder } from "./bytes.ts";
import { settledWithin } from "./async.ts";

/** A peer that sent nothing for this long while owing us chunks is dropped. */
export const DEFAULT_STALL_MS = 15_000;
/**
 * A peer that has not answered a connection (its BITFIELD) this long after
 * its worker dialed is dropped as "no answer". Apart from the stall time, as
 * BitTorrent clients keep a handshake timeout apart from a request timeout.
 */
export const DEFAULT_ANSWER_MS = 15_000;
/**
 * A fetch worker that has not taken up a connection this long after it was
 * asked (it never finished loading, say) fails the download: the wait
 * before a worker dials is its own, not the peer's (see answerMs).
 */
export const DEFAULT_WORKER_START_MS = 30_000;
/** How long an ending download waits for its tracker calls to stop once told to (they close their connections). */
const CALLS_WAIT_MS = 1_000;
/** With missing chunks no live peer has, give up after this long. */
export const DEFAULT_GIVE_UP_MS = 10_000;
/** The sidecar is rewritten at most this often. */
export const DEFAULT_FLUSH_MS = 300;
/**
 * A dropped peer (not one that sent bad data) is tried again after this
 * long, doubling with each drop in a row up to 2^RETRY_MAX_DOUBLINGS times
 * (about a minute); a chunk it delivers starts the count again.
 */
const RETRY_BASE_MS = 1_000;
const RETRY_MAX_DOUBLINGS = 6;
/** Peers are looked up again at most this often when sources run short. */
const REDISCOVER_MS = 2_000;
/**
 * Below the connection cap, peers are looked up again this often anyway, as
 * a BitTorrent client announces again on the tracker's interval: sources
 * that came since (a new seeder, a peer restarted on another port) join in.
 */
export const REFRESH_MS = 30_000;
/**
 * After a peer was dropped, the next look-up comes this soon instead: a
 * peer that restarts registers again at once, maybe on another port, and
 * the download should not crawl on with fewer sources for half a minute.
 */
export const REFRESH_AFTER_DROP_MS = 5_000;
/**
 * Connections a download holds at most, as BitTorrent clients cap them per
 * torrent (each holds up to a chunk in flight). Sources past the cap wait
 * their turn: a connected peer with none of the missing chunks gives its
 * slot to one of them, and so, every DEFAULT_TURNOVER_MS, does the slowest.
 */
export const DEFAULT_MAX_PEERS = 50;
/**
 * At the cap, with sources waiting, the slowest peer that has been ready
 * this long gives its slot to one of them, once each such period. Without
 * it the first sources to come would keep their slots for the whole
 * download, however slow (libtorrent's peer turnover does the same).
 */
export const DEFAULT_TURNOVER_MS = 30_000;
export { MAX_KNOWN_PEERS } from "./sources.ts";
/**
 * A REJECTed chunk is not asked of that peer again for this long; then it
 * is, up to REJECT_RETRIES times. Some refusals pass (an expired grant
 * while a fresh one is on its way, a read error), and with a single
 * source a permanent mark would end the download.
 */
const REJECT_RETRY_MS = 1_000;
const REJECT_RETRIES = 3;

/** What happens during a download, for progress output. */
export type DownloadEvent =
  /** `rechecked`: every chunk of the `.part` was checked, as no usable sidecar said which were done. */
  | { kind: "resumed"; reused: number; total: number; discarded: number; reusedBytes: number; rechecked: boolean }
  | { kind: "restart"; reason: string }
  /** The `.part` is read back whole (or the chunks the sidecar marks, from a `.part` of the wrong size); `reason` says why. */
  | { kind: "recheck"; reason: string }
  /** The output exists with the file's size: its chunks are being checked against the manifest. */
  | { kind: "checking"; path: string }
  | { kind: "progress"; doneBytes: number; totalBytes: number; peers: number }
  /** `retryInMs`: when the peer will be tried again; absent for a peer dropped for good (bad data). */
  | { kind: "peer-dropped"; peer: string; reason: string; retryInMs?: number }
  | { kind: "bad-chunk"; peer: string; index: number };

/** Most chunk indexes listed in a {@link DownloadStatus}. */
const STATUS_MAX_LISTED = 1_000;

/** A live view of a download in progress, for `status` and `why` in the peer shell. */
export interface DownloadStatus {
  fileId: string;
  name: string;
  totalChunks: number;
  doneChunks: number;
  totalBytes: number;
  doneBytes: number;
  /** Bytes per second: the sum of the connected peers' smoothed rates. */
  rate: number;
  /** Missing chunks (at most {@link STATUS_MAX_LISTED} listed). */
  missing: number[];
  /** Missing chunks no connected peer has (at most {@link STATUS_MAX_LISTED} listed). */
  unavailable: number[];
  /** Connected peers: how much of what we miss each has, what it owes us, its rate. */
  peers: { peer: string; ready: boolean; inflight: number; rate: number; bytes: number; hasMissing: number }[];
  /** Peers dropped so far and why (the last error of each). */
  dropped: { peer: string; reason: string }[];
  /** Sources waiting for one of the `maxPeers` slots: never tried, or due again (see lib/sources.ts). */
  waiting: number;
  maxPeers: number;
}

/** Options for {@link download}. */
export interface DownloadOptions {
  fileId: string;
  manifest: Manifest;
  out: string;
  force?: boolean;
  workers?: number;
  /** Write chunks of 1 MiB and up around the page cache where the system allows (O_DIRECT, direct_io.ts). Default: true. */
  directIo?: boolean;
  /** How to hash chunks (chunk_hasher.ts). Default: as the CPU and `SHOAL_SHA256` say. */
  hasher?: HasherKind;
  /** Requests outstanding to a peer before its throughput is measured; then it follows the rate. */
  pipeline?: number;
  /**
   * Finds sources; called at the start (unless `initialPeers` are given) and again when sources run short.
   * `signal` aborts when the download ends: a look-up still waiting on the tracker then closes its connection.
   */
  discover: (signal: AbortSignal) => Promise<SourceAddress[]>;
  /** Sources the caller just looked up: the download starts with them instead of asking again. */
  initialPeers?: SourceAddress[];
  /** Connections to hold at most (default {@link DEFAULT_MAX_PEERS}). */
  maxPeers?: number;
  /**
   * Bytes a second to fetch at most, over all peers (default: no limit). The requests are paced, not the reads.
   * A number is this download's own bucket; a {@link RateLimiter} may be shared by several downloads (a peer's).
   */
  downloadLimit?: number | RateLimiter;
  /** How often the slowest peer gives its slot to a waiting source (default {@link DEFAULT_TURNOVER_MS}). */
  turnoverMs?: number;
  /** Below the cap, how often sources are looked up again (default {@link REFRESH_MS}). */
  refreshMs?: number;
  /** The same after a peer was dropped (default {@link REFRESH_AFTER_DROP_MS}). */
  refreshAfterDropMs?: number;
  /** A peer that owes chunks and sends nothing this long is dropped (default {@link DEFAULT_STALL_MS}). */
  stallMs?: number;
  /** Default {@link DEFAULT_ANSWER_MS}: timed from when the connection's worker dials, not from when it was asked. */
  answerMs?: number;
  /** Default {@link DEFAULT_WORKER_START_MS}. */
  workerStartMs?: number;
  giveUpMs?: number;
  flushMs?: number;
  /** While downloading, serve the chunks we have through this peer. */
  peerNode?: PeerNode;
  /**
   * Once done, go on sharing the finished file through `peerNode` (the
   * default). False stops serving it instead: a `get` about to exit would
   * otherwise announce the whole manifest to the tracker only to unregister.
   */
  seed?: boolean;
  /**
   * For a group file: gets a fresh grant from the tracker. Called before
   * the first connection and again at half of each grant's lifetime; when
   * it throws an AccountError (access lost), the download stops. `signal`
   * aborts when the download ends, as for `discover`.
   */
  authorize?: (signal: AbortSignal) => Promise<{ grant: string; expiresAt: number }>;
  onEvent?: (e: DownloadEvent) => void;
  /** The fetch workers' module (default: fetch_worker.ts); tests give a scripted stand-in. */
  workerUrl?: string;
  /** Receives, once the download starts, a function that returns its current {@link DownloadStatus}. */
  inspect?: (status: () => DownloadStatus) => void;
  signal?: AbortSignal;
}

/** The outcome of a finished download. */
export interface DownloadSummary {
  path: string;
  /** The file's size. */
  bytes: number;
  /** What this run fetched from peers (a resume reuses the rest). */
  bytesFetched: number;
  seconds: number;
  /** `bytesFetched` over `seconds`, in 10^6 bytes a second. */
  mbPerSecond: number;
  /** The output was there already, every chunk checked: nothing was fetched or written. */
  alreadyComplete: boolean;
  chunksReused: number;
  chunksFetched: number;
  chunksRefetched: number;
  /** Chunks written around the page cache (O_DIRECT, see direct_io.ts); the others went through it. */
  chunksWrittenDirect: number;
  bytesPerPeer: Record<string, number>;
  peersDropped: { peer: string; reason: string }[];
  /** The fetch workers' chunk buffers: how many were made, and how many let go for V8 to collect (ideally none). */
  chunkBuffers: PoolStats;
  /** Chunks whose SHA-256 was checked several at a time (chunk_hasher.ts); the others one at a time. */
  chunksHashedInLanes: number;
  /** How chunks were hashed (chunk_hasher.ts); null when none was fetched. */
  hasher: HasherKind | null;
}

/** What a download that failed had done: a summary as at the end, and how many chunks it still missed. */
export interface FailedDownloadSummary extends DownloadSummary {
  chunksMissing: number;
}

/** The summaries of failed downloads, by the error each failed with (see {@link failureSummary}). */
const failures = new WeakMap<object, FailedDownloadSummary>();

/**
 * What the download that threw `err` had done when it failed, for `get
 * --json`: the peers dropped and why matter most when it fails. Undefined
 * for an error thrown before any chunk could be fetched.
 */
export function failureSummary(err: unknown): FailedDownloadSummary | undefined {
  return typeof err === "object" && err !== null ? failures.get(err) : undefined;
}

interface PeerInfo {
  worker: Worker;
  /** This connection's number in the worker messages (a retried peer gets a new one). */
  link: number;
  lastActivity: number;
  /** Its worker has taken the connection up: from then on its silence is the peer's (or the network's). */
  dialed: boolean;
  ready: boolean;
  /** When it became ready; 0 before. */
  readyAt: number;
  /** Chunk bytes received from this peer, smoothed: sizes its request queue. */
  meter: RateMeter;
  /** Requests to keep outstanding to it (see nextDepth). */
  depth: number;
  /** This download's first connection to the peer: one the download waits to see before giving up. */
  first: boolean;
}

interface RetryInfo {
  failures: number;
  retryAt: number;
  banned: boolean;
}

/** Downloads a file from its peers into `out`; resumes from `<out>.part.json` when present. */
export async function download(opts: DownloadOptions): Promise<DownloadSummary> {
  const started = performance.now();
  const { manifest, fileId } = opts;
  const hasher = opts.hasher ?? defaultHasher(); // before anything is made: a bad setting stops here
  const partPath = `${opts.out}.part`;
  const sidecarPath = `${opts.out}.part.json`;
  const n = manifest.chunks.length;
  const already = await existingOutput(opts, started);
  if (already) return already;

  // Held until this function returns, past the rename: a second download to the same output is refused meanwhile.
  checkNameRoom(opts.out);
  /** Whether this run makes the `.part`: if it ends with no chunk saved, there is nothing to keep, so nothing is left. */
  const freshPart = !(await exists(partPath));
  using part = await claimPart(partPath);
  const resumed = await openPart(opts, part, partPath, sidecarPath);
  if (n === 0) {
    await finish(part, partPath, opts.out, opts.force ?? false);
    await shareDone(opts); // an empty file is seeded like any other
    return fetchedNothing(started, opts, false);
  }

  const workerCount = Math.max(1, Math.min(opts.workers ?? navigator.hardwareConcurrency ?? 2, n));
  const workers: Worker[] = [];
  const pending = Promise.withResolvers<void>();
  let failed: unknown = null;
  const fail = (err: unknown) => {
    if (failed === null) failed = err;
    pending.reject(err);
  };
  pending.promise.catch(() => {});
  /** What each worker reports, but a fatal error (handled the same way throughout). */
  const handlers = new Map<Worker, (m: Exclude<FromWorker, { ev: "fatal" }>) => void>();
  /** Workers that died of an error: nothing left to ask them to close. */
  const dead = new Set<Worker>();
  const writeLock = newWriteLock();
  const digests = chunkDigests(manifest);
  const nativeLibrary = hasher === "native" ? defaultLibraryPath() : null;
  for (let i = 0; i < workerCount; i++) {
    const w = new Worker(opts.workerUrl ?? fetchWorkerUrl(), { type: "module" });
    // A fatal report ends the download whatever stage it is at: a worker that cannot open the .part says so before
    // the download listens for chunks.
    w.onmessage = ({ data: m }: MessageEvent<FromWorker>) =>
      m.ev === "fatal" ? fail(new DiskError(m.message)) : handlers.get(w)?.(m);
    w.onerror = (e) => {
      e.preventDefault();
      dead.add(w);
      fail(new ShoalError("worker", `A fetch worker failed: ${e.message}`));
    };
    w.onmessageerror = () => fail(new ShoalError("worker", "A fetch worker sent a message that could not be read"));
    const init: ToWorker = {
      op: "init",
      fileId,
      size: manifest.size,
      chunkSize: manifest.chunkSize,
      digests,
      partPath,
      directIo: opts.directIo ?? true,
      writeLock,
      receivingMs: Math.min(RECEIVING_MS, (opts.stallMs ?? DEFAULT_STALL_MS) / 4),
      hasher,
      ...(nativeLibrary ? { nativeLibrary } : {}),
    };
    w.postMessage(init);
    workers.push(w);
  }
  const send = (w: Worker, m: ToWorker) => w.postMessage(m);
  /** The start-up compaction (lib/heap.ts), once the first connections are asked for. */
  let compacted = Promise.resolve();
  const compactor = new Compactor();
  /** Whether the workers were told the last chunks are asked for. */
  let ending = false;

  const timers: ReturnType<typeof setInterval>[] = [];
  /** The download's calls to the tracker (look-ups, grants): cancelled as it ends, or one could outlive it. */
  const calls = new AbortController();
  const asking = new Set<Promise<unknown>>();
  const ask = <T>(call: (signal: AbortSignal) => Promise<T>): Promise<T> => {
    const p = call(calls.signal);
    asking.add(p);
    const settled = () => void asking.delete(p);
    p.then(settled, settled);
    return p;
  };
  let stopWatching: (() => void) | undefined;
  let workersClosed = false;
  /** The counts for the summary, once there are any. */
  let counts:
    | (() => Omit<
      DownloadSummary,
      "seconds" | "mbPerSecond" | "alreadyComplete" | "chunkBuffers" | "chunksHashedInLanes"
    >)
    | null = null;
  try {
    // Resume: re-check the chunks the sidecar marks done, in parallel across the workers.
    const done = new Bitfield(n);
    let reused = 0, reusedBytes = 0;
    if (resumed) {
      const marked = [...Array(n).keys()].filter((i) => resumed.marked.has(i));
      const results = await Promise.race([
        Promise.all(workers.map((w, k) => {
          const { promise, resolve } = Promise.withResolvers<{ good: number[]; bad: number[] }>();
          handlers.set(w, (m) => void (m.ev === "verified" && resolve(m)));
          send(w, { op: "verify", indexes: marked.filter((_, j) => j % workers.length === k) });
          return promise;
        })),
        pending.promise.then(() => []),
      ]);
      let discarded = 0;
      for (const r of results) {
        for (const i of r.good) done.set(i);
        discarded += r.bad.length;
      }
      reused = done.count;
      for (let i = 0; i < n; i++) if (done.has(i)) reusedBytes += chunkLength(manifest, i);
      opts.onEvent?.({ kind: "resumed", reused, total: n, discarded, reusedBytes, rechecked: resumed.rechecked });
    }

    const sched = new Scheduler(n, done);
    const pipeline = opts.pipeline ?? DEFAULT_PIPELINE;
    const stallMs = opts.stallMs ?? DEFAULT_STALL_MS;
    const answerMs = opts.answerMs ?? DEFAULT_ANSWER_MS;
    const workerStartMs = opts.workerStartMs ?? DEFAULT_WORKER_START_MS;
    const giveUpMs = opts.giveUpMs ?? DEFAULT_GIVE_UP_MS;
    const maxPeers = Math.max(1, opts.maxPeers ?? DEFAULT_MAX_PEERS);
    const turnoverMs = opts.turnoverMs ?? DEFAULT_TURNOVER_MS;
    const refreshMs = opts.refreshMs ?? REFRESH_MS;
    const refreshAfterDropMs = opts.refreshAfterDropMs ?? REFRESH_AFTER_DROP_MS;
    const peers = new Map<string, PeerInfo>();
    const retry = new Map<string, RetryInfo>();
    const bytesPerPeer: Record<string, number> = {};
    const dropped: { peer: string; reason: string }[] = [];
    let fetched = 0, refetched = 0, writtenDirect = 0, doneBytes = reusedBytes;
    let dirty = false;
    counts = () => ({
      hasher,
      path: opts.out,
      bytes: manifest.size,
      bytesFetched: doneBytes - reusedBytes,
      chunksReused: reused,
      chunksFetched: fetched,
      chunksRefetched: refetched,
      chunksWrittenDirect: writtenDirect,
      bytesPerPeer,
      peersDropped: dropped,
    });
    let nextWorker = 0;
    let nextLink = 0;
    /** Every source heard of, and whose turn it is to connect (a dropped one once its backoff has passed). */
    const sources = new Sources();
    /** Whose each open link is. */
    const linkPeer = new Map<number, string>();
    let lastDiscover = 0;
    let discovering = false;
    /**
     * Whether a peer was dropped since the last look-up, or another downloader said INTERESTED to our node (it is
     * about to be a partial source): the next look-up comes after REFRESH_AFTER_DROP_MS, not refreshMs.
     */
    let refreshSoon = false;
    stopWatching = opts.peerNode?.onInterest(fileId, () => void (refreshSoon = true));
    let lastTurnover = Date.now();
    let starvedSince: number | null = null;
    const badChunks = new Set<number>();
    /** REJECTs per "peer index" */
    const rejected = new Map<string, number>();
    /** The last reason each peer gave for refusing a chunk, for the message that gives up. */
    const refusals = new Map<string, string>();
    await checkRoom(partPath, manifest);

    await opts.peerNode?.sharePartial(fileId, partPath, manifest, new Bitfield(n, done.bytes));

    const limiter = typeof opts.downloadLimit === "number"
      ? (opts.downloadLimit > 0 ? new RateLimiter(opts.downloadLimit, PACING) : null)
      : opts.downloadLimit ?? null;
    /** Chunks to ask `peer` for now, up to its queue depth (and the download limit); marked requested. */
    const picks = (peer: string, p: PeerInfo): number[] => {
      const out: number[] = [];
      while (sched.inflight(peer) < p.depth) {
        if (limiter && !limiter.ready) break; // the tick fills again
        const index = sched.next(peer);
        if (index === null) break;
        limiter?.spend(chunkLength(manifest, index));
        // A peer that owed nothing was waiting on us (on the download limit, say): its stall clock starts now.
        if (sched.inflight(peer) === 1) p.lastActivity = Date.now();
        out.push(index);
      }
      return out;
    };
    const fill = (peer: string) => {
      const p = peers.get(peer);
      if (!p?.ready) return;
      for (const index of picks(peer, p)) send(p.worker, { op: "request", link: p.link, index });
    };
    const fillOne = (_p: PeerInfo, peer: string) => fill(peer);
    const fillAll = () => peers.forEach(fillOne); // forEach: no iterator per completed chunk
    /**
     * Closes the connection to `peer`; its chunks in flight go to others. It
     * goes to the back of the line (`turnedOut`: see Sources.left).
     */
    const disconnect = (peer: string, turnedOut = false): boolean => {
      const p = peers.get(peer);
      if (!p) return false;
      peers.delete(peer);
      sched.removePeer(peer);
      send(p.worker, { op: "drop", link: p.link });
      sources.left(peer, turnedOut);
      return true;
    };
    const dropPeer = (peer: string, reason: string, ban = false) => {
      if (!disconnect(peer)) return;
      const r = retry.get(peer) ?? { failures: 0, retryAt: 0, banned: false };
      r.failures++;
      const backoff = RETRY_BASE_MS * 2 ** Math.min(r.failures - 1, RETRY_MAX_DOUBLINGS);
      r.retryAt = Date.now() + backoff;
      r.banned ||= ban;
      retry.set(peer, r);
      dropped.push({ peer, reason });
      refreshSoon = true;
      opts.onEvent?.({ kind: "peer-dropped", peer, reason, ...r.banned ? {} : { retryInMs: backoff } });
      fillAll();
    };
    /**
     * The peers dropped and the peers that refused chunks, with why, for the
     * message that gives up: "no live peer" alone misled when the only source
     * was still up but banned for bad data, or refused what it had changed.
     */
    const droppedNote = (): string => {
      const list = (what: string, reasons: Map<string, string>, note: (peer: string) => string) => {
        if (reasons.size === 0) return "";
        const named = [...reasons].slice(0, 3).map(([peer, reason]) => `${peer} (${reason}${note(peer)})`);
        return ` ${what}: ${named.join(", ")}${reasons.size > 3 ? ` and ${reasons.size - 3} more` : ""}.`;
      };
      const banned = (peer: string) => retry.get(peer)?.banned ? "; not asked again in this download" : "";
      // A peer that refused chunks (a file changed on its disk) is connected and live, yet has none to give.
      return list("Dropped", new Map(dropped.map((d) => [d.peer, d.reason])), banned) +
        list("Refused", refusals, () => "");
    };
    const connect = (peer: string, a: SourceAddress, now: number) => {
      const worker = workers[nextWorker++ % workers.length]!;
      const link = nextLink++;
      linkPeer.set(link, peer);
      const p: PeerInfo = {
        worker,
        link,
        lastActivity: now,
        dialed: false,
        ready: false,
        readyAt: 0,
        meter: new RateMeter(),
        depth: pipeline,
        first: sources.untried(peer),
      };
      peers.set(peer, p);
      sources.connected(peer);
      // A source the look-up named complete is asked for its first chunks with the HELLO, a round trip before its
      // BITFIELD would allow; should it lack one after all, it refuses it and the chunk goes elsewhere. Only on a first
      // connection: one that came back after a drop counts as holding chunks only once it says so, or a starved
      // download would wait on each attempt as on a new source.
      const assumed = a.complete === true && p.first;
      if (assumed) sched.addPeer(peer, Bitfield.full(n));
      send(worker, { op: "connect", link, host: a.host, port: a.port, early: assumed ? picks(peer, p) : [] });
    };
    const readyPeers = () => {
      let ready = 0;
      for (const p of peers.values()) if (p.ready) ready++;
      return ready;
    };
    /** Whether a source not connected now may be: not banned, its backoff (if any) passed. */
    const mayConnect = (now: number) => (peer: string) => {
      const r = retry.get(peer);
      return !r?.banned && !(r && r.retryAt > now);
    };
    /** Fills the free connection slots, in the order of Sources. */
    const connectMore = () => {
      const now = Date.now();
      for (const [peer, a] of sources.next(maxPeers - peers.size, mayConnect(now))) connect(peer, a, now);
    };
    const learn = (addrs: Iterable<SourceAddress>) => {
      sources.learn(addrs);
      connectMore();
    };
    /** Sources waiting for a turn: never tried, or due again. */
    const waiting = (now: number) => sources.waiting(mayConnect(now));
    /**
     * At the cap, with sources waiting for a turn: ready peers that have
     * none of the missing chunks (and owe none) give up their slots to them.
     * Not a fault: they are not backed off, only put at the back of the
     * line. A peer that has missing chunks keeps its slot; once they are
     * fetched, it has none. So each source gets its turn while the download
     * goes on; and while it starves, each look-up gives the sources the
     * tracker names again another turn (a partial source may have gained
     * chunks since).
     */
    const rotate = (now: number) => {
      let turns = waiting(now);
      if (turns === 0 || peers.size < maxPeers) return;
      for (const [peer, p] of peers) {
        if (turns === 0) break;
        if (!p.ready || sched.inflight(peer) > 0 || sched.wants(peer)) continue;
        disconnect(peer);
        turns--;
      }
    };
    /**
     * At the cap, with sources waiting, once every `turnoverMs`: the slowest
     * peer ready for that long gives its slot to one of them, so a source
     * that came late can prove faster than one that came first. Its chunks
     * in flight go to others. Like `rotate`, not a fault: it only goes to
     * the back of the line. A peer that alone had some missing chunk may
     * go too: should the download starve, it is due again (the tracker may
     * not name it again).
     */
    const turnover = (now: number) => {
      if (now - lastTurnover < turnoverMs || peers.size < maxPeers || waiting(now) === 0) return;
      lastTurnover = now;
      let slowest: string | null = null, rate = Infinity;
      for (const [peer, p] of peers) {
        if (!p.ready || now - p.readyAt < turnoverMs || p.meter.rate >= rate) continue;
        slowest = peer;
        rate = p.meter.rate;
      }
      if (slowest === null) return;
      disconnect(slowest, sched.wants(slowest));
      fillAll();
    };
    const discover = async () => {
      if (discovering) return;
      discovering = true;
      lastDiscover = Date.now();
      refreshSoon = false;
      try {
        learn(await ask(opts.discover));
      } catch {
        // the tracker may be briefly away; we try again later
      } finally {
        discovering = false;
      }
    };

    const onMessage = (m: Exclude<FromWorker, { ev: "fatal" }>) => {
      // Once the download has failed, the sidecar's last save is its record: a chunk counted after it would make the
      // summary claim more than a resume reuses.
      if (m.ev === "verified" || m.ev === "closed" || failed !== null) return;
      const peer = linkPeer.get(m.link) ?? "";
      if (m.ev === "gone") linkPeer.delete(m.link); // a link's last message
      const p = peers.get(peer);
      if (p?.link !== m.link) return; // from a connection we already dropped
      // An answer, not news: a peer sending HAVEs while it owes chunks is still stalled. Bytes of a chunk still on its
      // way ("receiving") are an answer: a peer slower than a chunk per stallMs was dropped before any chunk came.
      if (m.ev !== "have") p.lastActivity = Date.now();
      p.dialed = true; // whatever it says of the link, the worker has taken it up
      switch (m.ev) {
        case "dialing":
        case "receiving":
          break;
        case "ready":
          p.ready = true;
          p.readyAt = Date.now();
          sched.setHas(peer, new Bitfield(n, m.bits)); // the chunks asked for with the HELLO stay asked
          fill(peer);
          break;
        case "have":
          sched.peerGained(peer, m.index);
          fill(peer);
          break;
        case "done": {
          if (sched.done.has(m.index)) break; // an endgame duplicate
          for (const other of sched.completed(m.index, peer)) {
            const o = peers.get(other);
            if (o) send(o.worker, { op: "cancel", link: o.link, index: m.index });
          }
          fetched++;
          if (badChunks.has(m.index)) refetched++;
          if (m.direct) writtenDirect++;
          doneBytes += m.bytes;
          bytesPerPeer[peer] = (bytesPerPeer[peer] ?? 0) + m.bytes;
          p.meter.add(m.bytes);
          const r = retry.get(peer);
          if (r) r.failures = 0; // it serves again: a later drop backs off from the start
          dirty = true;
          opts.peerNode?.gained(fileId, m.index, m.bytes, partPath);
          if (sched.complete) return pending.resolve();
          fillAll();
          if (!ending && sched.endgame) {
            ending = true;
            compactor.stop();
            for (const w of workers) send(w, { op: "ending" });
          }
          compactor.chunk();
          break;
        }
        case "bad":
          badChunks.add(m.index);
          sched.failed(m.index, peer);
          opts.onEvent?.({ kind: "bad-chunk", peer, index: m.index });
          dropPeer(peer, `sent chunk ${m.index} with a wrong SHA-256`, true);
          break;
        case "reject": {
          sched.failed(m.index, peer, true);
          if (m.reason !== "not connected") refusals.set(peer, m.reason);
          const key = `${peer} ${m.index}`;
          const count = (rejected.get(key) ?? 0) + 1;
          rejected.set(key, count);
          if (count <= REJECT_RETRIES) {
            const t = setTimeout(() => {
              timers.splice(timers.indexOf(t), 1);
              if (!peers.get(peer)?.ready || sched.done.has(m.index)) return;
              sched.peerGained(peer, m.index);
              fill(peer);
            }, REJECT_RETRY_MS);
            timers.push(t);
          }
          fill(peer);
          fillAll();
          break;
        }
        case "gone":
          dropPeer(peer, m.reason);
          break;
      }
    };
    for (const w of workers) handlers.set(w, onMessage);
    if (sched.complete) pending.resolve();
    opts.inspect?.(() => {
      const missing = sched.done.missing();
      return {
        fileId,
        name: manifest.name,
        totalChunks: n,
        doneChunks: sched.done.count,
        totalBytes: manifest.size,
        doneBytes,
        rate: [...peers.values()].reduce((sum, p) => sum + p.meter.rate, 0),
        missing: missing.slice(0, STATUS_MAX_LISTED),
        unavailable: sched.unavailable().slice(0, STATUS_MAX_LISTED),
        peers: [...peers].map(([peer, p]) => ({
          peer,
          ready: p.ready,
          inflight: sched.inflight(peer),
          rate: p.meter.rate,
          bytes: bytesPerPeer[peer] ?? 0,
          hasMissing: missing.filter((i) => sched.peerHas(peer, i)).length,
        })),
        dropped: [...new Map(dropped.map((d) => [d.peer, d])).values()],
        waiting: waiting(Date.now()),
        maxPeers,
      };
    });

    // Flush: fdatasync the data, then replace the sidecar. Never overlapping.
    let flushing: Promise<void> = Promise.resolve();
    const sidecar = new SidecarWriter(sidecarPath, sidecarFileOf(opts));
    /** Chunks the sidecar on disk marks done (what a resume would reuse). */
    let saved = reused;
    const flush = () => {
      if (!dirty) return flushing;
      dirty = false;
      const snapshot = new Bitfield(n, sched.done.bytes);
      flushing = flushing.then(async () => {
        await part.syncData();
        await sidecar.write(snapshot);
        saved = snapshot.count;
      }).catch((err) => fail(new DiskError(`Cannot save progress: ${(err as Error).message}`, { cause: err })));
      return flushing;
    };
    timers.push(setInterval(flush, opts.flushMs ?? DEFAULT_FLUSH_MS));
    timers.push(setInterval(() => {
      const now = Date.now();
      for (const [peer, p] of peers) {
        if (!p.ready) continue;
        p.meter.sample();
        const before = p.depth;
        p.depth = nextDepth(before, p.meter, manifest.chunkSize, pipeline);
        if (p.depth > before || limiter) fill(peer);
      }
      for (const [peer, p] of peers) {
        const quiet = now - p.lastActivity;
        if (!p.dialed) {
          // A worker still loading on a busy machine (seconds, when the host takes most of the CPU) is no fault of
          // the peer's; one that never takes the connection up is ours, and ends the download.
          if (quiet > workerStartMs) {
            fail(new ShoalError("worker", `A fetch worker did not start within ${workerStartMs / 1000} s`));
          }
        } else if (!p.ready && quiet > answerMs) {
          dropPeer(peer, "no answer");
        } else if (p.ready && quiet > stallMs && sched.inflight(peer) > 0) {
          dropPeer(peer, "stalled");
        }
      }
      rotate(now);
      turnover(now);
      connectMore(); // the slots rotate and turnover freed, and dropped peers whose backoff has passed
      // Those still connecting are not shown. A newcomer (a first connection) is one the download waits to see before
      // giving up.
      let newcomers = 0;
      for (const p of peers.values()) if (!p.ready && p.first) newcomers++;
      opts.onEvent?.({ kind: "progress", doneBytes, totalBytes: manifest.size, peers: readyPeers() });
      const missing = sched.unavailable();
      const unavailable = missing.length > 0;
      // Peers connected again are not waited for: one that keeps failing, or a look-up naming the same sources again,
      // would keep the download from ever giving up. Sources not tried yet are: each gets a slot (rotate) first.
      const connecting = newcomers > 0 || sources.anyUntried;
      const sinceDiscover = now - lastDiscover;
      if ((unavailable || peers.size === 0) && !connecting && sinceDiscover > REDISCOVER_MS) discover();
      else if (
        peers.size < maxPeers && sinceDiscover > (refreshSoon ? refreshAfterDropMs : refreshMs)
      ) discover();
      // Starved: no connected peer has any chunk still missing. Until then, whatever they have is fetched first,
      // so the resume after giving up has only the chunks no one had left to fetch.
      if (unavailable && missing.length === n - sched.done.count && !connecting) {
        if (starvedSince === null) sources.starving();
        starvedSince ??= now;
      } else {
        starvedSince = null;
      }
      if (starvedSince !== null && now - starvedSince > giveUpMs) {
        fail(
          new IncompleteDownloadError(
            `No live peer has ${missing.length} missing chunk(s): ${listIndexes(missing)}.${droppedNote()} ` +
              (sched.done.count === 0
                ? "No chunk was fetched; run the same command again once a peer has the file."
                : `${sched.done.count} of ${n} chunks are kept in ${partPath}; run the same command again to resume.`),
            missing,
          ),
        );
      }
    }, 250));
    const onAbort = () => fail(new ShoalError("interrupted", "Download interrupted; progress saved for a resume", 130));
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    if (opts.signal?.aborted) onAbort();

    if (opts.authorize) {
      let current = { ...await ask(opts.authorize), at: Date.now() };
      for (const w of workers) send(w, { op: "grant", grant: current.grant });
      let refreshing = false;
      timers.push(setInterval(async () => {
        const halfLife = (current.expiresAt - current.at) / 2;
        if (refreshing || Date.now() - current.at < halfLife) return;
        refreshing = true;
        try {
          current = { ...await ask(opts.authorize!), at: Date.now() };
          for (const w of workers) send(w, { op: "grant", grant: current.grant });
        } catch (err) {
          // Access lost: stop now. Anything else (tracker briefly away): try again on the next tick.
          if (err instanceof AccountError || (err instanceof RemoteError && err.exitCode !== 1)) fail(err);
        } finally {
          refreshing = false;
        }
      }, 200));
    }
    if (opts.initialPeers) {
      lastDiscover = Date.now();
      learn(opts.initialPeers);
    } else {
      await discover();
    }
    // Start-up garbage is dead now. Collected while the workers load and the peers answer, it holds up no connection:
    // collected before they were asked for, it held the first ones up by tens of milliseconds on two cores.
    compacted = compactHeap();
    try {
      await pending.promise;
    } finally {
      opts.signal?.removeEventListener("abort", onAbort);
      for (const t of timers) clearTimeout(t);
      dirty = true;
      await flush();
      const nothingKept = failed !== null && saved === 0 && freshPart;
      if (nothingKept) await Deno.remove(partPath).then(() => Deno.remove(sidecarPath)).catch(() => {});
      if (failed instanceof ShoalError && failed.code === "interrupted") {
        failed = new ShoalError(
          "interrupted",
          nothingKept
            ? "Download interrupted before any chunk came; nothing is kept"
            : `Download interrupted; ${saved} of ${n} chunks are saved in ${sidecarPath}: run the same command again ` +
              "to resume",
          130,
        );
      } else if (failed instanceof DiskError) {
        // A write failed mid-download (a full disk, say): what was verified before it stays for a resume.
        // "Disk full:" is how describeError words a full disk.
        const when = failed.message.includes("Disk full:") ? "once there is room" : "once that is fixed";
        failed = new DiskError(
          nothingKept
            ? `${failed.message}. No chunk was saved; run the same command again ${when}`
            : `${failed.message}. ${saved} of ${n} chunks are saved in ${sidecarPath}: run the same command again ` +
              `${when} to resume`,
          { cause: failed },
        );
      }
    }
    // The last frame: the 250 ms tick saw 98% at best.
    opts.onEvent?.({ kind: "progress", doneBytes, totalBytes: manifest.size, peers: readyPeers() });
    await part.syncData();
    await finish(part, partPath, opts.out, opts.force ?? false);
    await Deno.remove(sidecarPath).catch(() => {});
    await shareDone(opts);
    const closed = await closeWorkers(workers, dead);
    workersClosed = true;
    return summary(started, { ...counts(), ...closed });
  } catch (err) {
    const thrown = failed !== null && err !== failed ? failed : err;
    if (counts && typeof thrown === "object" && thrown !== null) {
      const closed = await closeWorkers(workers, dead);
      workersClosed = true;
      const done = summary(started, { ...counts(), ...closed });
      // Each chunk is reused or fetched once (an endgame duplicate is not counted): the rest are missing.
      failures.set(thrown, { ...done, chunksMissing: n - done.chunksReused - done.chunksFetched });
    }
    throw thrown;
  } finally {
    for (const t of timers) clearTimeout(t);
    calls.abort();
    await settledWithin(Promise.allSettled(asking), CALLS_WAIT_MS);
    stopWatching?.();
    await compacted;
    await compactor.idle();
    if (!workersClosed) await closeWorkers(workers, dead);
    if (opts.peerNode && !(await exists(opts.out))) await withdraw(opts.peerNode, fileId, partPath);
  }
}

/** What the sidecar records of the file, to check a resume against. */
function sidecarFileOf(opts: DownloadOptions): SidecarFile {
  return { fileId: opts.fileId, size: opts.manifest.size, chunkSize: opts.manifest.chunkSize };
}

/**
 * Opens (creating) the `.part` file and takes its exclusive lock, so that
 * two downloads to the same output (two terminals, a retry while the first
 * still runs) cannot both write it: the second would restart it under the
 * first, which would then finish a file with holes that looks complete.
 * The lock goes with the process, so a killed download leaves none behind.
 */
async function claimPart(partPath: string): Promise<Deno.FsFile> {
  // Opening follows links: a stray link named like the .part would have its target cut to size and overwritten.
  if ((await Deno.lstat(partPath).catch(() => null))?.isSymlink) {
    throw new DiskError(`${partPath} is a symbolic link; move it away (a download writes only a file of its own)`);
  }
  let part: Deno.FsFile;
  try {
    part = await Deno.open(partPath, { read: true, write: true, create: true });
  } catch (err) {
    throw new DiskError(`Cannot create ${partPath}: ${(err as Error).message}`, { cause: err });
  }
  let locked: boolean;
  try {
    locked = await part.tryLock(true);
  } catch {
    locked = true; // a filesystem without locks: go on unguarded, as before locks were taken
  }
  if (!locked) {
    part.close();
    throw new DownloadBusyError(partPath);
  }
  return part;
}

/** The longest file name most filesystems take, in bytes (NAME_MAX). */
const NAME_MAX = 255;

/**
 * Refuses an output whose name leaves no room for its `.part.json.tmp`
 * beside it: a name of 246 bytes is valid, but its progress could not be
 * saved, and the error would come from deep inside, after a `.part` was made.
 */
function checkNameRoom(out: string): void {
  const bytes = utf8Encoder.encode(basename(`${out}.part.json.tmp`)).length;
  if (bytes > NAME_MAX) {
    throw new UsageError(
      `The output's name is too long to keep its progress beside it (${basename(out).slice(0, 24)}…: ` +
        `${bytes - ".part.json.tmp".length} bytes, at most ${NAME_MAX - ".part.json.tmp".length}); choose a shorter -o`,
    );
  }
}

/** Which chunks of a `.part` to check before a resume, and whether that is all of them. */
interface ResumeFrom {
  marked: Bitfield;
  rechecked: boolean;
}

/**
 * Checks the locked `.part` against the sidecar; returns the chunks to check
 * for a resume, or starts the `.part` afresh. Chunks on disk are never
 * thrown away for want of a record: a `.part` of the file's size with a
 * damaged sidecar, another file's, or none (a kill before the first save)
 * is checked whole, as BitTorrent clients recheck; a `.part` cut short or
 * grown is set to the file's size and the sidecar's chunks checked. A
 * `.part` with no sidecar at all and another size is no download of ours
 * (a user's `notes.part`), and one whose intact sidecar records chunks of
 * another file is that download's progress: either is kept unless `force`.
 */
async function openPart(
  opts: DownloadOptions,
  part: Deno.FsFile,
  partPath: string,
  sidecarPath: string,
): Promise<ResumeFrom | null> {
  const { manifest } = opts;
  const n = manifest.chunks.length;
  const st = await part.stat();
  const written = (st.blocks ?? 1) > 0; // a sparse .part with no block written holds nothing to check
  let state = null, unusable: string | null = null;
  try {
    state = await readSidecar(sidecarPath, sidecarFileOf(opts));
  } catch (err) {
    if (!(err instanceof SidecarError)) {
      throw new DiskError(`Cannot read ${sidecarPath}: ${(err as Error).message}`, { cause: err });
    }
    if (err instanceof ForeignSidecarError && err.state.done.count > 0 && written && !opts.force) {
      // Another download's verified chunks: worth more than a stranger's notes.part, and as easily lost.
      const other = err.state, id = other.fileId.slice(0, 16);
      throw new ShoalError(
        "exists",
        `${partPath} holds another download's progress: ${other.done.count} of ${other.done.size} chunks of file ` +
          `${id}… (see ${sidecarPath}). To finish that one, run get ${id} -o ${opts.out}; to download this file ` +
          `there instead, use --force, or choose another -o`,
        ExitCode.exists,
      );
    }
    unusable = `ignoring ${sidecarPath}: ${err.message}`;
  }
  let from: ResumeFrom | null = null;
  if (state) {
    from = { marked: state.done, rechecked: false };
    if (st.size !== manifest.size) {
      opts.onEvent?.({
        kind: "recheck",
        reason: `${partPath} is ${st.size} bytes, not ${manifest.size}: checking the chunks ${sidecarPath} marks done`,
      });
    }
  } else if (st.size === manifest.size && written && n > 0) {
    from = { marked: Bitfield.full(n), rechecked: true };
    opts.onEvent?.({
      kind: "recheck",
      reason: `${unusable ?? `no ${sidecarPath}`}; checking every chunk of ${partPath}`,
    });
  } else if (st.size > 0 && st.size !== manifest.size && unusable === null && !opts.force) {
    throw new ShoalError(
      "exists",
      `${partPath} is in the way: it is not a download of this file (${st.size} bytes, not ${manifest.size}, and no ` +
        `${sidecarPath}); move it away, or use --force to overwrite it`,
      ExitCode.exists,
    );
  } else if (unusable !== null || (st.size > 0 && st.size !== manifest.size)) {
    opts.onEvent?.({ kind: "restart", reason: unusable ?? `${partPath} is not a download of this file` });
  }
  try {
    // Cut to the file's size (a shorter .part is extended with holes): chunks past the end go, the rest are checked.
    if (!from) await part.truncate(0);
    if (st.size !== manifest.size || !from) await part.truncate(manifest.size);
  } catch (err) {
    throw new DiskError(`Cannot create ${partPath}: ${(err as Error).message}`, { cause: err });
  }
  if (!state) {
    await Deno.remove(sidecarPath).catch((err) => {
      // Gone already is fine; what cannot go (a directory with things in it) would refuse every progress save.
      if (!(err instanceof Deno.errors.NotFound)) {
        throw new DiskError(`Cannot remove ${sidecarPath}: ${(err as Error).message}; move it away`, { cause: err });
      }
    });
  }
  return from;
}

async function finish(part: Deno.FsFile, partPath: string, out: string, force: boolean): Promise<void> {
  // The lock is on the open file, not on its name: a .part deleted or moved away mid-download, then made again by
  // another download, would put that one's half-written file in place. Only the file this download wrote is renamed.
  const [held, named] = await Promise.all([part.stat(), Deno.lstat(partPath).catch(() => null)]);
  if (named === null || named.dev !== held.dev || named.ino !== held.ino) {
    throw new DiskError(`${partPath} was removed or replaced during the download; nothing was saved to ${out}`);
  }
  const rename = () =>
    Deno.rename(partPath, out).catch((err) => {
      throw new DiskError(`Cannot move ${partPath} to ${out}: ${(err as Error).message}`, { cause: err });
    });
  // --force overwrites a file, never a directory, a device, a FIFO or a socket: one that appeared at `out` stays, and so
  // does the download.
  if (force && (await kindOf(out)) === null) return await rename();
  // Never over something that appeared at `out` during the download (the check before it began is long past): a
  // hard link is made only where no name is, and then the .part's name goes.
  try {
    await Deno.link(partPath, out);
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) throw await appeared(out, partPath);
    // A filesystem without hard links (FAT, some network ones): look once more, then rename.
    if (await exists(out)) throw await appeared(out, partPath);
    return await rename();
  }
  await Deno.remove(partPath);
}

/** Whether `path` is a directory, or a link to one: what `get -o` saves inside (`outputPath` in lib/client.ts). */
export async function isDirectory(path: string): Promise<boolean> {
  return (await kindOf(path)) === "directory";
}

/**
 * What `path` is (following links) when it is something `--force` must not
 * replace: "directory", "character device", "block device", "FIFO",
 * "socket"; null for a regular file, a broken link or nothing.
 */
async function kindOf(path: string): Promise<string | null> {
  const st = await Deno.stat(path).catch(() => null);
  if (st === null || st.isFile) return null;
  if (st.isDirectory) return "directory";
  if (st.isCharDevice) return "character device";
  if (st.isBlockDevice) return "block device";
  if (st.isFifo) return "FIFO";
  return st.isSocket ? "socket" : "special file";
}

async function appeared(out: string, partPath: string): Promise<ShoalError> {
  // A rerun with `-o` naming a directory saves inside it, where this .part is not: that advice would start over.
  const kind = await kindOf(out);
  const advice = kind !== null
    ? `move the ${kind} ${out} away and run the same command again, or move ${partPath} where you want the file`
    : `move ${out} away and run the same command again (or use --force to overwrite it)`;
  return new ShoalError(
    "exists",
    `${out} appeared during the download and is kept; the file is complete in ${partPath}: ${advice}`,
    ExitCode.exists,
  );
}

/**
 * Fails before any chunk is fetched when the `.part`'s filesystem cannot
 * hold the rest of the file (what the sparse `.part` has not allocated
 * yet): a clear message now, not a full disk halfway through.
 */
async function checkRoom(partPath: string, manifest: Manifest): Promise<void> {
  const dir = dirname(partPath);
  const free = freeBytes(dir);
  const allocated = await Deno.stat(partPath).then((st) => (st.blocks ?? 0) * 512, () => 0);
  const need = manifest.size - allocated;
  if (free === null || free >= need) return;
  // A .part that holds nothing (made just now, all holes) and no progress record is not worth leaving behind.
  if (allocated === 0 && !(await exists(`${partPath}.json`))) await Deno.remove(partPath).catch(() => {});
  // The directory in full ("in ." read as ".."), and the sizes in the units the download's first line uses.
  throw new DiskError(
    `Not enough free space for ${manifest.name}: ${formatBytes(need)} still to write, ${formatBytes(free)} free ` +
      `in ${resolve(dir)}; free some space (progress is kept: run the same command again) or choose another -o`,
  );
}

/** Closes the workers; sums the counts they report (a worker that does not answer within 2 s adds none). */
async function closeWorkers(
  workers: Worker[],
  dead: Set<Worker>,
): Promise<Pick<DownloadSummary, "chunkBuffers" | "chunksHashedInLanes">> {
  const pools: PoolStats[] = [];
  let chunksHashedInLanes = 0;
  await Promise.all(workers.map((w) => {
    const { promise, resolve } = Promise.withResolvers<void>();
    // A worker that died, or dies now, would never answer: the failure would wait out the timeout.
    if (dead.has(w)) resolve();
    w.onerror = (e) => {
      e.preventDefault();
      resolve();
    };
    const timer = setTimeout(resolve, 2_000);
    w.onmessage = (e: MessageEvent<FromWorker>) => {
      if (e.data.ev !== "closed") return;
      pools.push(e.data.buffers);
      chunksHashedInLanes += e.data.hashedInLanes;
      resolve();
    };
    w.postMessage({ op: "close" } satisfies ToWorker);
    return promise.finally(() => {
      clearTimeout(timer);
      w.terminate();
    });
  }));
  return { chunkBuffers: sumPoolStats(pools), chunksHashedInLanes };
}

/** True when something (even a broken link) is at `path`. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/**
 * What to do about an output that is there already (unless `force`): as a
 * BitTorrent client rechecks files it finds in place, one that holds this
 * very file (every chunk checked) is done, and shared as a finished
 * download is; the summary says so. Anything else is kept and refused
 * with OutputExistsError. null when there is no output yet.
 */
export async function existingOutput(
  opts: DownloadOptions,
  started = performance.now(),
): Promise<DownloadSummary | null> {
  const kind = await kindOf(opts.out);
  if (kind !== null && kind !== "directory") {
    // Not even with --force: the rename would replace the node itself (as root, /dev/null with a file).
    throw new ShoalError(
      "exists",
      `${opts.out} is a ${kind}, not a regular file: get saves a file of its own there, and does not replace a ${kind} ` +
        `even with --force; choose another -o`,
      ExitCode.exists,
    );
  }
  if (opts.force || !(await exists(opts.out))) return null;
  const st = await Deno.stat(opts.out).catch(() => null); // null: a link to nothing, not this file either
  if (!st?.isFile || st.size !== opts.manifest.size) throw new OutputExistsError(opts.out);
  opts.onEvent?.({ kind: "checking", path: opts.out });
  if (!(await fileMatches(opts.out, opts.manifest))) throw new OutputExistsError(opts.out);
  await removeLeftovers(opts.out, st);
  await shareDone(opts);
  return fetchedNothing(started, opts, true);
}

/**
 * Beside a complete output, what a kill between a download's last steps
 * left: its `.part` (the same file, linked as the output) and its sidecar.
 * Another file named like the `.part` (another download's) and its sidecar
 * are left alone.
 */
async function removeLeftovers(out: string, output: Deno.FileInfo): Promise<void> {
  const part = await Deno.lstat(`${out}.part`).catch(() => null);
  if (part && !(part.isFile && part.dev === output.dev && part.ino === output.ino)) return;
  if (part) await Deno.remove(`${out}.part`).catch(() => {});
  await Deno.remove(`${out}.part.json`).catch(() => {});
}

/** The summary of a download that fetched nothing: an empty file, or one that was there already. */
function fetchedNothing(started: number, opts: DownloadOptions, alreadyComplete: boolean): DownloadSummary {
  return summary(started, {
    path: opts.out,
    bytes: opts.manifest.size,
    bytesFetched: 0,
    alreadyComplete,
    chunksReused: alreadyComplete ? opts.manifest.chunks.length : 0,
    chunksFetched: 0,
    chunksRefetched: 0,
    chunksWrittenDirect: 0,
    bytesPerPeer: {},
    peersDropped: [],
    chunkBuffers: { made: 0, dropped: 0 },
    chunksHashedInLanes: 0,
    hasher: null,
  });
}

/** Longest wait for the tracker to hear that a download's partial source is gone. */
const WITHDRAW_WAIT_MS = 1_000;

/**
 * Stops serving a download's `.part`, waiting at most WITHDRAW_WAIT_MS on
 * the tracker: the node forgets it at once, and an entry the tracker keeps
 * expires by itself, while a tracker that hangs held `get` 19 s past a
 * complete download (and Ctrl-C with it).
 */
async function withdraw(node: PeerNode, fileId: string, partPath: string): Promise<void> {
  await settledWithin(node.unsharePartial(fileId, partPath), WITHDRAW_WAIT_MS);
}

/** A finished download goes on being shared by its peer node as a complete file, unless it is not to seed. */
async function shareDone(opts: DownloadOptions): Promise<void> {
  if (!opts.peerNode) return;
  if (opts.seed === false) return await withdraw(opts.peerNode, opts.fileId, `${opts.out}.part`);
  const path = await Deno.realPath(opts.out);
  const mtimeMs = (await Deno.stat(path)).mtime?.getTime() ?? Date.now(); // the node refuses a file changed since
  await opts.peerNode.share({
    id: opts.fileId,
    path,
    relPath: opts.out,
    manifest: opts.manifest,
    size: opts.manifest.size,
    mtimeMs,
  });
}

function summary(
  started: number,
  counts: Omit<DownloadSummary, "seconds" | "mbPerSecond" | "alreadyComplete"> & { alreadyComplete?: boolean },
): DownloadSummary {
  const seconds = (performance.now() - started) / 1000;
  const { path, bytes, bytesFetched, alreadyComplete = false, ...rest } = counts;
  const mbPerSecond = seconds > 0 ? bytesFetched / 1e6 / seconds : 0;
  return { path, bytes, bytesFetched, seconds, mbPerSecond, alreadyComplete, ...rest };
}

/** "1-3, 7, 9-12" (shortened after 20 ranges). */
export function listIndexes(xs: number[]): string {
  const ranges: string[] = [];
  for (let i = 0; i < xs.length;) {
    let j = i;
    while (j + 1 < xs.length && xs[j + 1] === xs[j]! + 1) j++;
    ranges.push(i === j ? `${xs[i]}` : `${xs[i]}-${xs[j]}`);
    i = j + 1;
  }
  return ranges.length > 20 ? `${ranges.slice(0, 20).join(", ")} and ${ranges.length - 20} more` : ranges.join(", ");
}
