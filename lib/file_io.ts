/**
 * Positional reads on a descriptor: no seek, so several readers can share
 * one descriptor.
 *
 * @module
 */

import { readSync } from "node:fs";

/** Reads into all of `into` from `position`; returns the bytes read (fewer only at end of file). */
export function preadFull(fd: number, into: Uint8Array, position: number): number {
  let at = 0;
  while (at < into.length) {
    const n = readSync(fd, into, at, into.length - at, position + at);
    if (n === 0) break;
    at += n;
  }
  return at;
}
