/**
 * A peer's link to the tracker: register, announce, heartbeat, and when
 * anything fails (tracker restarted, network down), reconnect and register
 * again with backoff. Also the one-shot catalog queries clients make.
 *
 * @module
 */

import { backoffMs, delay, settledWithin } from "./async.ts";
import { type Address, connect, type Connection, expectMessage } from "./connection.ts";
import { describeError, ProtocolError, RemoteError, UnreachableError } from "./errors.ts";
import type { Manifest } from "./manifest.ts";
import type { FileSummary, GroupShare, GroupUnshare, Message, MessageOf, PeerEntry } from "./messages.ts";

/** How long a group update waits for a registration in progress. */
const REGISTER_WAIT_MS = 5_000;
/** Heartbeats go no more often than this, whatever the tracker says (the tests' trackers say 50 ms). */
const MIN_HEARTBEAT_MS = 50;
/** Announce batches stay below this many estimated JSON bytes (well under the frame cap). */
const ANNOUNCE_BATCH_BYTES = 2 * 1024 * 1024;

/** What the peer currently shares, read again at every (re)registration. */
export interface Holdings {
  complete: Manifest[];
  partial: string[];
  /** files shared into groups (needs a session token) */
  groups?: GroupShare[];
}

/** What a peer adds to each HEARTBEAT for the tracker's dashboard: transfer counters, partial bitfields. */
export type HeartbeatStats = Pick<MessageOf<"heartbeat">, "up" | "down" | "partials">;

/** Link state changes, for logs. */
export type LinkEvent =
  | { kind: "registered"; peerId: string }
  /** `registered`: whether this connection had registered (else the tracker was never reached, or refused us). */
  | { kind: "lost"; error: unknown; retryInMs: number; registered: boolean }
  | { kind: "group-refused"; group: string; error: unknown };

/** Options for {@link TrackerLink}. */
export interface TrackerLinkOptions {
  tracker: Address;
  /** Our listening port, and host if the tracker should not use our source address. */
  port: number;
  host?: string;
  holdings: () => Holdings;
  /** Optional HEARTBEAT fields, read at every heartbeat. */
  stats?: () => HeartbeatStats;
  /** The session token to register with, if any; read at every (re)registration. */
  token?: () => string | undefined;
  onEvent?: (e: LinkEvent) => void;
}

/** Keeps a peer registered with the tracker until {@link stop}. */
export class TrackerLink {
  #opts: TrackerLinkOptions;
  #abort = new AbortController();
  #conn: Connection | null = null;
  #peerId: string | null = null;
  #running: Promise<void>;
  #queue: Promise<void> = Promise.resolve();
  #stopping = false;

  constructor(options: TrackerLinkOptions) {
    this.#opts = options;
    this.#running = this.#run();
  }

  #trackerKey: string | null = null;
  #trackerFeatures = new Set<string>();

  /** The id the tracker gave us, while registered. */
  get peerId(): string | null {
    return this.#peerId;
  }

  /** The tracker's grant-signing public key (base64url), once registered with a tracker that has accounts. */
  get trackerKey(): string | null {
    return this.#trackerKey;
  }

  /** Drops the connection so the link registers again (e.g. with a new session token). */
  reconnect(): void {
    this.#peerId = null;
    this.#conn?.close();
  }

