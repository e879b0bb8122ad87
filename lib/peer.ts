/**
 * A peer: serves the chunks of the files it indexed (and of downloads in
 * progress, as a partial source) and keeps itself registered with the
 * tracker. It never opens a path received from the network: requests name
 * a file id and a chunk index, and only indexed ids are served.
 *
 * Each connection's REQUESTs wait in a queue of their own, served one at a
 * time, oldest first, while the connection goes on being read: a CANCEL
 * drops the queued requests for its chunk (an endgame's duplicate), which
 * a peer that served requests as it read them could only have read after
 * sending the chunk. Every other message is answered once the requests
 * read before it have been, so replies keep arrival order.
 *
 * @module
 */

import { type Address, type Connection } from "./connection.ts";
import { Bitfield } from "./bitfield.ts";
import { ConnectionClosedError, ShoalError } from "./errors.ts";
import type { SharedFile } from "./indexer.ts";
import { closeSync, fstatSync, openSync } from "node:fs";
import { preadFull } from "./file_io.ts";
import { chunkLength, type Manifest, MIN_CHUNK_SIZE, queryMatcher } from "./manifest.ts";
import { BufferPool, type PoolStats, sumPoolStats } from "./buffer_pool.ts";
import { ByteBudget } from "./byte_budget.ts";
import {
  allocPieceFrame,
  type FileSummary,
  type GroupShare,
  MAX_HEARTBEAT_PARTIALS,
  type Message,
  PIECE_PREFIX_BYTES,
} from "./messages.ts";
import { RateLimiter } from "./rate_limit.ts";
import { maxPipeline } from "./rate_meter.ts";
import { endConnection, errorReply, FrameServer, type ServerOptions, SMALL_FRAME_BYTES } from "./server.ts";
import { type HeartbeatStats, type Holdings, type LinkEvent, TrackerLink } from "./tracker_link.ts";
import { GrantError, publicKeyFrom, verifyGrant } from "./grants.ts";

/**
 * A file this peer serves. `have` is null when the file is complete. A file
 * in no group is public; a file in groups only is served to connections
 * holding a grant for it (see {@link PeerNode.authorize}).
 */
interface Served {
  id: string;
  /** The copy chunks are read from, and its manifest (named as that copy is). */
  path: string;
  manifest: Manifest;
  /**
   * Of a complete file: every copy shared, by path, with its name and the mtime it was hashed at. The same content
   * under several names is served once (one id) and listed under each name.
   */
  copies: Map<string, { name: string; indexedMtimeMs: number | null }>;
  have: Bitfield | null;
  public: boolean;
  groups: Set<string>;
  interested: Set<Connection>;
  /** Open descriptor for reads, opened on first use. */
  fd: number | null;
  /** The file's mtime when `fd` was opened. */
  fdMtimeMs: number;
  /** A complete file's mtime when it was hashed; null for a partial one, which changes as chunks arrive. */
  indexedMtimeMs: number | null;
}

/** True when a complete file's size is not its manifest's or it was modified since its descriptor was opened. */
function changedOnDisk(f: Served): boolean {
  try {
    const st = fstatSync(f.fd!);
    return st.size !== f.manifest.size || st.mtimeMs !== f.fdMtimeMs;
  } catch {
    return true;
  }
}

/** A complete file's manifest under each name it is shared as, the copy read from first. */
function manifestsOf(f: Served): Manifest[] {
  const names = new Set([f.manifest.name, ...[...f.copies.values()].map((c) => c.name)]);
  return [...names].map((name) => (name === f.manifest.name ? f.manifest : { ...f.manifest, name }));
}

function closeFd(f: Served | undefined): void {
  if (f?.fd != null) {
    try {
      closeSync(f.fd);
    } catch {
      // already closed
    }
    f.fd = null;
  }
}

/**
 * Most REQUESTs one connection may have read and not yet being served; with
 * this many the peer reads no more from it until one is served (TCP
 * backpressure holds the rest). A Shoal downloader keeps at most
 * `maxPipeline(MIN_CHUNK_SIZE)` (256 chunks of 16 KiB) outstanding to one
 * peer, so its reads never wait on this bound and each CANCEL it sends is
 * read while the request it names can still be dropped. An entry is a file
 * id and an index: a full queue holds about 33 KiB (33 MiB over a server's
 * default 1024 connections).
 */
