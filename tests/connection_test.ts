/**
 * lib/connection.ts over an in-memory stream: how frames are read off the
 * socket, measured by what each read is asked to fill.
 *
 * @module
 */

import assert from "node:assert/strict";
import { settledWithin } from "../lib/async.ts";
import { concatBytes } from "../lib/bytes.ts";
import { connect, Connection } from "../lib/connection.ts";
import { ProtocolError, UnreachableError } from "../lib/errors.ts";
import { encodeFrame } from "../lib/framing.ts";
import { encodeMessage, helloMessage, type Message } from "../lib/messages.ts";
import { unansweredAddress } from "./helpers.ts";

/**
 * A Deno.Conn that hands out `stream` as a socket would: each read gets as
 * much as it asks for, up to what is left. Records every read.
 */
function streamConn(stream: Uint8Array): { conn: Deno.Conn; reads: { into: Uint8Array; n: number }[] } {
  let at = 0;
  const reads: { into: Uint8Array; n: number }[] = [];
  const conn = {
    remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
    read(into: Uint8Array): Promise<number | null> {
      if (at >= stream.length) return Promise.resolve(null);
      const n = Math.min(into.length, stream.length - at);
      into.set(stream.subarray(at, at + n));
      at += n;
      reads.push({ into, n });
      return Promise.resolve(n);
    },
    write: (b: Uint8Array) => Promise.resolve(b.length),
    close() {},
  };
  return { conn: conn as unknown as Deno.Conn, reads };
}

function filled(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);
}

Deno.test("large payloads are read in place, and the few bytes read with each header are all that is copied", async () => {
  const KiB = 1024;
  const frames = [
    { type: 9, payload: filled(300 * KiB, 1) },
    { type: 9, payload: filled(300 * KiB, 2) },
    { type: 4, payload: filled(10, 3) }, // a small frame between large ones
    { type: 9, payload: filled(300 * KiB + 17, 4) },
    { type: 9, payload: filled(300 * KiB, 5) },
  ];
  const { conn, reads } = streamConn(concatBytes(frames.map((f) => encodeFrame(f.type, f.payload))));
  const payloads: Uint8Array[] = [];
  const c = new Connection(conn, {
    ioTimeoutMs: 0,
    allocate: (n) => {
      const b = new Uint8Array(n);
      payloads.push(b);
      return b;
    },
  });
  for (const want of frames) {
    const got = await c.receiveFrame();
    assert.equal(got.type, want.type);
    assert.ok(got.payload.every((b, i) => b === want.payload[i]), `payload of type ${want.type} intact`);
  }
  c.close();
  // Bytes read anywhere but into a payload buffer are copied out again.
  const copied = reads.filter((r) => !payloads.some((p) => p.buffer === r.into.buffer)).reduce((s, r) => s + r.n, 0);
  // Only the first header is read with a full-size read (small frames come many to a read); after a large frame the
  // next header comes with at most 4 KiB, even where a small frame sits between two large ones.
  assert.ok(copied <= 256 * KiB + 4 * 4 * KiB, `${copied} bytes copied`);
  for (const p of payloads.filter((p) => p.length >= 300 * KiB)) {
    assert.ok(reads.some((r) => r.into.buffer === p.buffer), "each large payload is read into in place");
  }
});

Deno.test("a stream of small frames is read many frames at a time", async () => {
  const frames = Array.from({ length: 500 }, (_, i) => encodeFrame(4, filled(40, i)));
  const { conn, reads } = streamConn(concatBytes(frames));
  const c = new Connection(conn, { ioTimeoutMs: 0 });
  for (let i = 0; i < frames.length; i++) assert.equal((await c.receiveFrame()).payload[0], filled(40, i)[0]);
  c.close();
  assert.equal(reads.length, 1, "500 frames of 45 bytes: one read");
});

Deno.test("the bytes of a large frame count as they come, the first ones read with its header too; small frames do not", async () => {
  const KiB = 1024;
  const small = encodeFrame(4, filled(40, 1));
  const large = encodeFrame(9, filled(256 * KiB, 2));
  // The socket delivers a small frame, then the large frame's header with 48 KiB of its payload (a chunk's first
  // slice under an upload limit), then the rest once `more` is called, then another small frame.
  const pieces = [small, large.subarray(0, 5 + 48 * KiB), large.subarray(5 + 48 * KiB), small];
  let more!: () => void;
  const gate = new Promise<void>((resolve) => more = resolve);
  let at = 0, offset = 0;
  const conn = {
    remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
    async read(into: Uint8Array): Promise<number | null> {
      if (at === 2) await gate;
      const piece = pieces[at];
      if (!piece) return null;
      const n = Math.min(into.length, piece.length - offset);
      into.set(piece.subarray(offset, offset + n));
      offset += n;
      if (offset === piece.length) [at, offset] = [at + 1, 0];
      return n;
    },
    write: (b: Uint8Array) => Promise.resolve(b.length),
    close() {},
  } as unknown as Deno.Conn;
  const c = new Connection(conn, { ioTimeoutMs: 0 });
  assert.equal((await c.receiveFrame()).type, 4);
  assert.equal(c.largePayloadBytesIn, 0, "a small frame is not a chunk on its way");
  const next = c.receiveFrame();
  while (at < 2) await new Promise((resolve) => setTimeout(resolve, 1));
  await new Promise((resolve) => setTimeout(resolve, 1)); // the read has returned: let the connection take it in
  assert.ok(c.largePayloadBytesIn >= 48 * KiB, `${c.largePayloadBytesIn} bytes counted before the rest came`);
  more();
  assert.equal((await next).payload.length, 256 * KiB);
  const counted = c.largePayloadBytesIn;
  assert.ok(counted >= 256 * KiB && counted <= 256 * KiB + 5, `${counted} bytes counted`);
  assert.equal((await c.receiveFrame()).type, 4);
  assert.equal(c.largePayloadBytesIn, counted, "nor is one after it");
  c.close();
});

