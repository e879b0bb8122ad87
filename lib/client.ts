/**
 * What a client does, as a library: ask a tracker (or, in direct mode, a
 * list of peers) for the catalog, resolve a file id or name, find sources,
 * and download.
 *
 * @module
 */

import { dirname, join, resolve } from "node:path";
import { unlessAborted } from "./async.ts";
import { isSha256Hex } from "./bytes.ts";
import { type Address, connect, type Connection, formatAddress } from "./connection.ts";
import { download, type DownloadOptions, type DownloadSummary, existingOutput, isDirectory } from "./download.ts";
import { exitCodeFor, NotFoundError, ShoalError, UnreachableError, UsageError } from "./errors.ts";
import { isIdPrefix, type Manifest, nameKey } from "./manifest.ts";
import { checkSendable, type FileSummary, type Message, type PeerEntry } from "./messages.ts";
import { assertSafeFileName } from "./names.ts";
import {
  fileQuestions,
  getManifest,
  listFiles,
  receiveFileAnswers,
  receiveFileList,
  receivePeers,
} from "./tracker_link.ts";

/** Where a client learns about files: a tracker, or peers asked directly. */
export type Source = { tracker: Address } | { peers: Address[] };

/** Runs `fn` on a fresh connection to `addr`, closed afterwards. */
export async function withConn<T>(
  addr: Address,
  fn: (c: Connection) => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  await using conn = await connect(addr, { signal });
  return await fn(conn);
}