export const MAX_QUEUED_REQUESTS = maxPipeline(MIN_CHUNK_SIZE);

/**
 * Bytes of chunk frames a peer has in use at once, over all connections, at most: each connection sends one chunk at
 * a time and holds its buffer until the kernel takes the bytes, so without a cap a thousand connections that ask and
 * never read would hold a thousand chunks (16 GiB at the largest chunk size). Sends beyond it wait their turn.
 *
 * Each chunk size's pool keeps as many free buffers as fit in it too, so it never drops a buffer that comes back:
 * dropped buffers are garbage that V8 frees late (serving 12 downloads of 1 GiB at once, a peer that kept 8 peaked at
 * 233 MB, keeping all 12 at 90 MB). {@link POOL_TRIM_MS} lets them go once the load is over.
 */
export const SEND_BUDGET_BYTES = 128 * 1024 * 1024;

/** The slice a chunk goes out in under an upload limit of `rate` bytes a second: a quarter second's worth, 4-64 KiB. */
function uploadSlice(rate: number): number {
  return Math.max(4 * 1024, Math.min(64 * 1024, Math.floor(rate / 4)));
}

/**
 * How often the chunk buffer pools let go of the buffers that the last period did not use, so that a burst of
 * downloaders leaves no buffers behind once it is over (see {@link BufferPool.trim}).
 */
export const POOL_TRIM_MS = 10_000;

/** A connection's REQUESTs read and not yet being served, oldest first. */
interface Lane {
  queue: { fileId: string; index: number }[];
  /** Whether a task is serving the queue (it ends once the queue is empty or the connection closed). */
  busy: boolean;
  /** That task. */
  serving: Promise<void>;
  /** Resolved when the queue gets room or the connection is gone; set while the reader waits for that. */
  room: PromiseWithResolvers<void> | null;
}

/** Options for {@link PeerNode.start}. */
export interface PeerOptions extends ServerOptions {
  tracker?: Address;
  /** Address announced to the tracker, when not the one it sees us from. */
  advertiseHost?: string;
  onTrackerEvent?: (e: LinkEvent) => void;
  /** Test hook: flip a byte in every chunk served (a peer that sends bad data). */
  corrupt?: boolean;
  /** Upload limit in bytes per second, shared by all connections. */
  uploadLimit?: number;
  /** Session token to register with, for a user's peer that shares into groups. */
  token?: () => string | undefined;
  /** Bytes of chunk frames in use at once, at most (default {@link SEND_BUDGET_BYTES}). */
  sendBudgetBytes?: number;
}

/** Transfer counters. */
export interface PeerStats {
  chunksServed: number;
  bytesServed: number;
  rejected: number;
  /** REQUESTs dropped by a CANCEL before they were served. */
  cancelled: number;
  /** Chunks sent under an upload limit (in paced slices). */
  chunksPaced: number;
  /** Chunk data received by downloads that serve through this node (see {@link PeerNode.gained}). */
  bytesReceived: number;
}

/** A running peer. */
export class PeerNode {
  readonly server: FrameServer;
  readonly link: TrackerLink | null;
  readonly stats: PeerStats = {
    chunksServed: 0,
    bytesServed: 0,
    rejected: 0,
    cancelled: 0,
    chunksPaced: 0,
    bytesReceived: 0,
  };
  #files = new Map<string, Served>();
  #corrupt: boolean;
  #limiter: RateLimiter | null;
  #sendBudget: ByteBudget;
  #lanes = new WeakMap<Connection, Lane>();
  /** The tasks serving queues, for {@link close} to wait on. */
  #serving = new Set<Promise<void>>();
  #queued = 0;
  /** Aborted by {@link close}: ends waits on the upload limit. */
  #closing = new AbortController();
  #onConnectionError: ((remote: string, err: unknown) => void) | undefined;
  #pools = new Map<number, BufferPool>();
  #trimTimer: ReturnType<typeof setInterval>;
  /** Per connection: file id -> expiry of the grant it presented. */
  #grants = new WeakMap<Connection, Map<string, number>>();
  /** Per connection: the files it said INTERESTED in, whose `interested` sets must let go of it when it ends. */
  #interests = new WeakMap<Connection, Set<string>>();
  /** Per file id: who wants to hear that a peer said INTERESTED in it ({@link onInterest}). */
  #interestWatchers = new Map<string, Set<() => void>>();

