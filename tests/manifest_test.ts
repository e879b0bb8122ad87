/**
 * Tests for lib/manifest.ts (canonical bytes, file ids, verification,
 * hashing files) and lib/bitfield.ts.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Bitfield } from "../lib/bitfield.ts";
import { fromHex, toHex } from "../lib/bytes.ts";
import { ProtocolError } from "../lib/errors.ts";
import { MAX_CHUNK_SIZE } from "../lib/framing.ts";
import {
  canonicalManifestBytes,
  chunkCount,
  chunkDigests,
  chunkLength,
  DEFAULT_CHUNK_SIZE,
  fileIdOf,
  fileMatches,
  hashFile,
  type Manifest,
  manifestProblem,
  MAX_CHUNKS,
  MIN_CHUNK_SIZE,
  verifyManifest,
} from "../lib/manifest.ts";
import { MAX_NAME_BYTES } from "../lib/names.ts";
import { setDefaultHasher } from "../lib/chunk_hasher.ts";
import { HASHERS } from "./helpers.ts";

const HELLO_CHUNK = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
const HELLO_TXT: Manifest = { name: "hello.txt", size: 5, chunkSize: 16384, chunks: [HELLO_CHUNK] };
const HELLO_ID = "89284bebbb2a605e9d292f79a2716a0a50b35197c27b982f9521fca6b585d1ee";

/** Canonical bytes of HELLO_TXT, field by field. */
const HELLO_CANONICAL = "73686f616c2d6d616e69666573742d7631" + // "shoal-manifest-v1", 17 ASCII bytes
  "0000000000000005" + // size = 5, u64 BE
  "00004000" + // chunkSize = 16384, u32 BE
  "00000001" + // count = 1, u32 BE
  "2cf24dba5fb0a30e26e83b2ac5b9e29e" + "1b161e5c1fa7425e73043362938b9824"; // SHA-256("hello"), raw

function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A valid 3-chunk manifest (the last chunk short) with real hashes. */
function threeChunks(name = "data.bin"): Manifest {
  const size = 2 * MIN_CHUNK_SIZE + 100;
  const bytes = Uint8Array.from({ length: size }, (_, k) => k % 251);
  const chunks = [0, 1, 2].map((i) => sha256Hex(bytes.subarray(i * MIN_CHUNK_SIZE, (i + 1) * MIN_CHUNK_SIZE)));
  return { name, size, chunkSize: MIN_CHUNK_SIZE, chunks };
}

/** Asserts verifyManifest rejects `value` with code bad_manifest and a message matching `why`. */
function assertBadManifest(value: unknown, why: RegExp, expectedId?: string): void {
  assert.throws(() => verifyManifest(value, expectedId), (e: unknown) => {
    assert.ok(e instanceof ProtocolError, `threw ${String(e)}`);
    assert.equal(e.code, "bad_manifest");
    assert.match(e.message, why);
    return true;
  }, `expected ${why} for ${JSON.stringify(value)?.slice(0, 120)}`);
}

// ------------------------------------------------------------------ ids and canonical bytes

Deno.test("canonicalManifestBytes() layout is pinned for hello.txt", () => {
  const bytes = canonicalManifestBytes(HELLO_TXT);
  assert.equal(bytes.length, 17 + 8 + 4 + 4 + 32);
  assert.equal(toHex(bytes), HELLO_CANONICAL);
  assert.equal(sha256Hex(bytes), HELLO_ID);
  assert.equal(fileIdOf(HELLO_TXT), HELLO_ID);
});

Deno.test("canonicalManifestBytes() writes sizes above 2^32 as a full u64", () => {
  const size = 2 ** 40 + 3; // 1 TiB + 3 bytes at 16 MiB chunks: 65537 chunks
  const m: Manifest = { name: "big", size, chunkSize: MAX_CHUNK_SIZE, chunks: [] };
  m.chunks = Array.from({ length: chunkCount(size, MAX_CHUNK_SIZE) }, () => HELLO_CHUNK);
  const bytes = canonicalManifestBytes(m);
  assert.equal(toHex(bytes.subarray(17, 33)), "0000010000000003" + "01000000" + "00010001");
  assert.equal(bytes.length, 33 + 32 * 65537);
});

