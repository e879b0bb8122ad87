/**
 * Codec tests on bytes for lib/framing.ts: `<length u32 BE><type u8><payload>`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { concatBytes, fromHex, toHex } from "../lib/bytes.ts";
import { FrameTooLargeError, ProtocolError, TruncatedFrameError } from "../lib/errors.ts";
import {
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  type Frame,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  MAX_CHUNK_SIZE,
  writeFrameHeader,
} from "../lib/framing.ts";

/** Hex with spaces, comments and `+` joins allowed, to bytes. */
function hex(s: string): Uint8Array {
  return fromHex(s.replace(/\s+/g, ""));
}

/** Frames as plain values, so deepStrictEqual compares bytes, not buffers. */
function plain(frames: { type: number; payload: Uint8Array }[]): { type: number; payload: string }[] {
  return frames.map((f) => ({ type: f.type, payload: toHex(f.payload) }));
}

/** A stream of frames of varied types and sizes, including empty payloads. */
const STREAM_FRAMES: { type: number; payload: Uint8Array }[] = [
  { type: 0x01, payload: new TextEncoder().encode('{"protocol":"shoal"}') },
  { type: 0x03, payload: new Uint8Array(0) },
  { type: 0x33, payload: Uint8Array.from({ length: 36 }, (_, i) => (i * 37 + 11) & 0xff) },
  { type: 0x00, payload: new Uint8Array([0]) },
  { type: 0xff, payload: new Uint8Array(0) },
  { type: 0x34, payload: Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff) },
];
const STREAM = concatBytes(STREAM_FRAMES.map((f) => encodeFrame(f.type, f.payload)));
const EXPECTED = plain(STREAM_FRAMES);

Deno.test("encodeFrame() writes <length u32 BE><type u8><payload>", () => {
  assert.equal(toHex(encodeFrame(0x03, new Uint8Array([1, 2]))), "00000002" + "03" + "0102");
  assert.equal(toHex(encodeFrame(0x01, new Uint8Array(0))), "00000000" + "01");
  const big = encodeFrame(0x34, new Uint8Array(0x010203));
  assert.equal(big.length, FRAME_HEADER_BYTES + 0x010203);
  assert.equal(toHex(big.subarray(0, FRAME_HEADER_BYTES)), "00010203" + "34");
});

Deno.test("encodeFrame() then FrameDecoder round-trips type and payload", () => {
  for (const { type, payload } of STREAM_FRAMES) {
    const d = new FrameDecoder();
    const frames = d.push(encodeFrame(type, payload));
    assert.deepEqual(plain(frames), plain([{ type, payload }]));
    assert.equal(d.buffered, 0);
    d.finish();
  }
});

Deno.test("FrameDecoder decodes a whole stream pushed at once", () => {
  const d = new FrameDecoder();
  assert.deepEqual(plain(d.push(STREAM)), EXPECTED);
  d.finish();
});

Deno.test("FrameDecoder decodes the same frames whatever byte boundary splits the stream", () => {
  for (let i = 0; i <= STREAM.length; i++) {
    const d = new FrameDecoder();
    const frames = [...d.push(STREAM.subarray(0, i)), ...d.push(STREAM.subarray(i))];
    assert.deepEqual(plain(frames), EXPECTED, `split at ${i}`);
    d.finish();
  }
});

Deno.test("FrameDecoder decodes the same frames whatever two byte boundaries split the stream", () => {
  const short = STREAM_FRAMES.slice(0, 5); // every pair of cuts: keep the stream short
  const bytes = concatBytes(short.map((f) => encodeFrame(f.type, f.payload)));
  const expected = plain(short);
  for (let i = 0; i <= bytes.length; i++) {
    for (let j = i; j <= bytes.length; j++) {
      const d = new FrameDecoder();
      const frames = [
        ...d.push(bytes.subarray(0, i)),
        ...d.push(bytes.subarray(i, j)),
        ...d.push(bytes.subarray(j)),
      ];
      assert.deepEqual(plain(frames), expected, `split at ${i} and ${j}`);
      d.finish();
    }
  }
});

Deno.test("FrameDecoder decodes a stream fed one byte at a time", () => {
  const d = new FrameDecoder();
  const frames: Frame[] = [];
  for (let i = 0; i < STREAM.length; i++) {
    const got = d.push(STREAM.subarray(i, i + 1));
    assert.ok(got.length <= 1, "one byte completes at most one frame");
    frames.push(...got);
  }
  assert.deepEqual(plain(frames), EXPECTED);
  assert.equal(d.buffered, 0);
  d.finish();
});

