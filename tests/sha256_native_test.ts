// Bytes: the native multi-buffer SHA-256 (built here into a temporary directory) against node:crypto.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  NATIVE_LANES,
  NATIVE_SOURCES,
  NativeHasher,
  type NativeKernel,
  nativeLibraryPath,
} from "../lib/sha256_native.ts";
import { buildNative } from "../scripts/build_native.ts";
import { randomBytes, sha, tempDir } from "./helpers.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const cpuFlags = Deno.readTextFileSync("/proc/cpuinfo").match(/^flags\s*:(.*)$/m)?.[1]?.split(/\s+/) ?? [];
/** The kernels this CPU runs; the others are checked to be refused. */
const runs: Record<NativeKernel, boolean> = {
  avx2: cpuFlags.includes("avx2"),
  avx512: cpuFlags.includes("avx512f") && cpuFlags.includes("avx512vl"),
  shani: cpuFlags.includes("sha_ni"),
};
const KERNELS = ["avx2", "avx512", "shani"] as const;
/** How many inputs each kernel takes at once. */
const LANES: Record<NativeKernel, number> = { avx2: NATIVE_LANES, avx512: NATIVE_LANES, shani: 2 };

Deno.test("native hashing: each kernel gives every input its SHA-256, for 1 to its lanes and every padding case", async () => {
  await using dir = await tempDir();
  const lib = await buildNative(join(dir.path, "lib.so"));
  for (const kernel of KERNELS) {
    if (!runs[kernel]) {
      assert.throws(() => new NativeHasher(lib, kernel), /this CPU lacks/);
      continue;
    }
    const hasher = new NativeHasher(lib, kernel);
    try {
      assert.equal(hasher.kernel, kernel);
      assert.equal(hasher.lanes, LANES[kernel]);
      // 55/56 and 119/120: the length field fits in the last block or needs one more.
      for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 65_537, 1 << 20]) {
        for (const count of new Set([1, 2, 3, 7, hasher.lanes].filter((c) => c <= hasher.lanes))) {
          const inputs = Array.from({ length: count }, () => randomBytes(n));
          const out = inputs.map(() => new Uint8Array(32));
          hasher.digest(inputs, out);
          assert.deepEqual(out.map(hex), inputs.map(sha), `${kernel}, ${count} inputs of ${n} bytes`);
        }
      }
    } finally {
      hasher.close();
    }
  }
});

Deno.test("native hashing: the best kernel the CPU runs is the default", async () => {
  await withBuiltHasher((hasher) => {
    assert.equal(hasher.kernel, runs.shani ? "shani" : runs.avx512 ? "avx512" : "avx2");
    assert.equal(hasher.minBatch, hasher.kernel === "shani" ? 2 : 3);
    assert.equal(hasher.batchWaitMs, hasher.kernel === "shani" ? 1 : 10);
  });
});

/** Runs `fn` with a hasher (each kernel this CPU runs, in turn) of the library built into a temporary directory. */
async function withBuiltHasher(fn: (hasher: NativeHasher) => void, kernels?: readonly NativeKernel[]): Promise<void> {
  await using dir = await tempDir();
  const lib = await buildNative(join(dir.path, "lib.so"));
  for (const kernel of kernels ?? [undefined]) {
    const hasher = new NativeHasher(lib, kernel);
    try {
      fn(hasher);
    } finally {
      hasher.close();
    }
  }
}

Deno.test("native hashing: views at odd offsets of one buffer, the same input twice, a hasher used again", async () => {
  await withBuiltHasher((hasher) => {
    const big = randomBytes(hasher.lanes * 3000 + 5);
    const views = Array.from({ length: hasher.lanes }, (_, i) => big.subarray(5 + 3000 * i, 5 + 3000 * (i + 1)));
    const out = views.map(() => new Uint8Array(40).fill(0xee));
    hasher.digest(views, out);
    assert.deepEqual(out.map((o) => hex(o.subarray(0, 32))), views.map(sha));
    assert.ok(out.every((o) => o.subarray(32).every((b) => b === 0xee)), "nothing written past 32 bytes");
    hasher.digest([views[1]!, views[1]!], out.slice(0, 2));
    assert.ok(out.slice(0, 2).every((o) => hex(o.subarray(0, 32)) === sha(views[1]!)));
    // "abc" (FIPS 180-4 example) after longer inputs: the state starts afresh each time.
    const abc = new TextEncoder().encode("abc");
    hasher.digest([abc], [out[0]!]);
    assert.equal(hex(out[0]!.subarray(0, 32)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  }, KERNELS.filter((k) => runs[k]));
});

Deno.test("native hashing refuses no inputs or more than its lanes, inputs of different lengths, short outputs", async () => {
  await withBuiltHasher((hasher) => {
    const out = (n: number) => Array.from({ length: n }, () => new Uint8Array(32));
    const lanes = hasher.lanes;
    assert.throws(() => hasher.digest([], []), new RegExp(`expected 1-${lanes} inputs and as many outputs, got 0`));
    assert.throws(() => hasher.digest(Array(lanes + 1).fill(new Uint8Array(4)), out(lanes + 1)), /got \d+$/);
    assert.throws(() => hasher.digest([new Uint8Array(4)], out(2)), /as many outputs/);
    assert.throws(() => hasher.digest([randomBytes(64), randomBytes(65)], out(2)), /differ in length/);
    assert.throws(() => hasher.digest([randomBytes(64)], [new Uint8Array(31)]), /shorter than 32 bytes/);
  });
});

Deno.test("the native library is named by a hash of its sources; one that is not there is not opened", async () => {
  await using dir = await tempDir();
  const root = dir.path;
  assert.equal(nativeLibraryPath(root), null, "no sources: no library");
  await Deno.mkdir(join(root, "native"));
  for (const src of NATIVE_SOURCES) await Deno.copyFile(new URL(`../${src}`, import.meta.url), join(root, src));
  const before = nativeLibraryPath(root);
  assert.match(before!, new RegExp(`^${root}/\\.tools/native/libshoal_sha256-[0-9a-f]{16}\\.so$`));
  assert.equal(nativeLibraryPath(root), before, "the same sources, the same name");
  await Deno.writeTextFile(join(root, NATIVE_SOURCES[0]), "\n/* changed */\n", { append: true });
  assert.notEqual(nativeLibraryPath(root), before, "changed sources, another name");
  assert.equal(NativeHasher.open(nativeLibraryPath(root)), null, "not built");
  assert.equal(NativeHasher.open(null), null);
  const built = await buildNative(nativeLibraryPath(root)!);
  const hasher = NativeHasher.open(built);
  assert.ok(hasher !== null, "built, opened");
  hasher.close();
});

Deno.test("without a C compiler, or with one that fails, the build says so and leaves no library behind", async () => {
  await using dir = await tempDir();
  const out = join(dir.path, "lib.so");
  await assert.rejects(
    buildNative(out, join(dir.path, "no-such-cc")),
    /^Error: Cannot build the native hasher: no C compiler \(.*no-such-cc\)$/,
  );
  await assert.rejects(buildNative(out, "false"), /^Error: Cannot build the native hasher: false failed:/);
  assert.deepEqual(await Array.fromAsync(Deno.readDir(dir.path), (e) => e.name), []);
  assert.equal(NativeHasher.open(out), null, "nothing to open: downloads hash otherwise (lib/chunk_hasher.ts)");
});
