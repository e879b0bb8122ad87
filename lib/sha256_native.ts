/**
 * SHA-256 of several equal-length inputs at once, in native code
 * (`native/sha256_multi.c`, through Deno's FFI).
 *
 * Why: on two cores a download's largest cost is SHA-256, and inputs side
 * by side hash faster a core than one at a time (measured in
 * docs/PERFORMANCE.md):
 * - without the SHA extensions, eight in the lanes of 256-bit vectors
 *   (AVX2, or AVX-512's rotate and three-input logic on them): 1.8-2.9
 *   times `node:crypto`, 1.5-1.7 times the four lanes WebAssembly has
 *   (sha256_lanes.ts);
 * - with them (`sha_ni`), two interleaved: about 1.2 times `node:crypto`
 *   on a chunk still in the cache, 1.5 times on one that has left it.
 *
 * The library is built from the sources by `deno task native`
 * (scripts/build_native.ts) into `.tools/native/`, named by a hash of the
 * sources, so a library built from other sources is never loaded. Where it
 * is not built, FFI is not granted, or the CPU runs none of the kernels,
 * {@link NativeHasher.open} answers null and downloads hash otherwise.
 *
 * @module
 */

import { nodeCrypto } from "./builtins.ts";
import { addressOf, ffiGranted } from "./direct_io.ts";

/** Most inputs a kernel hashes side by side: the 32-bit lanes of a 256-bit vector. */
export const NATIVE_LANES = 8;

/** The C sources, relative to the project root; the library's name carries a hash of them. */
export const NATIVE_SOURCES = ["native/sha256_multi.c", "native/sha256_x8.h", "native/sha256_ni.h"] as const;

/** Which kernel the library runs. */
export type NativeKernel = "shani" | "avx512" | "avx2";

/** What each kernel is to the library and to a download. */
interface KernelFacts {
  /** Its number in native/sha256_multi.c. */
  number: number;
  /** What a CPU that cannot run it lacks. */
  needs: string;
  /**
   * Fewest inputs worth a call: below three, `node:crypto` one at a time is
   * faster than the eight-lane kernels; with the SHA extensions, one input
   * alone runs as fast there as here.
   */
  minBatch: number;
  /**
   * Longest a downloaded chunk waits for others (lib/fetch_worker.ts): 10 ms
   * for eight lanes, 2.5 times as fast a byte; 1 ms with the SHA extensions,
   * where two gain a fifth to a half and a longer wait cost more than that
   * (docs/PERFORMANCE.md, session 39).
   */
  batchWaitMs: number;
}

const KERNELS: Record<NativeKernel, KernelFacts> = {
  avx2: { number: 1, needs: "AVX2", minBatch: 3, batchWaitMs: 10 },
  avx512: { number: 2, needs: "AVX-512VL", minBatch: 3, batchWaitMs: 10 },
  shani: { number: 3, needs: "the SHA extensions", minBatch: 2, batchWaitMs: 1 },
};

const SYMBOLS = {
  shoal_sha256_kernel: { parameters: [], result: "i32" },
  shoal_sha256_lanes: { parameters: ["i32"], result: "i32" },
  shoal_sha256_multi: { parameters: ["buffer", "u32", "u64", "buffer", "i32"], result: "i32" },
} as const;

/** The project root, where this module is a local file (not in a bundle or a compiled binary). */
function projectRoot(): string | null {
  const url = new URL("..", import.meta.url);
  return url.protocol === "file:" ? decodeURIComponent(url.pathname) : null;
}

/**
 * Where `deno task native` puts the library built from the sources as they
 * are now; null where the sources cannot be read (a bundle, a compiled
 * binary, no read permission).
 */
export function nativeLibraryPath(root = projectRoot()): string | null {
  if (root === null) return null;
  try {
    const hash = nodeCrypto().createHash("sha256");
    for (const src of NATIVE_SOURCES) hash.update(Deno.readFileSync(`${root}/${src}`));
    return `${root}/.tools/native/libshoal_sha256-${hash.digest("hex").slice(0, 16)}.so`;
  } catch {
    return null;
  }
}

let defaultPath: string | null | undefined;

