/**
 * The resume sidecar `<out>.part.json`: which chunks of `<out>.part` are
 * verified and on disk. It is only ever replaced whole (temp file, then
 * rename), and only after the `.part` data it describes has been synced,
 * so a crash at any instant never marks a chunk done whose bytes are not
 * on disk. A checksum over its own content catches a damaged file.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { Bitfield } from "./bitfield.ts";
import { type Manifest, verifyManifest } from "./manifest.ts";
import { toBase64, utf8Encoder } from "./bytes.ts";
import { isDiskFull } from "./errors.ts";

/** Format version of the sidecar. */
export const SIDECAR_FORMAT = 1;
/** A sidecar larger than this is not read (a 2^20-chunk manifest is ~70 MB). */
export const MAX_SIDECAR_BYTES = 128 * 1024 * 1024;

/** What a sidecar records. */
export interface SidecarState {
  fileId: string;
  manifest: Manifest;
  done: Bitfield;
}

/** A sidecar that cannot be used, and why. */
export class SidecarError extends Error {
  override name = "SidecarError";
}

// The text is JSON.stringify of {...body, checksum} with the checksum taken over JSON.stringify(body), built
// from two parts: the head (everything up to the manifest, which never changes during a download) and the
// tail (the bitmap). A download serialises its head once, not at every flush: for a 4 GiB file the
// manifest is 270 kB of JSON, and re-encoding it every few hundred milliseconds grew the heap.
function headText(fileId: string, manifest: Manifest): string {
  return `{"format":${SIDECAR_FORMAT},"fileId":${JSON.stringify(fileId)},"size":${manifest.size},` +
    `"chunkSize":${manifest.chunkSize},"manifest":${JSON.stringify(manifest)}`;
}

function tailText(done: Bitfield): string {
  return `,"done":${JSON.stringify(toBase64(done.bytes))}`;
}

/** SHA-256 of the body (head, tail, closing brace): what the checksum field holds. */
function checksumOf(head: string | Uint8Array, tail: string): string {
  return createHash("sha256").update(head).update(`${tail}}`).digest("hex");
}

/** Serialises a sidecar, checksum last. */
export function encodeSidecar(s: SidecarState): string {
  const head = headText(s.fileId, s.manifest), tail = tailText(s.done);
  return `${head}${tail},"checksum":"${checksumOf(head, tail)}"}`;
}

/** Parses and checks a sidecar for `fileId`; throws SidecarError saying what is wrong. */
export function decodeSidecar(text: string, fileId: string): SidecarState {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(text);
  } catch {
    throw new SidecarError("it is not valid JSON (damaged?)");
  }
  if (typeof o !== "object" || o === null) throw new SidecarError("it is not a JSON object");
  if (o.format !== SIDECAR_FORMAT) throw new SidecarError(`format ${String(o.format)} is not ${SIDECAR_FORMAT}`);
  if (o.fileId !== fileId) throw new SidecarError(`it belongs to another file (${String(o.fileId).slice(0, 16)}…)`);
  let manifest: Manifest;
  try {
    manifest = verifyManifest(o.manifest, fileId);
  } catch (err) {
    throw new SidecarError(`its manifest is wrong: ${(err as Error).message}`);
  }
  let bits: Uint8Array;
  try {
    bits = Uint8Array.from(atob(String(o.done)), (c) => c.charCodeAt(0));
  } catch {
    throw new SidecarError("its chunk bitmap is not base64");
  }
  const n = manifest.chunks.length;
  if (bits.length !== Math.ceil(n / 8)) throw new SidecarError("its chunk bitmap has the wrong length");
  const state: SidecarState = { fileId, manifest, done: new Bitfield(n, bits) };
  if (o.checksum !== checksumOf(headText(fileId, manifest), tailText(state.done))) {
    throw new SidecarError("its checksum does not match (damaged?)");
  }
  return state;
}

/** Reads a sidecar; null when there is none. */
export async function readSidecar(path: string, fileId: string): Promise<SidecarState | null> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  if (st.size > MAX_SIDECAR_BYTES) throw new SidecarError(`it is larger than ${MAX_SIDECAR_BYTES} bytes`);
  return decodeSidecar(await Deno.readTextFile(path), fileId);
}

/** Writes the sidecars of one download to `path`; the manifest is serialised once. */
export class SidecarWriter {
  readonly #head: Uint8Array;

  constructor(readonly path: string, fileId: string, manifest: Manifest) {
    this.#head = utf8Encoder.encode(headText(fileId, manifest));
  }

  /**
   * Replaces the sidecar atomically: write a temp file, sync it, rename it
   * over. On a full disk, where the temp file finds no room, the sidecar is
   * overwritten in place instead: for one download it always has the same
   * length, so that needs no new space, and a write cut short by a crash
   * fails the checksum and means a safe restart, never a wrong chunk.
   */
  async write(done: Bitfield): Promise<void> {
    const tail = tailText(done);
    const checksum = checksumOf(this.#head, tail);
    const rest = utf8Encoder.encode(`${tail},"checksum":"${checksum}"}`);
    const tmp = `${this.path}.tmp`;
    try {
      await writeAll(tmp, [this.#head, rest], true);
    } catch (err) {
      await Deno.remove(tmp).catch(() => {});
      const size = await Deno.stat(this.path).then((st) => st.size, () => -1);
      if (!isDiskFull(err) || size !== this.#head.length + rest.length) throw err;
      return await writeAll(this.path, [this.#head, rest], false);
    }
    await Deno.rename(tmp, this.path);
  }
}

/** Writes `parts` to `path` from its start (`truncate`: a fresh file) and syncs them. */
async function writeAll(path: string, parts: Uint8Array[], truncate: boolean): Promise<void> {
  using f = await Deno.open(path, { write: true, create: truncate, truncate });
  for (const bytes of parts) {
    let at = 0;
    while (at < bytes.length) at += await f.write(bytes.subarray(at));
  }
  await f.syncData();
}

/** Replaces the sidecar at `path` with `s` (see {@link SidecarWriter}). */
export async function writeSidecar(path: string, s: SidecarState): Promise<void> {
  await new SidecarWriter(path, s.fileId, s.manifest).write(s.done);
}
