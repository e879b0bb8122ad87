/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A fetch worker: holds peer connections, sends the requests the
 * coordinator schedules, checks each chunk's SHA-256 and writes it at its
 * offset in the `.part` file, so hashing and disk I/O stay off the main
 * thread. A chunk's bytes are read from the socket straight into their
 * frame buffer, hashed and written from there: no copies. The buffer is
 * placed so that the chunk's bytes can be written around the page cache
 * (see direct_io.ts).
 *
 * @module
 */

import { nodeCrypto } from "./builtins.ts";
import { preadFull } from "./file_io.ts";
import { connect, type Connection, expectMessage } from "./connection.ts";
import { describeError } from "./errors.ts";
import type { FromWorker, ToWorker } from "./worker_messages.ts";
import { BufferPool } from "./buffer_pool.ts";
import { chunkLength } from "./manifest.ts";
import { WriteQueue } from "./write_queue.ts";
import { compactHeap, Compactor } from "./heap.ts";
import { alignedBytes, DIRECT_MIN_CHUNK, PartFile } from "./direct_io.ts";
import { type Message, PIECE_DATA_OFFSET, WireType } from "./messages.ts";
import { SMALL_FRAME_BYTES } from "./server.ts";
import { makeMultiHasher, MULTI_READ_MAX_CHUNK, type MultiHasher } from "./chunk_hasher.ts";

/**
 * Free frame buffers kept for reuse, at most, in bytes. The pool only makes
 * a buffer when none is free, so it holds as many as were ever in use at
 * once: a frame being read on each link, the chunks waiting to be hashed
 * several at a time, the writes queued (a worker holding 4 links needs
 * about 7 of 1 MiB, 14 hashing eight at a time). A lower cap would drop buffers
 * after each busy moment and make new ones at the next: a megabyte of
 * garbage each time, which piles up until V8 collects it (session 13 saw
 * 57 dropped and 25 MB more at the peak of a 4 GiB download by one worker).
 */
const POOL_BYTES = 16 * 1024 * 1024;

/**
 * Verified chunks waiting for the write lock or being written (direct writes run on a thread of their own, see
 * direct_io.ts) before this worker stops reading its sockets.
 */
const MAX_QUEUED_WRITES = 2;

/** A chunk received from a link and not yet hashed. */
interface Received {
  link: number;
  index: number;
  data: Uint8Array<ArrayBuffer>;
}

/** A verified chunk on its way to the disk. */
interface Verified {
  link: number;
  index: number;
  /** The chunk's bytes, in a pool buffer. */
  data: Uint8Array<ArrayBuffer>;
  /** Set once written: whether the write went around the page cache. */
  direct: boolean;
}

interface FileInfo {
  fileId: string;
  size: number;
  chunkSize: number;
  digests: Uint8Array;
  count: number;
}

type Init = Extract<ToWorker, { op: "init" }>;

let file: FileInfo | null = null;
/** The "init" message until {@link prepare} has set up what it asks for. */
let pending: Init | null = null;
let part: PartFile | null = null;
/** The grant presented to peers of a group file (refreshed by the coordinator). */
let grant: string | null = null;
/** Buffers for whole PIECE payloads (36 header bytes + a full chunk). */
let pool: BufferPool | null = null;
let writes: WriteQueue<Verified> | null = null;
const compactor = new Compactor();
/** Whether the start-up compaction has run (see {@link written}). */
let startCompacted = false;
/** Hashes full chunks several at a time, where the coordinator found that faster (see chunk_hasher.ts). */
let multi: MultiHasher | null = null;
/** Full chunks waiting to be hashed together, fewer than the hasher's lanes. */
const waiting: Received[] = [];
let waitingTimer: ReturnType<typeof setTimeout> | undefined;
let hashedInLanes = 0;
let multiDigests: Uint8Array[] = [];
/** Open connections by link (see worker_messages.ts), and the chunks each was asked for and still owes. */
const links = new Map<number, Connection>();
/** Per link, {@link Connection.largePayloadBytesIn} when {@link reportReceiving} last looked. */
const receivedSeen = new Map<number, number>();
let receivingTimer: ReturnType<typeof setInterval> | undefined;
const outstanding = new Map<number, Set<number>>();
/** Links still connecting, and those of them the coordinator has dropped meanwhile (closed once connected). */
const connecting = new Set<number>();
/** Links being opened whose HELLO is not sent yet (see {@link prepare}). */
const unsent = new Set<number>();
const abandoned = new Set<number>();

function post(msg: FromWorker, transfer: Transferable[] = []): void {
  self.postMessage(msg, transfer);
}

