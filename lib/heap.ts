/**
 * Compacting garbage collections, on purpose, in the calling isolate.
 *
 * A download's coordinator and each fetch worker compact once when their
 * start-up garbage (modules, option parsing, the parsed manifest message)
 * is dead and the chunks have not started to flow, then again every few
 * thousand chunks ({@link Compactor}). Without it V8 promotes that garbage
 * bit by bit during the download, the survivors make it double the young
 * generation, and every chunk leaves a little behind that only a full GC
 * frees (its `node:crypto` hash, for one); V8 runs no full GC of its own
 * before its old-generation limit (hundreds of MB) is near. What it saves
 * and costs is measured in docs/PERFORMANCE.md (Memory).
 *
 * A program cannot set V8 flags for itself under `deno run`, so there is
 * no `gc()`; the in-process inspector's `HeapProfiler.collectGarbage` is
 * the way in. It needs no port and no permission.
 *
 * @module
 */

import { Session } from "node:inspector";

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
    session = new Session();
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

/** Chunks an isolate handles between two compactions: a 4 GiB stretch at the default chunk size. */
export const COMPACT_EVERY_CHUNKS = 4096;
/** Fewest milliseconds between two compactions, whatever the chunk size: each takes the isolate 10-80 ms. */
export const COMPACT_MIN_MS = 5_000;

/** Compacts the heap every {@link COMPACT_EVERY_CHUNKS} chunks, at most once per {@link COMPACT_MIN_MS}. */
export class Compactor {
  #count = 0;
  #last = performance.now();
  #running: Promise<void> = Promise.resolve();

  constructor(
    readonly everyChunks = COMPACT_EVERY_CHUNKS,
    readonly minMs = COMPACT_MIN_MS,
    private readonly compact: () => Promise<void> = compactHeap,
  ) {}

  /** Counts one chunk handled; starts a compaction when one is due. */
  chunk(): void {
    if (++this.#count < this.everyChunks) return;
    const now = performance.now();
    if (now - this.#last < this.minMs) return;
    this.#count = 0;
    this.#last = now;
    this.#running = this.compact();
  }

  /** Resolves once no compaction is running. */
  idle(): Promise<void> {
    return this.#running;
  }
}