Deno.test("the canonical example in docs/PROTOCOL.md matches", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/PROTOCOL.md", import.meta.url));
  const block = doc.match(/<!-- canonical: hello\.txt -->\s*```text\n([\s\S]*?)```/);
  assert.ok(block, "docs/PROTOCOL.md has the canonical hello.txt example");
  const shown = block[1]!.split("\n").map((line) => line.split("|")[0]!.replace(/\s+/g, "")).join("");
  assert.equal(shown, HELLO_CANONICAL);
  assert.ok(doc.includes(HELLO_ID));
});

Deno.test("fileIdOf() does not depend on the name", () => {
  const a = threeChunks("a.bin");
  const b = threeChunks("completely different name ü.bin");
  assert.equal(fileIdOf(a), fileIdOf(b));
  assert.equal(fileIdOf({ ...HELLO_TXT, name: "greeting" }), HELLO_ID);
});

Deno.test("fileIdOf() changes with size, chunk size and every chunk hash", () => {
  const base = threeChunks();
  const id = fileIdOf(base);
  assert.match(id, /^[0-9a-f]{64}$/);
  assert.notEqual(fileIdOf({ ...base, size: base.size - 1 }), id);
  assert.notEqual(fileIdOf({ ...base, chunkSize: base.chunkSize * 2 }), id);
  for (let i = 0; i < base.chunks.length; i++) {
    const chunks = [...base.chunks];
    chunks[i] = HELLO_CHUNK;
    assert.notEqual(fileIdOf({ ...base, chunks }), id, `chunk ${i}`);
  }
  const swapped = [base.chunks[1]!, base.chunks[0]!, base.chunks[2]!];
  assert.notEqual(fileIdOf({ ...base, chunks: swapped }), id, "order matters");
});

// ------------------------------------------------------------------ verification

Deno.test("verifyManifest() accepts a valid manifest and returns a clean copy", () => {
  const m = threeChunks();
  const withExtra = { ...m, mtime: 123, chunks: [...m.chunks] };
  const clean = verifyManifest(withExtra, fileIdOf(m));
  assert.deepEqual(clean, m);
  assert.ok(!("mtime" in clean), "unknown keys are dropped");
  withExtra.chunks[0] = "tampered";
  assert.equal(clean.chunks[0], m.chunks[0], "the copy does not share the chunks array");
  assert.deepEqual(verifyManifest(HELLO_TXT), HELLO_TXT);
  assert.equal(manifestProblem(HELLO_TXT), null);
});

Deno.test("verifyManifest() accepts an empty file with no chunks", () => {
  const empty: Manifest = { name: "empty", size: 0, chunkSize: DEFAULT_CHUNK_SIZE, chunks: [] };
  assert.deepEqual(verifyManifest(empty, fileIdOf(empty)), empty);
  assertBadManifest({ ...empty, chunks: [HELLO_CHUNK] }, /has 1 chunk hashes, expected 0/);
});

Deno.test("verifyManifest() rejects a wrong chunk count", () => {
  const m = threeChunks();
  assertBadManifest({ ...m, chunks: m.chunks.slice(0, 2) }, /has 2 chunk hashes, expected 3/);
  assertBadManifest({ ...m, chunks: [...m.chunks, HELLO_CHUNK] }, /has 4 chunk hashes, expected 3/);
  assertBadManifest({ ...m, size: m.size + MIN_CHUNK_SIZE }, /expected 4/);
  assertBadManifest({ ...m, chunks: "abc" }, /chunks is not an array/);
});

Deno.test("verifyManifest() rejects more than MAX_CHUNKS chunks before looking at them", () => {
  const size = (MAX_CHUNKS + 1) * MIN_CHUNK_SIZE;
  assertBadManifest({ name: "huge", size, chunkSize: MIN_CHUNK_SIZE, chunks: [] }, /more than 200000/);
});

Deno.test("verifyManifest() rejects chunk hashes that are not 64 lowercase hex digits", () => {
  const m = threeChunks();
  const bad = [m.chunks[0]!.toUpperCase(), m.chunks[0]!.slice(1), m.chunks[0] + "0", "g".repeat(64), 7, null];
  for (const h of bad) {
    assertBadManifest({ ...m, chunks: [h, m.chunks[1], m.chunks[2]] }, /chunk hash/);
  }
});

