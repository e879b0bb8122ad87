/**
 * The resume sidecar `<out>.part.json`: which chunks of `<out>.part` are
 * verified and on disk. It is only ever replaced whole (temp file, then
 * rename), and only after the `.part` data it describes has been synced,
 * so a crash at any instant never marks a chunk done whose bytes are not
 * on disk. A checksum over its own content catches a damaged file.
 *
 * It names the file by its id and layout, not by a copy of the manifest:
 * the id is derived from the manifest, and a resuming `get` has the
 * manifest anyway (from the tracker or a peer, checked against the id).
 * So the sidecar is a few bytes plus one bit per chunk, and rewriting it
 * every few hundred milliseconds costs the same for any file size (format
 * 1 carried the manifest: 2.2 MB rewritten three times a second for a
 * 32 GiB file).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { Bitfield } from "./bitfield.ts";
import { chunkCount, type Manifest, MAX_CHUNKS } from "./manifest.ts";
import { isSha256Hex, toBase64, utf8Encoder } from "./bytes.ts";
import { isDiskFull } from "./errors.ts";

/** Format version of the sidecar. */
export const SIDECAR_FORMAT = 2;
/** A sidecar larger than this is not read (the largest manifest's bitmap is 34 kB of base64). */
export const MAX_SIDECAR_BYTES = 1024 * 1024;

/** The file a sidecar belongs to: its id and the layout the id implies. */
export type SidecarFile = { fileId: string } & Pick<Manifest, "size" | "chunkSize">;

/** What a sidecar records. */
export interface SidecarState extends SidecarFile {
  done: Bitfield;
}

/** A sidecar that cannot be used, and why. */
export class SidecarError extends Error {
  override name = "SidecarError";
}

/** An intact sidecar of another file's download: the `.part` beside it holds that download's progress. */
export class ForeignSidecarError extends SidecarError {
  override name = "ForeignSidecarError";
  /** The other download's record. */
  readonly state: SidecarState;

  constructor(state: SidecarState) {
    super(`it belongs to another file (${state.fileId.slice(0, 16)}…)`);
    this.state = state;
  }
}

// The text is JSON.stringify of {...body, checksum}, the checksum taken over JSON.stringify(body).
function bodyText(s: SidecarState): string {
  return JSON.stringify({
    format: SIDECAR_FORMAT,
    fileId: s.fileId,
    size: s.size,
    chunkSize: s.chunkSize,
    chunks: s.done.size,
    done: toBase64(s.done.bytes),
  });
}

function checksumOf(body: string): string {
  return createHash("sha256").update(body).digest("hex");
}

/** Serialises a sidecar, checksum last. */
export function encodeSidecar(s: SidecarState): string {
  const body = bodyText(s);
  return `${body.slice(0, -1)},"checksum":"${checksumOf(body)}"}`;
}

/**
 * Parses and checks a sidecar for `file`; throws SidecarError saying what is
 * wrong. The sidecar's own layout and checksum are checked before it is
 * compared with `file`, so an intact record of another download (a
 * {@link ForeignSidecarError}) is told apart from a damaged one.
 */
export function decodeSidecar(text: string, file: SidecarFile): SidecarState {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(text);
  } catch {
    throw new SidecarError("it is not valid JSON (damaged?)");
  }
  if (typeof o !== "object" || o === null) throw new SidecarError("it is not a JSON object");
  if (o.format !== SIDECAR_FORMAT) {
    throw new SidecarError(`format ${JSON.stringify(o.format)} is not ${SIDECAR_FORMAT}`);
  }
  const { fileId, size, chunkSize, chunks } = o;
  if (
    typeof fileId !== "string" || !isSha256Hex(fileId) || !Number.isSafeInteger(size) || (size as number) < 0 ||
    !Number.isSafeInteger(chunkSize) || (chunkSize as number) < 1 ||
    chunks !== chunkCount(size as number, chunkSize as number) || (chunks as number) > MAX_CHUNKS
  ) {
    throw new SidecarError(
      `its layout (${String(size)} bytes in ${String(chunks)} chunks of ${String(chunkSize)}) is not valid (damaged?)`,
    );
  }
  let bits: Uint8Array;
  try {
    bits = Uint8Array.fromBase64(String(o.done));
  } catch {
    throw new SidecarError("its chunk bitmap is not base64");
  }
  if (bits.length !== Math.ceil(chunks / 8)) throw new SidecarError("its chunk bitmap has the wrong length");
  const state: SidecarState = {
    fileId,
    size: size as number,
    chunkSize: chunkSize as number,
    done: new Bitfield(chunks, bits),
  };
  if (o.checksum !== checksumOf(bodyText(state))) throw new SidecarError("its checksum does not match (damaged?)");
  if (fileId !== file.fileId) throw new ForeignSidecarError(state);
  if (state.size !== file.size || state.chunkSize !== file.chunkSize) {
    throw new SidecarError(`its layout (${size} bytes in ${chunks} chunks of ${chunkSize}) is not the file's`);
  }
  return state;
}

/** Reads the sidecar at `path` for `file`; null when there is none. */
export async function readSidecar(path: string, file: SidecarFile): Promise<SidecarState | null> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  // Not read unless a regular file: reading a FIFO would wait for a writer for good, a directory fails raw.
  if (!st.isFile) throw new SidecarError("it is not a regular file");
  if (st.size > MAX_SIDECAR_BYTES) throw new SidecarError(`it is larger than ${MAX_SIDECAR_BYTES} bytes`);
  return decodeSidecar(await Deno.readTextFile(path), file);
}

/** Writes the sidecars of one download to `path`. */
export class SidecarWriter {
  readonly #file: SidecarFile;

  constructor(readonly path: string, file: SidecarFile) {
    this.#file = { fileId: file.fileId, size: file.size, chunkSize: file.chunkSize };
  }

  /**
   * Replaces the sidecar atomically: write a temp file, sync it, rename it
   * over. On a full disk, where the temp file finds no room, the sidecar is
   * overwritten in place instead: for one download it always has the same
   * length, so that needs no new space, and a write cut short by a crash
   * fails the checksum and means a safe restart, never a wrong chunk.
   */
  async write(done: Bitfield): Promise<void> {
    const bytes = utf8Encoder.encode(encodeSidecar({ ...this.#file, done }));
    const tmp = `${this.path}.tmp`;
    try {
      // A new file, never one found there: a link planted at the temp name would have its target overwritten.
      await Deno.remove(tmp).catch(() => {});
      await writeAll(tmp, bytes, true);
    } catch (err) {
      await Deno.remove(tmp).catch(() => {});
      const st = await Deno.lstat(this.path).catch(() => null);
      if (!isDiskFull(err) || !st?.isFile || st.size !== bytes.length) throw err;
      return await writeAll(this.path, bytes, false);
    }
    await Deno.rename(tmp, this.path);
  }
}

/** Writes `bytes` to `path` from its start (`fresh`: a file made now, else one that is there) and syncs them. */
async function writeAll(path: string, bytes: Uint8Array, fresh: boolean): Promise<void> {
  using f = await Deno.open(path, fresh ? { write: true, createNew: true } : { write: true });
  let at = 0;
  while (at < bytes.length) at += await f.write(bytes.subarray(at));
  await f.syncData();
}

/** Replaces the sidecar at `path` with `s` (see {@link SidecarWriter}). */
export async function writeSidecar(path: string, s: SidecarState): Promise<void> {
  await new SidecarWriter(path, s).write(s.done);
}
