/**
 * Positional reads and writes on a descriptor: no seek, so several readers
 * and writers can share one descriptor. Free space on a filesystem.
 *
 * @module
 */

import { nodeFs } from "./builtins.ts";

/** Reads into all of `into` from `position`; returns the bytes read (fewer only at end of file). */
export function preadFull(fd: number, into: Uint8Array, position: number): number {
  const { readSync } = nodeFs();
  let at = 0;
  while (at < into.length) {
    const n = readSync(fd, into, at, into.length - at, position + at);
    if (n === 0) break;
    at += n;
  }
  return at;
}

/** Writes all of `data` at `position`. */
export function pwriteFull(fd: number, data: Uint8Array, position: number): void {
  const { writeSync } = nodeFs();
  let at = 0;
  while (at < data.length) at += writeSync(fd, data, at, data.length - at, position + at);
}

/** Bytes an unprivileged writer may still use on the filesystem holding `path`; null when it cannot tell. */
export function freeBytes(path: string): number | null {
  try {
    const s = nodeFs().statfsSync(path);
    return s.blocks > 0 ? s.bavail * s.bsize : null; // some virtual filesystems report no blocks at all
  } catch {
    return null;
  }
}