/**
 * Opens the `.part` and makes what handling chunks takes (buffers, write
 * queue, hasher), once; true when that is done. Not at "init": its first
 * use of `node:fs` starts Deno's Node layer (lib/builtins.ts), 40-60 ms
 * that the first HELLOs need not wait for. It runs once every link being
 * opened has sent its HELLO, in the wait for the answers (run at the first
 * one, it held the second link's HELLO back 45-90 ms in the WAN lab), at
 * the first frame received if that comes sooner (a link still connecting),
 * or when a "verify" needs the file. A failure is reported as fatal, and
 * the worker then ignores all but "close".
 */
function prepare(): boolean {
  const m = pending;
  if (m === null) return file !== null; // a failure set it to null
  pending = null;
  const fail = (message: string) => {
    file = null;
    post({ ev: "fatal", message });
    return false;
  };
  let opened: PartFile;
  try {
    opened = part = new PartFile(m.partPath, { direct: m.directIo && m.chunkSize >= DIRECT_MIN_CHUNK });
  } catch (err) {
    return fail(`Cannot open ${m.partPath}: ${describeError(err)}`);
  }
  const size = PIECE_DATA_OFFSET + m.chunkSize;
  pool = new BufferPool(
    size,
    Math.max(4, Math.floor(POOL_BYTES / size)),
    opened.direct ? (n) => alignedBytes(n, PIECE_DATA_OFFSET) : undefined,
  );
  writes = new WriteQueue(m.writeLock, MAX_QUEUED_WRITES, (data, at, v) => {
    const direct = opened.write(data, at);
    if (typeof direct !== "boolean") return direct.then((d) => void (v.direct = d));
    v.direct = direct;
    return undefined;
  }, written);
  try {
    multi = makeMultiHasher(m.hasher, m.nativeLibrary);
  } catch (err) {
    return fail(describeError(err));
  }
  multiDigests = Array.from({ length: multi?.lanes ?? 0 }, () => new Uint8Array(32));
  return true;
}

/** Marks `link`'s HELLO sent, and prepares once no link being opened still has its HELLO to send. */
function helloSent(link: number): void {
  unsent.delete(link);
  if (unsent.size === 0) prepare();
}

/** A buffer for a received frame's payload: the pool's, so {@link prepare} must have run by then. */
function frameBuffer(length: number): Uint8Array<ArrayBuffer> {
  if (!prepare() || pool === null) throw new Error("the worker could not set up the download's file");
  return pool.take(length);
}

/** Whether `bytes` hash to chunk `index`'s SHA-256. */
function matches(f: FileInfo, index: number, bytes: Uint8Array): boolean {
  return sameDigest(f, index, nodeCrypto().createHash("sha256").update(bytes).digest());
}

function sameDigest(f: FileInfo, index: number, got: Uint8Array): boolean {
  const want = f.digests.subarray(32 * index, 32 * index + 32);
  for (let i = 0; i < 32; i++) if (got[i] !== want[i]) return false;
  return true;
}

async function runPeer(link: number, host: string, port: number, early: number[]): Promise<void> {
  const f = file!;
  let reason = "closed by the peer";
  let conn: Connection | null = null;
  post({ ev: "dialing", link });
  try {
    connecting.add(link);
    unsent.add(link);
    // No per-write deadline (a timer per request): the coordinator drops a peer that owes chunks and goes quiet.
    // AUTHORIZE, INTERESTED and the early REQUESTs go out with the HELLO: their answers come a round trip sooner.
    const first: Message[] = [{ type: "interested", fileId: f.fileId }];
    const granted = grant; // a "grant" op while connecting goes to the open links only
    if (granted !== null) first.unshift({ type: "authorize", fileId: f.fileId, grant: granted });
    for (const index of early) first.push({ type: "request", fileId: f.fileId, index });
    conn = await connect({ host, port }, {
      pipelined: first,
      allocate: frameBuffer,
      onSent: () => helloSent(link),
      ioTimeoutMs: 0,
      // A PIECE longer than a chunk is refused with its header, not buffered (16 MiB trickled in, byte by byte, looked
      // like progress); nothing else a peer sends here comes near 64 KiB (a BITFIELD is at most 25 kB).
      maxPayloadFor: (type) => type === WireType.piece ? PIECE_DATA_OFFSET + f.chunkSize : SMALL_FRAME_BYTES,
    });
    if (abandoned.has(link)) return;
    links.set(link, conn);
    outstanding.set(link, new Set(early));
    if (granted !== null) expectMessage(await conn.receive(0), "ok");
    const bf = expectMessage(await conn.receive(0), "bitfield");
    if (bf.fileId !== f.fileId) throw new Error(`sent the bitfield of another file (${bf.fileId.slice(0, 16)}…)`);
    if (bf.count !== f.count) {
      throw new Error(`sent a bitfield of ${bf.count} chunks, expected ${f.count}`);
    }
    const bits = bf.bits.slice();
    post({ ev: "ready", link, bits }, [bits.buffer]);
    while (!conn.closed) {
      await writes!.room();
      const msg = await conn.receive(0); // the coordinator watches for stalls
      if (msg.type === "piece") {
        const data = msg.data as Uint8Array<ArrayBuffer>;
        if (!onPiece(link, f, msg.index, msg.fileId, data)) pool!.give(data);
      } else if (msg.type === "have") {
        if (msg.fileId === f.fileId) post({ ev: "have", link, index: msg.index });
      } else if (msg.type === "reject") {
        // Only for a chunk asked for and still owed, like a PIECE: a flood of others cost the coordinator a timer each.
        if (msg.fileId === f.fileId && outstanding.get(link)?.delete(msg.index)) {
          post({ ev: "reject", link, index: msg.index, reason: msg.reason });
        }
      } else if (msg.type === "ok") {
        // a refreshed grant was accepted
      } else if (msg.type === "error") {
        reason = `error from the peer: ${msg.message}`;
        break;
      } else {
        reason = `unexpected ${msg.type} message`;
        break;
      }
    }
  } catch (err) {
    reason = describeError(err);
  } finally {
    conn?.close();
    connecting.delete(link);
    unsent.delete(link);
    abandoned.delete(link);
    links.delete(link);
    receivedSeen.delete(link);
    outstanding.delete(link);
    post({ ev: "gone", link, reason });
  }
}

