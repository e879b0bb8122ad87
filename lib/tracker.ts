/**
 * The tracker: who is online, what they share, and the catalog built from
 * it. Peers register their listening address, announce manifests, and keep
 * alive with heartbeats; a peer silent for `expiryMs` drops out of every
 * answer and is then forgotten.
 *
 * @module
 */

import { AccountError, NotFoundError, ShoalError } from "./errors.ts";
import { fileIdOf, type Manifest } from "./manifest.ts";
import type { FileSummary, GroupShare, GroupUnshare, Message, PeerEntry } from "./messages.ts";
import type { Accounts, Session } from "./accounts.ts";
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
  /** set when the peer registered with a session token: whose peer it is */
  session?: Session;
  /** group files it serves, as `group "\n" fileId` */
  groupFiles: Set<string>;
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
  /** Accounts and groups; without them the tracker serves public sharing only. */
  accounts?: Accounts;
}

/** The tracker's state and its answer to each request. Pure of I/O. */
export class Tracker {
  readonly heartbeatMs: number;
  readonly expiryMs: number;
  #now: () => number;
  #peers = new Map<string, PeerRecord>();
  #byAddress = new Map<string, string>();
  #files = new Map<string, FileRecord>();
  readonly accounts: Accounts | null;

  constructor(options: TrackerOptions = {}) {
    this.heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this.expiryMs = options.expiryMs ?? DEFAULT_EXPIRY_MS;
    this.#now = options.now ?? Date.now;
    this.accounts = options.accounts ?? null;
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
        return this.#register(msg.host ?? remoteHost, msg.port, msg.token);
      case "heartbeat":
        this.#peer(msg.peerId).lastSeen = this.#now();
        return { type: "ok" };
      case "unregister":
        this.#drop(msg.peerId);
        return { type: "ok" };
      case "announce":
        this.#announce(msg.peerId, msg.add, msg.partial, msg.remove);
        if (msg.groupAdd || msg.groupRemove) {
          this.#announceGroups(msg.peerId, msg.groupAdd ?? [], msg.groupRemove ?? []);
        }
        return { type: "ok" };
      case "list_files":
        return { type: "file_list", files: this.listFiles(msg.query) };
      case "get_peers":
        return { type: "peer_list", fileId: msg.fileId, peers: this.peersOf(msg.fileId) };
      case "get_manifest":
        return { type: "manifest", fileId: msg.fileId, manifest: this.#file(msg.fileId).manifest };
      default:
        return this.#handleGroups(msg);
    }
  }

  /** Answers any request, including those that hash passwords (create_user, login). */
  async respond(msg: Message, remoteHost: string): Promise<Message> {
    if (msg.type === "create_user") {
      await this.#accounts().createUser(msg.name, msg.password);
      return { type: "ok" };
    }
    if (msg.type === "login") {
      const { token, session } = await this.#accounts().login(msg.name, msg.password, remoteHost);
      return { type: "session", user: session.user, token, expiresAt: session.expiresAt };
    }
    return this.handle(msg, remoteHost);
  }