  /**
   * Shares files into groups or stops, now. Unlike {@link update}, a refusal
   * (not a member, session expired) is thrown to the caller; with no
   * tracker connection this throws too, and the next registration sends
   * the holdings anyway.
   */
  async updateGroups(add: GroupShare[], remove: GroupUnshare[]): Promise<void> {
    // Right after start or a reconnect, registration may be moments away.
    for (let waited = 0; !this.#peerId && waited < REGISTER_WAIT_MS && !this.#stopping; waited += 100) await delay(100);
    return await this.#exclusive(async () => {
      if (!this.#conn || !this.#peerId) throw new UnreachableError("Not registered with the tracker right now");
      await this.#conn.request(
        {
          type: "announce",
          peerId: this.#peerId,
          add: [],
          partial: [],
          remove: [],
          groupAdd: add,
          groupRemove: remove,
        },
        "ok",
      );
    });
  }

  /** Announces changes now if registered; a later re-registration sends the full holdings anyway. */
  update(add: Manifest[], partial: string[], remove: string[]): Promise<void> {
    return this.#exclusive(async () => {
      if (!this.#conn || !this.#peerId) return;
      try {
        await sendAnnounce(this.#conn, this.#peerId, add, partial, remove);
      } catch {
        this.#conn?.close(); // the run loop notices and re-registers
      }
    });
  }

  /**
   * Stops giving a complete file the names in `names`; `left` is its manifest
   * under each name it keeps. A tracker that lists the "dropNames" feature
   * takes that in one ANNOUNCE and the file stays listed throughout; an older
   * one lets go of a name only with the file, so it gets `remove`, then `add`
   * with the names left.
   */
  dropNames(fileId: string, names: string[], left: Manifest[]): Promise<void> {
    return this.#exclusive(async () => {
      const conn = this.#conn, peerId = this.#peerId;
      if (!conn || !peerId) return;
      try {
        if (this.#trackerFeatures.has("dropNames")) {
          const dropNames = names.map((name) => ({ fileId, name }));
          await conn.request({ type: "announce", peerId, add: [], partial: [], remove: [], dropNames }, "ok");
        } else {
          await sendAnnounce(conn, peerId, [], [], [fileId]);
          await sendAnnounce(conn, peerId, left, [], []);
        }
      } catch {
        conn.close(); // the run loop notices and re-registers
      }
    });
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    let attempt = 0;
    while (!signal.aborted) {
      /** Whether a heartbeat went through since this registration: only then is "unknown_peer" a tracker that forgot us. */
      let beating = false;
      try {
        await this.#exclusive(() => this.#register());
        attempt = 0;
        const interval = Math.max(MIN_HEARTBEAT_MS, this.#interval);
        while (!signal.aborted) {
          await delay(interval, signal);
          await this.#exclusive(async () => {
            await this.#conn!.request({ type: "heartbeat", peerId: this.#peerId!, ...this.#opts.stats?.() }, "ok");
          });
          beating = true;
        }
      } catch (error) {
        const registered = this.#peerId !== null;
        this.#conn?.close();
        this.#conn = null;
        this.#peerId = null;
        this.#registeredAs = null;
        if (signal.aborted) break;
        // A tracker that restarted or expired us: register again at once. One that says so before any heartbeat
        // went through (a broken or hostile one) would have us register in a tight loop: it waits like any failure.
        const forgotten = beating && error instanceof RemoteError && error.code === "unknown_peer";
        const retryInMs = forgotten ? 0 : backoffMs(attempt++);
        this.#opts.onEvent?.({ kind: "lost", error, retryInMs, registered });
        try {
          await delay(retryInMs, signal);
        } catch {
          break;
        }
      }
    }
  }

  #interval = 5_000;
  /** The id the tracker gave this registration, before it is complete (announced) and {@link peerId} says so. */
  #registeredAs: string | null = null;

  async #register(): Promise<void> {
    const conn = await connect(this.#opts.tracker, { signal: this.#abort.signal });
    this.#conn = conn;
    const msg: Message = { type: "register", port: this.#opts.port };
    if (this.#opts.host !== undefined) msg.host = this.#opts.host;
    const token = this.#opts.token?.();
    if (token !== undefined) msg.token = token;
    const reg = await conn.request(msg, "registered");
    this.#registeredAs = reg.peerId;
    this.#interval = reg.heartbeatMs;
    this.#trackerKey = reg.publicKey ?? null;
    this.#trackerFeatures = new Set(reg.features);
    const h = this.#opts.holdings();
    await sendAnnounce(conn, reg.peerId, h.complete, h.partial, []);
    for (const g of h.groups ?? []) {
      // One at a time: a group we were removed from must not stop the others (or registration).
      try {
        await conn.request(
          { type: "announce", peerId: reg.peerId, add: [], partial: [], remove: [], groupAdd: [g] },
          "ok",
        );
      } catch (error) {
        if (!(error instanceof RemoteError)) throw error;
        this.#opts.onEvent?.({ kind: "group-refused", group: g.group, error });
      }
    }
    this.#peerId = reg.peerId;
    this.#opts.onEvent?.({ kind: "registered", peerId: reg.peerId });
  }

  #exclusive(fn: () => Promise<void>): Promise<void> {
    const next = this.#queue.then(fn);
    this.#queue = next.catch(() => {});
    return next;
  }

  /**
   * Stops heartbeating. Unregisters first (bounded) unless `unregister` is
   * false, which leaves the tracker to expire us as after a crash. Safe to
   * call twice.
   */
  async stop(options: { unregister?: boolean } = {}): Promise<void> {
    if (!this.#stopping) {
      this.#stopping = true;
      // Not registered: nothing to take back, and a registration still waiting on a tracker that does not answer
      // must not hold up the stop (Ctrl-C on a get took 10 s). Else at most 2 s, after the registration or heartbeat
      // under way.
      if (options.unregister !== false && this.#registeredAs !== null) {
        const unregistered = this.#exclusive(async () => {
          const conn = this.#conn, peerId = this.#peerId;
          if (conn && peerId && !conn.closed) await conn.request({ type: "unregister", peerId }, "ok", 2_000);
        });
        await settledWithin(unregistered, 2_000); // failed or late: the tracker will expire us
      }
      this.#abort.abort();
      this.#conn?.close();
    }
    await this.#running;
  }
}