/**
 * Checks a received chunk against the manifest and queues it for writing
 * at its offset. True when the write queue took `data` (its buffer goes
 * back to the pool once written).
 */
function onPiece(link: number, f: FileInfo, index: number, fileId: string, data: Uint8Array<ArrayBuffer>): boolean {
  if (fileId !== f.fileId || !outstanding.get(link)?.delete(index)) return false; // cancelled or never asked
  if (index >= f.count || data.length !== chunkLength(f, index)) {
    post({ ev: "bad", link, index });
    return false;
  }
  if (multi !== null && data.length === f.chunkSize) {
    waiting.push({ link, index, data });
    // No chunk is owed to this worker (a download's last ones, a small file's only one): none will join these.
    if (waiting.length === multi.lanes || !chunksOwed()) hashWaiting();
    // A worker that is short of CPU, where hashing several at a time pays, has the next chunks in hand well before.
    else waitingTimer ??= setTimeout(hashWaiting, multi.batchWaitMs);
    return true;
  }
  checked(f, { link, index, data }, matches(f, index, data));
  return true;
}

/** Whether any link of this worker has been asked for a chunk it has not sent yet. */
function chunksOwed(): boolean {
  for (const owed of outstanding.values()) if (owed.size > 0) return true;
  return false;
}

/** Queues a hashed chunk for writing, or reports it bad and frees its buffer. */
function checked(f: FileInfo, r: Received, good: boolean): void {
  if (good) {
    writes!.push({ item: { ...r, direct: false }, data: r.data, position: r.index * f.chunkSize });
  } else {
    post({ ev: "bad", link: r.link, index: r.index });
    pool!.give(r.data);
  }
}

/**
 * Hashes the waiting chunks: together in one call when there are enough
 * of them, else (the timer ran out) one by one, as a call costs the same
 * for one chunk as for all its lanes.
 */
function hashWaiting(): void {
  clearTimeout(waitingTimer);
  waitingTimer = undefined;
  const f = file;
  const batch = waiting.splice(0);
  if (f === null) return batch.forEach((r) => pool?.give(r.data)); // closed meanwhile
  if (batch.length >= multi!.minBatch) {
    const digests = multiDigests.slice(0, batch.length);
    multi!.digest(batch.map((r) => r.data), digests);
    hashedInLanes += batch.length;
    batch.forEach((r, i) => checked(f, r, sameDigest(f, r.index, digests[i]!)));
  } else {
    for (const r of batch) checked(f, r, matches(f, r.index, r.data));
  }
}

/** Tells the coordinator which links have had chunk bytes arrive since the last look (see FromWorker "receiving"). */
function reportReceiving(): void {
  for (const [link, conn] of links) {
    const bytes = conn.largePayloadBytesIn;
    if (bytes === (receivedSeen.get(link) ?? 0)) continue;
    receivedSeen.set(link, bytes);
    post({ ev: "receiving", link });
  }
}

