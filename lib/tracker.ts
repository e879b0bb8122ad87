/**
 * The tracker: who is online, what they share, and the catalog built from
 * it. Peers register their listening address, announce manifests, and keep
 * alive with heartbeats; a peer silent for `expiryMs` drops out of every
 * answer and is then forgotten.
 *
 * @module
 */

import { NotFoundError, ShoalError } from "./errors.ts";
import { fileIdOf, type Manifest } from "./manifest.ts";
import type { FileSummary, Message, PeerEntry } from "./messages.ts";
import { type Connection } from "./connection.ts";
import { FrameServer, type ServerOptions } from "./server.ts";

/** How often peers are asked to heartbeat. */
export const DEFAULT_HEARTBEAT_MS = 5_000;
/** A peer silent this long is dropped (three missed heartbeats). */
export const DEFAULT_EXPIRY_MS = 15_000;
/** Most files one peer may announce. */
export const MAX_FILES_PER_PEER = 100_000;
/** Most entries in one catalog answer (keeps the reply far below the frame cap). */
export const MAX_CATALOG_ENTRIES = 10_000;
/** Most peers registered at once. */
export const MAX_PEERS = 100_000;

interface PeerRecord {
  id: string;
  host: string;
  port: number;
  lastSeen: number;
  complete: Set<string>;
  partial: Set<string>;
}

interface FileRecord {
  manifest: Manifest;
  sources: Set<string>;
}

/** Options for a {@link Tracker}. */
export interface TrackerOptions {
  heartbeatMs?: number;
  expiryMs?: number;
  /** Clock, for tests. */
  now?: () => number;
}

/** The tracker's state and its answer to each request. Pure of I/O. */
export class Tracker {
  readonly heartbeatMs: number;
  readonly expiryMs: number;
  #now: () => number;
  #peers = new Map<string, PeerRecord>();
  #byAddress = new Map<string, string>();
  #files = new Map<string, FileRecord>();

  constructor(options: TrackerOptions = {}) {
    this.heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this.expiryMs = options.expiryMs ?? DEFAULT_EXPIRY_MS;
    this.#now = options.now ?? Date.now;
  }

