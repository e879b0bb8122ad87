// Which SHA-256 chunks are hashed with: the choice, from the CPU, the native library and SHOAL_SHA256.
import assert from "node:assert/strict";
import { chooseHasher, HASH_ENV, hashSetting, makeMultiHasher } from "../lib/chunk_hasher.ts";
import { UsageError } from "../lib/errors.ts";
import { defaultLibraryPath, NativeHasher } from "../lib/sha256_native.ts";

const x86 = (flags: string) => () => `processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: ${flags}\n\nprocessor\t: 1\n`;
const built = () => true;
const notBuilt = () => false;

Deno.test("native where built, else node:crypto with the SHA extensions, lanes without, node elsewhere", () => {
  assert.equal(chooseHasher(undefined, x86("fpu sse2 avx2 avx512f"), built), "native");
  assert.equal(chooseHasher(undefined, x86("fpu sse2 avx2 avx512f"), notBuilt), "lanes");
  assert.equal(chooseHasher(undefined, x86("fpu sse2 sha_ni avx2"), built), "native");
  assert.equal(chooseHasher(undefined, x86("fpu sse2 sha_ni avx2"), notBuilt), "node");
  assert.equal(chooseHasher(undefined, x86("fpu sse2 avx2 sha_ni"), notBuilt), "node", "the last flag too");
  assert.equal(chooseHasher("", x86("fpu sse2"), notBuilt), "lanes", "empty is unset");
  assert.equal(
    chooseHasher(undefined, () => "processor\t: 0\nFeatures\t: fp asimd sha2\n", notBuilt),
    "node",
    "not x86",
  );
  assert.equal(chooseHasher(undefined, () => null, notBuilt), "node", "no /proc/cpuinfo");
});

Deno.test("SHOAL_SHA256 chooses, whatever the CPU; native where it cannot be used, or any other value, is a usage error", () => {
  assert.equal(chooseHasher("lanes", () => null, built), "lanes");
  assert.equal(chooseHasher("node", x86("avx2"), built), "node");
  assert.equal(chooseHasher("native", x86("avx2 sha_ni"), built), "native");
  assert.throws(() => chooseHasher("native", x86("avx2"), notBuilt), (e) => {
    assert.ok(e instanceof UsageError, "exit code 2");
    assert.match(e.message, /^Cannot use SHOAL_SHA256=native: the native hasher is not built .*\(deno task native\)/);
    return true;
  });
  for (const check of [() => chooseHasher("fast", () => null, built), () => hashSetting("fast")]) {
    assert.throws(check, (e) => {
      assert.ok(e instanceof UsageError, "exit code 2");
      assert.equal(e.message, `Cannot use ${HASH_ENV}=fast: expected "native", "lanes" or "node"`);
      return true;
    });
  }
  assert.deepEqual(["native", "lanes", "node", "", undefined].map((s) => hashSetting(s)), [
    "native",
    "lanes",
    "node",
    undefined,
    undefined,
  ]);
});

Deno.test("a native hasher opens the library it is given (a fetch worker gets the coordinator's)", () => {
  assert.throws(() => makeMultiHasher("native", "/nonexistent/libshoal_sha256.so"), RangeError);
  // Where `deno task native` has built it (CI does): the path found here is the one opened.
  const found = defaultLibraryPath();
  const built = NativeHasher.open(found);
  built?.close();
  if (built !== null) {
    const given = makeMultiHasher("native", found!)!;
    assert.equal(given.lanes, built.lanes);
    given.close();
  }
  assert.equal(makeMultiHasher("node", "/nonexistent/libshoal_sha256.so"), null, "node: no library to open");
});