  private constructor(options: PeerOptions, files: SharedFile[]) {
    for (const f of files) this.#put(f.id, f.path, f.manifest, null, f.mtimeMs);
    this.#corrupt = options.corrupt ?? false;
    this.#limiter = options.uploadLimit ? new RateLimiter(options.uploadLimit) : null;
    this.#sendBudget = new ByteBudget(options.sendBudgetBytes ?? SEND_BUDGET_BYTES);
    this.#onConnectionError = options.onConnectionError;
    this.server = FrameServer.listen(
      // Downloaders send a peer only small messages (a grant is the largest).
      {
        maxPayloadFor: () => SMALL_FRAME_BYTES,
        ...options,
        onClosed: (conn) => this.#connectionEnded(conn),
        drain: (conn) => this.#lanes.get(conn)?.serving ?? Promise.resolve(),
      },
      (msg, conn) => this.#receive(msg, conn),
    );
    this.#trimTimer = setInterval(() => this.trimBuffers(), POOL_TRIM_MS);
    this.#trimTimer.unref(); // never what keeps a process running
    const tracker = options.tracker;
    this.link = tracker === undefined ? null : new TrackerLink({
      tracker,
      port: this.server.address.port,
      ...(options.advertiseHost === undefined ? {} : { host: options.advertiseHost }),
      holdings: () => this.holdings(),
      stats: () => this.heartbeatStats(),
      ...(options.token === undefined ? {} : { token: options.token }),
      ...(options.onTrackerEvent === undefined ? {} : { onEvent: options.onTrackerEvent }),
    });
  }

  /** Starts serving `files` and, with a tracker, registers. */
  static start(files: SharedFile[], options: PeerOptions = {}): PeerNode {
    return new PeerNode(options, files);
  }

  get address(): Address {
    return this.server.address;
  }

  /** REQUESTs read and not yet being served, over all connections (at most {@link MAX_QUEUED_REQUESTS} each). */
  get queuedRequests(): number {
    return this.#queued;
  }

  /** What we hold, for the tracker. */
  holdings(): Holdings {
    const complete: Manifest[] = [], partial: string[] = [], groups: GroupShare[] = [];
    for (const f of this.#files.values()) {
      for (const group of f.groups) if (f.have === null) groups.push({ group, manifest: f.manifest });
      if (!f.public) continue;
      if (f.have === null) complete.push(...manifestsOf(f));
      else if (f.have.count > 0) partial.push(f.id);
    }
    return { complete, partial, groups };
  }

  /**
   * Transfer counters and the chunks of public files held in part (those
   * announced as partial: at least one chunk), for the tracker's dashboard.
   */
  heartbeatStats(): HeartbeatStats {
    const out: HeartbeatStats = { up: this.stats.bytesServed, down: this.stats.bytesReceived };
    const partials = [];
    for (const f of this.#files.values()) {
      if (partials.length === MAX_HEARTBEAT_PARTIALS) break;
      if (f.public && f.have !== null && f.have.count > 0) partials.push({ fileId: f.id, bits: f.have.bytes });
    }
    if (partials.length > 0) out.partials = partials;
    return out;
  }

  /** Public files served completely, under each name they are shared as. */
  catalog(): FileSummary[] {
    return [...this.#files.values()].filter((f) => f.have === null && f.public).flatMap((f) =>
      manifestsOf(f).map((m) => ({
        id: f.id,
        name: m.name,
        size: m.size,
        chunkSize: m.chunkSize,
        peers: 1,
        partial: 0,
      }))
    );
  }

