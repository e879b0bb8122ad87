/**
 * Writes into the `.part` file that go around the page cache (`O_DIRECT`)
 * where the system allows it, and through it where not.
 *
 * Why: copying each chunk into the page cache was the client's largest
 * cost. On this project's virtual machines a buffered 4 GiB download spent
 * 8-10 s of system time in that copy (the host faults freed page-cache
 * pages back in), a direct one about 2.5 s; measured in
 * docs/PERFORMANCE.md. Direct writes need the buffer's address, the file offset
 * and the length to be multiples of the device's block size: the fetch
 * workers receive each chunk into a buffer placed so that its data starts
 * on a {@link DIRECT_ALIGN} boundary ({@link alignedBytes}); a chunk that
 * does not line up (the file's short last chunk) is written buffered.
 * Each direct write waits for the disk (about 60 us plus 0.6 us per KiB
 * here), so files cut in chunks under {@link DIRECT_MIN_CHUNK} are written
 * through the cache: with 16-256 KiB chunks direct writes made downloads
 * 1.3-3 times slower.
 * A direct write runs on a thread of its own (a non-blocking FFI call of
 * `pwrite`), so the worker goes on receiving and hashing while the disk
 * works: waiting in each write left a quarter of both cores idle during
 * a download (docs/PERFORMANCE.md). Where the C library cannot be opened
 * the write waits in the worker instead.
 * Durability is unchanged: the coordinator's `fdatasync` covers both kinds
 * of write before the sidecar marks a chunk done.
 *
 * @module
 */

import { nodeFs } from "./builtins.ts";
import { pwriteFull } from "./file_io.ts";

/** Alignment of direct writes: a page, a multiple of every common logical block size (512, 4096). */
export const DIRECT_ALIGN = 4096;

/** Smallest chunk size whose downloads write around the page cache (see above). */
export const DIRECT_MIN_CHUNK = 1024 * 1024;

/** Where each buffer starts in memory (null: unknown); asked once per buffer, as a pool reuses its buffers. */
const starts = new WeakMap<ArrayBufferLike, number | null>();
let ffiAllowed: boolean | undefined;

/**
 * Whether FFI is granted (asked once per thread); asked before any FFI use,
 * so that a run without it gets no permission prompt on a terminal.
 */
export function ffiGranted(): boolean {
  if (ffiAllowed === undefined) {
    try {
      ffiAllowed = Deno.permissions.querySync({ name: "ffi" }).state === "granted";
    } catch {
      ffiAllowed = false;
    }
  }
  return ffiAllowed;
}

/** The address of `bytes`' first byte; null where it cannot be known (FFI not granted, or missing). */
export function addressOf(bytes: Uint8Array): number | null {
  if (!ffiGranted()) return null;
  let start = starts.get(bytes.buffer);
  if (start === undefined) {
    try {
      start = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(new Uint8Array(bytes.buffer))));
    } catch {
      start = null;
    }
    starts.set(bytes.buffer, start);
  }
  return start === null ? null : start + bytes.byteOffset;
}

/**
 * A fresh view of `length` bytes whose byte `at` lies on a
 * {@link DIRECT_ALIGN} boundary in memory (its buffer is larger by up to
 * one alignment); a plain buffer when addresses cannot be known.
 */
export function alignedBytes(length: number, at: number): Uint8Array<ArrayBuffer> {
  const buffer = new ArrayBuffer(length + DIRECT_ALIGN);
  const address = addressOf(new Uint8Array(buffer));
  if (address === null) return new Uint8Array(length);
  const offset = (DIRECT_ALIGN - ((address + at) % DIRECT_ALIGN)) % DIRECT_ALIGN;
  return new Uint8Array(buffer, offset, length);
}

/** Whether `data` may be written at `position` with a direct write. */
function linesUp(data: Uint8Array, position: number): boolean {
  if (data.length === 0 || data.length % DIRECT_ALIGN !== 0 || position % DIRECT_ALIGN !== 0) return false;
  const address = addressOf(data);
  return address !== null && address % DIRECT_ALIGN === 0;
}

/** The C library's `pwrite`, called on a thread of Deno's blocking pool. */
const LIBC_SYMBOLS = {
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize", nonblocking: true },
} as const;
type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>;

/** Opens the C library for threaded writes; null where it cannot be (no FFI, another C library). */
function openLibc(): Libc | null {
  if (!ffiGranted()) return null;
  try {
    return Deno.dlopen("libc.so.6", LIBC_SYMBOLS);
  } catch {
    return null;
  }
}

/**
 * The calls behind a {@link PartFile}'s direct writes. Tests stand in for
 * them to reach what a real disk seldom does: refuse an aligned write,
 * fill up during a threaded one, or write only part of a chunk.
 */
