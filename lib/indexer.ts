/**
 * Indexes a shared directory: every regular file under it, recursively,
 * hashed into a manifest. Links are followed only while they stay inside
 * the shared directory. A cache keyed by path, size and modification time
 * lets a restart skip files that did not change.
 *
 * @module
 */

import { basename, join, relative, resolve, sep as SEPARATOR } from "node:path";
import { chunkSizeFor, DEFAULT_CHUNK_SIZE, fileIdOf, hashFile, type Manifest, verifyManifest } from "./manifest.ts";
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
  const fresh = new Map<string, CacheEntry>();
  const out: SharedFile[] = [];
  const seenDirs = new Set<string>();

  const visit = async (realDir: string): Promise<void> => {
    if (seenDirs.has(realDir)) return; // a link loop
    seenDirs.add(realDir);
    const entries: Deno.DirEntry[] = [];
    for await (const e of Deno.readDir(realDir)) entries.push(e);
    entries.sort((a, b) => a.name.localeCompare(b.name));
    for (const e of entries) {
      const full = join(realDir, e.name);
      let real = full;
      if (e.isSymlink) {
        try {
          real = await Deno.realPath(full);
        } catch {
          options.onEvent?.({ kind: "skipped", relPath: relative(root, full), reason: "broken link" });
          continue;
        }
        if (!isInside(root, real)) {
          options.onEvent?.({
            kind: "skipped",
            relPath: relative(root, full),
            reason: "link leads outside the shared directory",
          });
          continue;
        }
      }
      const st = await Deno.stat(real);
      if (st.isDirectory) {
        await visit(real);
        continue;
      }
      if (!st.isFile) continue;
      const relPath = relative(root, full);
      const name = basename(full);
      const problem = fileNameProblem(name);
      if (problem) {
        options.onEvent?.({ kind: "skipped", relPath, reason: `name ${problem}` });
        continue;
      }
      const mtimeMs = st.mtime?.getTime() ?? 0;
      let manifest: Manifest;
      const hit = cache.get(real);
      if (
        hit && hit.size === st.size && hit.mtimeMs === mtimeMs &&
        hit.manifest.chunkSize === chunkSizeFor(st.size, chunkSize)
      ) {
        manifest = { ...hit.manifest, name };
        options.onEvent?.({ kind: "cached", relPath });
      } else {
        manifest = await hashFile(
          real,
          name,
          chunkSizeFor(st.size, chunkSize),
          (done, total) => options.onEvent?.({ kind: "hashing", relPath, done, total }),
        );
      }
      fresh.set(real, { size: st.size, mtimeMs, manifest });
      out.push({ id: fileIdOf(manifest), path: real, relPath, manifest, size: st.size, mtimeMs });
    }
  };
  await visit(root);
  if (options.cachePath) await saveCache(options.cachePath, fresh);
  return out;
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

async function saveCache(path: string, entries: Map<string, CacheEntry>): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.mkdir(resolve(path, ".."), { recursive: true });
  await Deno.writeTextFile(tmp, JSON.stringify({ version: CACHE_VERSION, entries: Object.fromEntries(entries) }));
  await Deno.rename(tmp, path);
}