/** One line for a log, e.g. `registered with tracker as 3f1c…` or `lost the tracker (…); retrying in 500 ms`. */
export function describeLinkEvent(e: LinkEvent): string {
  switch (e.kind) {
    case "registered":
      return `registered with tracker as ${e.peerId}`;
    case "lost":
      return `${e.registered ? "lost the tracker" : "cannot register with the tracker"} (${
        describeError(e.error)
      }); retrying in ${e.retryInMs} ms`;
    case "group-refused":
      return `the tracker refused sharing into ${e.group}: ${describeError(e.error)}`;
  }
}

/** Sends ANNOUNCE messages, splitting the manifests into bounded batches. */
export async function sendAnnounce(
  conn: Connection,
  peerId: string,
  add: Manifest[],
  partial: string[],
  remove: string[],
): Promise<void> {
  let batch: Manifest[] = [];
  let bytes = 0;
  const flush = async (last: boolean) => {
    await conn.request(
      { type: "announce", peerId, add: batch, partial: last ? partial : [], remove: last ? remove : [] },
      "ok",
    );
    batch = [];
    bytes = 0;
  };
  for (const m of add) {
    const size = 200 + m.name.length * 6 + m.chunks.length * 67;
    if (batch.length > 0 && bytes + size > ANNOUNCE_BATCH_BYTES) await flush(false);
    batch.push(m);
    bytes += size;
  }
  await flush(true);
}

/** Catalog: files with a live source, optionally filtered by name. */
export async function listFiles(conn: Connection, query?: string): Promise<FileSummary[]> {
  const msg = query === undefined ? { type: "list_files" as const } : { type: "list_files" as const, query };
  return (await conn.request(msg, "file_list")).files;
}

/** A file's manifest, already checked against its id by the decoder. */
export async function getManifest(conn: Connection, fileId: string): Promise<Manifest> {
  return (await conn.request({ type: "get_manifest", fileId }, "manifest")).manifest;
}

/** GET_MANIFEST and GET_PEERS for one file: sent together, answered in this order ({@link receiveFileAnswers}). */
export function fileQuestions(fileId: string): Message[] {
  return [{ type: "get_manifest", fileId }, { type: "get_peers", fileId }];
}

/** The answer to a LIST_FILES already sent. */
export async function receiveFileList(conn: Connection): Promise<FileSummary[]> {
  return expectMessage(await conn.receive(), "file_list").files;
}

/**
 * The answers to {@link fileQuestions} already sent: the manifest (checked
 * against its id by the decoder) and the live peers, each for `fileId`.
 */
export async function receiveFileAnswers(
  conn: Connection,
  fileId: string,
): Promise<{ manifest: Manifest; peers: PeerEntry[] }> {
  const m = expectMessage(await conn.receive(), "manifest");
  if (m.fileId !== fileId) throw wrongFile(conn, fileId);
  return { manifest: m.manifest, peers: await receivePeers(conn, fileId) };
}

/** The answer to a GET_PEERS for `fileId` already sent: the live peers holding it. */
export async function receivePeers(conn: Connection, fileId: string): Promise<PeerEntry[]> {
  const p = expectMessage(await conn.receive(), "peer_list");
  if (p.fileId !== fileId) throw wrongFile(conn, fileId);
  return p.peers;
}

function wrongFile(conn: Connection, fileId: string): ProtocolError {
  return new ProtocolError(`${conn.remote} answered about another file than ${fileId}`, "wrong_file");
}