Deno.test("verifyManifest() rejects a chunk size out of bounds", () => {
  for (const chunkSize of [0, MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1, 16384.5, "16384", -16384]) {
    assertBadManifest(
      { name: "x", size: 0, chunkSize, chunks: [] },
      /chunkSize is not an integer in \[16384, 16777216\]/,
    );
  }
  const atMax: Manifest = { name: "x", size: 1, chunkSize: MAX_CHUNK_SIZE, chunks: [HELLO_CHUNK] };
  assert.deepEqual(verifyManifest(atMax), atMax);
});

Deno.test("verifyManifest() rejects a bad size", () => {
  for (const size of [-1, 1.5, "5", Number.MAX_SAFE_INTEGER + 1, null]) {
    assertBadManifest({ ...HELLO_TXT, size }, /size is not a non-negative integer/);
  }
});

Deno.test("verifyManifest() rejects unsafe names", () => {
  const cases: [unknown, RegExp][] = [
    ["", /is empty/],
    [".", /relative directory/],
    ["..", /relative directory/],
    ["a/b", /path separator/],
    ["/etc/passwd", /path separator/],
    ["..\\windows", /path separator/],
    ["line\nbreak", /control character/],
    ["nul\u0000byte", /control character/],
    ["tab\there", /control character/],
    ["del\u007f", /control character/],
    ["x".repeat(MAX_NAME_BYTES + 1), /longer than 255 bytes/],
    ["é".repeat(128), /longer than 255 bytes/], // 128 characters, 256 UTF-8 bytes
    [42, /is not a string/],
    [undefined, /is not a string/],
  ];
  for (const [name, why] of cases) assertBadManifest({ ...HELLO_TXT, name }, new RegExp(`name .*${why.source}`));
  for (const name of ["x".repeat(MAX_NAME_BYTES), "é".repeat(127), "..hidden", "a..b", "résumé (1).pdf"]) {
    assert.equal(verifyManifest({ ...HELLO_TXT, name }).name, name);
  }
});

Deno.test("verifyManifest() rejects values that are not objects", () => {
  for (const v of [null, undefined, 7, "manifest"]) assertBadManifest(v, /is not an object/);
});

Deno.test("verifyManifest() rejects a manifest that does not hash to the expected id", () => {
  const m = threeChunks();
  assertBadManifest(m, /hashes to [0-9a-f]{64}, not the requested id/, HELLO_ID);
  assertBadManifest(HELLO_TXT, new RegExp(`not the requested id ${HELLO_ID.toUpperCase()}`), HELLO_ID.toUpperCase());
  assert.deepEqual(verifyManifest(HELLO_TXT, HELLO_ID), HELLO_TXT);
});

// ------------------------------------------------------------------ chunk arithmetic

Deno.test("chunkCount() and chunkLength() handle a short last chunk and an exact fit", () => {
  const m = { size: 2 * 16384 + 100, chunkSize: 16384 };
  assert.equal(chunkCount(m.size, m.chunkSize), 3);
  assert.equal(chunkLength(m, 0), 16384);
  assert.equal(chunkLength(m, 1), 16384);
  assert.equal(chunkLength(m, 2), 100);
  const exact = { size: 3 * 16384, chunkSize: 16384 };
  assert.equal(chunkCount(exact.size, exact.chunkSize), 3);
  assert.equal(chunkLength(exact, 2), 16384);
  assert.equal(chunkCount(0, 16384), 0);
  assert.equal(chunkCount(1, 16384), 1);
  assert.equal(chunkLength({ size: 1, chunkSize: 16384 }, 0), 1);
});

// ------------------------------------------------------------------ hashing files