Deno.test("FrameDecoder counts buffered bytes of the frame being assembled", () => {
  const d = new FrameDecoder();
  const frame = encodeFrame(0x34, new Uint8Array([9, 8, 7, 6]));
  assert.equal(d.buffered, 0);
  d.push(frame.subarray(0, 3));
  assert.equal(d.buffered, 3);
  d.push(frame.subarray(3, 7));
  assert.equal(d.buffered, 7);
  assert.equal(d.push(frame.subarray(7)).length, 1);
  assert.equal(d.buffered, 0);
});

Deno.test("FrameDecoder hands out payloads it owns (input buffers may be reused)", () => {
  const d = new FrameDecoder();
  const bytes = encodeFrame(0x31, new Uint8Array([1, 2, 3]));
  const [frame] = d.push(bytes);
  bytes.fill(0xee);
  assert.ok(frame);
  assert.equal(toHex(frame.payload), "010203");
});

Deno.test("FrameDecoder accepts zero-length payloads, several in one push", () => {
  const d = new FrameDecoder();
  const frames = d.push(hex("00000000 03" + "00000000 02" + "00000000 ff"));
  assert.deepEqual(plain(frames), [
    { type: 0x03, payload: "" },
    { type: 0x02, payload: "" },
    { type: 0xff, payload: "" },
  ]);
  assert.equal(d.payloadTarget(), null, "an empty payload never needs a target");
  d.finish();
});

Deno.test("FrameDecoder accepts a payload of exactly maxFrameBytes", () => {
  const d = new FrameDecoder({ maxFrameBytes: 10 });
  const [frame] = d.push(encodeFrame(0x34, new Uint8Array(10).fill(7)));
  assert.ok(frame);
  assert.equal(frame.payload.length, 10);
});

Deno.test("FrameDecoder throws FrameTooLargeError naming length and maximum", () => {
  const d = new FrameDecoder({ maxFrameBytes: 10 });
  assert.throws(() => d.push(hex("0000000b 34")), (e: unknown) => {
    assert.ok(e instanceof FrameTooLargeError);
    assert.ok(e instanceof ProtocolError, "a too-large frame is the peer's fault");
    assert.equal(e.code, "frame_too_large");
    assert.equal(e.length, 11);
    assert.equal(e.max, 10);
    assert.match(e.message, /length 11 exceeds maximum 10\b/);
    return true;
  });
});

Deno.test("FrameDecoder rejects a huge length from the header alone, before allocating", () => {
  const d = new FrameDecoder();
  assert.equal(d.maxFrameBytes, DEFAULT_MAX_FRAME_BYTES);
  // Only the 5 header bytes arrive: a 4 GiB announcement must fail now, not after buffering.
  assert.throws(() => d.push(hex("ffffffff 34")), (e: unknown) => {
    assert.ok(e instanceof FrameTooLargeError);
    assert.equal(e.length, 0xffffffff);
    assert.equal(e.max, DEFAULT_MAX_FRAME_BYTES);
    assert.match(e.message, new RegExp(`length 4294967295 exceeds maximum ${DEFAULT_MAX_FRAME_BYTES}`));
    return true;
  });
  assert.equal(d.payloadTarget(), null, "no payload buffer was allocated");
  assert.ok(d.buffered <= FRAME_HEADER_BYTES, `holds ${d.buffered} bytes, at most a header`);
  // The decoder stays failed: it never resynchronises inside a bad stream.
  assert.throws(() => d.push(new Uint8Array([0, 0, 0, 0, 1])), FrameTooLargeError);
});

Deno.test("FrameDecoder default cap fits the largest chunk plus the PIECE header", () => {
  assert.ok(DEFAULT_MAX_FRAME_BYTES >= MAX_CHUNK_SIZE + 32 + 4);
  const d = new FrameDecoder();
  const header = new Uint8Array(FRAME_HEADER_BYTES);
  writeFrameHeader(header, 0x34, DEFAULT_MAX_FRAME_BYTES + 1);
  assert.throws(() => d.push(header), FrameTooLargeError);
});

Deno.test("FrameDecoder.finish() throws TruncatedFrameError when a header was cut short", () => {
  const d = new FrameDecoder();
  d.push(hex("000000"));
  assert.throws(() => d.finish(), (e: unknown) => {
    assert.ok(e instanceof TruncatedFrameError);
    assert.ok(e instanceof ProtocolError);
    assert.equal(e.code, "truncated");
    assert.equal(e.missing, 2);
    assert.equal(e.message, "The connection closed in the middle of a message (2 bytes of it never came)");
    return true;
  });
});

