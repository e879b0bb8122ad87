/**
 * The tracker: who is online, what they share, and the catalog built from
 * it. Peers register their listening address, announce manifests, and keep
 * alive with heartbeats; a peer silent for `expiryMs` drops out of every
 * answer and is then forgotten.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { AccountError, NotFoundError, ShoalError } from "./errors.ts";
import { Bitfield } from "./bitfield.ts";
import { fileIdOf, type Manifest, queryMatcher } from "./manifest.ts";
import {
  type FileSummary,
  type GroupShare,
  type GroupUnshare,
  type Message,
  type MessageOf,
  type NameDrop,
  type PeerEntry,
  TRACKER_FEATURES,
  WireType,
} from "./messages.ts";
import type { Accounts, Session } from "./accounts.ts";
import { type Connection, formatAddress } from "./connection.ts";
import { FrameServer, hostGroup, type ServerOptions, SMALL_FRAME_BYTES } from "./server.ts";

/** How often peers are asked to heartbeat. */
export const DEFAULT_HEARTBEAT_MS = 5_000;
/** A peer silent this long is dropped (three missed heartbeats). */
export const DEFAULT_EXPIRY_MS = 15_000;
/** Most files one peer may announce. */
export const MAX_FILES_PER_PEER = 100_000;
/** Most entries in one catalog answer (keeps the reply far below the frame cap). */
export const MAX_CATALOG_ENTRIES = 10_000;
/**
 * What the tracker holds at most, in all and for one source address (the
 * address a REGISTER came from, by {@link hostGroup}; not the `host` it
 * names). Memory stays bounded whoever connects, and one address cannot
 * take all of it. Requests past a limit get ERROR `full`.
 */
export interface TrackerLimits {
  /** registered peers */
  peers: number;
  peersPerHost: number;
  /** (peer, file) pairs: every complete, partial and group file each peer serves */
  sources: number;
  sourcesPerHost: number;
  /** chunk hashes in the catalog's manifests, each file charged to the address of the peer that first announced it */
  chunks: number;
  chunksPerHost: number;
  /** file names beyond the first that a complete source gives a file (copies of one content under other names) */
  names: number;
  namesPerHost: number;
}

/** Most peers registered at once. */
export const MAX_PEERS = 100_000;

/** About 0.3 GB of sources, 0.4 GB of manifests and 0.3 GB of extra names in all; a quarter of the manifests, 1 TiB in 1 MiB chunks, per address. */
export const DEFAULT_TRACKER_LIMITS: Readonly<TrackerLimits> = {
  peers: MAX_PEERS,
  peersPerHost: 256,
  sources: 2_000_000,
  sourcesPerHost: 200_000,
  chunks: 4_000_000,
  chunksPerHost: 1_000_000,
  names: 1_000_000,
  namesPerHost: 100_000,
};
/**
 * Most names one complete source gives one file: the same content shared
 * under several names is listed under each (the id is the content's alone).
 */
export const MAX_NAMES_PER_SOURCE = 16;
/** Most bins of a file's chunk strip in a snapshot: a file with more chunks is shown bucketed. */
export const MAX_STRIP_BINS = 512;
/**
 * Most peers in one PEER_LIST, as BitTorrent trackers answer 50 by default: a downloader connects to up to 50 at once
 * (`DEFAULT_MAX_PEERS` in download.ts), and each connection holds up to a chunk in flight. With more sources a random
 * choice is listed (complete ones first), so downloaders spread over all of them and one that asks again gets others.
 */
export const MAX_PEERS_LISTED = 50;
/** Most peers, and most files, listed in a snapshot (its totals count them all). */
export const MAX_SNAPSHOT_ROWS = 1_000;

/**
 * Shortest time a peer's rate is measured over. Chunks arrive whole, so
 * with heartbeats much closer than a chunk's transfer time most intervals
 * would read 0 and a few a burst; below this the tracker waits for the
 * next heartbeat and measures over both.
 */