  #accounts(): Accounts {
    if (!this.accounts) throw new ShoalError("unsupported", "This tracker has no accounts");
    return this.accounts;
  }

  #handleGroups(msg: Message): Message {
    const a = this.#accounts();
    switch (msg.type) {
      case "logout":
        a.logout(msg.token);
        return { type: "ok" };
      case "whoami": {
        const s = a.session(msg.token);
        return { type: "session", user: s.user, token: msg.token, expiresAt: s.expiresAt };
      }
      case "create_group":
        a.createGroup(msg.token, msg.group);
        return { type: "ok" };
      case "join_group":
        a.joinGroup(msg.token, msg.group);
        return { type: "ok" };
      case "leave_group":
        a.leaveGroup(msg.token, msg.group);
        return { type: "ok" };
      case "accept_request":
        a.acceptRequest(msg.token, msg.group, msg.user);
        return { type: "ok" };
      case "remove_member":
        a.removeMember(msg.token, msg.group, msg.user);
        return { type: "ok" };
      case "list_groups":
        return { type: "group_list", groups: a.listGroups(msg.token) };
      case "list_requests":
        return { type: "user_list", users: a.listRequests(msg.token, msg.group) };
      case "list_group_files":
        return {
          type: "file_list",
          files: a.groupFiles(msg.token, msg.group).slice(0, MAX_CATALOG_ENTRIES).map((f) => ({
            id: f.fileId,
            name: f.name,
            size: f.size,
            chunkSize: f.manifest.chunkSize,
            peers: this.groupPeers(msg.group, f.fileId, f.sharers).length,
            partial: 0,
            owner: f.owner,
          })),
        };
      case "group_lookup": {
        const { file } = a.groupFile(msg.token, msg.group, msg.file);
        const { grant, expiresAt } = a.grant(msg.token, msg.group, file.fileId);
        return {
          type: "group_file",
          group: msg.group,
          fileId: file.fileId,
          manifest: file.manifest,
          peers: this.groupPeers(msg.group, file.fileId, file.sharers),
          grant,
          grantExpiresAt: expiresAt,
        };
      }
      case "get_grant": {
        const { grant, expiresAt } = a.grant(msg.token, msg.group, msg.fileId);
        return { type: "grant", grant, expiresAt };
      }
      case "stop_sharing": {
        a.stopSharing(msg.token, msg.group, msg.file);
        return { type: "ok" };
      }
      default:
        throw new ShoalError("unsupported", `The tracker does not handle ${msg.type} messages`);
    }
  }

  /** Live peers serving a group file whose user still shares it there (membership can change under them). */
  groupPeers(group: string, fileId: string, sharers: string[]): PeerEntry[] {
    const key = `${group}\n${fileId}`;
    const out: PeerEntry[] = [];
    for (const p of this.#peers.values()) {
      if (p.groupFiles.has(key) && this.#live(p) && p.session && sharers.includes(p.session.user)) {
        out.push({ host: p.host, port: p.port, complete: true });
      }
    }
    return out;
  }

  #announceGroups(peerId: string, add: GroupShare[], remove: GroupUnshare[]): void {
    const p = this.#peer(peerId);
    if (!p.session) {
      throw new AccountError("not_logged_in", "Only a peer registered with a session may share into a group");
    }
    const a = this.#accounts();
    if (p.groupFiles.size + add.length > MAX_FILES_PER_PEER) {
      throw new ShoalError("too_many_files", `A peer may share at most ${MAX_FILES_PER_PEER} files`);
    }
    // The session may have ended since the peer registered.
    const session = p.session.expiresAt > this.#now() ? p.session : null;
    for (const s of add) {
      if (!session) throw new AccountError("session_expired", "The session has expired; log in again");
      const fileId = a.share(session, s.group, s.manifest);
      p.groupFiles.add(`${s.group}\n${fileId}`);
    }
    for (const r of remove) p.groupFiles.delete(`${r.group}\n${r.fileId}`);
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

  #register(host: string, port: number, token?: string): Message {
    const session = token === undefined ? undefined : this.#accounts().session(token);
    const key = `${host}|${port}`;
    const old = this.#byAddress.get(key);
    if (old !== undefined) this.#drop(old);
    if (this.#peers.size >= MAX_PEERS) this.sweep();
    if (this.#peers.size >= MAX_PEERS) throw new ShoalError("full", "The tracker has too many peers");
    const id = crypto.randomUUID();
    this.#peers.set(id, {
      id,
      host,
      port,
      lastSeen: this.#now(),
      complete: new Set(),
      partial: new Set(),
      groupFiles: new Set(),
      ...(session ? { session } : {}),
    });
    this.#byAddress.set(key, id);
    const reply: Message = { type: "registered", peerId: id, heartbeatMs: this.heartbeatMs, expiryMs: this.expiryMs };
    if (this.accounts) reply.publicKey = this.accounts.key.publicKey;
    return reply;
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
      (msg: Message, conn: Connection) => tracker.respond(msg, conn.remoteHost),
    );
    return new TrackerServer(tracker, server);
  }

  get address() {
    return this.server.address;
  }

  async close(): Promise<void> {
    clearInterval(this.#sweeper);
    await this.server.close();
    this.tracker.accounts?.store.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
