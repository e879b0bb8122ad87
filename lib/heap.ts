/**
 * Compacting garbage collections, on purpose, in the calling isolate.
 *
 * A download's coordinator and each fetch worker compact once when their
 * start-up garbage (modules, option parsing, the parsed manifest message)
 * is dead: the coordinator right after it asks for the first connections,
 * while the peers answer; a fetch worker once its first chunk is written,
 * as until then its thread is on the way to the first chunks. Then again
 * whenever their heap has grown by a megabyte ({@link Compactor}), but not
 * once the last chunks are asked for.
 * Without it V8 promotes that garbage bit by bit during the download, the
 * survivors make it double the young generation, and every chunk leaves a
 * little behind that only a full GC frees (its `node:crypto` hash, for
 * one); V8 runs no full GC of its own before its old-generation limit
 * (hundreds of MB) is near, so a long download would end with a bigger heap
 * than a short one.
 * What it saves and costs is measured in docs/PERFORMANCE.md (Memory).
 *
 * A program cannot set V8 flags for itself under `deno run`, so there is
 * no `gc()`; the in-process inspector's `HeapProfiler.collectGarbage` is
 * the way in. It needs no port and no permission.
 *
 * @module
 */

import type { Session } from "node:inspector";
import { nodeInspector } from "./builtins.ts";

/** Longest wait for the collection to report back; it takes about 20 ms. */
const COMPACT_WAIT_MS = 2_000;

/**
 * Runs V8's memory-reducing full GC in this isolate. Resolves when it is
 * done, or at once where the inspector is not available: it only saves
 * memory, so it never fails.
 */
export function compactHeap(): Promise<void> {
  let session: Session;
  try {
    session = new (nodeInspector().Session)();
    session.connect();
  } catch {
    return Promise.resolve();
  }
  return new Promise<void>((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      try {
        session.disconnect();
      } catch {
        // already gone
      }
      resolve();
    };
    const timer = setTimeout(finish, COMPACT_WAIT_MS);
    try {
      session.post("HeapProfiler.collectGarbage", finish);
    } catch {
      finish();
    }
  });
}

/** Growth of the heap (committed, young generation included) since the last compaction that calls for the next. */
export const COMPACT_GROWTH_BYTES = 1024 * 1024;
/** Chunks between two looks at the heap's size (each look is a call into the runtime). */
export const COMPACT_CHECK_CHUNKS = 32;
/** Fewest milliseconds between two compactions: each takes the isolate 10-80 ms. */
export const COMPACT_MIN_MS = 1_000;

/** The calling isolate's heap, in bytes: what V8 has committed for it. */
function heapBytes(): number {
  return Deno.memoryUsage().heapTotal;
}

/** Options for {@link Compactor}; the defaults are the constants above. */
export interface CompactorOptions {
  growthBytes?: number;
  checkEveryChunks?: number;
  minMs?: number;
  compact?: () => Promise<void>;
  heapBytes?: () => number;
}

/**
 * Compacts the heap when it has grown by {@link COMPACT_GROWTH_BYTES} since
 * the last compaction (or since the first look, a few chunks in), looking
 * every {@link COMPACT_CHECK_CHUNKS} chunks and at most once per
 * {@link COMPACT_MIN_MS}. A heap that does not grow (a short download) is
 * never compacted; a long one stays near the size it had at its start.
 */
export class Compactor {
  readonly #growth: number;
  readonly #every: number;
  readonly #minMs: number;
  readonly #compact: () => Promise<void>;
  readonly #heapBytes: () => number;
  #count = 0;
  #last = -Infinity;
  /** The heap's size after the last compaction; undefined until the first look. */
  #base: number | undefined;
  #busy = false;
  #stopped = false;
  #running: Promise<void> = Promise.resolve();

  constructor(options: CompactorOptions = {}) {
    this.#growth = options.growthBytes ?? COMPACT_GROWTH_BYTES;
    this.#every = options.checkEveryChunks ?? COMPACT_CHECK_CHUNKS;
    this.#minMs = options.minMs ?? COMPACT_MIN_MS;
    this.#compact = options.compact ?? compactHeap;
    this.#heapBytes = options.heapBytes ?? heapBytes;
  }

  /** Counts one chunk handled; starts a compaction when one is due. */
  chunk(): void {
    if (++this.#count % this.#every !== 0 || this.#busy || this.#stopped) return;
    const size = this.#heapBytes();
    if (this.#base === undefined) {
      this.#base = size;
      return;
    }
    const now = performance.now();
    if (size < this.#base + this.#growth || now - this.#last < this.#minMs) return;
    this.#last = now;
    this.#busy = true;
    this.#running = this.#compact().then(() => {
      this.#base = this.#heapBytes();
      this.#busy = false;
    });
  }

  /**
   * Starts no compaction from now on: a download's last chunks are coming.
   * One holds its isolate 10-80 ms, and run then, it held up the last
   * chunks or the workers' closing by as much (the WAN lab, session 36);
   * what the heap grows by in those chunks is freed when the process ends.
   */
  stop(): void {
    this.#stopped = true;
  }

  /** Resolves once no compaction is running. */
  idle(): Promise<void> {
    return this.#running;
  }
}