Deno.test("connect() to something that is not a Shoal node (an HTTP server, say) says so", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const c = await listener.accept();
    await c.write(new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"));
    c.close();
  })();
  const { port } = listener.addr;
  await assert.rejects(
    connect({ host: "127.0.0.1", port }),
    (e: unknown) =>
      e instanceof ProtocolError &&
      e.message.startsWith(`127.0.0.1:${port} did not answer as a Shoal node (Cannot decode frame: length 1213486160`),
  );
  await served;
});

Deno.test("connect() stops when its signal aborts: in the TCP handshake, and in the wait for the HELLO's answer", async () => {
  const stopped = (e: unknown) =>
    e instanceof UnreachableError && /^Stopped connecting to 127\.0\.0\.1:\d+$/.test(e.message);
  // A SYN that is never answered: without the signal, the 10 s connect timeout.
  await using dead = await unansweredAddress();
  let started = performance.now();
  await assert.rejects(connect(dead.address, { signal: AbortSignal.timeout(200) }), stopped);
  assert.ok(performance.now() - started < 2_000, "stopped in the handshake");
  // Accepted, never answered: without the signal, the HELLO's own timeout.
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  started = performance.now();
  await assert.rejects(connect({ host: "127.0.0.1", port: listener.addr.port }, { signal: AbortSignal.timeout(200) }));
  assert.ok(performance.now() - started < 2_000, "stopped in the wait for the answer");
  (await accepted).close();
  // Aborted before it starts: no dial at all.
  await assert.rejects(connect(dead.address, { signal: AbortSignal.abort() }), stopped);
});

/** What `c` sends: `n` bytes, or fewer if it closes first. */
async function readUpTo(c: Deno.Conn, n: number): Promise<Uint8Array> {
  const got = new Uint8Array(n);
  let at = 0;
  while (at < n) {
    const read = await c.read(got.subarray(at));
    if (read === null) break;
    at += read;
  }
  return got.subarray(0, at);
}

Deno.test("connect() sends pipelined requests right behind its HELLO, before the answer; their replies follow it", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const fileId = "ab".repeat(32);
  const interested: Message = { type: "interested", fileId };
  const expected = concatBytes([encodeMessage(helloMessage()), encodeMessage(interested)]);
  const served = (async () => {
    using c = await listener.accept();
    // Everything the client sends before it hears a byte: both frames, or it waited for the HELLO's answer.
    const timer = setTimeout(() => c.close(), 5_000);
    try {
      assert.deepEqual(await readUpTo(c, expected.length), expected, "HELLO and INTERESTED before any answer");
    } finally {
      clearTimeout(timer);
    }
    const bits = new Uint8Array([0xff]);
    await c.write(concatBytes([
      encodeMessage(helloMessage()),
      encodeMessage({ type: "bitfield", fileId, count: 8, bits }),
    ]));
  })();
  await using conn = await connect({ host: "127.0.0.1", port: listener.addr.port }, { pipelined: [interested] });
  const reply = await conn.receive(5_000);
  assert.equal(reply.type, "bitfield");
  await served;
});

Deno.test("connect() calls onSent once, when its HELLO and pipelined messages are written and before their answer", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const fileId = "cd".repeat(32);
  const interested: Message = { type: "interested", fileId };
  const expected = concatBytes([encodeMessage(helloMessage()), encodeMessage(interested)]);
  const sent = Promise.withResolvers<void>();
  let calls = 0;
  let answered = false;
  const served = (async () => {
    using c = await listener.accept();
    assert.deepEqual(await readUpTo(c, expected.length), expected, "HELLO and INTERESTED before any answer");
    // No answer until onSent: a client that called it only after reading one would wait here until the timeout.
    await settledWithin(sent.promise, 5_000);
    assert.equal(calls, 1, "onSent was not called");
    answered = true;
    await c.write(concatBytes([
      encodeMessage(helloMessage()),
      encodeMessage({ type: "bitfield", fileId, count: 8, bits: new Uint8Array([0xff]) }),
    ]));
  })();
  await using conn = await connect({ host: "127.0.0.1", port: listener.addr.port }, {
    pipelined: [interested],
    onSent: () => {
      calls++;
      assert.equal(answered, false);
      sent.resolve();
    },
  });
  assert.equal((await conn.receive(5_000)).type, "bitfield");
  await served;
  assert.equal(calls, 1);
});