export const RATE_WINDOW_MS = 2_000;

/** A cumulative byte counter a peer reports, and its rate. */
interface CounterSample {
  /** the latest report */
  total: number;
  /** the report the next rate is measured from, and when it came */
  base: number;
  baseAt: number;
  /** bytes per second over the last window of at least RATE_WINDOW_MS */
  rate: number;
}

/** The counter after a report: a first report, or one that went down (the peer restarted it), has no rate yet. */
function nextSample(prev: CounterSample | null, total: number, now: number): CounterSample {
  if (prev === null || total < prev.base) return { total, base: total, baseAt: now, rate: 0 };
  const ms = now - prev.baseAt;
  if (ms < RATE_WINDOW_MS) return { ...prev, total };
  return { total, base: total, baseAt: now, rate: Math.round((total - prev.base) * 1000 / ms) };
}

interface PeerRecord {
  id: string;
  host: string;
  port: number;
  /** the {@link hostGroup} its REGISTER came from: what its registration and sources count against */
  from: string;
  lastSeen: number;
  complete: Set<string>;
  partial: Set<string>;
  /** the names it gave each of its complete files, in the order announced (the first is charged as the source) */
  names: Map<string, Set<string>>;
  /** set when the peer registered with a session token: whose peer it is */
  session?: Session;
  /** group files it serves, as `group "\n" fileId` */
  groupFiles: Set<string>;
  /** chunks held of its partial files, as its latest HEARTBEAT said (files in `partial` only) */
  chunks: Map<string, Bitfield>;
  /** HEARTBEAT `up` and `down`, once reported */
  up: CounterSample | null;
  down: CounterSample | null;
}

interface FileRecord {
  manifest: Manifest;
  sources: Set<string>;
  /** the {@link hostGroup} charged with its manifest's chunks */
  origin: string;
}

/** What one source address, or the whole tracker, holds now (see {@link TrackerLimits}). */
export interface HostUsage {
  peers: number;
  sources: number;
  chunks: number;
  names: number;
}

/** Nothing held. */
function noUsage(): HostUsage {
  return { peers: 0, sources: 0, chunks: 0, names: 0 };
}

/**
 * The names `complete` sources give file `id`, in the order they gave them. Partial sources name nothing: with only
 * those left, the name the file was first announced under.
 */
function namesGiven(id: string, f: FileRecord, complete: PeerRecord[]): Set<string> {
  const names = new Set<string>();
  for (const p of complete) for (const name of p.names.get(id) ?? []) names.add(name);
  if (names.size === 0) names.add(f.manifest.name);
  return names;
}

/** The names a source gives a file past the first (the first is charged as the source itself). */
function extraNames(names: Set<string> | undefined): number {
  return Math.max(0, (names?.size ?? 0) - 1);
}

/** A live peer as the dashboard shows it. */
export interface PeerView {
  /** {@link publicPeerId}: the peer id itself is its holder's key to its record, never shown */
  id: string;
  /** `host:port` other peers reach it at */
  address: string;
  /** files it holds completely, and in part */
  complete: number;
  partial: number;
  /** since its last REGISTER, HEARTBEAT or ANNOUNCE */
  lastHeardMsAgo: number;
  /** chunk data rates over its last heartbeats with counters, RATE_WINDOW_MS or more apart; 0 until then */
  upBytesPerSecond: number;
  downBytesPerSecond: number;
  /** the cumulative counters it last reported; null from a peer that sends none */
  uploadedBytes: number | null;
  downloadedBytes: number | null;
}

/**
 * How many live sources hold each chunk of a file, left to right. With
 * `binning: "chunk"` there is one entry per chunk. With `"min-of-bin"` the
 * file has more than {@link MAX_STRIP_BINS} chunks: they are split into
 * `counts.length` even bins (bin b holds chunks floor(b·n/bins) to
 * floor((b+1)·n/bins) − 1) and each entry is the lowest count in its bin,
 * so a chunk no one has still shows as 0.
 */
