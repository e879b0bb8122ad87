// A peer's request queue, over real sockets on port 0 in one process: a CANCEL drops a queued REQUEST, the queue is
// bounded and goes with its connection, and every reply still comes in arrival order.
import assert from "node:assert/strict";
import { connect, type Connection } from "../lib/connection.ts";
import { concatBytes } from "../lib/bytes.ts";
import { encodeMessage, type Message, PIECE_PREFIX_BYTES } from "../lib/messages.ts";
import { MAX_QUEUED_REQUESTS, PeerNode } from "../lib/peer.ts";
import { BufferPool } from "../lib/buffer_pool.ts";
import { delay } from "../lib/async.ts";
import { indexedFile, randomBytes, sha, tempDir, waitUntil } from "./helpers.ts";

const CHUNK = 16 * 1024;

/** Writes `chunks` chunks of random bytes as `<dir>/src/f` and indexes that folder in chunks of `chunkSize`. */
/** Sends `msgs` in one write, so that the peer reads them all at once. */
async function sendAll(c: Connection, msgs: Message[]): Promise<void> {
  await c.sendBytes(concatBytes(msgs.map(encodeMessage)));
}

const request = (fileId: string, index: number): Message => ({ type: "request", fileId, index });

/** Opens `n` connections to `peer` (added to `conns`), each INTERESTED in the file and told it has all `chunks`. */
async function openInterested(peer: PeerNode, fileId: string, chunks: number, n: number, conns: Connection[]) {
  for (let k = 0; k < n; k++) {
    const c = await connect(peer.address);
    conns.push(c);
    assert.equal((await c.request({ type: "interested", fileId }, "bitfield")).count, chunks);
  }
}

/** The next message, as `piece <index>` (checked against the manifest), or its type and fields. */
async function next(c: Connection, digests: string[]): Promise<string> {
  const m = await c.receive();
  if (m.type !== "piece") return JSON.stringify(m);
  assert.equal(sha(m.data), digests[m.index], `chunk ${m.index}'s bytes`);
  return `piece ${m.index}`;
}

Deno.test("a CANCEL drops queued requests the peer has not started to serve; the rest come in request order", async () => {
  await using dir = await tempDir();
  const f = await indexedFile(dir.path, randomBytes(8 * CHUNK));
  // 32 KiB/s with a one-second burst: chunks 0 and 1 go at once, then one every 0.5 s, so 3 and 4 are still queued
  // when their CANCELs are read.
  await using peer = PeerNode.start([f], { uploadLimit: 2 * CHUNK });
  await using c = await connect(peer.address);
  const id = f.id, digests = f.manifest.chunks;
  assert.equal((await c.request({ type: "interested", fileId: id }, "bitfield")).count, 8);
  await sendAll(c, [
    ...[0, 1, 2, 3, 4, 5].map((i) => request(id, i)),
    { type: "cancel", fileId: id, index: 3 },
    { type: "cancel", fileId: id, index: 4 },
  ]);
  const got = [];
  for (let i = 0; i < 4; i++) got.push(await next(c, digests));
  assert.deepEqual(got, ["piece 0", "piece 1", "piece 2", "piece 5"]);
  // Requests are answered in order, so anything still owed for 3 or 4 would come before the answer to this one.
  await c.send(request(id, 6));
  assert.equal(await next(c, digests), "piece 6");
  assert.equal(peer.stats.cancelled, 2);
  assert.equal(peer.stats.chunksServed, 5);
  // A CANCEL for a chunk not queued (served already, never asked) is ignored, with no reply.
  await sendAll(c, [
    { type: "cancel", fileId: id, index: 0 },
    { type: "cancel", fileId: id, index: 7 },
    request(id, 7),
  ]);
  assert.equal(await next(c, digests), "piece 7");
  assert.equal(peer.stats.cancelled, 2);
});

