/**
 * Messages between the download coordinator (main thread) and its fetch
 * workers. Each connection is named by a `link` number the coordinator
 * picks, new for every attempt: a peer that is dropped and later retried
 * gets a new link, so a late message from its old connection cannot be
 * taken for the new one.
 *
 * @module
 */

import type { PoolStats } from "./buffer_pool.ts";
import type { HasherKind } from "./chunk_hasher.ts";

/** How often a fetch worker says at most which links are receiving chunk bytes (see FromWorker "receiving"). */
export const RECEIVING_MS = 1_000;

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
    /** How often to say which links are receiving chunk bytes: well within the coordinator's stall time. */
    receivingMs: number;
    /** How to hash chunks (see chunk_hasher.ts). */
    hasher: HasherKind;
    /**
     * The native hasher's library, as the coordinator found it (`native` only): a worker that looked for it itself
     * would read and hash the C sources again.
     */
    nativeLibrary?: string;
  }
  /** `early`: chunks to ask for right behind the HELLO (the peer is listed as complete); the coordinator counts them asked. */
  | { op: "connect"; link: number; host: string; port: number; early: number[] }
  | { op: "grant"; grant: string }
  | { op: "request"; link: number; index: number }
  | { op: "cancel"; link: number; index: number }
  | { op: "drop"; link: number }
  | { op: "verify"; indexes: number[] }
  /** Every missing chunk is asked for: compact the heap no more (see Compactor.stop). */
  | { op: "ending" }
  | { op: "close" };

/** Worker to coordinator. */
export type FromWorker =
  /** The worker has taken up the connection (it may have been loading until now): the peer's answer is timed from here. */
  | { ev: "dialing"; link: number }
  | { ev: "ready"; link: number; bits: Uint8Array }
  | { ev: "have"; link: number; index: number }
  /** Bytes of a chunk arrived on `link` since the last look, before it is whole: a slow peer is not a silent one. */
  | { ev: "receiving"; link: number }
  /** `direct`: the chunk was written around the page cache. */
  | { ev: "done"; link: number; index: number; bytes: number; direct: boolean }
  | { ev: "bad"; link: number; index: number }
  | { ev: "reject"; link: number; index: number; reason: string }
  | { ev: "gone"; link: number; reason: string }
  | { ev: "verified"; good: number[]; bad: number[] }
  | { ev: "fatal"; message: string }
  /** The last message; with the counts of the worker's chunk buffer pool. */
  | { ev: "closed"; buffers: PoolStats; hashedInLanes: number };