export interface ChunkStrip {
  counts: number[];
  binning: "chunk" | "min-of-bin";
}

/** A file with at least one live source, as the dashboard shows it. */
export interface FileView {
  id: string;
  /** the first name a live complete source gives it (as its first manifest named it when none is left): untrusted text from the network */
  name: string;
  /** the other names live complete sources give it (copies of one content), at most {@link MAX_NAMES_PER_SOURCE} - 1 */
  otherNames: string[];
  size: number;
  chunkSize: number;
  chunks: number;
  /** live complete and live partial sources */
  complete: number;
  partial: number;
  /** partial sources whose chunks are not known (no bitfield in a heartbeat yet, or an older peer): not in `strip` */
  partialUnmapped: number;
  /** the fewest sources of any one chunk */
  minChunkSources: number;
  strip: ChunkStrip;
}

/** Everything the dashboard shows, at one instant. */
export interface TrackerSnapshot {
  /** the tracker's clock, Unix ms */
  at: number;
  heartbeatMs: number;
  expiryMs: number;
  totals: {
    peers: number;
    files: number;
    /** the sizes of all files with a live source, each file once */
    bytesShared: number;
    completeSources: number;
    partialSources: number;
    /** names beyond the first that complete sources give their files (copies of one content under other names) */
    extraNames: number;
    /** sums over the live peers */
    upBytesPerSecond: number;
    downBytesPerSecond: number;
  };
  peers: PeerView[];
  files: FileView[];
  /** true when there were more than {@link MAX_SNAPSHOT_ROWS} to list */
  truncated: { peers: boolean; files: boolean };
}

/** Per-chunk source counts as a {@link ChunkStrip} of at most `maxBins` entries. */
export function binStrip(counts: number[], maxBins: number = MAX_STRIP_BINS): ChunkStrip {
  if (counts.length <= maxBins) return { counts: [...counts], binning: "chunk" };
  const out: number[] = [];
  for (let b = 0; b < maxBins; b++) {
    const start = Math.floor(b * counts.length / maxBins), end = Math.floor((b + 1) * counts.length / maxBins);
    let min = Infinity;
    for (let i = start; i < end; i++) min = Math.min(min, counts[i]!);
    out.push(min);
  }
  return { counts: out, binning: "min-of-bin" };
}

/** Options for a {@link Tracker}. */
export interface TrackerOptions {
  heartbeatMs?: number;
  expiryMs?: number;
  /** Clock, for tests. */
  now?: () => number;
  /** Accounts and groups; without them the tracker serves public sharing only. */
  accounts?: Accounts;
  /** Defaults: {@link DEFAULT_TRACKER_LIMITS}. */
  limits?: Partial<TrackerLimits>;
  /** What REGISTERED lists; default {@link TRACKER_FEATURES} (a test plays an older tracker with `[]`). */
  features?: readonly string[];
}

/** The tracker's state and its answer to each request. Pure of I/O. */
export class Tracker {
  readonly heartbeatMs: number;
  readonly expiryMs: number;
  #now: () => number;
  #peers = new Map<string, PeerRecord>();
  #byAddress = new Map<string, string>();
  #files = new Map<string, FileRecord>();
  /** peers serving each group file, by `group "\n" fileId` */
  #groupSources = new Map<string, Set<string>>();
  readonly accounts: Accounts | null;
  readonly limits: Readonly<TrackerLimits>;
  readonly features: readonly string[];
  /** per source address, and in all */
  #usage = new Map<string, HostUsage>();
  #total: HostUsage = noUsage();

  constructor(options: TrackerOptions = {}) {
    this.limits = { ...DEFAULT_TRACKER_LIMITS, ...options.limits };
    this.features = options.features ?? TRACKER_FEATURES;
    this.heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this.expiryMs = options.expiryMs ?? DEFAULT_EXPIRY_MS;
    this.#now = options.now ?? Date.now;
    this.accounts = options.accounts ?? null;
  }

