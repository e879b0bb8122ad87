/**
 * Writes into the `.part` file that go around the page cache (`O_DIRECT`)
 * where the system allows it, and through it where not.
 *
 * Why: copying each chunk into the page cache was the client's largest
 * cost. On this project's virtual machines a buffered 4 GiB download spent
 * 8-10 s of system time in that copy (the host faults freed page-cache
 * pages back in), a direct one about 2.5 s; measured in the README
 * (Performance). Direct writes need the buffer's address, the file offset
 * and the length to be multiples of the device's block size: the fetch
 * workers receive each chunk into a buffer placed so that its data starts
 * on a {@link DIRECT_ALIGN} boundary ({@link alignedBytes}); a chunk that
 * does not line up (the file's short last chunk) is written buffered.
 * Each direct write waits for the disk (about 60 us plus 0.6 us per KiB
 * here), so files cut in chunks under {@link DIRECT_MIN_CHUNK} are written
 * through the cache: with 16-256 KiB chunks direct writes made downloads
 * 1.3-3 times slower.
 * Durability is unchanged: the coordinator's `fdatasync` covers both kinds
 * of write before the sidecar marks a chunk done.
 *
 * @module
 */

import { closeSync, constants, openSync } from "node:fs";
import { pwriteFull } from "./file_io.ts";

/** Alignment of direct writes: a page, a multiple of every common logical block size (512, 4096). */
export const DIRECT_ALIGN = 4096;

/** Smallest chunk size whose downloads write around the page cache (see above). */
export const DIRECT_MIN_CHUNK = 1024 * 1024;

/** Where each buffer starts in memory (null: unknown); asked once per buffer, as a pool reuses its buffers. */
const starts = new WeakMap<ArrayBufferLike, number | null>();
let pointersAllowed: boolean | undefined;

/** Whether FFI is granted; asked first, so that a run without it gets no permission prompt on a terminal. */
function mayReadAddresses(): boolean {
  if (pointersAllowed === undefined) {
    try {
      pointersAllowed = Deno.permissions.querySync({ name: "ffi" }).state === "granted";
    } catch {
      pointersAllowed = false;
    }
  }
  return pointersAllowed;
}

/** The address of `bytes`' first byte; null where it cannot be known (FFI not granted, or missing). */
export function addressOf(bytes: Uint8Array): number | null {
  if (!mayReadAddresses()) return null;
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

/**
 * An open `.part` file: positional writes, direct where they line up;
 * `fd` is the ordinary descriptor, for reads and unaligned writes.
 */
export class PartFile {
  readonly fd: number;
  #direct: number | null = null;
  /** Chunks written directly so far. */
  directWrites = 0;

  /** Opens `path` (which must exist) for reading and writing; `direct: false` never writes around the cache. */
  constructor(readonly path: string, direct: boolean) {
    this.fd = openSync(path, "r+");
    if (direct && constants.O_DIRECT !== undefined) {
      try {
        this.#direct = openSync(path, constants.O_WRONLY | constants.O_DIRECT);
      } catch {
        this.#direct = null; // a filesystem without O_DIRECT: every write goes through the cache
      }
    }
  }

  /** Whether aligned writes go around the page cache. */
  get direct(): boolean {
    return this.#direct !== null;
  }

  /** Writes all of `data` at `position`; true when it went around the page cache. */
  write(data: Uint8Array, position: number): boolean {
    if (this.#direct !== null && linesUp(data, position)) {
      try {
        pwriteFull(this.#direct, data, position);
        this.directWrites++;
        return true;
      } catch (err) {
        // EINVAL: this filesystem wants a larger alignment after all. Write through the cache from now on.
        if ((err as { code?: string }).code !== "EINVAL") throw err;
        this.#closeDirect();
      }
    }
    pwriteFull(this.fd, data, position);
    return false;
  }

  close(): void {
    this.#closeDirect();
    closeSync(this.fd);
  }

  #closeDirect(): void {
    if (this.#direct !== null) closeSync(this.#direct);
    this.#direct = null;
  }
}