Deno.test("a peer reads at most MAX_QUEUED_REQUESTS requests ahead and drops them when the connection goes", async () => {
  await using dir = await tempDir();
  const f = await indexedFile(dir.path, randomBytes(8 * CHUNK));
  await using peer = PeerNode.start([f], { uploadLimit: 2 * CHUNK }); // two chunks a second
  const c = await connect(peer.address);
  try {
    // About 45 KB of requests: the kernel takes them all, the peer must stop reading.
    await sendAll(c, Array.from({ length: 1000 }, (_, i) => request(f.id, i % 8)));
    await waitUntil(() => peer.queuedRequests >= MAX_QUEUED_REQUESTS);
    assert.equal(peer.queuedRequests, MAX_QUEUED_REQUESTS);
    // As chunks are sent it reads on, one request for each: the queue stays full, never more.
    const served = peer.stats.chunksServed;
    await waitUntil(() => peer.stats.chunksServed >= served + 2);
    assert.equal(peer.queuedRequests, MAX_QUEUED_REQUESTS);
  } finally {
    c.close(); // with unread PIECEs: the peer's next write fails
  }
  await waitUntil(() => peer.queuedRequests === 0); // serving them would take two minutes
});

Deno.test("closing a peer ends its connections at once, even with full queues waiting on the upload limit", async () => {
  await using dir = await tempDir();
  const f = await indexedFile(dir.path, randomBytes(4 * 16 * CHUNK), 16 * CHUNK); // 256 KiB chunks
  const peer = PeerNode.start([f], { uploadLimit: CHUNK }); // 16 s a chunk after the first
  await using c = await connect(peer.address);
  await sendAll(c, Array.from({ length: 400 }, (_, i) => request(f.id, i % 4)));
  await waitUntil(() => peer.queuedRequests === MAX_QUEUED_REQUESTS);
  const started = performance.now();
  await peer.close();
  const ms = performance.now() - started;
  assert.ok(ms < 5_000, `close took ${Math.round(ms)} ms`);
  assert.equal(peer.queuedRequests, 0);
});

Deno.test("replies keep arrival order across queued requests; REJECT and ERROR answers are as before", async () => {
  await using dir = await tempDir();
  const f = await indexedFile(dir.path, randomBytes(2 * CHUNK));
  await using peer = PeerNode.start([f], { uploadLimit: 2 * CHUNK });
  await using c = await connect(peer.address);
  const id = f.id, digests = f.manifest.chunks, unknown = "0".repeat(64);
  await sendAll(c, [
    request(id, 0),
    request(id, 1),
    request(unknown, 0),
    { type: "get_manifest", fileId: unknown },
    request(id, 7),
    { type: "get_peers", fileId: id },
    { type: "interested", fileId: unknown },
    request(id, 0),
  ]);
  const got = [];
  for (let i = 0; i < 8; i++) got.push(await next(c, digests));
  assert.deepEqual(got, [
    "piece 0",
    "piece 1",
    JSON.stringify({ type: "reject", fileId: unknown, index: 0, reason: "not shared here" }),
    JSON.stringify({ type: "error", code: "not_found", message: `File ${unknown} is not shared here` }),
    JSON.stringify({ type: "reject", fileId: id, index: 7, reason: "no such chunk" }),
    JSON.stringify({ type: "error", code: "unsupported", message: "A peer does not handle get_peers messages" }),
    JSON.stringify({ type: "error", code: "not_found", message: `File ${unknown} is not shared here` }),
    "piece 0",
  ]);
  assert.equal(peer.stats.rejected, 2);
  // The connection stays open after those errors.
  assert.equal((await c.request({ type: "get_manifest", fileId: id }, "manifest")).manifest.name, "f");
});

