// Bytes: lane hashing against node:crypto.
import assert from "node:assert/strict";
import { LaneHasher, LANES } from "../lib/sha256_lanes.ts";
import { randomBytes, sha } from "./helpers.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("four inputs hashed in lanes give each its SHA-256: every padding case, and inputs longer than a segment", () => {
  const hasher = new LaneHasher();
  // 55/56 and 119/120: the length field fits in the last block or needs one more; 65 536: one copy segment.
  for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 65_535, 65_536, 65_537, 200_000, 1 << 20]) {
    const inputs = Array.from({ length: LANES }, () => randomBytes(n));
    const out = inputs.map(() => new Uint8Array(32));
    hasher.digest(inputs, out);
    assert.deepEqual(out.map(hex), inputs.map(sha), `length ${n}`);
  }
});

Deno.test("lane hashing: the same input in every lane, views into a larger buffer, and a hasher used again", () => {
  const hasher = new LaneHasher();
  const big = randomBytes(4 * 3000 + 7);
  const views = [0, 1, 2, 3].map((i) => big.subarray(7 + 3000 * i, 7 + 3000 * (i + 1)));
  const out = views.map(() => new Uint8Array(40).fill(0xee));
  hasher.digest(views, out);
  assert.deepEqual(out.map((o) => hex(o.subarray(0, 32))), views.map(sha));
  assert.ok(out.every((o) => o.subarray(32).every((b) => b === 0xee)), "nothing written past 32 bytes");
  const same = Array(LANES).fill(views[2]!);
  hasher.digest(same, out);
  assert.ok(out.every((o) => hex(o.subarray(0, 32)) === sha(views[2]!)));
  // "abc" (FIPS 180-4 example) after a long input: the state starts afresh each time.
  const abc = new TextEncoder().encode("abc");
  hasher.digest(Array(LANES).fill(abc), out);
  assert.equal(hex(out[3]!.subarray(0, 32)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
});

Deno.test("lane hashing refuses the wrong number of inputs, inputs of different lengths, short outputs", () => {
  const hasher = new LaneHasher();
  const out = () => Array.from({ length: LANES }, () => new Uint8Array(32));
  assert.throws(() => hasher.digest([new Uint8Array(4)], out()), /expected 4 inputs and outputs, got 1/);
  const uneven = [randomBytes(64), randomBytes(64), randomBytes(64), randomBytes(65)];
  assert.throws(() => hasher.digest(uneven, out()), /differ in length/);
  const short = out();
  short[1] = new Uint8Array(31);
  assert.throws(() => hasher.digest(uneven.map(() => uneven[0]!), short), /shorter than 32 bytes/);
});