export interface DirectCalls {
  /** Writes all of `data` at `position` and waits; throws the system's error, with its `code` ("EINVAL", "ENOSPC"). */
  write(fd: number, data: Uint8Array, position: number): void;
  /** One `pwrite` on a thread of its own: the bytes written, or -1 (the errno stays on that thread). */
  writeOnThread?(fd: number, data: Uint8Array<ArrayBuffer>, position: number): Promise<number>;
  /** Frees what the calls hold, once no write is in flight. */
  close?(): void;
}

/** The system's calls: a threaded `pwrite` where the C library can be opened, else none. */
function systemCalls(threaded: boolean): DirectCalls {
  const libc = threaded ? openLibc() : null;
  if (libc === null) return { write: pwriteFull };
  return {
    write: pwriteFull,
    writeOnThread: async (fd, data, position) =>
      Number(await libc.symbols.pwrite(fd, data, BigInt(data.length), BigInt(position))),
    close: () => libc.close(),
  };
}

/** How a {@link PartFile} writes. */
export interface PartFileOptions {
  /** Write aligned chunks around the page cache where the filesystem allows it (default true). */
  direct?: boolean;
  /** Run direct writes on a thread of their own where FFI allows it (default true); false: every write waits. */
  threaded?: boolean;
  /** Stand-ins for the system's calls (tests); `threaded` is then ignored. */
  calls?: DirectCalls;
}

/**
 * An open `.part` file: positional writes, direct where they line up;
 * `fd` is the ordinary descriptor, for reads and unaligned writes.
 */
export class PartFile {
  readonly fd: number;
  #direct: number | null = null;
  /** Set when the filesystem refused a direct write: from then on every write goes through the cache. */
  #refused = false;
  #calls: DirectCalls | null = null;
  #inflight = new Set<Promise<boolean>>();
  /** Chunks written directly so far. */
  directWrites = 0;

  /** Opens `path` (which must exist) for reading and writing. */
  constructor(readonly path: string, opts: PartFileOptions = {}) {
    const { constants, openSync } = nodeFs();
    this.fd = openSync(path, "r+");
    if ((opts.direct ?? true) && constants.O_DIRECT !== undefined) {
      try {
        this.#direct = openSync(path, constants.O_WRONLY | constants.O_DIRECT);
      } catch {
        this.#direct = null; // a filesystem without O_DIRECT: every write goes through the cache
      }
    }
    if (this.#direct !== null) this.#calls = opts.calls ?? systemCalls(opts.threaded ?? true);
  }

  /** Whether aligned writes go around the page cache. */
  get direct(): boolean {
    return this.#direct !== null && !this.#refused;
  }

  /** Whether direct writes run on a thread of their own. */
  get threaded(): boolean {
    return this.#calls?.writeOnThread !== undefined;
  }

  /**
   * Writes all of `data` at `position`; tells whether it went around the
   * page cache. A direct write on a thread of its own returns a promise;
   * `data` must stay as it is until it settles (Deno keeps its memory alive
   * for the call, even if the worker is terminated meanwhile). Every other
   * write is done on return.
   */
  write(data: Uint8Array<ArrayBuffer>, position: number): boolean | Promise<boolean> {
    if (!this.direct || !linesUp(data, position)) return this.#writeCached(data, position);
    const onThread = this.#calls!.writeOnThread;
    if (onThread === undefined) return this.#writeDirect(data, position);
    const p = this.#writeThreaded(onThread, data, position);
    this.#inflight.add(p);
    return p.finally(() => this.#inflight.delete(p));
  }

  /** Closes the file once the writes in flight have settled. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#inflight]);
    const { closeSync } = nodeFs();
    if (this.#direct !== null) closeSync(this.#direct);
    this.#direct = null;
    this.#calls?.close?.();
    this.#calls = null;
    closeSync(this.fd);
  }

  async #writeThreaded(
    onThread: NonNullable<DirectCalls["writeOnThread"]>,
    data: Uint8Array<ArrayBuffer>,
    position: number,
  ): Promise<boolean> {
    const n = await onThread(this.#direct!, data, position);
    if (n === data.length) {
      this.directWrites++;
      return true;
    }
    // A failure: its errno stayed on that thread. Try again here, where a refusal falls back to the cache and any
    // other error is thrown with its code.
    if (n <= 0) return this.direct ? this.#writeDirect(data, position) : this.#writeCached(data, position);
    this.#writeCached(data.subarray(n), position + n); // the rest of a short write, as a retry would be misaligned
    this.directWrites++;
    return true;
  }

  /** A direct write that waits here; false (and written through the cache) if the filesystem refuses it. */
  #writeDirect(data: Uint8Array, position: number): boolean {
    try {
      this.#calls!.write(this.#direct!, data, position);
      this.directWrites++;
      return true;
    } catch (err) {
      // EINVAL: this filesystem wants a larger alignment after all. Write through the cache from now on.
      // The descriptor stays open until close(): threaded writes may still be using it.
      if ((err as { code?: string }).code !== "EINVAL") throw err;
      this.#refused = true;
      return this.#writeCached(data, position);
    }
  }

  #writeCached(data: Uint8Array, position: number): false {
    pwriteFull(this.fd, data, position);
    return false;
  }
}