  /** The local copies of a complete file shared publicly: each path and the name it is shared under. */
  copies(id: string): { path: string; name: string }[] {
    const f = this.#files.get(id);
    if (f?.have !== null || !f.public) return [];
    return [...f.copies].map(([path, { name }]) => ({ path, name }));
  }

  /** Starts sharing a complete file publicly (a copy of a file shared already adds its name). */
  async share(f: SharedFile): Promise<void> {
    const was = this.#files.get(f.id);
    const named = was?.have === null && was.public && manifestsOf(was).some((m) => m.name === f.manifest.name);
    this.#put(f.id, f.path, f.manifest, null, f.mtimeMs);
    if (!named) await this.link?.update([f.manifest], [], []);
  }

  /**
   * Stops sharing the copy of a complete file at `path`: the file goes on
   * being served from another copy, if any, under the names still shared.
   */
  async unshareCopy(id: string, path: string): Promise<void> {
    const f = this.#files.get(id);
    const copy = f?.have === null ? f.copies.get(path) : undefined;
    if (!f || !copy) return;
    f.copies.delete(path);
    const [next] = f.copies;
    if (!next) return await this.unshare(id);
    if (f.path === path) {
      // Read from a copy still there, as it was hashed (a descriptor on the one gone would read it on).
      closeFd(f);
      const [path, { name, indexedMtimeMs }] = next;
      f.path = path;
      f.manifest = { ...f.manifest, name };
      f.indexedMtimeMs = indexedMtimeMs;
    }
    if (!f.public || manifestsOf(f).some((m) => m.name === copy.name)) return;
    await this.link?.dropNames(id, [copy.name], manifestsOf(f));
  }

  /**
   * Shares a complete file into a group: served only against a grant. The
   * tracker must accept it (the user is a member), else this throws and
   * nothing changes.
   */
  async shareInGroup(f: SharedFile, group: string): Promise<void> {
    if (!this.link) throw new ShoalError("no_tracker", "Sharing into a group needs a tracker");
    await this.link.updateGroups([{ group, manifest: f.manifest }], []);
    this.addGroupShareLocally(f, group);
  }

  /** Adds a group file to what we serve without telling the tracker (the next registration will). */
  addGroupShareLocally(f: SharedFile, group: string): void {
    this.#put(f.id, f.path, f.manifest, null, f.mtimeMs, { public: false, groups: new Set([group]) }); // keeps others
  }

  /** Stops serving a file in a group; the file goes when it is in no group and not public. */
  async unshareFromGroup(id: string, group: string): Promise<void> {
    const f = this.#files.get(id);
    if (!f || !f.groups.delete(group)) return;
    await this.link?.updateGroups([], [{ group, fileId: id }]).catch(() => {}); // re-registration sends the truth
    if (f.groups.size === 0 && !f.public) this.#forget(f);
  }

  /** Group files served, as `[group, fileId]` pairs. */
  groupShares(): { group: string; fileId: string; name: string; size: number; path: string }[] {
    const out = [];
    for (const f of this.#files.values()) {
      for (const group of f.groups) {
        out.push({ group, fileId: f.id, name: f.manifest.name, size: f.manifest.size, path: f.path });
      }
    }
    return out;
  }

  /** Bytes a second this peer sends at most, over all connections; 0: no limit. */
  get uploadLimit(): number {
    return this.#limiter?.bytesPerSecond ?? 0;
  }