/** A chunk is done once written (the coordinator's fdatasync makes it durable). */
function written(v: Verified, error: unknown): void {
  pool!.give(v.data);
  if (error === null) {
    post({ ev: "done", link: v.link, index: v.index, bytes: chunkLength(file!, v.index), direct: v.direct });
    // The garbage of loading and of prepare() is dead (lib/heap.ts). The full GC blocks this thread for 20-50 ms: now
    // the requests out keep the peers sending meanwhile; at the first HELLO it held up the answers to it.
    if (!startCompacted) {
      startCompacted = true;
      compactHeap();
    }
    compactor.chunk();
  } else {
    post({ ev: "fatal", message: `Cannot write the .part file: ${describeError(error)}` });
  }
}

/**
 * Checks chunks already in the `.part` (a resume): full ones several at a
 * time where a multi-hasher is in use and chunks are small.
 */
function verify(indexes: number[]): void {
  const f = file!;
  const good: number[] = [], bad: number[] = [];
  const lanes = multi !== null && f.chunkSize <= MULTI_READ_MAX_CHUNK ? multi.lanes : 1;
  const buf = new Uint8Array(lanes * f.chunkSize);
  const views = Array.from({ length: lanes }, (_, k) => buf.subarray(k * f.chunkSize, (k + 1) * f.chunkSize));
  const full = lanes > 1 ? indexes.filter((i) => chunkLength(f, i) === f.chunkSize) : [];
  const grouped = full.length - (full.length % lanes);
  for (let k = 0; k < grouped; k += lanes) {
    const group = full.slice(k, k + lanes);
    const read = group.map((i, lane) => preadFull(part!.fd, views[lane]!, i * f.chunkSize) === f.chunkSize);
    multi!.digest(views, multiDigests);
    group.forEach((i, lane) => (read[lane] && sameDigest(f, i, multiDigests[lane]!) ? good : bad).push(i));
  }
  const rest = lanes > 1 ? indexes.filter((i) => chunkLength(f, i) !== f.chunkSize) : indexes;
  for (const i of [...rest, ...full.slice(grouped)]) {
    const len = chunkLength(f, i);
    const at = preadFull(part!.fd, buf.subarray(0, len), i * f.chunkSize);
    (at === len && matches(f, i, buf.subarray(0, len)) ? good : bad).push(i);
  }
  post({ ev: "verified", good, bad });
}

/** Stops: drops the queued writes, lets those in flight finish (their buffers and descriptor are in use), closes. */
async function close(): Promise<void> {
  clearInterval(receivingTimer);
  clearTimeout(waitingTimer);
  for (const r of waiting.splice(0)) pool?.give(r.data);
  multi?.close();
  multi = null;
  writes?.close();
  for (const c of links.values()) c.close();
  try {
    await writes?.idle();
    await part?.close();
  } catch (err) {
    post({ ev: "fatal", message: describeError(err) });
  }
  file = null;
  part = null;
  post({ ev: "closed", buffers: pool?.stats ?? { made: 0, dropped: 0 }, hashedInLanes });
  self.close();
}

self.onmessage = (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  // After a failed init (reported as fatal) there is no file to work on: the coordinator is already stopping.
  if (file === null && m.op !== "init" && m.op !== "close") return;
  try {
    switch (m.op) {
      case "init":
        file = {
          fileId: m.fileId,
          size: m.size,
          chunkSize: m.chunkSize,
          digests: m.digests,
          count: m.digests.length / 32,
        };
        pending = m;
        receivingTimer = setInterval(reportReceiving, m.receivingMs);
        break;
      case "connect":
        runPeer(m.link, m.host, m.port, m.early);
        break;
      case "grant":
        grant = m.grant;
        for (const conn of links.values()) {
          conn.send({ type: "authorize", fileId: file!.fileId, grant }).catch(() => conn.close());
        }
        break;
      case "request": {
        const conn = links.get(m.link);
        if (!conn) {
          post({ ev: "reject", link: m.link, index: m.index, reason: "not connected" });
          break;
        }
        outstanding.get(m.link)?.add(m.index);
        conn.send({ type: "request", fileId: file!.fileId, index: m.index }).catch(() => conn.close());
        break;
      }
      case "cancel": {
        const conn = links.get(m.link);
        if (conn && outstanding.get(m.link)?.delete(m.index)) {
          conn.send({ type: "cancel", fileId: file!.fileId, index: m.index }).catch(() => conn.close());
        }
        break;
      }
      case "drop":
        if (connecting.has(m.link) && !links.has(m.link)) abandoned.add(m.link);
        links.get(m.link)?.close();
        break;
      case "verify":
        if (prepare()) verify(m.indexes);
        break;
      case "ending":
        compactor.stop();
        break;
      case "close":
        close();
        break;
    }
  } catch (err) {
    post({ ev: "fatal", message: describeError(err) });
  }
};
