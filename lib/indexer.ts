/**
 * Indexes a shared directory: every regular file under it, recursively,
 * hashed into a manifest. Links are followed only while they stay inside
 * the shared directory. A cache keyed by path, size and modification time
 * lets a restart skip files that did not change.
 *
 * @module
 */

import { basename, join, relative, resolve, sep as SEPARATOR } from "node:path";
import {
  chunkSizeFor,
  DEFAULT_CHUNK_SIZE,
  fileIdOf,
  hashFile,
  type HashProgress,
  type Manifest,
  verifyManifest,
} from "./manifest.ts";
import { fileNameProblem } from "./names.ts";

/** A file this peer shares: where it is and what it holds. */
export interface SharedFile {
  id: string;
  /** Real path on disk (links resolved, inside the shared directory). */
  path: string;
  /** Path relative to the shared directory, for display. */
  relPath: string;
  manifest: Manifest;
  size: number;
  mtimeMs: number;
}

/** Events while indexing, for progress output. */
export type IndexEvent =
  | { kind: "hashing"; relPath: string; done: number; total: number }
  | { kind: "cached"; relPath: string }
  | { kind: "skipped"; relPath: string; reason: string };

/** Options for {@link indexDirectory}. */
export interface IndexOptions {
  chunkSize?: number;
  /** Hash cache file; none when omitted. */
  cachePath?: string;
  onEvent?: (e: IndexEvent) => void;
}

const CACHE_VERSION = 1;

interface CacheEntry {
  size: number;
  mtimeMs: number;
  manifest: Manifest;
}

/** Walks `dir` and returns a manifest for every regular file in it. */
export async function indexDirectory(dir: string, options: IndexOptions = {}): Promise<SharedFile[]> {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const root = await Deno.realPath(resolve(dir));
  const cache = options.cachePath ? await loadCache(options.cachePath) : new Map<string, CacheEntry>();
  const out: SharedFile[] = [];
  const onSkip = (relPath: string, reason: string) => options.onEvent?.({ kind: "skipped", relPath, reason });
  for await (const f of walkShared(root, root, onSkip)) {
    const hit = cache.get(f.real);
    if (
      hit && hit.size === f.size && hit.mtimeMs === f.mtimeMs &&
      hit.manifest.chunkSize === chunkSizeFor(f.size, chunkSize)
    ) {
      const manifest = { ...hit.manifest, name: f.name };
      options.onEvent?.({ kind: "cached", relPath: f.relPath });
      out.push(sharedFileOf(f, manifest));
    } else {
      out.push(
        await hashShareable(f, chunkSize, (done, total) => {
          options.onEvent?.({ kind: "hashing", relPath: f.relPath, done, total });
        }),
      );
    }
  }
  if (options.cachePath) await saveIndexCache(options.cachePath, out);
  return out;
}

/** A regular file under the shared directory that may be shared, before hashing. */
export interface ShareableFile {
  /** Real path on disk (links resolved, inside the shared directory). */
  real: string;
  /** Path relative to the shared directory. */
  relPath: string;
  /** Its name, a safe single path component. */
  name: string;
  size: number;
  mtimeMs: number;
}

/** What one path under the shared directory is, by the rules of {@link indexDirectory}. */
export type PathInfo =
  | ({ kind: "file" } & ShareableFile)
  | { kind: "dir"; real: string }
  | { kind: "skipped"; relPath: string; reason: string }
  /** gone (or gone while we looked) */
  | { kind: "missing" }
  /** sockets, FIFOs, devices: never shared, not worth a message */
  | { kind: "other" };

/**
 * Classifies `full`, a path inside `root` (a real path) whose parent is a
 * real directory: links are followed only while they stay inside `root`,
 * names must be safe. The one place these rules live, for the indexer and
 * the folder watcher alike.
 */