/** Files known to the source, optionally filtered by a name substring. */
export async function catalog(src: Source, query?: string): Promise<FileSummary[]> {
  if (query !== undefined) checkSendable({ type: "list_files", query });
  if ("tracker" in src) return await withConn(src.tracker, (c) => listFiles(c, query));
  const merged = new Map<string, FileSummary>();
  const answers = await Promise.allSettled(src.peers.map((p) => withConn(p, (c) => listFiles(c, query))));
  for (const a of answers) {
    if (a.status !== "fulfilled") continue;
    for (const f of a.value) {
      const m = merged.get(f.id);
      if (m) m.peers += f.peers;
      else merged.set(f.id, { ...f });
    }
  }
  if (answers.every((a) => a.status === "rejected") && src.peers.length > 0) {
    throw new UnreachableError(`None of the peers answered: ${src.peers.map(formatAddress).join(", ")}`);
  }
  return [...merged.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/** Live peers holding `fileId`. `signal` closes the connections still asking. */
export async function peersOf(src: Source, fileId: string, signal?: AbortSignal): Promise<PeerEntry[]> {
  if ("tracker" in src) return (await askTracker(src.tracker, fileId, peersQuestion, receivePeers, signal)).answers;
  // A peer that knows the manifest serves the file, whole or in part.
  const have = await Promise.all(src.peers.map(async (p) => {
    try {
      const complete = await withConn(p, async (c) => {
        await getManifest(c, fileId);
        return (await listFiles(c)).some((f) => f.id === fileId); // the catalog lists complete files only
      }, signal);
      return [{ ...p, complete }];
    } catch {
      return [];
    }
  }));
  return have.flat();
}

/**
 * Live peers of the file that a file id, an exact file name or the start of
 * an id names ({@link pickFile}); NotFoundError for none. A tracker is asked
 * on one connection ({@link askTracker}).
 */
export async function filePeers(src: Source, idOrName: string): Promise<PeerEntry[]> {
  if ("tracker" in src) return (await askTracker(src.tracker, idOrName, peersQuestion, receivePeers)).answers;
  return await peersOf(src, (await resolveNamed(src, idOrName)).id);
}

function peersQuestion(fileId: string): Message[] {
  return [{ type: "get_peers", fileId }];
}

/**
 * The id of the file `idOrName` names ({@link pickFile}), and the name asked
 * for when the file was named: one content may be shared under several
 * names, and the manifest has the first. NotFoundError for none.
 */
async function resolveNamed(src: Source, idOrName: string): Promise<{ id: string; name?: string }> {
  checkFileGiven(idOrName);
  if (isSha256Hex(idOrName)) return { id: idOrName };
  return pickNamed(await catalog(src, idOrName), idOrName);
}

function checkFileGiven(idOrName: string): void {
  if (idOrName.trim() === "") {
    throw new UsageError("No file given: name a file by its id, its first 6+ hex digits or its name");
  }
}

/** The file of a catalog's answer to `idOrName` ({@link pickFile}), with the name asked for; NotFoundError for none. */
function pickNamed(found: FileSummary[], idOrName: string): { id: string; name?: string } {
  const f = pickFile(found, idOrName);
  if (f) return f.name === idOrName ? { id: f.id, name: f.name } : { id: f.id };
  const lower = idOrName.toLowerCase();
  const what = isIdPrefix(idOrName)
    ? `named ${JSON.stringify(idOrName)} or with an id starting ${lower}`
    : `named ${JSON.stringify(idOrName)}`;
  throw new NotFoundError(`No file ${what}${nearMatches(found)}`);
}

/** Names offered when a look-up by exact name fails: at most this many. */
const NEAR_MATCHES_SHOWN = 5;

/** What to say after "No file named X": the names that contain X (the catalog's answer), or where to look. */
function nearMatches(found: { id: string; name: string }[]): string {
  if (found.length === 0) return " (try: files, search)";
  const shown = found.slice(0, NEAR_MATCHES_SHOWN).map((f) => `${JSON.stringify(f.name)} (${f.id.slice(0, 12)})`);
  const more = found.length > shown.length ? `, and ${found.length - shown.length} more (see: search)` : "";
  return `; did you mean ${shown.join(", ")}${more}?`;
}

/**
 * The one file of `files` that `text` names: by id, else by exact name, else
 * by the start of its id ({@link isIdPrefix}), so a name wins over an id
 * prefix that happens to spell it. Undefined for none; an `ambiguous` error
 * (exit 2) listing the ids when several match.
 */
export function pickFile<F extends { id: string; name: string }>(files: F[], text: string): F | undefined {
  let hits = files.filter((f) => f.id === text);
  if (hits.length === 0) hits = files.filter((f) => f.name === text);
  if (hits.length === 0) hits = files.filter((f) => nameKey(f.name) === nameKey(text)); // café typed, café stored
  if (hits.length === 0 && isIdPrefix(text)) hits = files.filter((f) => f.id.startsWith(text.toLowerCase()));
  // A file listed under several names (copies of one content) is one file.
  hits = [...new Map(hits.map((f) => [f.id, f])).values()];
  if (hits.length > 1) {
    throw new ShoalError(
      "ambiguous",
      `${hits.length} files match ${JSON.stringify(text)}; pick one by id: ${hits.map((f) => f.id).join(", ")}`,
      exitCodeFor("ambiguous"),
    );
  }
  return hits[0];
}

/** The manifest of `fileId`, checked against the id. */
export async function manifestOf(src: Source, fileId: string): Promise<Manifest> {
  if ("tracker" in src) return await withConn(src.tracker, (c) => getManifest(c, fileId));
  for (const p of src.peers) {
    try {
      return await withConn(p, (c) => getManifest(c, fileId));
    } catch {
      // try the next peer
    }
  }
  throw new NotFoundError(`No peer has file ${fileId}`);
}

/** Options for {@link getFile}. */
export type GetOptions = Omit<DownloadOptions, "fileId" | "manifest" | "out" | "discover" | "initialPeers"> & {
  /** Output path; a directory (or a path ending in `/`) means the manifest's name in it. Default: the name in {@link outDir}. */
  out?: string;
  /** Where the default output goes; default: the current directory. */
  outDir?: string;
  /** Called once the file is resolved, before any chunk is fetched. */
  onResolved?: (fileId: string, manifest: Manifest, out: string) => void;
};

/** Resolves `idOrName`, finds its sources and downloads it. */
export async function getFile(src: Source, idOrName: string, options: GetOptions = {}): Promise<DownloadSummary> {
  // Until download() runs, which saves its progress when interrupted, an interrupt ends the look-ups and checks at
  // once: they may wait on a tracker for seconds, or hash a large file found in place.
  const setUp = unlessAborted(
    prepare(src, idOrName, options),
    options.signal,
    () => new ShoalError("interrupted", "Interrupted before the download began; nothing was fetched", 130),
  );
  const ready = await setUp;
  if ("summary" in ready) return ready.summary;
  // The peers just looked up start the download: no second lookup (a round trip to the tracker).
  return await download({ ...options, ...ready });
}

/** A file as {@link findFile} finds it: what {@link resolveNamed} gives, its manifest, and a tracker's peers. */
interface FoundFile {
  id: string;
  name?: string;
  manifest: Manifest;
  /** The live peers, where the tracker was asked for them with the manifest; else looked up when needed. */
  peers?: PeerEntry[];
}

/**
 * Resolves `idOrName` and fetches its manifest; from a tracker, its peers
 * too, with GET_PEERS sent together with GET_MANIFEST ({@link askTracker}).
 * Peers asked directly are asked as before: each may have to be tried in
 * turn.
 */
async function findFile(src: Source, idOrName: string): Promise<FoundFile> {
  if (!("tracker" in src)) {
    const { id, name } = await resolveNamed(src, idOrName);
    return { id, name, manifest: await manifestOf(src, id) };
  }
  const { answers, ...named } = await askTracker(src.tracker, idOrName, fileQuestions, receiveFileAnswers);
  return { ...named, ...answers };
}

/**
 * Asks `tracker` `questions` about the file `idOrName` names, and reads
 * their `answers`, on one connection; each question goes out without
 * waiting for an answer it does not need. By id, the questions go with the
 * HELLO: two round trips (TCP's, then theirs). By name, LIST_FILES goes with
 * the HELLO and the questions with the pick: three. A connection per
 * question, each waiting on its HELLO's answer, took two round trips more
 * for each question.
 */
async function askTracker<T>(
  tracker: Address,
  idOrName: string,
  questions: (fileId: string) => Message[],
  answers: (conn: Connection, fileId: string) => Promise<T>,
  signal?: AbortSignal,
): Promise<{ id: string; name?: string; answers: T }> {
  checkFileGiven(idOrName);
  const byId = isSha256Hex(idOrName);
  const search: Message = { type: "list_files", query: idOrName };
  if (!byId) checkSendable(search);
  await using conn = await connect(tracker, { pipelined: byId ? questions(idOrName) : [search], signal });
  const named = byId ? { id: idOrName } : pickNamed(await receiveFileList(conn), idOrName);
  if (!byId) await conn.sendAll(questions(named.id));
  return { ...named, answers: await answers(conn, named.id) };
}

/** What {@link getFile} does before it downloads: the file, its output, its first peers; or the summary of an output found complete. */
async function prepare(
  src: Source,
  idOrName: string,
  options: GetOptions,
): Promise<
  { summary: DownloadSummary } | Pick<DownloadOptions, "fileId" | "manifest" | "out" | "discover" | "initialPeers">
> {
  const { id: fileId, name, manifest: first, peers: found } = await findFile(src, idOrName);
  // Saved, and shared on, as the name asked for: the manifest names the content as it was first shared.
  const manifest = name === undefined || name === first.name ? first : { ...first, name };
  const out = await outputPath(options.out, options.outDir, manifest.name);
  const self = options.peerNode?.address;
  const isSelf = (p: Address) =>
    self !== undefined && p.port === self.port && (p.host === self.host || isLoopback(p.host));
  const others = (peers: PeerEntry[]) =>
    peers.filter((p) => !isSelf(p)).map((p) => ({ host: p.host, port: p.port, complete: p.complete }));
  const discover = async (signal?: AbortSignal) => others(await peersOf(src, fileId, signal));
  // An output already there needs no peers: it is this very file (done), or it is refused here.
  const already = await existingOutput({ ...options, fileId, manifest, out, discover, initialPeers: [] });
  const initialPeers = manifest.size > 0 && !already ? (found ? others(found) : await discover()) : [];
  if (manifest.size > 0 && !already && initialPeers.length === 0) {
    throw new NotFoundError(`No live peer has file ${fileId} (${manifest.name})`);
  }
  options.onResolved?.(fileId, manifest, out);
  if (already) return { summary: already };
  return { fileId, manifest, out, discover, initialPeers };
}

/**
 * Where a download of a file named `name` goes: `out` when it names a file;
 * the name inside `out` when that is a directory or ends in `/` (as cp and
 * scp do); else the name inside `outDir` (default: the current directory).
 * A name that is unsafe as a file name needs an `out` that names a file.
 */
export async function outputPath(out: string | undefined, outDir: string | undefined, name: string): Promise<string> {
  if (out !== undefined && (out.endsWith("/") || await isDirectory(out))) {
    [outDir, out] = [out, undefined];
  }
  if (out !== undefined) return await inExistingPlace(out);
  try {
    assertSafeFileName(name);
  } catch (err) {
    throw new UsageError(`${(err as Error).message}; choose an output file name`);
  }
  return await inExistingPlace(outDir === undefined ? name : join(outDir, name));
}

/**
 * `path`, if its directory is there: checked before the download is said to
 * begin (a peer asked by request-file answers with it), where creating
 * `x.part` would only fail later.
 */
async function inExistingPlace(path: string): Promise<string> {
  const dir = dirname(path);
  let st: Deno.FileInfo | null = null; // null: a file where a directory of the path should be (`-o notes.txt/x`)
  try {
    st = await Deno.stat(dir);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new UsageError(`Cannot save to ${path}: there is no directory ${resolve(dir)}`);
    }
    if (!(err instanceof Deno.errors.NotADirectory)) return path; // no permission to look, say: creating it reports it
  }
  if (!st?.isDirectory) throw new UsageError(`Cannot save to ${path}: a file stands where a directory of it should be`);
  return path;
}

function isLoopback(host: string): boolean {
  return host.startsWith("127.") || host === "::1" || host === "localhost";
}