Deno.test("FrameDecoder.finish() throws TruncatedFrameError when a payload was cut short", () => {
  const d = new FrameDecoder();
  const frame = encodeFrame(0x34, new Uint8Array(40));
  assert.deepEqual(d.push(frame.subarray(0, frame.length - 7)), []);
  assert.throws(() => d.finish(), (e: unknown) => {
    assert.ok(e instanceof TruncatedFrameError);
    assert.equal(e.missing, 7);
    return true;
  });
});

Deno.test("FrameDecoder.finish() is quiet at a frame boundary", () => {
  const d = new FrameDecoder();
  d.finish();
  d.push(STREAM);
  d.finish();
});

Deno.test("FrameDecoder payloadTarget() and advance() fill a payload without copies", () => {
  const payload = Uint8Array.from({ length: 100 }, (_, i) => i);
  const bytes = encodeFrame(0x34, payload);
  const d = new FrameDecoder();
  assert.equal(d.payloadTarget(), null, "no target before a header");
  assert.deepEqual(d.push(bytes.subarray(0, 3)), []);
  assert.equal(d.payloadTarget(), null, "no target while the header is incomplete");
  assert.deepEqual(d.push(bytes.subarray(3, FRAME_HEADER_BYTES + 10)), []);

  const target = d.payloadTarget();
  assert.ok(target);
  assert.equal(target.length, 90, "the target is the rest of the payload");
  assert.equal(d.payloadBytes, 100, "the whole payload's length");
  target.set(payload.subarray(10, 50));
  assert.equal(d.advance(40), null, "not whole yet");
  assert.equal(d.buffered, FRAME_HEADER_BYTES + 50);

  const rest = d.payloadTarget();
  assert.ok(rest);
  assert.equal(rest.length, 50);
  rest.set(payload.subarray(50));
  assert.throws(() => d.advance(51), RangeError, "cannot advance past the payload");
  const frame = d.advance(50);
  assert.ok(frame);
  assert.equal(frame.type, 0x34);
  assert.deepEqual([...frame.payload], [...payload]);
  assert.equal(d.payloadTarget(), null);
  assert.equal(d.payloadBytes, 0, "no payload being assembled");
  assert.equal(d.buffered, 0);
  d.finish();

  // push() carries on after an advance()-completed frame.
  assert.deepEqual(plain(d.push(STREAM)), EXPECTED);
});

Deno.test("FrameDecoder.advance() rejects use without a payload or with a negative count", () => {
  const d = new FrameDecoder();
  assert.throws(() => d.advance(0), RangeError);
  d.push(hex("00000004 34"));
  assert.throws(() => d.advance(-1), RangeError);
  assert.equal(d.advance(0), null);
  assert.ok(d.advance(4));
});

Deno.test("encodeFrame() rejects a type that is not a u8", () => {
  for (const type of [-1, 256, 1.5, Number.NaN, Infinity]) {
    assert.throws(() => encodeFrame(type, new Uint8Array(0)), RangeError, `type ${type}`);
  }
  assert.equal(encodeFrame(0, new Uint8Array(0))[4], 0);
  assert.equal(encodeFrame(255, new Uint8Array(0))[4], 255);
});

Deno.test("writeFrameHeader() rejects a length that is not a u32", () => {
  const out = new Uint8Array(FRAME_HEADER_BYTES);
  assert.throws(() => writeFrameHeader(out, 1, -1), RangeError);
  assert.throws(() => writeFrameHeader(out, 1, 2 ** 32), RangeError);
  writeFrameHeader(out, 0x25, 0xfffffffe);
  assert.equal(toHex(out), "fffffffe" + "25");
});

Deno.test("FrameDecoder: a type's own cap refuses a frame with its header, before the payload is read", () => {
  const d = new FrameDecoder({ maxFrameBytes: 1000, maxPayloadFor: (type) => type === 7 ? Infinity : 10 });
  assert.equal(d.push(encodeFrame(7, new Uint8Array(500))).length, 1, "type 7 may be large");
  assert.equal(d.push(encodeFrame(8, new Uint8Array(10))).length, 1, "type 8 up to 10 bytes");
  const header = encodeFrame(8, new Uint8Array(11)).subarray(0, 5); // the header alone
  assert.throws(() => d.push(header), (err: unknown) => err instanceof FrameTooLargeError && err.max === 10);
  const capped = new FrameDecoder({ maxFrameBytes: 100, maxPayloadFor: () => Infinity });
  assert.throws(
    () => capped.push(encodeFrame(7, new Uint8Array(101))),
    FrameTooLargeError,
    "never above maxFrameBytes",
  );
});
