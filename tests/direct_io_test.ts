// Bytes and one real file: aligned buffers, direct writes where they line up, buffered ones where not.
import assert from "node:assert/strict";
import { join } from "node:path";
import { BufferPool } from "../lib/buffer_pool.ts";
import { addressOf, alignedBytes, DIRECT_ALIGN, PartFile } from "../lib/direct_io.ts";

function pattern(n: number, seed: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

Deno.test("alignedBytes() places byte `at` on an alignment boundary, whatever the length", () => {
  for (const [length, at] of [[4096, 0], [36 + 65536, 36], [36 + (1 << 20), 36], [10_000, 4095], [1, 0]] as const) {
    const b = alignedBytes(length, at);
    assert.equal(b.length, length);
    assert.ok(b.byteOffset + length <= b.buffer.byteLength);
    assert.equal((addressOf(b)! + at) % DIRECT_ALIGN, 0, `length ${length}, at ${at}`);
    assert.equal(addressOf(b.subarray(at))! % DIRECT_ALIGN, 0);
  }
});

Deno.test("PartFile writes aligned chunks around the page cache and the rest through it, all read back intact", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shoal-direct-" });
  try {
    const path = join(dir, "f.part");
    const size = 3 * 65536 + 1000;
    await Deno.writeFile(path, new Uint8Array(size));
    const part = new PartFile(path, true);
    assert.equal(part.direct, true, "the temp dir's filesystem takes O_DIRECT");
    const chunk = (i: number) => {
      const b = alignedBytes(65536, 0);
      b.set(pattern(65536, i));
      return b;
    };
    assert.equal(part.threaded, true, "FFI is granted: direct writes run on a thread of their own");
    const first = part.write(chunk(0), 0);
    assert.ok(first instanceof Promise, "a direct write returns before the disk is done");
    assert.equal(await first, true);
    assert.equal(await part.write(chunk(2), 2 * 65536), true);
    // Misaligned in memory, then at an odd offset, then a short tail: each goes through the cache.
    const misplaced = alignedBytes(65536 + 1, 1).subarray(0, 65536); // starts one byte before a boundary
    misplaced.set(pattern(65536, 1));
    assert.equal(part.write(misplaced, 65536), false);
    assert.equal(part.write(pattern(1000, 3), 3 * 65536), false);
    assert.equal(part.write(chunk(9).subarray(0, 4096), 100), false);
    assert.equal(part.directWrites, 2);
    assert.equal(part.direct, true, "none of those was tried directly and refused");
    await part.close();

    const got = await Deno.readFile(path);
    const want = new Uint8Array(size);
    [0, 1, 2].forEach((i) => want.set(pattern(65536, i), i * 65536));
    want.set(pattern(1000, 3), 3 * 65536);
    want.set(pattern(4096, 9), 100);
    assert.deepEqual(got, want);

    const waiting = new PartFile(path, true, false);
    assert.equal(waiting.threaded, false);
    assert.equal(waiting.write(chunk(6), 65536), true, "threaded: false writes directly and is done on return");
    await waiting.close();
    assert.deepEqual((await Deno.readFile(path)).subarray(65536, 2 * 65536), pattern(65536, 6));

    const cached = new PartFile(path, false);
    assert.equal(cached.direct, false);
    assert.equal(cached.write(chunk(5), 0), false);
    assert.equal(cached.directWrites, 0);
    await cached.close();
    assert.deepEqual((await Deno.readFile(path)).subarray(0, 65536), pattern(65536, 5));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("BufferPool reuses its own buffers, given back through any view of them, and only those", () => {
  const made: Uint8Array<ArrayBuffer>[] = [];
  const pool = new BufferPool(100, 2, (n) => {
    const b = alignedBytes(n, 36);
    made.push(b);
    return b;
  });
  const a = pool.take(100);
  assert.equal(made.length, 1);
  pool.give(a.subarray(36) as Uint8Array<ArrayBuffer>); // the chunk's bytes, as a fetch worker holds them
  assert.equal(pool.take(100), a, "the same view comes back");
  pool.give(new Uint8Array(100)); // not the pool's: dropped
  pool.give(pool.take(50)); // another size: not the pool's either
  const b = pool.take(100);
  assert.notEqual(b, a);
  assert.equal(made.length, 2);
});

Deno.test("without FFI permission, on a terminal: no prompt, plain buffers, every write through the cache", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shoal-direct-" });
  try {
    const path = join(dir, "f.part"), main = join(dir, "main.ts");
    await Deno.writeFile(path, new Uint8Array(8192));
    await Deno.writeTextFile(
      main,
      `import { alignedBytes, PartFile } from ${JSON.stringify(new URL("../lib/direct_io.ts", import.meta.url).href)};
      const part = new PartFile(${JSON.stringify(path)}, true);
      const b = alignedBytes(8192, 0);
      b.fill(7);
      console.log("result " + JSON.stringify({ offset: b.byteOffset, direct: await part.write(b, 0), count: part.directWrites }));
      await part.close();`,
    );
    // script(1) gives the run a terminal, where Deno would ask for FFI access and wait for an answer.
    const deno = `${Deno.execPath()} run --allow-read=${dir} --allow-write=${dir} ${main}`;
    const child = new Deno.Command("script", {
      args: ["-qfec", deno, "/dev/null"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill(), 20_000);
    const r = await child.output().finally(() => clearTimeout(timer));
    // deno-lint-ignore no-control-regex -- the prompt's colour codes, on purpose
    const text = new TextDecoder().decode(r.stdout).replace(/\x1b\[[0-9;]*m/g, "");
    assert.doesNotMatch(text, /requests ffi access/);
    assert.equal(r.code, 0, text + new TextDecoder().decode(r.stderr));
    assert.deepEqual(JSON.parse(/result (.*)/.exec(text)![1]!), { offset: 0, direct: false, count: 0 });
    assert.deepEqual(await Deno.readFile(path), new Uint8Array(8192).fill(7));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