  /** Changes {@link uploadLimit} while the peer serves (0 lifts it); sends waiting on the old limit go on. */
  setUploadLimit(bytesPerSecond: number): void {
    if (bytesPerSecond === 0) this.#limiter = null; // no bucket at all on the send path
    else if (this.#limiter) this.#limiter.setRate(bytesPerSecond);
    else this.#limiter = new RateLimiter(bytesPerSecond);
  }

  /** Stops sharing a file. */
  async unshare(id: string): Promise<void> {
    const f = this.#files.get(id);
    if (!f) return;
    this.#forget(f);
    await this.link?.update([], [], [id]);
  }

  /**
   * Stops serving the download in progress at `path` ({@link sharePartial}),
   * and nothing else: the same file shared from elsewhere (a shared folder,
   * another download) goes on.
   */
  async unsharePartial(id: string, path: string): Promise<void> {
    if (this.#files.get(id)?.path === path) await this.unshare(id);
  }

  #forget(f: Served): void {
    this.#files.delete(f.id);
    closeFd(f);
    for (const c of f.interested) c.close();
  }

  /**
   * Serves a download in progress from its `.part` file: chunks in `have`
   * only. Call {@link gained} as chunks arrive and {@link share} when done.
   * False, and nothing changes, when the file is served from another path.
   */
  async sharePartial(id: string, path: string, manifest: Manifest, have: Bitfield): Promise<boolean> {
    // One record per file id: a second download of a file served already (shared whole, or downloading to another
    // path) would take its place, and the chunks one wrote would be served from the other's file.
    const served = this.#files.get(id);
    if (served && served.path !== path) return false;
    this.#put(id, path, manifest, have, null);
    if (have.count > 0) await this.link?.update([], [id], []);
    return true;
  }

  /**
   * Records a chunk gained by a partial file (`bytes` long, counted in
   * {@link PeerStats.bytesReceived}) and tells interested peers (HAVE);
   * with `path`, only if that is the file served.
   */
  gained(id: string, index: number, bytes = 0, path?: string): void {
    this.stats.bytesReceived += bytes;
    const f = this.#files.get(id);
    if (!f || f.have === null || (path !== undefined && f.path !== path)) return; // served from elsewhere
    const first = f.have.count === 0;
    if (!f.have.set(index)) return;
    if (first) this.link?.update([], [id], []).catch(() => {});
    for (const c of f.interested) {
      if (c.closed) f.interested.delete(c);
      else c.send({ type: "have", fileId: id, index }).catch(() => c.close());
    }
  }

  /**
   * Calls `watcher` each time a connection says INTERESTED in file `id`:
   * another downloader of a file we download is about to be a partial
   * source, which the tracker will name (BitTorrent learns such peers from
   * their incoming connections). Returns the function that stops it.
   */
  onInterest(id: string, watcher: () => void): () => void {
    let set = this.#interestWatchers.get(id);
    if (!set) this.#interestWatchers.set(id, set = new Set());
    set.add(watcher);
    return () => {
      set.delete(watcher);
      if (set.size === 0 && this.#interestWatchers.get(id) === set) this.#interestWatchers.delete(id);
    };
  }

  async close(): Promise<void> {
    await this.link?.stop();
    clearInterval(this.#trimTimer);
    this.#closing.abort();
    await this.server.close();
    await Promise.allSettled([...this.#serving]); // they read from the descriptors closed next
    for (const f of this.#files.values()) closeFd(f);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #put(
    id: string,
    path: string,
    manifest: Manifest,
    have: Bitfield | null,
    indexedMtimeMs: number | null,
    access: { public: boolean; groups: Set<string> } = { public: true, groups: new Set() },
  ): void {
    const old = this.#files.get(id);
    closeFd(old);
    const copies = have === null && old?.have === null ? new Map(old.copies) : new Map();
    if (have === null) copies.set(path, { name: manifest.name, indexedMtimeMs });
    this.#files.set(id, {
      id,
      path,
      manifest,
      copies,
      have,
      public: access.public || (old?.public ?? false),
      groups: new Set([...access.groups, ...(old?.groups ?? [])]),
      interested: old?.interested ?? new Set<Connection>(),
      fd: null,
      fdMtimeMs: 0,
      indexedMtimeMs,
    });
  }

  /**
   * Checks a grant a connection presents for a group file and remembers it
   * for that connection until it expires. Throws GrantError.
   */
  authorize(conn: Connection, fileId: string, grant: string): void {
    const key = this.link?.trackerKey;
    if (!key) throw new GrantError("this peer does not know its tracker's key yet");
    const claims = verifyGrant(publicKeyFrom(key), grant, fileId);
    const f = this.#files.get(fileId);
    if (!f) throw new ShoalError("not_found", `File ${fileId} is not shared here`);
    if (!f.groups.has(claims.group)) throw new GrantError(`file ${fileId} is not shared in group ${claims.group} here`);
    let m = this.#grants.get(conn);
    if (!m) this.#grants.set(conn, m = new Map());
    m.set(fileId, Math.max(m.get(fileId) ?? 0, claims.exp));
  }

  /** Why `conn` may not have `f` now, or null when it may. */
  #denied(f: Served, conn: Connection): string | null {
    if (f.public) return null;
    const exp = this.#grants.get(conn)?.get(f.id);
    if (exp === undefined) return "a grant is required for this group file";
    if (exp <= Date.now()) return "the grant has expired";
    return null;
  }

  /**
   * The server's handler: queues a REQUEST (waiting for room when the queue
   * is full), drops queued requests on CANCEL, and answers anything else
   * once the requests before it have been answered.
   */
  async #receive(msg: Message, conn: Connection): Promise<Message | void> {
    let lane = this.#lanes.get(conn);
    if (msg.type === "request") {
      if (!lane) this.#lanes.set(conn, lane = { queue: [], busy: false, serving: Promise.resolve(), room: null });
      await this.#enqueue(lane, conn, msg.fileId, msg.index);
      return;
    }
    if (msg.type === "cancel") {
      if (lane) this.#cancel(lane, msg.fileId, msg.index);
      return;
    }
    if (lane?.busy) await lane.serving;
    if (conn.closed) return;
    return this.#handle(msg, conn);
  }

  async #enqueue(lane: Lane, conn: Connection, fileId: string, index: number): Promise<void> {
    // The queue is full only while a task serves it, and that task resolves `room` as it takes one or stops.
    while (lane.queue.length >= MAX_QUEUED_REQUESTS && !conn.closed) {
      lane.room = Promise.withResolvers();
      await lane.room.promise;
    }
    if (conn.closed) return;
    lane.queue.push({ fileId, index });
    this.#queued++;
    if (lane.busy) return;
    lane.busy = true;
    const task = this.#serveQueue(lane, conn);
    lane.serving = task;
    this.#serving.add(task);
    task.then(() => this.#serving.delete(task));
  }

  /** Drops the queued requests for chunk `index` of `fileId`; one being served already is finished. */
  #cancel(lane: Lane, fileId: string, index: number): void {
    const before = lane.queue.length;
    lane.queue = lane.queue.filter((r) => r.index !== index || r.fileId !== fileId);
    const dropped = before - lane.queue.length;
    this.#queued -= dropped;
    this.stats.cancelled += dropped;
    if (dropped > 0) this.#wakeReader(lane);
  }

  /**
   * Serves a connection's queue until it is empty or the connection closed.
   * A request's failure is treated as the server treats a handler's: a
   * ShoalError is answered with ERROR and serving goes on; anything else
   * ends the connection. Never rejects.
   */
  async #serveQueue(lane: Lane, conn: Connection): Promise<void> {
    try {
      while (!conn.closed) {
        const r = lane.queue.shift();
        if (r === undefined) break;
        this.#queued--;
        this.#wakeReader(lane);
        let reply: Message | void;
        try {
          reply = await this.#serveChunk(r.fileId, r.index, conn);
        } catch (err) {
          reply = errorReply(err);
        }
        if (reply) await conn.send(reply);
      }
    } catch (err) {
      const closing = this.#closing.signal.aborted;
      await endConnection(conn, err, closing);
      if (!(err instanceof ConnectionClosedError) && !closing) this.#onConnectionError?.(conn.remote, err);
    } finally {
      this.#queued -= lane.queue.length; // not empty only when the connection is gone
      lane.queue = [];
      lane.busy = false;
      this.#wakeReader(lane);
    }
  }