export async function inspectPath(root: string, full: string): Promise<PathInfo> {
  const relPath = relative(root, full);
  let st: Deno.FileInfo;
  let real = full;
  try {
    st = await Deno.lstat(full);
    if (st.isSymlink) {
      try {
        real = await Deno.realPath(full);
      } catch {
        return { kind: "skipped", relPath, reason: "broken link" };
      }
      if (!isInside(root, real)) return { kind: "skipped", relPath, reason: "link leads outside the shared directory" };
      st = await Deno.stat(real);
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    // A name that is not UTF-8 reaches us with U+FFFD in place of its bad bytes, and no file has that name.
    if (basename(full).includes("\uFFFD")) return { kind: "skipped", relPath, reason: "name is not valid UTF-8" };
    return { kind: "missing" };
  }
  if (st.isDirectory) return { kind: "dir", real };
  if (!st.isFile) return { kind: "other" };
  const name = basename(full);
  const problem = fileNameProblem(name);
  if (problem) return { kind: "skipped", relPath, reason: `name ${problem}` };
  // A download in progress (`get -o` into the shared folder): the .part is incomplete and its sidecar is state. Before
  // its first chunk there is no sidecar yet, but the download holds the .part's lock from the start.
  if (name.endsWith(".part.json")) return { kind: "other" };
  if (
    name.endsWith(".part") &&
    (await Deno.lstat(`${full}.json`).then(() => true, () => false) || await lockedByDownload(real))
  ) {
    return { kind: "other" };
  }
  return { kind: "file", real, relPath, name, size: st.size, mtimeMs: st.mtime?.getTime() ?? 0 };
}

/** Whether a download holds `path`'s lock (lib/download.ts takes it on its `.part` before writing). */
async function lockedByDownload(path: string): Promise<boolean> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch {
    return false; // gone, or unreadable: hashing it reports that
  }
  try {
    return !(await file.tryLock(false));
  } catch {
    return false; // a filesystem without locks
  } finally {
    file.close(); // closing lets go of a lock taken here
  }
}

/**
 * Yields every shareable file under `dir` (a real directory inside `root`),
 * in name order, and reports the entries it skips. A directory reached
 * twice (a link loop) is walked once; one that vanishes mid-walk is empty.
 */
export async function* walkShared(
  root: string,
  dir: string,
  onSkip: (relPath: string, reason: string) => void,
  seenDirs: Set<string> = new Set(),
): AsyncGenerator<ShareableFile> {
  if (seenDirs.has(dir)) return; // a link loop
  seenDirs.add(dir);
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) names.push(e.name);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw err;
  }
  names.sort((a, b) => a.localeCompare(b));
  for (const name of names) {
    const info = await inspectPath(root, join(dir, name));
    if (info.kind === "dir") yield* walkShared(root, info.real, onSkip, seenDirs);
    else if (info.kind === "skipped") onSkip(info.relPath, info.reason);
    else if (info.kind === "file") yield info;
  }
}

/** Hashes a file found by {@link walkShared} or {@link inspectPath} into what a peer shares. */
export async function hashShareable(
  f: ShareableFile,
  chunkSize: number,
  onProgress?: HashProgress,
): Promise<SharedFile> {
  return sharedFileOf(f, await hashFile(f.real, f.name, chunkSizeFor(f.size, chunkSize), onProgress));
}

function sharedFileOf(f: ShareableFile, manifest: Manifest): SharedFile {
  return {
    id: fileIdOf(manifest),
    path: f.real,
    relPath: f.relPath,
    manifest,
    size: manifest.size,
    mtimeMs: f.mtimeMs,
  };
}

/** True when `path` is `root` or below it. */
export function isInside(root: string, path: string): boolean {
  return path === root || path.startsWith(root.endsWith(SEPARATOR) ? root : root + SEPARATOR);
}

async function loadCache(path: string): Promise<Map<string, CacheEntry>> {
  const out = new Map<string, CacheEntry>();
  let data: unknown;
  try {
    data = JSON.parse(await Deno.readTextFile(path));
  } catch {
    return out; // missing or unreadable: rehash everything
  }
  const d = data as { version?: unknown; entries?: Record<string, unknown> };
  if (d?.version !== CACHE_VERSION || typeof d.entries !== "object" || d.entries === null) return out;
  for (const [p, v] of Object.entries(d.entries)) {
    const e = v as Partial<CacheEntry>;
    try {
      if (typeof e.size !== "number" || typeof e.mtimeMs !== "number") continue;
      out.set(p, { size: e.size, mtimeMs: e.mtimeMs, manifest: verifyManifest(e.manifest) });
    } catch {
      // a bad entry is rehashed
    }
  }
  return out;
}

/** Writes the hash cache for `files` (atomically: a temp file, then a rename). */
export async function saveIndexCache(path: string, files: Iterable<SharedFile>): Promise<void> {
  const entries: Record<string, CacheEntry> = {};
  for (const f of files) entries[f.path] = { size: f.size, mtimeMs: f.mtimeMs, manifest: f.manifest };
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.mkdir(resolve(path, ".."), { recursive: true });
  await Deno.writeTextFile(tmp, JSON.stringify({ version: CACHE_VERSION, entries }));
  await Deno.rename(tmp, path);
}