Deno.test("hashFile() matches node:crypto chunk hashes on a file of a few chunks", async () => {
  const chunkSize = MIN_CHUNK_SIZE;
  const size = 3 * chunkSize + 1234;
  const bytes = Uint8Array.from({ length: size }, (_, k) => (k * 2654435761) >>> 24);
  const path = await Deno.makeTempFile({ prefix: "shoal-manifest-test-" });
  try {
    await Deno.writeFile(path, bytes);
    const progress: [number, number][] = [];
    const m = await hashFile(path, "sample.bin", chunkSize, (done, total) => progress.push([done, total]));
    const expected = [0, 1, 2, 3].map((i) => sha256Hex(bytes.subarray(i * chunkSize, (i + 1) * chunkSize)));
    assert.deepEqual(m, { name: "sample.bin", size, chunkSize, chunks: expected });
    assert.equal(chunkLength(m, 3), 1234);
    assert.deepEqual(progress, [[chunkSize, size], [2 * chunkSize, size], [3 * chunkSize, size], [size, size]]);
    assert.deepEqual(verifyManifest(m, fileIdOf(m)), m, "a hashed file yields a valid manifest");
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("hashFile() of an empty file has no chunks", async () => {
  const path = await Deno.makeTempFile({ prefix: "shoal-manifest-test-" });
  try {
    const m = await hashFile(path, "empty", MIN_CHUNK_SIZE);
    assert.deepEqual(m, { name: "empty", size: 0, chunkSize: MIN_CHUNK_SIZE, chunks: [] });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("hashFile() of hello.txt gives the documented file id", async () => {
  const path = await Deno.makeTempFile({ prefix: "shoal-manifest-test-" });
  try {
    await Deno.writeTextFile(path, "hello");
    const m = await hashFile(path, "hello.txt", 16384);
    assert.deepEqual(m, HELLO_TXT);
    assert.equal(fileIdOf(m), HELLO_ID);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("fileMatches(): only a regular file of the manifest's size whose every chunk hashes right", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shoal-manifest-test-" });
  try {
    const bytes = Uint8Array.from({ length: 3 * MIN_CHUNK_SIZE + 99 }, (_, k) => (k * 2654435761) >>> 24);
    const path = `${dir}/f.bin`;
    await Deno.writeFile(path, bytes);
    const m = await hashFile(path, "f.bin", MIN_CHUNK_SIZE);
    assert.equal(await fileMatches(path, m), true);
    for (const at of [0, MIN_CHUNK_SIZE + 7, bytes.length - 1]) { // first, middle and short last chunk
      const changed = Uint8Array.from(bytes);
      changed[at]! ^= 1;
      await Deno.writeFile(path, changed);
      assert.equal(await fileMatches(path, m), false, `byte ${at} changed`);
    }
    await Deno.writeFile(path, bytes.subarray(0, bytes.length - 1));
    assert.equal(await fileMatches(path, m), false, "one byte short");
    await Deno.writeFile(path, new Uint8Array(0));
    assert.equal(await fileMatches(path, { ...m, size: 0, chunks: [] }), true, "an empty file");
    assert.equal(await fileMatches(dir, { ...m, size: 0, chunks: [] }), false, "a directory");
    const fifo = `${dir}/fifo`;
    assert.ok((await new Deno.Command("mkfifo", { args: [fifo] }).output()).success);
    assert.equal(await fileMatches(fifo, { ...m, size: 0, chunks: [] }), false, "a FIFO, without waiting for a writer");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (const kind of HASHERS) {
  Deno.test(`hashFile() and fileMatches() with the ${kind} hasher`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "shoal-manifest-test-" });
    setDefaultHasher(kind);
    try {
      // With L lanes: 2L+1 full chunks and a short one (two groups, then two chunks alone); L and L-1: one group, or none.
      const lanes = kind === "native" ? 8 : 4;
      for (const count of [2 * lanes + 1, lanes, lanes - 1]) {
        const bytes = Uint8Array.from({ length: count * MIN_CHUNK_SIZE + 77 }, (_, k) => (k * 2654435761) >>> 24);
        const path = `${dir}/f${count}.bin`;
        await Deno.writeFile(path, bytes);
        const m = await hashFile(path, "f.bin", MIN_CHUNK_SIZE);
        const expected = Array.from(
          { length: count + 1 },
          (_, i) => sha256Hex(bytes.subarray(i * MIN_CHUNK_SIZE, (i + 1) * MIN_CHUNK_SIZE)),
        );
        assert.deepEqual(m.chunks, expected, `${count} chunks`);
        assert.equal(await fileMatches(path, m), true);
        for (const chunk of [0, 3, count - 1]) {
          const changed = Uint8Array.from(bytes);
          changed[chunk * MIN_CHUNK_SIZE + 5]! ^= 1;
          await Deno.writeFile(path, changed);
          assert.equal(await fileMatches(path, m), false, `${count} chunks, chunk ${chunk} changed`);
        }
      }
    } finally {
      setDefaultHasher(undefined);
      await Deno.remove(dir, { recursive: true });
    }
  });
}

// ------------------------------------------------------------------ bitfield

Deno.test("Bitfield set/has/count", () => {
  const b = new Bitfield(10);
  assert.equal(b.bytes.length, 2);
  assert.equal(b.count, 0);
  assert.equal(b.complete, false);
  assert.equal(b.set(0), true);
  assert.equal(b.set(2), true);
  assert.equal(b.set(9), true);
  assert.equal(b.set(2), false, "setting twice reports no change");
  assert.equal(b.count, 3);
  assert.deepEqual([...Array(10).keys()].filter((i) => b.has(i)), [0, 2, 9]);
  assert.equal(toHex(b.bytes), "a040", "most significant bit first: chunk 0 is 0x80 of byte 0");
  b.clear(2);
  b.clear(3); // not set: no change
  assert.equal(b.count, 2);
  assert.equal(toHex(b.bytes), "8040");
});

Deno.test("Bitfield rejects bits out of range and the wrong byte length", () => {
  const b = new Bitfield(10);
  assert.throws(() => b.set(10), RangeError);
  assert.throws(() => b.set(-1), RangeError);
  assert.throws(() => b.set(1.5), RangeError);
  assert.equal(b.has(10), false);
  assert.equal(b.has(-1), false);
  assert.throws(() => new Bitfield(10, new Uint8Array(1)), RangeError);
  assert.throws(() => new Bitfield(10, new Uint8Array(3)), RangeError);
  assert.throws(() => new Bitfield(0, new Uint8Array(1)), RangeError);
});

Deno.test("Bitfield clears spare bits of received bytes and does not count them", () => {
  const b = new Bitfield(10, new Uint8Array([0xff, 0xff]));
  assert.equal(b.count, 10);
  assert.equal(b.complete, true);
  assert.equal(toHex(b.bytes), "ffc0", "the 6 spare bits are cleared");
  assert.equal(b.has(10), false);
  const none = new Bitfield(3, new Uint8Array([0x1f]));
  assert.equal(none.count, 0, "only spare bits were set");
  assert.equal(toHex(none.bytes), "00");
});

Deno.test("Bitfield copies the bytes it is given", () => {
  const input = new Uint8Array([0x80]);
  const b = new Bitfield(8, input);
  input[0] = 0xff;
  assert.equal(b.count, 1);
  assert.equal(b.has(1), false);
});

Deno.test("Bitfield.missing() lists unset bits in order", () => {
  const b = new Bitfield(12, new Uint8Array([0b1011_0111, 0b1010_0000]));
  assert.deepEqual(b.missing(), [1, 4, 9, 11]);
  assert.equal(b.count, 8);
  for (const i of b.missing()) b.set(i);
  assert.deepEqual(b.missing(), []);
  assert.equal(b.complete, true);
});

Deno.test("Bitfield.full() sets every bit and no spare bit", () => {
  const b = Bitfield.full(11);
  assert.equal(b.count, 11);
  assert.equal(b.complete, true);
  assert.equal(toHex(b.bytes), "ffe0");
  assert.deepEqual(b.missing(), []);
  const empty = Bitfield.full(0);
  assert.equal(empty.bytes.length, 0);
  assert.equal(empty.complete, true);
});

Deno.test("manifest: chunkDigests gives each chunk's 32 raw bytes in order and refuses a non-hex digit", () => {
  const a = "00".repeat(31) + "ff", b = "AbCdEf".repeat(10) + "0123";
  const m = { name: "x", size: 3, chunkSize: 2, chunks: [a, b] };
  assert.deepEqual(chunkDigests(m), new Uint8Array([...fromHex(a), ...fromHex(b)]));
  assert.throws(() => chunkDigests({ ...m, chunks: [a, "g" + b.slice(1)] }), /chunk hash 1/);
  assert.throws(() => chunkDigests({ ...m, chunks: [a.slice(2)] }), /chunk hash 0/);
});
