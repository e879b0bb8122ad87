/**
 * Messages between the download coordinator (main thread) and its fetch
 * workers. Peers are named by a key the coordinator picks.
 *
 * @module
 */

/** Coordinator to worker. */
export type ToWorker =
  | {
    op: "init";
    fileId: string;
    size: number;
    chunkSize: number;
    /** Each chunk's SHA-256, 32 raw bytes per chunk (a 16 GiB file: 512 KiB, not 16 384 strings per worker). */
    digests: Uint8Array;
    partPath: string;
    /** Write chunks around the page cache where they line up and are large enough (see direct_io.ts). */
    directIo: boolean;
    /** Shared by every worker writing this .part (see write_queue.ts). */
    writeLock: SharedArrayBuffer;
  }
  | { op: "connect"; peer: string; host: string; port: number }
  | { op: "grant"; grant: string }
  | { op: "request"; peer: string; index: number }
  | { op: "cancel"; peer: string; index: number }
  | { op: "drop"; peer: string }
  | { op: "verify"; indexes: number[] }
  | { op: "close" };

/** Worker to coordinator. */
export type FromWorker =
  | { ev: "ready"; peer: string; bits: Uint8Array }
  | { ev: "have"; peer: string; index: number }
  /** `direct`: the chunk was written around the page cache. */
  | { ev: "done"; peer: string; index: number; bytes: number; direct: boolean }
  | { ev: "bad"; peer: string; index: number }
  | { ev: "reject"; peer: string; index: number; reason: string }
  | { ev: "gone"; peer: string; reason: string }
  | { ev: "verified"; good: number[]; bad: number[] }
  | { ev: "fatal"; message: string }
  | { ev: "closed" };