  /** Number of live peers. */
  get livePeers(): number {
    let n = 0;
    for (const p of this.#peers.values()) if (this.#live(p)) n++;
    return n;
  }

  /** Answers one request from `remoteHost`. Throws ShoalError for a refused request. */
  handle(msg: Message, remoteHost: string): Message {
    switch (msg.type) {
      case "register":
        return this.#register(msg.host ?? remoteHost, msg.port);
      case "heartbeat":
        this.#peer(msg.peerId).lastSeen = this.#now();
        return { type: "ok" };
      case "unregister":
        this.#drop(msg.peerId);
        return { type: "ok" };
      case "announce":
        this.#announce(msg.peerId, msg.add, msg.partial, msg.remove);
        return { type: "ok" };
      case "list_files":
        return { type: "file_list", files: this.listFiles(msg.query) };
      case "get_peers":
        return { type: "peer_list", fileId: msg.fileId, peers: this.peersOf(msg.fileId) };
      case "get_manifest":
        return { type: "manifest", fileId: msg.fileId, manifest: this.#file(msg.fileId).manifest };
      default:
        throw new ShoalError("unsupported", `The tracker does not handle ${msg.type} messages`);
    }
  }

  /** Catalog of files with at least one live source, filtered by a case-insensitive name substring. */
  listFiles(query?: string): FileSummary[] {
    const q = query?.toLowerCase();
    const out: FileSummary[] = [];
    for (const [id, f] of this.#files) {
      if (q !== undefined && !f.manifest.name.toLowerCase().includes(q)) continue;
      let peers = 0, partial = 0;
      for (const pid of f.sources) {
        const p = this.#peers.get(pid);
        if (!p || !this.#live(p)) continue;
        if (p.complete.has(id)) peers++;
        else partial++;
      }
      if (peers + partial === 0) continue;
      const { name, size, chunkSize } = f.manifest;
      out.push({ id, name, size, chunkSize, peers, partial });
    }
    out.sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    return out.slice(0, MAX_CATALOG_ENTRIES);
  }

  /** Live peers holding `fileId`, complete sources first. */
  peersOf(fileId: string): PeerEntry[] {
    const f = this.#file(fileId);
    const out: PeerEntry[] = [];
    for (const pid of f.sources) {
      const p = this.#peers.get(pid);
      if (p && this.#live(p)) out.push({ host: p.host, port: p.port, complete: p.complete.has(fileId) });
    }
    return out.sort((a, b) => Number(b.complete) - Number(a.complete));
  }

  /** Forgets peers past expiry, and files no one holds. */
  sweep(): void {
    for (const p of [...this.#peers.values()]) if (!this.#live(p)) this.#drop(p.id);
  }

  #live(p: PeerRecord): boolean {
    return this.#now() - p.lastSeen <= this.expiryMs;
  }

  #register(host: string, port: number): Message {
    const key = `${host}|${port}`;
    const old = this.#byAddress.get(key);
    if (old !== undefined) this.#drop(old);
    if (this.#peers.size >= MAX_PEERS) this.sweep();
    if (this.#peers.size >= MAX_PEERS) throw new ShoalError("full", "The tracker has too many peers");
    const id = crypto.randomUUID();
    this.#peers.set(id, { id, host, port, lastSeen: this.#now(), complete: new Set(), partial: new Set() });
    this.#byAddress.set(key, id);
    return { type: "registered", peerId: id, heartbeatMs: this.heartbeatMs, expiryMs: this.expiryMs };
  }

  #announce(peerId: string, add: Manifest[], partial: string[], remove: string[]): void {
    const p = this.#peer(peerId);
    p.lastSeen = this.#now();
    if (p.complete.size + p.partial.size + add.length + partial.length > MAX_FILES_PER_PEER) {
      throw new ShoalError("too_many_files", `A peer may share at most ${MAX_FILES_PER_PEER} files`);
    }
    for (const m of add) {
      const id = fileIdOf(m);
      const f = this.#files.get(id) ?? { manifest: m, sources: new Set() };
      f.sources.add(peerId);
      this.#files.set(id, f);
      p.partial.delete(id);
      p.complete.add(id);
    }
    for (const id of partial) {
      // A partial source of a file no complete source announced (any more) is skipped, not an error:
      // failing would make a re-registering peer retry the same announce forever.
      const f = this.#files.get(id);
      if (!f || p.complete.has(id)) continue;
      f.sources.add(peerId);
      p.partial.add(id);
    }
    for (const id of remove) this.#withdraw(p, id);
  }

  #withdraw(p: PeerRecord, id: string): void {
    p.complete.delete(id);
    p.partial.delete(id);
    const f = this.#files.get(id);
    if (!f) return;
    f.sources.delete(p.id);
    if (f.sources.size === 0) this.#files.delete(id);
  }

  #drop(peerId: string): void {
    const p = this.#peers.get(peerId);
    if (!p) return;
    for (const id of [...p.complete, ...p.partial]) this.#withdraw(p, id);
    this.#peers.delete(peerId);
    this.#byAddress.delete(`${p.host}|${p.port}`);
  }

  #peer(peerId: string): PeerRecord {
    const p = this.#peers.get(peerId);
    if (!p || !this.#live(p)) {
      throw new ShoalError("unknown_peer", `Peer ${peerId} is not registered (expired or tracker restarted)`);
    }
    return p;
  }

  #file(fileId: string): FileRecord {
    const f = this.#files.get(fileId);
    if (!f) throw new NotFoundError(`No file with id ${fileId}`);
    return f;
  }
}

/** A tracker listening on TCP. */
export class TrackerServer {
  readonly tracker: Tracker;
  readonly server: FrameServer;
  #sweeper: ReturnType<typeof setInterval>;

  constructor(tracker: Tracker, server: FrameServer) {
    this.tracker = tracker;
    this.server = server;
    this.#sweeper = setInterval(() => tracker.sweep(), tracker.heartbeatMs);
  }

  /** Starts a tracker on `options.port` (0 for any free port). */
  static start(options: TrackerOptions & ServerOptions = {}): TrackerServer {
    const tracker = new Tracker(options);
    const server = FrameServer.listen(
      options,
      (msg: Message, conn: Connection) => tracker.handle(msg, conn.remoteHost),
    );
    return new TrackerServer(tracker, server);
  }

  get address() {
    return this.server.address;
  }

  async close(): Promise<void> {
    clearInterval(this.#sweeper);
    await this.server.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
