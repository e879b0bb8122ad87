/**
 * The resume sidecar `<out>.part.json`: which chunks of `<out>.part` are
 * verified and on disk. It is only ever replaced whole (temp file, then
 * rename), and only after the `.part` data it describes has been synced,
 * so a crash at any instant never marks a chunk done whose bytes are not
 * on disk. A checksum over its own content catches a damaged file.
 *
 * @module
 */

import { Bitfield } from "./bitfield.ts";
import { type Manifest, sha256Hex, verifyManifest } from "./manifest.ts";
import { toBase64, utf8Encoder } from "./bytes.ts";

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

function body(s: SidecarState) {
  return {
    format: SIDECAR_FORMAT,
    fileId: s.fileId,
    size: s.manifest.size,
    chunkSize: s.manifest.chunkSize,
    manifest: s.manifest,
    done: toBase64(s.done.bytes),
  };
}

/** Serialises a sidecar, checksum last. */
export function encodeSidecar(s: SidecarState): string {
  const b = body(s);
  return JSON.stringify({ ...b, checksum: sha256Hex(utf8Encoder.encode(JSON.stringify(b))) });
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
  if (o.checksum !== sha256Hex(utf8Encoder.encode(JSON.stringify(body(state))))) {
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

/** Replaces the sidecar atomically: write a temp file, sync it, rename it over. */
export async function writeSidecar(path: string, s: SidecarState): Promise<void> {
  const tmp = `${path}.tmp`;
  {
    using f = await Deno.open(tmp, { write: true, create: true, truncate: true });
    const bytes = utf8Encoder.encode(encodeSidecar(s));
    let at = 0;
    while (at < bytes.length) at += await f.write(bytes.subarray(at));
    await f.syncData();
  }
  await Deno.rename(tmp, path);
}