  #wakeReader(lane: Lane): void {
    lane.room?.resolve();
    lane.room = null;
  }

  /** The answer to any message but REQUEST and CANCEL; throws ShoalError for an ERROR reply. */
  #handle(msg: Message, conn: Connection): Message {
    switch (msg.type) {
      case "list_files": {
        const files = this.catalog();
        return { type: "file_list", files: msg.query === undefined ? files : files.filter(queryMatcher(msg.query)) };
      }
      case "authorize":
        this.authorize(conn, msg.fileId, msg.grant);
        return { type: "ok" };
      case "get_manifest":
        return { type: "manifest", fileId: msg.fileId, manifest: this.#served(msg.fileId, conn).manifest };
      case "interested": {
        const f = this.#served(msg.fileId, conn);
        f.interested.add(conn);
        let ids = this.#interests.get(conn);
        if (!ids) this.#interests.set(conn, ids = new Set());
        ids.add(f.id);
        for (const watcher of this.#interestWatchers.get(f.id) ?? []) watcher();
        const bits = f.have ?? Bitfield.full(f.manifest.chunks.length);
        return { type: "bitfield", fileId: f.id, count: bits.size, bits: bits.bytes };
      }
      default: // REQUEST and CANCEL never get here: see #receive
        throw new ShoalError("unsupported", `A peer does not handle ${msg.type} messages`);
    }
  }

  async #serveChunk(fileId: string, index: number, conn: Connection): Promise<Message | void> {
    const f = this.#files.get(fileId);
    const reject = (reason: string) => this.#reject(fileId, index, reason);
    if (!f) return reject("not shared here");
    const denied = this.#denied(f, conn);
    if (denied) return reject(denied);
    if (index >= f.manifest.chunks.length) return reject("no such chunk");
    if (f.have !== null && !f.have.has(index)) return reject("chunk not here yet");
    const len = chunkLength(f.manifest, index);
    const limiter = this.#limiter;
    if (!limiter) return await this.#sendChunk(f, index, len, conn, len, null);
    // Under an upload limit a chunk goes out in slices, about four a second, so its bytes trickle rather than wait
    // until all of it fits the rate (at 48 KiB/s a 1 MiB chunk sent nothing for 21 s: a stall to its downloader).
    // Each connection paces its own chunk, and the bucket serves the slices in the order they are asked for, so the
    // connections take turns slice by slice and share the rate: a chunk paced at a time over all of them kept the
    // other downloaders waiting a whole chunk's time, and they dropped the peer as stalled. The first slice is paid for
    // before the chunk is read, so a connection waiting on the limit holds no buffer.
    const slice = Math.min(len, uploadSlice(limiter.bytesPerSecond));
    const pace = (n: number) => limiter.take(n, this.#closing.signal);
    this.stats.chunksPaced++;
    await pace(slice);
    return await this.#sendChunk(f, index, len, conn, slice, pace);
  }

  #reject(fileId: string, index: number, reason: string): Message {
    this.stats.rejected++;
    return { type: "reject", fileId, index, reason };
  }

  /**
   * Reads chunk `index` into a buffer from the pool (room in the send
   * budget first) and sends it: the first `first` bytes of its data at once,
   * the rest through `pace` (see {@link Connection.sendPaced}).
   */
  async #sendChunk(
    f: Served,
    index: number,
    len: number,
    conn: Connection,
    first: number,
    pace: ((n: number) => Promise<void>) | null,
  ): Promise<Message | void> {
    const reject = (reason: string) => this.#reject(f.id, index, reason);
    const size = PIECE_PREFIX_BYTES + f.manifest.chunkSize;
    await this.#sendBudget.take(size, this.#closing.signal);
    const pool = this.#poolFor(size);
    let frame: Uint8Array<ArrayBuffer> | null = null;
    try {
      // Shared again or no longer while this waited: the record is not the one in use, and a descriptor opened on
      // it would never be closed.
      if (this.#files.get(f.id) !== f) return reject("the file changed while the request waited");
      const piece = allocPieceFrame(f.id, index, len, (n) => pool.take(n)); // may throw when memory runs out
      frame = piece.frame;
      const data = piece.data;
      try {
        // One descriptor per file and positional reads: no open or seek per chunk, no races between connections.
        if (f.fd === null) {
          f.fd = openSync(f.path, "r");
          f.fdMtimeMs = fstatSync(f.fd).mtimeMs;
          // Changed between its hashing and this first read: compared to the hashing, not only to this opening.
          if (f.indexedMtimeMs !== null && Math.abs(f.fdMtimeMs - f.indexedMtimeMs) >= 1) f.fdMtimeMs = NaN;
        }
        if (preadFull(f.fd, data, index * f.manifest.chunkSize) < len) throw new Error("file shrank");
      } catch {
        this.#withdrawIfGone(f);
        return reject("cannot read the file");
      }
      // Checked after the read: a complete file rewritten in place (a shared folder's watcher withdraws it soon)
      // would send bytes that match no manifest. Replaced by a rename, the open descriptor still reads the old file.
      if (f.have === null && changedOnDisk(f)) {
        this.#withdrawIfGone(f);
        return reject("the file changed on disk");
      }
      if (this.#corrupt && len > 0) data[0] = data[0]! ^ 0xff;
      if (pace && first < len) await conn.sendPaced(frame, frame.length - len + first, first, pace);
      else await conn.sendBytes(frame);
    } finally {
      if (frame) pool.give(frame); // the kernel has the bytes (or the connection is gone, or the chunk was refused)
      this.#sendBudget.give(size);
    }
    this.stats.chunksServed++;
    this.stats.bytesServed += len;
  }

  /**
   * After a failed read of a complete public file: when its copy is gone or
   * no longer what was hashed, stops serving that copy (and the file, with
   * no copy left), so the tracker stops sending downloaders to a dead
   * source. A shared folder's watcher would do the same in a while; a file
   * shared otherwise (a finished download, `share`) has no watcher.
   */
  #withdrawIfGone(f: Served): void {
    if (f.have !== null || !f.public) return;
    let st: Deno.FileInfo | null = null;
    try {
      st = Deno.statSync(f.path);
    } catch {
      // gone, or out of reach: either way it cannot be served
    }
    const mtime = st?.mtime?.getTime() ?? NaN;
    const same = st !== null && st.isFile && st.size === f.manifest.size &&
      (f.indexedMtimeMs === null || Math.abs(mtime - f.indexedMtimeMs) < 1);
    if (!same) this.unshareCopy(f.id, f.path).catch(() => {}); // the tracker link re-announces the truth if this fails
  }

  #poolFor(size: number): BufferPool {
    let pool = this.#pools.get(size);
    if (!pool) {
      this.#pools.set(size, pool = new BufferPool(size, Math.max(1, Math.floor(this.#sendBudget.total / size))));
    }
    return pool;
  }

  /** The counts of the chunk buffers this peer has made and let go, over all chunk sizes, and how many it holds free. */
  get buffers(): PoolStats & { free: number } {
    let free = 0;
    for (const p of this.#pools.values()) free += p.free;
    return { ...sumPoolStats(this.#pools.values().map((p) => p.stats)), free };
  }

  /** Connections to be told of new chunks (HAVE), summed over the files they asked about. */
  get interestedConnections(): number {
    let n = 0;
    for (const f of this.#files.values()) n += f.interested.size;
    return n;
  }

  /** Sends waiting for room in the send budget ({@link SEND_BUDGET_BYTES}). */
  get sendsWaiting(): number {
    return this.#sendBudget.waiting;
  }

  /** Lets go of the chunk buffers unused since the last call (every {@link POOL_TRIM_MS}); returns how many. */
  trimBuffers(): number {
    let n = 0;
    for (const p of this.#pools.values()) n += p.trim();
    return n;
  }

  /** A connection ended: the files it was interested in forget it (else each would keep it, and its buffers, for good). */
  #connectionEnded(conn: Connection): void {
    for (const id of this.#interests.get(conn) ?? []) this.#files.get(id)?.interested.delete(conn);
    this.#interests.delete(conn);
  }

  #served(id: string, conn: Connection): Served {
    const f = this.#files.get(id);
    if (!f) throw new ShoalError("not_found", `File ${id} is not shared here`);
    const denied = this.#denied(f, conn);
    if (denied) throw new GrantError(denied);
    return f;
  }
}
