/**
 * Manifests and content-derived file ids.
 *
 * A manifest lists a file's size, chunk size and every chunk's SHA-256,
 * plus a suggested name. The file id is the SHA-256 of the manifest's
 * canonical bytes *without* the name, so the same content has one id
 * whatever it is called:
 *
 * ```
 * "shoal-manifest-v1" (17 ASCII bytes)
 * <size: u64 BE><chunkSize: u32 BE><count: u32 BE><hash 0: 32 bytes>...<hash count-1>
 * ```
 *
 * @module
 */

import { nodeCrypto } from "./builtins.ts";
import { isSha256Hex, toHex, utf8Encoder } from "./bytes.ts";
import { ProtocolError } from "./errors.ts";
import { MAX_CHUNK_SIZE } from "./framing.ts";
import { fileNameProblem } from "./names.ts";
import { defaultHasher, makeMultiHasher, MULTI_READ_MAX_CHUNK } from "./chunk_hasher.ts";

/** Default chunk size: 1 MiB. */
export const DEFAULT_CHUNK_SIZE = 1024 * 1024;
/** Smallest chunk size a manifest may declare: 16 KiB. */
export const MIN_CHUNK_SIZE = 16 * 1024;
/** Largest file size we accept: 2^53 - 1 bytes (exact in a JS number). */
export const MAX_FILE_SIZE = Number.MAX_SAFE_INTEGER;
/**
 * Largest number of chunks in one manifest: at ~67 JSON bytes a chunk hash,
 * a manifest message stays under 14 MB, inside the 16 MiB frame cap.
 */
export const MAX_CHUNKS = 200_000;

/** The chunk size to use for a file: `wanted`, raised (power of two) until the file fits in MAX_CHUNKS. */
export function chunkSizeFor(size: number, wanted: number): number {
  let cs = wanted;
  while (chunkCount(size, cs) > MAX_CHUNKS && cs < MAX_CHUNK_SIZE) cs *= 2;
  return cs;
}

const CANONICAL_TAG = utf8Encoder.encode("shoal-manifest-v1");

/** A file's description. `chunks` are lowercase hex SHA-256 values. */
export interface Manifest {
  name: string;
  size: number;
  chunkSize: number;
  chunks: string[];
}

/** Number of chunks a file of `size` bytes has at `chunkSize`. */
export function chunkCount(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize);
}

/** Byte length of chunk `index`. */
export function chunkLength(m: Pick<Manifest, "size" | "chunkSize">, index: number): number {
  return Math.min(m.chunkSize, m.size - index * m.chunkSize);
}

/** Every chunk's SHA-256 as raw bytes, 32 per chunk in order: what the fetch workers check against. */
export function chunkDigests(m: Manifest): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(32 * m.chunks.length);
  // Straight into `out` (setFromHex): a 32-byte array per chunk was most of what a large manifest cost to load.
  m.chunks.forEach((h, i) => {
    let read = -1;
    try {
      read = out.subarray(32 * i, 32 * i + 32).setFromHex(h).read;
    } catch {
      // a non-hex digit: reported below
    }
    if (read !== 64 || h.length !== 64) throw new RangeError(`Cannot parse chunk hash ${i}: not 64 hex digits`);
  });
  return out;
}

/** The canonical bytes hashed into the file id (name excluded). */
export function canonicalManifestBytes(m: Manifest): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(CANONICAL_TAG.length + 16 + 32 * m.chunks.length);
  out.set(CANONICAL_TAG, 0);
  const view = new DataView(out.buffer);
  const at = CANONICAL_TAG.length;
  view.setBigUint64(at, BigInt(m.size));
  view.setUint32(at + 8, m.chunkSize);
  view.setUint32(at + 12, m.chunks.length);
  out.set(chunkDigests(m), at + 16);
  return out;
}

/** SHA-256 of `bytes`, as lowercase hex. */
export function sha256Hex(bytes: Uint8Array): string {
  return nodeCrypto().createHash("sha256").update(bytes).digest("hex");
}

/** The content-derived id of a manifest (64 lowercase hex digits). */
export function fileIdOf(m: Manifest): string {
  return sha256Hex(canonicalManifestBytes(m));
}

/**
 * Fewest hex digits that name a file by the start of its id (`get 7097057f`,
 * `search 709705`, `unshare 709705`): shorter ones match too much by accident.
 * When two files do share a prefix, a command naming one says so and lists
 * both ids.
 */
export const MIN_ID_PREFIX = 6;

/** Whether `query` is the start of a file id: MIN_ID_PREFIX to 64 hex digits, any case. */
export function isIdPrefix(query: string): boolean {
  return query.length >= MIN_ID_PREFIX && query.length <= 64 && /^[0-9a-fA-F]+$/.test(query);
}

/**
 * A name as typed and as stored compare equal however their accents were
 * composed: macOS writes `café` decomposed (NFD), most keyboards type it
 * composed (NFC).
 */
export function nameKey(name: string): string {
  return name.normalize("NFC");
}

/**
 * What a catalog query matches: a file whose name contains `query` ignoring
 * case and how accents are composed ({@link nameKey}), or whose id starts
 * with it ({@link isIdPrefix}). Made once per query, then applied to each
 * file of the catalog.
 */
export function queryMatcher(query: string): (file: { id: string; name: string }) => boolean {
  const q = nameKey(query).toLowerCase();
  const byId = isIdPrefix(query);
  return (file) => nameKey(file.name).toLowerCase().includes(q) || (byId && file.id.startsWith(query.toLowerCase()));
}

