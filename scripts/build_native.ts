/**
 * Builds the native SHA-256 library (native/sha256_multi.c, see
 * lib/sha256_native.ts) with the system's C compiler.
 *
 *   deno task native [--out FILE]
 *
 * By default the library goes where downloads look for it:
 * `.tools/native/libshoal_sha256-<hash of the sources>.so`. The compiler is
 * `$CC`, else `cc`. Without one the task fails with that said; downloads then
 * hash in WebAssembly instead (lib/chunk_hasher.ts).
 *
 * @module
 */

import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { NativeHasher, nativeLibraryPath } from "../lib/sha256_native.ts";

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");
/** A compile that runs longer than this is stopped (it takes about a second). */
const COMPILE_TIMEOUT_MS = 120_000;

/** Compiles the library into `out` (written beside it first, then renamed, so a half-written one is never loaded). */
export async function buildNative(out = nativeLibraryPath(ROOT)!, cc = Deno.env.get("CC") || "cc"): Promise<string> {
  await Deno.mkdir(dirname(out), { recursive: true });
  const tmp = `${out}.${Deno.pid}.tmp`;
  const args = ["-O2", "-shared", "-fPIC", "-o", tmp, join(ROOT, "native/sha256_multi.c")];
  let result: Deno.CommandOutput;
  try {
    result = await new Deno.Command(cc, { args, stdin: "null", signal: AbortSignal.timeout(COMPILE_TIMEOUT_MS) })
      .output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new Error(`Cannot build the native hasher: no C compiler (${cc})`);
    throw err;
  }
  if (!result.success) {
    await Deno.remove(tmp).catch(() => {});
    const why = new TextDecoder().decode(result.stderr).trim().split("\n").slice(-5).join("\n");
    throw new Error(`Cannot build the native hasher: ${cc} failed:\n${why}`);
  }
  await Deno.rename(tmp, out);
  return out;
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { out: { type: "string" } } });
  try {
    const out = await buildNative(values.out === undefined ? undefined : resolve(values.out));
    let kernel = "none: this CPU runs none of its kernels (AVX2, the SHA extensions), so downloads will not use it";
    try {
      const hasher = new NativeHasher(out);
      kernel = hasher.kernel;
      hasher.close();
    } catch { /* reported as none */ }
    console.log(`built ${out} (kernel: ${kernel})`);
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    Deno.exit(1);
  }
}
