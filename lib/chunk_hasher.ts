/**
 * How chunks are hashed: which SHA-256 a download and the indexer use.
 *
 * - `native`: several chunks at a time in native code (sha256_native.ts),
 *   where `deno task native` has built the library and FFI is granted:
 *   two interleaved with the SHA extensions (`sha_ni`), eight in vector
 *   lanes on an x86 CPU without them.
 * - `node`: `node:crypto`, one chunk at a time: with the SHA extensions
 *   when the library is not there (about 1.2-1.9 GB/s a core), and on a CPU
 *   that is not x86; elsewhere the last resort.
 * - `lanes`: four chunks at a time in WebAssembly (sha256_lanes.ts), on an
 *   x86 CPU without the SHA extensions when the native library is not there.
 *
 * `SHOAL_SHA256` overrides the choice (benchmarks, tests).
 *
 * @module
 */

import { UsageError } from "./errors.ts";
import { LaneHasher } from "./sha256_lanes.ts";
import { NativeHasher } from "./sha256_native.ts";

export type HasherKind = "native" | "lanes" | "node";
const KINDS: readonly HasherKind[] = ["native", "lanes", "node"];

/** Hashes several equal-length inputs in one call (see {@link LaneHasher}, {@link NativeHasher}). */
export interface MultiHasher {
  /** Most inputs per call. */
  readonly lanes: number;
  /** Fewest inputs worth a call; fewer are hashed one at a time with `node:crypto`. */
  readonly minBatch: number;
  /**
   * Longest a received chunk waits for others to be hashed with it: long
   * where a full call is several times as fast a byte as one chunk alone,
   * short where it gains less than the wait holds the chunk back.
   */
  readonly batchWaitMs: number;
  /** Writes the SHA-256 of each of `inputs` (minBatch to lanes, the same length) into the matching `out`. */
  digest(inputs: readonly Uint8Array[], out: readonly Uint8Array[]): void;
  /** Lets go of what it holds (the native library). */
  close(): void;
}

/** Set to `native`, `lanes` or `node` to choose how chunks are hashed instead of asking the CPU. */
export const HASH_ENV = "SHOAL_SHA256";

/**
 * Largest chunk hashed several at a time where chunks are read from a file:
 * that many are read into memory at once (a 200 GiB file still has chunks
 * this size).
 */
export const MULTI_READ_MAX_CHUNK = 1024 * 1024;

/** `SHOAL_SHA256`'s choice, if any; any other value is a usage error. */
export function hashSetting(setting = readEnv()): HasherKind | undefined {
  if ((KINDS as readonly string[]).includes(setting ?? "")) return setting as HasherKind;
  if (setting === undefined || setting === "") return undefined;
  throw new UsageError(`Cannot use ${HASH_ENV}=${setting}: expected "native", "lanes" or "node"`);
}

/**
 * Checks `SHOAL_SHA256` at start, so that a bad setting stops an entry point
 * before anything is looked up, indexed or fetched: a value that is not a
 * hasher, or `native` where it cannot be used, is a usage error. Cheap
 * unless it says `native` (then the library is opened once).
 */
export function checkHashSetting(): void {
  if (hashSetting() === "native") defaultHasher();
}

/**
 * The hasher to use: `SHOAL_SHA256`'s if set; else `native` where the
 * library can be used; else `node` on a CPU with the SHA extensions, on one
 * that is not x86, or where the CPU cannot be asked (no `/proc/cpuinfo`, or
 * no permission to read it); else `lanes`. `SHOAL_SHA256=native` where it
 * cannot be used is a usage error.
 */
export function chooseHasher(
  setting = readEnv(),
  cpuinfo = readCpuinfo,
  nativeWorks = () => openNative(),
): HasherKind {
  const chosen = hashSetting(setting);
  if (chosen === "native" && !nativeWorks()) {
    throw new UsageError(
      `Cannot use ${HASH_ENV}=native: the native hasher is not built for these sources (deno task native), ` +
        "FFI is not granted, or the CPU runs none of its kernels (AVX2, the SHA extensions)",
    );
  }
  if (chosen !== undefined) return chosen;
  if (nativeWorks()) return "native";
  const flags = cpuinfo()?.match(/^flags\s*:(.*)$/m)?.[1]?.split(/\s+/);
  return flags === undefined || flags.includes("sha_ni") ? "node" : "lanes";
}

function openNative(): boolean {
  const hasher = NativeHasher.open();
  hasher?.close();
  return hasher !== null;
}

/**
 * A hasher of `kind`, or null for `node`; throws when `native` cannot be
 * opened. `nativeLibrary`: the native library's path, where another thread
 * has found it already (default: found here, see {@link NativeHasher.open}).
 */
export function makeMultiHasher(kind: HasherKind, nativeLibrary?: string): MultiHasher | null {
  if (kind === "node") return null;
  if (kind === "lanes") return new LaneHasher();
  const native = NativeHasher.open(nativeLibrary);
  if (native === null) throw new RangeError("Cannot open the native hasher (see lib/sha256_native.ts)");
  return native;
}

let chosen: HasherKind | undefined;

/** {@link chooseHasher}'s answer, asked once per thread (it reads `/proc/cpuinfo` and opens the library). */
export function defaultHasher(): HasherKind {
  return chosen ??= chooseHasher();
}

/** Makes {@link defaultHasher} answer `kind` in this thread (undefined: choose again). For tests. */
export function setDefaultHasher(kind: HasherKind | undefined): void {
  chosen = kind;
}

function readEnv(): string | undefined {
  try {
    return Deno.env.get(HASH_ENV);
  } catch {
    return undefined; // no --allow-env: decide from the CPU
  }
}

function readCpuinfo(): string | null {
  try {
    return Deno.readTextFileSync("/proc/cpuinfo");
  } catch {
    return null;
  }
}