/**
 * {@link nativeLibraryPath} of this project, worked out once per thread (it
 * reads and hashes the sources); a download's coordinator hands its answer
 * to the fetch workers.
 */
export function defaultLibraryPath(): string | null {
  if (defaultPath === undefined) defaultPath = nativeLibraryPath();
  return defaultPath;
}

/**
 * Hashes up to {@link lanes} equal-length inputs in one call (8, or 2 with
 * the SHA extensions); fewer cost as much as that many. Holds the library
 * open until {@link close}.
 *
 * @example
 * ```ts
 * const hasher = NativeHasher.open();
 * if (hasher) {
 *   const inputs = [new Uint8Array(1024), new Uint8Array(1024)];
 *   const digests = inputs.map(() => new Uint8Array(32));
 *   hasher.digest(inputs, digests); // digests[i] is the SHA-256 of inputs[i]
 *   hasher.close();
 * }
 * ```
 */
export class NativeHasher {
  /** Most inputs per call: the kernel's. */
  readonly lanes: number;
  /** The kernel's {@link KernelFacts.minBatch}. */
  readonly minBatch: number;
  /** The kernel's {@link KernelFacts.batchWaitMs}. */
  readonly batchWaitMs: number;
  readonly kernel: NativeKernel;
  readonly #lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  readonly #addresses = new BigUint64Array(NATIVE_LANES);
  readonly #digests = new Uint8Array(32 * NATIVE_LANES);

  /**
   * Opens the library at `path` with `kernel`, or the best one this CPU runs;
   * throws when it cannot be opened or the CPU runs no kernel (or not `kernel`).
   */
  constructor(path: string, kernel?: NativeKernel) {
    this.#lib = Deno.dlopen(path, SYMBOLS);
    const best = this.#lib.symbols.shoal_sha256_kernel();
    const chosen = kernel ?? (Object.keys(KERNELS) as NativeKernel[]).find((k) => KERNELS[k].number === best);
    const lanes = chosen === undefined ? 0 : this.#lib.symbols.shoal_sha256_lanes(KERNELS[chosen].number);
    if (chosen === undefined || lanes < 1 || lanes > NATIVE_LANES) {
      this.#lib.close();
      throw new RangeError(`Cannot hash with ${path}: this CPU lacks ${KERNELS[chosen ?? "avx2"].needs}`);
    }
    this.kernel = chosen;
    this.lanes = lanes;
    this.minBatch = KERNELS[chosen].minBatch;
    this.batchWaitMs = KERNELS[chosen].batchWaitMs;
  }

  /** The library built for these sources, opened; null where it is not built, FFI is not granted, or no kernel runs. */
  static open(path = defaultLibraryPath()): NativeHasher | null {
    if (path === null || !ffiGranted()) return null;
    try {
      return new NativeHasher(path);
    } catch {
      return null;
    }
  }

  /** Writes the SHA-256 of each of `inputs` (1 to {@link lanes}, all the same length) into the matching `out`. */
  digest(inputs: readonly Uint8Array[], out: readonly Uint8Array[]): void {
    const n = inputs.length;
    if (n < 1 || n > this.lanes || out.length !== n) {
      throw new RangeError(`Cannot hash natively: expected 1-${this.lanes} inputs and as many outputs, got ${n}`);
    }
    const length = inputs[0]!.length;
    if (inputs.some((x) => x.length !== length)) throw new RangeError("Cannot hash natively: inputs differ in length");
    if (out.some((x) => x.length < 32)) {
      throw new RangeError("Cannot hash natively: an output is shorter than 32 bytes");
    }
    for (let i = 0; i < n; i++) {
      const at = addressOf(inputs[i]!);
      if (at === null) throw new RangeError("Cannot hash natively: an input's address is unknown");
      this.#addresses[i] = BigInt(at);
    }
    const kernel = KERNELS[this.kernel].number;
    if (this.#lib.symbols.shoal_sha256_multi(this.#addresses, n, BigInt(length), this.#digests, kernel) !== 0) {
      throw new RangeError("Cannot hash natively: the library refused the call");
    }
    for (let i = 0; i < n; i++) out[i]!.set(this.#digests.subarray(32 * i, 32 * i + 32));
  }

  close(): void {
    this.#lib.close();
  }
}