Deno.test("a peer sending to 12 downloaders at once makes a chunk buffer for each, lets none go, and frees them once idle", async () => {
  await using dir = await tempDir();
  // 4 MiB chunks: 12 in use at once are 48 MiB, more than a pool kept before it kept all the send budget allows.
  const f = await indexedFile(dir.path, randomBytes(4 * 4 * 1024 * 1024), 4 * 1024 * 1024);
  const peer = PeerNode.start([f], {});
  const conns: Connection[] = [];
  try {
    await openInterested(peer, f.id, 4, 12, conns);
    // 32 MiB asked of each and nothing read: the socket buffers fill and the peer's send waits, holding its buffer.
    for (const c of conns) await sendAll(c, [...Array(8).keys()].map((i) => request(f.id, i % 4)));
    await waitUntil(() => peer.buffers.made >= 12);
  } finally {
    for (const c of conns) c.close();
    await peer.close(); // waits for the sends, which fail now and give their buffers back
  }
  assert.deepEqual(peer.buffers, { made: 12, dropped: 0, free: 12 });
  // Then the pool shrinks back: the first period saw all 12 in use, the next none.
  assert.equal(peer.trimBuffers(), 0);
  assert.equal(peer.trimBuffers(), 12);
  assert.equal(peer.buffers.free, 0);
});

Deno.test("chunk frames in use stay within the peer's send budget: downloaders that never read cannot hold more", async () => {
  await using dir = await tempDir();
  const MiB = 1024 * 1024;
  const f = await indexedFile(dir.path, randomBytes(16 * MiB), MiB);
  const peer = PeerNode.start([f], { sendBudgetBytes: 2 * (PIECE_PREFIX_BYTES + MiB) });
  const stuck: Connection[] = [];
  try {
    await openInterested(peer, f.id, 16, 3, stuck);
    for (const c of stuck) await sendAll(c, [...Array(32).keys()].map((i) => request(f.id, i % 16)));
    // Two sends hold the budget, blocked on full sockets; the third connection's waits for room.
    await waitUntil(() => peer.sendsWaiting === 1);
    assert.equal(peer.buffers.made, 2);
    await using c = await connect(peer.address);
    assert.equal((await c.request({ type: "interested", fileId: f.id }, "bitfield")).count, 16);
    await c.send(request(f.id, 5));
    for (const s of stuck) s.close(); // their sends fail and give their room back
    assert.equal(await next(c, f.manifest.chunks), "piece 5");
    assert.deepEqual(peer.buffers, { made: 2, dropped: 0, free: 2 });
    assert.equal(peer.sendsWaiting, 0);
  } finally {
    for (const s of stuck) s.close();
    await peer.close();
  }
});

Deno.test("a send whose buffer cannot be made (memory ran out) gives its room in the send budget back", async () => {
  await using dir = await tempDir();
  const f = await indexedFile(dir.path, randomBytes(4 * CHUNK));
  const peer = PeerNode.start([f], { sendBudgetBytes: PIECE_PREFIX_BYTES + CHUNK }); // room for one frame
  const take = BufferPool.prototype.take;
  let failures = 0;
  BufferPool.prototype.take = function () {
    failures++;
    throw new RangeError("Array buffer allocation failed");
  };
  try {
    await using first = await connect(peer.address);
    assert.equal((await first.request({ type: "interested", fileId: f.id }, "bitfield")).count, 4);
    await first.send(request(f.id, 0));
    await waitUntil(() => failures === 1);
    BufferPool.prototype.take = take;
    await using second = await connect(peer.address);
    assert.equal((await second.request({ type: "interested", fileId: f.id }, "bitfield")).count, 4);
    await second.send(request(f.id, 1));
    // Kept by the failed send, the budget's only room would make this wait until the peer closes.
    const timeout = new AbortController();
    const late = delay(5_000, timeout.signal).then(() => "no answer in 5 s", () => "");
    const got = await Promise.race([next(second, f.manifest.chunks), late]);
    timeout.abort();
    assert.equal(got, "piece 1");
    assert.equal(peer.sendsWaiting, 0);
  } finally {
    BufferPool.prototype.take = take;
    await peer.close();
  }
});