/** Why `value` is not a well-formed manifest, or null when it is. */
export function manifestProblem(value: unknown): string | null {
  if (typeof value !== "object" || value === null) return "is not an object";
  const m = value as Record<string, unknown>;
  const nameProblem = fileNameProblem(m.name);
  if (nameProblem) return `name ${nameProblem}`;
  if (!Number.isSafeInteger(m.size) || (m.size as number) < 0) return "size is not a non-negative integer";
  const cs = m.chunkSize;
  if (!Number.isInteger(cs) || (cs as number) < MIN_CHUNK_SIZE || (cs as number) > MAX_CHUNK_SIZE) {
    return `chunkSize is not an integer in [${MIN_CHUNK_SIZE}, ${MAX_CHUNK_SIZE}]`;
  }
  if (!Array.isArray(m.chunks)) return "chunks is not an array";
  const want = chunkCount(m.size as number, cs as number);
  if (want > MAX_CHUNKS) return `has ${want} chunks, more than ${MAX_CHUNKS}`;
  if (m.chunks.length !== want) return `has ${m.chunks.length} chunk hashes, expected ${want}`;
  if (!m.chunks.every(isSha256Hex)) return "has a chunk hash that is not 64 lowercase hex digits";
  return null;
}

/**
 * Checks a manifest received from anyone: well-formed and, when
 * `expectedId` is given, hashing to that id. Returns a clean copy.
 */
export function verifyManifest(value: unknown, expectedId?: string): Manifest {
  const problem = manifestProblem(value);
  if (problem) throw new ProtocolError(`Invalid manifest: ${problem}`, "bad_manifest");
  const v = value as Manifest;
  const m: Manifest = { name: v.name, size: v.size, chunkSize: v.chunkSize, chunks: [...v.chunks] };
  if (expectedId !== undefined) {
    const id = fileIdOf(m);
    if (id !== expectedId) {
      throw new ProtocolError(`Manifest hashes to ${id}, not the requested id ${expectedId}`, "bad_manifest");
    }
  }
  return m;
}

/** Progress callback for {@link hashFile}: bytes hashed so far of the total. */
export type HashProgress = (done: number, total: number) => void;

/**
 * Reads a file once and builds its manifest. Reads chunk by chunk into one
 * reused buffer, so memory stays at one chunk (up to eight of at most
 * 1 MiB where they are hashed several at a time) whatever the file size.
 */
export async function hashFile(
  path: string,
  name: string,
  chunkSize: number = DEFAULT_CHUNK_SIZE,
  onProgress?: HashProgress,
): Promise<Manifest> {
  using file = await Deno.open(path, { read: true });
  const size = (await file.stat()).size;
  const chunks: string[] = [];
  for await (const hash of chunkHashes(file, size, chunkSize)) {
    chunks.push(hash);
    onProgress?.(Math.min(chunks.length * chunkSize, size), size);
  }
  return { name, size, chunkSize, chunks };
}

/**
 * Whether the file at `path` holds exactly what `m` describes: a regular
 * file of its size whose chunks all have its SHA-256s. Stops at the first
 * chunk that differs; memory stays at one chunk (or eight, as above).
 */
export async function fileMatches(path: string, m: Manifest): Promise<boolean> {
  const st = await Deno.stat(path); // before opening: opening a FIFO would wait for a writer
  if (!st.isFile || st.size !== m.size) return false;
  using file = await Deno.open(path, { read: true });
  let i = 0;
  for await (const hash of chunkHashes(file, m.size, m.chunkSize)) {
    if (hash !== m.chunks[i++]) return false;
  }
  return i === m.chunks.length;
}

/**
 * The SHA-256 of each chunk of the first `size` bytes of `file`, read from
 * where it is, in order: several chunks at a time where that is faster
 * (chunk_hasher.ts), then one buffer holds them all.
 */
async function* chunkHashes(file: Deno.FsFile, size: number, chunkSize: number): AsyncGenerator<string> {
  const multi = chunkSize <= MULTI_READ_MAX_CHUNK && size >= 2 * chunkSize ? makeMultiHasher(defaultHasher()) : null;
  try {
    const lanes = multi !== null && size >= multi.lanes * chunkSize ? multi.lanes : 1;
    const buf = new Uint8Array(Math.min(lanes * chunkSize, size));
    const views = Array.from({ length: lanes }, (_, k) => buf.subarray(k * chunkSize, (k + 1) * chunkSize));
    const digests = views.map(() => new Uint8Array(32));
    for (let done = 0; done < size;) {
      if (lanes > 1 && size - done >= lanes * chunkSize) {
        await readFull(file, buf);
        multi!.digest(views, digests);
        for (const d of digests) yield toHex(d);
        done += buf.length;
        continue;
      }
      const want = Math.min(chunkSize, size - done);
      await readFull(file, buf.subarray(0, want));
      yield toHex(nodeCrypto().createHash("sha256").update(buf.subarray(0, want)).digest());
      done += want;
    }
  } finally {
    multi?.close();
  }
}

/** Reads exactly `into.length` bytes or throws (file shrank underneath us). */
export async function readFull(file: Deno.FsFile, into: Uint8Array): Promise<void> {
  let at = 0;
  while (at < into.length) {
    const n = await file.read(into.subarray(at));
    if (n === null) throw new Error(`File ended ${into.length - at} bytes early (changed while reading?)`);
    at += n;
  }
}