  /** What `host` (a {@link hostGroup}) holds now; with no argument, what the tracker holds in all. */
  usage(host?: string): HostUsage {
    return { ...(host === undefined ? this.#total : this.#usage.get(host) ?? noUsage()) };
  }

  /** Number of live peers. */
  get livePeers(): number {
    let n = 0;
    for (const p of this.#peers.values()) if (this.#live(p)) n++;
    return n;
  }

  /** Answers one request from `remoteHost`. Throws ShoalError for a refused request. */
  handle(msg: Message, remoteHost: string): Message {
    if (msg.type === "heartbeat" || msg.type === "unregister" || msg.type === "announce") {
      // A peer id works only from where it registered: one read elsewhere (a log, a screen) is no key to the record.
      const p = this.#peers.get(msg.peerId);
      if (p && p.from !== hostGroup(remoteHost)) {
        throw new ShoalError("unknown_peer", `Peer ${msg.peerId} is not registered from this address`);
      }
    }
    switch (msg.type) {
      case "register":
        return this.#register(msg.host ?? remoteHost, msg.port, hostGroup(remoteHost), msg.token);
      case "heartbeat":
        this.#heartbeat(msg);
        return { type: "ok" };
      case "unregister":
        this.#drop(msg.peerId);
        return { type: "ok" };
      case "announce":
        this.#announce(msg.peerId, msg.add, msg.partial, msg.remove, msg.dropNames ?? []);
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
      await this.#accounts().createUser(msg.name, msg.password, hostGroup(remoteHost));
      return { type: "ok" };
    }
    if (msg.type === "login") {
      // Limited per address group: an IPv6 host has a /64 of addresses to try from.
      const { token, session } = await this.#accounts().login(msg.name, msg.password, hostGroup(remoteHost));
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
          files: a.groupFiles(msg.token, msg.group, MAX_CATALOG_ENTRIES).map((f) => ({
            id: f.fileId,
            name: f.name,
            size: f.size,
            chunkSize: f.chunkSize,
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

  /**
   * Live peers serving a group file whose user still shares it there (membership can change under them); at most
   * {@link MAX_PEERS_LISTED}, chosen at random.
   */
  groupPeers(group: string, fileId: string, sharers: string[]): PeerEntry[] {
    const out: PeerEntry[] = [];
    for (const id of this.#groupSources.get(`${group}\n${fileId}`) ?? []) {
      const p = this.#peers.get(id);
      if (p && this.#live(p) && p.session && sharers.includes(p.session.user)) {
        out.push({ host: p.host, port: p.port, complete: true });
      }
    }
    return pickRandom(out, MAX_PEERS_LISTED);
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
    this.#admit(p.from, "sources", add.length);
    // The session may have ended since the peer registered.
    const session = p.session.expiresAt > this.#now() ? p.session : null;
    for (const s of add) {
      if (!session) throw new AccountError("session_expired", "The session has expired; log in again");
      this.#serveGroupFile(p, `${s.group}\n${a.share(session, s.group, s.manifest)}`, true);
    }
    for (const r of remove) this.#serveGroupFile(p, `${r.group}\n${r.fileId}`, false);
  }

  /** Records that `p` serves, or no longer serves, the group file `key`. */
  #serveGroupFile(p: PeerRecord, key: string, serves: boolean): void {
    if (p.groupFiles.has(key) === serves) return;
    const sources = this.#groupSources.get(key) ?? new Set();
    if (serves) {
      p.groupFiles.add(key);
      sources.add(p.id);
      this.#groupSources.set(key, sources);
    } else {
      p.groupFiles.delete(key);
      sources.delete(p.id);
      if (sources.size === 0) this.#groupSources.delete(key);
    }
    this.#charge(p.from, "sources", serves ? 1 : -1);
  }

  /**
   * Catalog of files with at least one live source, filtered by a name substring or id prefix ({@link queryMatcher}).
   * A file shared under several names (copies of one content) has an entry for each, with the same id and sources.
   */
  listFiles(query?: string): FileSummary[] {
    const matches = query === undefined ? null : queryMatcher(query);
    const out: FileSummary[] = [];
    for (const [id, f] of this.#files) {
      const { complete, partial } = this.#liveSources(id, f);
      if (complete.length + partial.length === 0) continue;
      const { size, chunkSize } = f.manifest, peers = complete.length;
      for (const name of namesGiven(id, f, complete)) {
        if (!matches || matches({ id, name })) out.push({ id, name, size, chunkSize, peers, partial: partial.length });
      }
    }
    out.sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    return out.slice(0, MAX_CATALOG_ENTRIES);
  }

  /** Live peers holding `fileId`, complete sources first; at most {@link MAX_PEERS_LISTED}, chosen at random. */
  peersOf(fileId: string): PeerEntry[] {
    const f = this.#file(fileId);
    const complete: PeerEntry[] = [], partial: PeerEntry[] = [];
    for (const pid of f.sources) {
      const p = this.#peers.get(pid);
      if (!p || !this.#live(p)) continue;
      const has = p.complete.has(fileId);
      (has ? complete : partial).push({ host: p.host, port: p.port, complete: has });
    }
    const listed = pickRandom(complete, MAX_PEERS_LISTED);
    return listed.concat(pickRandom(partial, MAX_PEERS_LISTED - listed.length));
  }

  /**
   * What the dashboard shows: live peers with their rates, files with live
   * sources and how many sources hold each chunk, and totals. Reads the
   * state only. At most {@link MAX_SNAPSHOT_ROWS} peers and files are
   * listed (sorted by address, and by name then id); the totals count all.
   */
  snapshot(): TrackerSnapshot {
    const now = this.#now();
    const live = [...this.#peers.values()].filter((p) => this.#live(p));
    const peers: PeerView[] = live.map((p) => ({
      id: publicPeerId(p.id),
      address: formatAddress(p),
      complete: p.complete.size,
      partial: p.partial.size,
      lastHeardMsAgo: now - p.lastSeen,
      upBytesPerSecond: p.up?.rate ?? 0,
      downBytesPerSecond: p.down?.rate ?? 0,
      uploadedBytes: p.up?.total ?? null,
      downloadedBytes: p.down?.total ?? null,
    })).sort((a, b) => a.address.localeCompare(b.address) || a.id.localeCompare(b.id));
    const files: { id: string; f: FileRecord; names: string[]; complete: PeerRecord[]; partial: PeerRecord[] }[] = [];
    for (const [id, f] of this.#files) {
      const { complete, partial } = this.#liveSources(id, f);
      if (complete.length + partial.length === 0) continue;
      files.push({ id, f, names: [...namesGiven(id, f, complete)].slice(0, MAX_NAMES_PER_SOURCE), complete, partial });
    }
    files.sort((a, b) => a.names[0]!.localeCompare(b.names[0]!) || a.id.localeCompare(b.id));
    const sum = (xs: number[]) => xs.reduce((s, x) => s + x, 0);
    return {
      at: now,
      heartbeatMs: this.heartbeatMs,
      expiryMs: this.expiryMs,
      totals: {
        peers: peers.length,
        files: files.length,
        bytesShared: sum(files.map((x) => x.f.manifest.size)),
        completeSources: sum(files.map((x) => x.complete.length)),
        partialSources: sum(files.map((x) => x.partial.length)),
        extraNames: sum(live.flatMap((p) => [...p.names.values()].map(extraNames))),
        upBytesPerSecond: sum(peers.map((p) => p.upBytesPerSecond)),
        downBytesPerSecond: sum(peers.map((p) => p.downBytesPerSecond)),
      },
      peers: peers.slice(0, MAX_SNAPSHOT_ROWS),
      files: files.slice(0, MAX_SNAPSHOT_ROWS).map(({ id, f, names, complete, partial }) => {
        const { size, chunkSize, chunks } = f.manifest;
        // Per chunk: every complete source, plus each partial source whose latest heartbeat says it has the chunk.
        const counts = new Array<number>(chunks.length).fill(complete.length);
        let unmapped = 0;
        for (const p of partial) {
          const bits = p.chunks.get(id);
          if (!bits) unmapped++;
          else for (let i = 0; i < counts.length; i++) if (bits.has(i)) counts[i]!++;
        }
        return {
          id,
          name: names[0]!,
          otherNames: names.slice(1),
          size,
          chunkSize,
          chunks: chunks.length,
          complete: complete.length,
          partial: partial.length,
          partialUnmapped: unmapped,
          minChunkSources: counts.length === 0 ? complete.length : counts.reduce((m, c) => (c < m ? c : m)),
          strip: binStrip(counts, MAX_STRIP_BINS),
        };
      }),
      truncated: { peers: peers.length > MAX_SNAPSHOT_ROWS, files: files.length > MAX_SNAPSHOT_ROWS },
    };
  }

  /** The live sources of file `id`, complete and partial. */
  #liveSources(id: string, f: FileRecord): { complete: PeerRecord[]; partial: PeerRecord[] } {
    const complete: PeerRecord[] = [], partial: PeerRecord[] = [];
    for (const pid of f.sources) {
      const p = this.#peers.get(pid);
      if (p && this.#live(p)) (p.complete.has(id) ? complete : partial).push(p);
    }
    return { complete, partial };
  }

  /** Forgets peers past expiry, and files no one holds. */
  sweep(): void {
    for (const p of [...this.#peers.values()]) if (!this.#live(p)) this.#drop(p.id);
  }

  #live(p: PeerRecord): boolean {
    return this.#now() - p.lastSeen <= this.expiryMs;
  }

  #register(host: string, port: number, from: string, token?: string): Message {
    // Every client prints it and connects to it: a host name or an IP address, nothing else.
    if (!HOST.test(host)) {
      throw new ShoalError("bad_host", `${JSON.stringify(host.slice(0, 64))} is not a host name or an IP address`);
    }
    const session = token === undefined ? undefined : this.#accounts().session(token);
    const key = `${host}|${port}`;
    const old = this.#peers.get(this.#byAddress.get(key) ?? "");
    if (old) {
      // The same peer back (restarted, or reconnecting) replaces its record; a live one registered from elsewhere is
      // not anyone's to take over.
      if (old.from !== from && this.#live(old)) {
        throw new ShoalError(
          "address_in_use",
          `${formatAddress({ host, port })} is registered from another address until that registration ends or expires`,
        );
      }
      this.#drop(old.id);
    }
    this.#admit(from, "peers", 1);
    const id = crypto.randomUUID();
    this.#peers.set(id, {
      id,
      host,
      port,
      from,
      lastSeen: this.#now(),
      complete: new Set(),
      names: new Map(),
      partial: new Set(),
      groupFiles: new Set(),
      chunks: new Map(),
      up: null,
      down: null,
      ...(session ? { session } : {}),
    });
    this.#charge(from, "peers", 1);
    this.#byAddress.set(key, id);
    const reply: Message = { type: "registered", peerId: id, heartbeatMs: this.heartbeatMs, expiryMs: this.expiryMs };
    if (this.accounts) reply.publicKey = this.accounts.key.publicKey;
    if (this.features.length > 0) reply.features = [...this.features];
    return reply;
  }

  #announce(peerId: string, add: Manifest[], partial: string[], remove: string[], dropNames: NameDrop[]): void {
    const p = this.#peer(peerId);
    p.lastSeen = this.#now();
    if (p.complete.size + p.partial.size + add.length + partial.length > MAX_FILES_PER_PEER) {
      throw new ShoalError("too_many_files", `A peer may share at most ${MAX_FILES_PER_PEER} files`);
    }
    const ids = add.map(fileIdOf);
    // Counted before anything changes, so an announce past a limit is refused whole.
    const held = (id: string) => p.complete.has(id) || p.partial.has(id);
    const newSources = new Set<string>(), newFiles = new Map<string, number>();
    ids.forEach((id, i) => {
      if (!held(id)) newSources.add(id);
      if (!this.#files.has(id)) newFiles.set(id, add[i]!.chunks.length);
    });
    for (const id of partial) if (!held(id) && (this.#files.has(id) || newFiles.has(id))) newSources.add(id);
    // Each complete file's names: those it had, less those dropped (never the last: a file goes with `remove`), and
    // those added (past MAX_NAMES_PER_SOURCE, ignored).
    const names = new Map<string, Set<string>>();
    const namesOf = (id: string) => {
      let set = names.get(id);
      if (!set) names.set(id, set = new Set(p.names.get(id)));
      return set;
    };
    for (const d of dropNames) {
      if (!p.names.has(d.fileId) || !this.features.includes("dropNames")) continue;
      const set = namesOf(d.fileId);
      if (set.size > 1) set.delete(d.name);
    }
    ids.forEach((id, i) => {
      const set = namesOf(id);
      if (set.size < MAX_NAMES_PER_SOURCE) set.add(add[i]!.name);
    });
    let moreNames = 0;
    for (const [id, set] of names) moreNames += extraNames(set) - extraNames(p.names.get(id));
    this.#admit(p.from, "sources", newSources.size);
    this.#admit(p.from, "chunks", [...newFiles.values()].reduce((a, b) => a + b, 0));
    this.#admit(p.from, "names", moreNames);
    ids.forEach((id, i) => {
      let f = this.#files.get(id);
      if (!f) {
        f = { manifest: add[i]!, sources: new Set(), origin: p.from };
        this.#files.set(id, f);
        this.#charge(p.from, "chunks", f.manifest.chunks.length);
      }
      if (!held(id)) this.#charge(p.from, "sources", 1);
      f.sources.add(peerId);
      p.partial.delete(id);
      p.chunks.delete(id);
      p.complete.add(id);
    });
    this.#charge(p.from, "names", moreNames);
    for (const [id, set] of names) p.names.set(id, set);
    for (const id of partial) {
      // A partial source of a file no complete source announced (any more) is skipped, not an error:
      // failing would make a re-registering peer retry the same announce forever.
      const f = this.#files.get(id);
      if (!f || held(id)) continue;
      this.#charge(p.from, "sources", 1);
      f.sources.add(peerId);
      p.partial.add(id);
    }
    for (const id of remove) this.#withdraw(p, id);
  }

  #withdraw(p: PeerRecord, id: string): void {
    if (p.complete.has(id) || p.partial.has(id)) this.#charge(p.from, "sources", -1);
    this.#charge(p.from, "names", -extraNames(p.names.get(id)));
    p.names.delete(id);
    p.complete.delete(id);
    p.partial.delete(id);
    p.chunks.delete(id);
    const f = this.#files.get(id);
    if (!f) return;
    f.sources.delete(p.id);
    if (f.sources.size > 0) return;
    this.#files.delete(id);
    this.#charge(f.origin, "chunks", -f.manifest.chunks.length);
  }

  /** Adds `delta` to what `host` holds of `what`, and to the totals. */
  #charge(host: string, what: keyof HostUsage, delta: number): void {
    const u = this.#usage.get(host) ?? noUsage();
    u[what] += delta;
    this.#total[what] += delta;
    if (Object.values(u).every((n) => n === 0)) this.#usage.delete(host);
    else this.#usage.set(host, u);
  }

  /** Throws ERROR `full` unless `host` may hold `more` of `what` on top of what it holds (expired peers swept first). */
  #admit(host: string, what: keyof HostUsage, more: number): void {
    const perHost = {
      peers: this.limits.peersPerHost,
      sources: this.limits.sourcesPerHost,
      chunks: this.limits.chunksPerHost,
      names: this.limits.namesPerHost,
    };
    const heldThere = () => this.#usage.get(host)?.[what] ?? 0;
    const fits = () => heldThere() + more <= perHost[what] && this.#total[what] + more <= this.limits[what];
    if (more <= 0 || fits()) return;
    this.sweep();
    if (fits()) return;
    const noun = {
      peers: "registered peers",
      sources: "shared files",
      chunks: "manifest chunks",
      names: "extra names of shared files",
    }[what];
    if (heldThere() + more > perHost[what]) {
      throw new ShoalError("full", `The tracker holds at most ${perHost[what]} ${noun} from one address (${host})`);
    }
    throw new ShoalError("full", `The tracker is full: it holds at most ${this.limits[what]} ${noun}`);
  }

  #heartbeat(msg: MessageOf<"heartbeat">): void {
    const p = this.#peer(msg.peerId);
    const now = this.#now();
    p.lastSeen = now;
    if (msg.up !== undefined) p.up = nextSample(p.up, msg.up, now);
    if (msg.down !== undefined) p.down = nextSample(p.down, msg.down, now);
    for (const { fileId, bits } of msg.partials ?? []) {
      // Only files it announced as partial, and bitfields that fit the manifest: anything else is ignored, not
      // refused, so a peer whose view lags the tracker's (a file just completed or withdrawn) keeps heartbeating.
      const f = this.#files.get(fileId);
      const n = f?.manifest.chunks.length ?? 0;
      if (!f || !p.partial.has(fileId) || bits.length !== Math.ceil(n / 8)) continue;
      p.chunks.set(fileId, new Bitfield(n, bits));
    }
  }

  #drop(peerId: string): void {
    const p = this.#peers.get(peerId);
    if (!p) return;
    for (const id of [...p.complete, ...p.partial]) this.#withdraw(p, id);
    for (const key of [...p.groupFiles]) this.#serveGroupFile(p, key, false);
    this.#charge(p.from, "peers", -1);
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

/** A host name, or an IPv4 or IPv6 address (with a zone): letters, digits, `.-:_%`, at most 253 characters. */
const HOST = /^[A-Za-z0-9._:%-]{1,253}$/;

/**
 * Largest HEARTBEAT payload a tracker takes: MAX_HEARTBEAT_PARTIALS bitfields of MAX_CHUNKS bits with their ids come to
 * about 540 KB.
 */
export const MAX_HEARTBEAT_BYTES = 1024 * 1024;

/**
 * ANNOUNCE carries manifests (up to the frame cap) and HEARTBEAT partial bitfields, and only on a connection that
 * registered: before that, every frame is small, so a connection that never registers holds 64 KiB at most, not 16 MiB.
 */
function trackerPayloadMax(registered: WeakSet<Connection>): (type: number, conn: Connection) => number {
  return (type, conn) => {
    if (!registered.has(conn)) return SMALL_FRAME_BYTES;
    if (type === WireType.announce) return Infinity;
    return type === WireType.heartbeat ? MAX_HEARTBEAT_BYTES : SMALL_FRAME_BYTES;
  };
}

/**
 * The handle the dashboard shows for a peer: the first 16 hex digits of the
 * SHA-256 of its id. Stable for one registration, and no use to anyone
 * else: the id itself is what ANNOUNCE, HEARTBEAT and UNREGISTER trust.
 */
export function publicPeerId(peerId: string): string {
  return createHash("sha256").update(peerId).digest("hex").slice(0, 16);
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
    const registered = new WeakSet<Connection>();
    const server = FrameServer.listen(
      { maxPayloadFor: trackerPayloadMax(registered), ...options },
      async (msg: Message, conn: Connection) => {
        const reply = await tracker.respond(msg, conn.remoteHost);
        if (reply.type === "registered") registered.add(conn);
        return reply;
      },
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

/** `n` of `items` in random order (Fisher-Yates, stopped after `n`), or all of them as they are when they fit. */
function pickRandom<T>(items: T[], n: number): T[] {
  if (items.length <= n) return items;
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(Math.random() * (items.length - i));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items.slice(0, n);
}
