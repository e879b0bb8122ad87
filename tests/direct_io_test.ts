// Bytes and one real file: aligned buffers, direct writes where they line up, buffered ones where not.
import assert from "node:assert/strict";
import { join } from "node:path";
import { BufferPool } from "../lib/buffer_pool.ts";
import { addressOf, alignedBytes, DIRECT_ALIGN, PartFile } from "../lib/direct_io.ts";
import { pwriteFull } from "../lib/file_io.ts";

/**
 * Asserts two byte arrays are equal, naming the first difference: `assert.deepEqual` would print (and diff) every
 * byte of a large mismatch, which takes minutes.
 */
function assertSameBytes(got: Uint8Array, want: Uint8Array): void {
  assert.equal(got.length, want.length, "length");
  const at = got.findIndex((b, i) => b !== want[i]);
  assert.equal(at, -1, `first difference at byte ${at}`);
}

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
    const part = new PartFile(path);
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
    assertSameBytes(got, want);

    const waiting = new PartFile(path, { threaded: false });
    assert.equal(waiting.threaded, false);
    assert.equal(waiting.write(chunk(6), 65536), true, "threaded: false writes directly and is done on return");
    await waiting.close();
    assertSameBytes((await Deno.readFile(path)).subarray(65536, 2 * 65536), pattern(65536, 6));

    const cached = new PartFile(path, { direct: false });
    assert.equal(cached.direct, false);
    assert.equal(cached.write(chunk(5), 0), false);
    assert.equal(cached.directWrites, 0);
    await cached.close();
    assertSameBytes((await Deno.readFile(path)).subarray(0, 65536), pattern(65536, 5));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A system error as Deno's `node:fs` throws it: a message and a code. */
function sysError(code: string): Error {
  return Object.assign(new Error(`${code}: the stand-in's error`), { code });
}

Deno.test("PartFile after a failed threaded write: a refusal goes through the cache from then on, other errors are thrown with their code, a short write is finished", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shoal-direct-" });
  try {
    const path = join(dir, "f.part");
    await Deno.writeFile(path, new Uint8Array(4 * 65536));
    const chunk = (i: number) => {
      const b = alignedBytes(65536, 0);
      b.set(pattern(65536, i));
      return b;
    };
    const calls: string[] = [];
    // The threaded write fails (-1) as it would on a filesystem wanting a larger alignment; so does the retry.
    const refusing = new PartFile(path, {
      calls: {
        write: (_fd, _data, position) => {
          calls.push(`write ${position}`);
          throw sysError("EINVAL");
        },
        writeOnThread: (_fd, _data, position) => {
          calls.push(`thread ${position}`);
          return Promise.resolve(-1);
        },
      },
    });
    assert.equal(refusing.threaded, true);
    assert.equal(await refusing.write(chunk(0), 0), false, "written, through the cache");
    assert.equal(refusing.direct, false);
    assert.equal(refusing.write(chunk(1), 65536), false, "the next write is not tried directly: done on return");
    assert.deepEqual(calls, ["thread 0", "write 0"]);
    assert.equal(refusing.directWrites, 0);
    await refusing.close();

    // A full disk: the threaded write fails, the retry says why; the caller gets the code, and direct writes go on.
    let full = true;
    const filling = new PartFile(path, {
      calls: {
        write: (fd, data, position) => {
          if (full) throw sysError("ENOSPC");
          pwriteFull(fd, data, position);
        },
        writeOnThread: () => Promise.resolve(-1),
      },
    });
    await assert.rejects(Promise.resolve(filling.write(chunk(7), 2 * 65536)), { code: "ENOSPC" });
    assert.equal(filling.direct, true, "a full disk is no reason to give up direct writes");
    full = false;
    assert.equal(await filling.write(chunk(2), 2 * 65536), true, "a transient failure: the retry writes directly");
    assert.equal(filling.directWrites, 1);
    await filling.close();

    // A short write: the thread writes one block of the chunk, the rest goes through the cache.
    const short = new PartFile(path, {
      calls: {
        write: pwriteFull,
        writeOnThread: (fd, data, position) => {
          pwriteFull(fd, data.subarray(0, DIRECT_ALIGN), position);
          return Promise.resolve(DIRECT_ALIGN);
        },
      },
    });
    assert.equal(await short.write(chunk(3), 3 * 65536), true);
    assert.equal(short.directWrites, 1);
    await short.close();

    const want = new Uint8Array(4 * 65536);
    [0, 1, 2, 3].forEach((i) => want.set(pattern(65536, i), i * 65536));
    assertSameBytes(await Deno.readFile(path), want);
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
  const c = pool.take(100);
  for (const x of [a, b, c]) pool.give(x); // a third back to a pool that keeps 2: let go
  assert.deepEqual(pool.stats, { made: 3, dropped: 1 });
});

Deno.test("BufferPool.trim lets go of the buffers the last period did not use, oldest first", () => {
  const pool = new BufferPool(10, 8);
  const burst = [0, 1, 2, 3].map(() => pool.take(10));
  for (const b of burst) pool.give(b);
  assert.equal(pool.free, 4);
  assert.equal(pool.trim(), 0, "all four were in use during the period");
  const steady = () => pool.give(pool.take(10)); // one at a time: the most recently given back
  steady();
  steady();
  assert.equal(pool.trim(), 3, "only one was needed");
  assert.equal(pool.free, 1);
  assert.equal(pool.take(10), burst[3], "the one kept is the one in use");
  pool.give(burst[3]!);
  assert.equal(pool.trim(), 0);
  assert.equal(pool.trim(), 1, "idle: none kept");
  assert.equal(pool.free, 0);
  assert.deepEqual(pool.stats, { made: 4, dropped: 0 });
  assert.notEqual(pool.take(10), burst[3], "a new one is made after that");
});

Deno.test("without FFI permission, on a terminal: no prompt, plain buffers, every write through the cache", async () => {
  const dir = await Deno.makeTempDir({ prefix: "shoal-direct-" });
  try {
    const path = join(dir, "f.part"), main = join(dir, "main.ts");
    await Deno.writeFile(path, new Uint8Array(8192));
    await Deno.writeTextFile(
      main,
      `import { alignedBytes, PartFile } from ${JSON.stringify(new URL("../lib/direct_io.ts", import.meta.url).href)};
      const part = new PartFile(${JSON.stringify(path)});
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
    assertSameBytes(await Deno.readFile(path), new Uint8Array(8192).fill(7));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