Deno.test("downloaders waiting on the upload limit hold no chunk buffer until their first slice is paid for", async () => {
  await using dir = await tempDir();
  const f = await indexedFile(dir.path, randomBytes(12 * CHUNK));
  const peer = PeerNode.start([f], { uploadLimit: CHUNK }); // one chunk a second, in slices of a quarter of one
  const conns: Connection[] = [];
  try {
    await openInterested(peer, f.id, 12, 12, conns);
    const started = performance.now();
    for (const [k, c] of conns.entries()) await c.send(request(f.id, k));
    await waitUntil(() => peer.buffers.made >= 1);
    await delay(300);
    // The 12 connections share the limit slice by slice. A second's worth goes at once (4 slices), then one slice
    // each quarter second: a connection takes a buffer only once its first slice is paid for.
    const paid = 4 + Math.ceil(((performance.now() - started) / 1000) * 4);
    assert.ok(peer.buffers.made <= paid, `${peer.buffers.made} buffers made, ${paid} first slices paid at most`);
    assert.ok(peer.buffers.made < 12, "the others wait without a buffer");
    // Shared, no chunk goes out whole in the first second: each connection has had a slice or none.
    assert.equal(peer.stats.chunksServed, 0);
  } finally {
    for (const c of conns) c.close();
    await peer.close();
  }
});

Deno.test("a downloader that asks and never reads is closed once its send has stalled, and gives its room back", async () => {
  await using dir = await tempDir();
  const MiB = 1024 * 1024;
  const f = await indexedFile(dir.path, randomBytes(16 * MiB), MiB);
  const peer = PeerNode.start([f], { sendBudgetBytes: 2 * (PIECE_PREFIX_BYTES + MiB), sendStallMs: 300 });
  const stuck: Connection[] = [];
  try {
    await openInterested(peer, f.id, 16, 3, stuck);
    for (const c of stuck) await sendAll(c, [...Array(32).keys()].map((i) => request(f.id, i % 16)));
    await waitUntil(() => peer.sendsWaiting === 1, 5_000);
    // Nobody closes the stuck ones here: the peer does, once their sends have waited 300 ms for room in their sockets.
    await using c = await connect(peer.address);
    assert.equal((await c.request({ type: "interested", fileId: f.id }, "bitfield")).count, 16);
    await c.send(request(f.id, 5));
    assert.equal(await next(c, f.manifest.chunks), "piece 5");
    // The third stuck one waited for room rather than for its socket; it has its turn to stall now.
    await waitUntil(() => peer.server.stats.active === 1, 5_000);
    assert.deepEqual(peer.buffers, { made: 2, dropped: 0, free: 2 });
  } finally {
    for (const s of stuck) s.close();
    await peer.close();
  }
});

/** Descriptors this process has open on `path`. */
async function openFds(path: string): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir("/proc/self/fd")) {
    if (await Deno.readLink(`/proc/self/fd/${e.name}`).then((l) => l === path, () => false)) n++;
  }
  return n;
}

Deno.test("a request that waited while its file was shared again is refused, and leaves no descriptor open", async () => {
  await using dir = await tempDir();
  const f = await indexedFile(dir.path, randomBytes(4 * CHUNK));
  await using peer = PeerNode.start([f], { uploadLimit: CHUNK }); // one chunk a second, after the first second's
  await using c = await connect(peer.address);
  assert.equal((await c.request({ type: "interested", fileId: f.id }, "bitfield")).count, 4);
  await c.send(request(f.id, 0));
  assert.equal(await next(c, f.manifest.chunks), "piece 0");
  await c.send(request(f.id, 1)); // waits about a second for the upload limit
  await delay(200);
  await peer.share(f); // the same file again (a shared folder saw it touched): a new record, its descriptor closed
  const answer = await c.receive();
  assert.deepEqual(answer, {
    type: "reject",
    fileId: f.id,
    index: 1,
    reason: "the file changed while the request waited",
  });
  // Read into the replaced record, chunk 1 opened a descriptor nothing would ever close.
  assert.equal(await openFds(f.path), 0);
  await c.send(request(f.id, 2));
  assert.equal(await next(c, f.manifest.chunks), "piece 2", "the file is served again from its new record");
});
