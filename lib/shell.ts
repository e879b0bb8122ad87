/**
 * The peer's interactive shell (`peer.ts --shell`, or a peer started on a
 * terminal): commands typed while the peer keeps serving. {@link Shell}
 * runs one command line at a time and completes a partial one; it needs no
 * terminal, so tests drive it directly. {@link runTerminal} is the thin
 * loop around it: `node:readline` with Tab completion and a history kept,
 * bounded, in the user's state directory.
 *
 * Output is one line per item and one `error: ...` line for a failure; a
 * failing command never ends the shell.
 *
 * @module
 */

import { createInterface, type Interface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import { dirname, join, resolve } from "node:path";
import { settledWithin } from "./async.ts";
import { formatBytes, formatFileSummary, parseSize } from "./cli.ts";
import { catalog, filePeers, type Source } from "./client.ts";
import { formatAddress } from "./connection.ts";
import { type DownloadStatus, listIndexes } from "./download.ts";
import { describeError, UsageError } from "./errors.ts";
import { printable } from "./names.ts";
import type { FileSummary } from "./messages.ts";
import {
  describeTransfer,
  type PeerSession,
  percentDone,
  type SessionEvent,
  type Transfer,
  transferInfo,
} from "./peer_session.ts";

/** The catalog used for completion is fetched again at most this often. */
export const CATALOG_CACHE_MS = 3_000;
/** Longest a Tab waits for the catalog; after that it completes with what it has. */
export const COMPLETION_TIMEOUT_MS = 1_000;
/** Lines of history kept in the history file. */
export const HISTORY_MAX_LINES = 500;
/** Most local paths offered by one completion. */
const MAX_PATH_COMPLETIONS = 200;
/** Ids are offered for completion once this many characters of one are typed (else names only: ids are long). */
const ID_COMPLETION_MIN = 2;

/** One shell command. */
interface CommandSpec {
  usage: string;
  help: string;
  /** Arguments accepted (flags like --force not counted). */
  args: [min: number, max: number];
  /** What its arguments complete to. */
  complete?: "catalog" | "shared" | "path" | "transfers" | "commands";
}

const COMMANDS: Record<string, CommandSpec> = {
  share: { usage: "share <path>", help: "share a local file", args: [1, 1], complete: "path" },
  unshare: {
    usage: "unshare <file>",
    help: "stop sharing a file (id, id prefix or name)",
    args: [1, 1],
    complete: "shared",
  },
  list: { usage: "list", help: "the files this peer shares", args: [0, 0] },
  files: { usage: "files", help: "every file on the network with a live source", args: [0, 0] },
  search: {
    usage: "search <text>",
    help: "files whose name contains the text or whose id starts with it",
    args: [1, 1],
    complete: "catalog",
  },
  peers: { usage: "peers <file>", help: "the live peers of a file", args: [1, 1], complete: "catalog" },
  download: {
    usage: "download <file-id|name> [out] [--force]",
    help: "download in the background (out: a file or a directory)",
    args: [1, 2],
    complete: "catalog",
  },
  stop: {
    usage: "stop <file>",
    help: "stop a download (by name, id or #n); download it again to resume",
    args: [1, 1],
    complete: "transfers",
  },
  status: { usage: "status", help: "downloads: progress, rate, peers; done or failed and why", args: [0, 0] },
  why: {
    usage: "why <file>",
    help: "why a download is stuck: missing chunks, who has them, dropped peers",
    args: [1, 1],
    complete: "transfers",
  },
  limit: {
    usage: "limit [down|up <size|off>]",
    help: "show the download and upload limits, or change one (e.g. limit down 5m; off lifts it)",
    args: [0, 2],
  },
  help: { usage: "help [command]", help: "this list", args: [0, 1], complete: "commands" },
  quit: { usage: "quit", help: "stop downloads (progress is kept), unregister and exit", args: [0, 0] },
};

/** Splits a command line into words; `"..."` and `'...'` quote, a backslash escapes one character. */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  let word: string | null = null;
  let quote: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === quote) quote = null;
      else if (c === "\\" && quote === '"' && i + 1 < line.length) word += line[++i]!;
      else word += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      word ??= "";
    } else if (c === "\\" && i + 1 < line.length) {
      word = (word ?? "") + line[++i]!;
    } else if (/\s/.test(c)) {
      if (word !== null) words.push(word);
      word = null;
    } else word = (word ?? "") + c;
  }
  if (quote) throw new UsageError(`Unclosed quote ${quote} in the command line`);
  if (word !== null) words.push(word);
  return words;
}

/** A word as typed back into a command line: quoted when it holds spaces or quotes. */
function quoteWord(w: string): string {
  return /[\s"'\\]/.test(w) ? `"${w.replace(/["\\]/g, "\\$&")}"` : w;
}

/** `~/x` as $HOME/x, as a shell would. */
function expandHome(path: string): string {
  const home = Deno.env.get("HOME");
  return home && (path === "~" || path.startsWith("~/")) ? home + path.slice(1) : path;
}

/** Runs shell commands against a {@link PeerSession}. */
export class Shell {
  #catalog: { at: number; files: FileSummary[] } = { at: -Infinity, files: [] };
  #refreshing: Promise<void> | null = null;
  #quit = Promise.withResolvers<void>();
  #quitting = false;
  #unsubscribe: () => void;

  /** `write` gets one line of output at a time, without its newline. */
  constructor(readonly session: PeerSession, readonly write: (line: string) => void) {
    this.#unsubscribe = session.subscribe((e) => write(describeSessionEvent(e)));
  }

  /** Resolves once `quit` has run. */
  get quit(): Promise<void> {
    return this.#quit.promise;
  }

  get quitting(): boolean {
    return this.#quitting;
  }

  /** Stops printing session events. */
  close(): void {
    this.#unsubscribe();
  }

  /** Runs one command line; failures become one `error: ...` line. Never throws. */
  async run(line: string): Promise<void> {
    try {
      const words = splitWords(line);
      if (words.length === 0) return;
      const [name, ...rest] = words as [string, ...string[]];
      const spec = COMMANDS[name];
      if (!spec) throw new UsageError(`Unknown command ${JSON.stringify(name)} (type help for the list)`);
      const force = name === "download" && rest.includes("--force");
      const args = force ? rest.filter((a) => a !== "--force") : rest;
      if (args.length < spec.args[0] || args.length > spec.args[1] || args.some((a) => a.startsWith("--"))) {
        throw new UsageError(`usage: ${spec.usage}`);
      }
      await this.#dispatch(name, args, force);
    } catch (err) {
      this.write(`error: ${describeError(err)}`);
    }
  }

  async #dispatch(name: string, args: string[], force: boolean): Promise<void> {
    const [a, b] = args;
    switch (name) {
      case "help":
        return this.#help(a);
      case "share": {
        const f = await this.session.share(expandHome(a!));
        return this.write(`sharing ${f.manifest.name} (${formatBytes(f.size)}) as ${f.id}`);
      }
      case "unshare": {
        const { file, stopped, kept } = await this.session.unshare(a!);
        const also = kept.length === 0 ? "" : `; the same content is still shared as ${kept.join(", ")}`;
        return this.write(`stopped sharing ${stopped.join(", ")} (${file.id})${also}`);
      }
      case "list":
        return this.#list();
      case "files":
      case "search": {
        const files = await catalog(this.#source(), a);
        if (name === "files") this.#catalog = { at: performance.now(), files };
        if (files.length === 0) return this.write(name === "files" ? "no files" : `no file name contains ${a}`);
        for (const f of files) this.write(formatFileSummary(f));
        return;
      }
      case "peers": {
        const peers = await filePeers(this.#source(), a!);
        if (peers.length === 0) return this.write("no live peers");
        const self = formatAddress(this.session.node.address);
        for (const p of peers) {
          const addr = formatAddress(p);
          this.write(`${addr}  ${p.complete ? "complete" : "partial"}${addr === self ? "  (this peer)" : ""}`);
        }
        return;
      }
      case "download": {
        const t = await this.session.download(a!, { ...(b === undefined ? {} : { out: expandHome(b) }), force });
        return this.write(`#${t.number} downloading ${t.name} (${formatBytes(t.size)}) to ${t.out}`);
      }
      case "stop":
        await this.session.stop(a!); // the session's "stopped" event prints the line
        return;
      case "status":
        return this.#status();
      case "why":
        return this.#why(this.session.transfer(a!));
      case "limit":
        return this.#limit(a, b);
      case "quit":
        this.#quitting = true;
        this.#quit.resolve();
        return;
    }
  }

  #source(): Source {
    if (this.session.source === null) {
      throw new UsageError("This peer has no tracker to ask (start it with --tracker)");
    }
    return this.session.source;
  }

  #help(command?: string): void {
    if (command !== undefined) {
      const spec = COMMANDS[command];
      if (!spec) throw new UsageError(`Unknown command ${JSON.stringify(command)} (type help for the list)`);
      return this.write(`${spec.usage}: ${spec.help}`);
    }
    const width = Math.max(...Object.values(COMMANDS).map((c) => c.usage.length));
    for (const spec of Object.values(COMMANDS)) this.write(`${spec.usage.padEnd(width)}  ${spec.help}`);
    this.write("Tab completes commands, file names and paths; Ctrl-D quits too.");
  }

  #list(): void {
    const shared = this.session.shared();
    const partial = this.session.transfers().filter((t) => t.state === "downloading");
    if (shared.length === 0 && partial.length === 0) return this.write("this peer shares no files");
    // One line per local copy, with its path: a shared folder's sub/a.txt is shared as a.txt.
    for (const f of shared) {
      const line = `${f.id}  ${formatBytes(f.size).padStart(10)}  ${printable(f.name)}`;
      const paths = this.session.node.copies(f.id).filter((c) => c.name === f.name).map((c) => c.path);
      if (paths.length === 0) this.write(line);
      for (const path of paths) this.write(`${line}  ${printable(path)}`);
    }
    for (const t of partial) {
      this.write(
        `${t.fileId}  ${formatBytes(t.size).padStart(10)}  ${t.name}  (partial: ${
          percentDone(transferInfo(t))
        } downloaded)`,
      );
    }
  }

  #limit(which?: string, size?: string): void {
    if (which !== undefined) {
      const key = ({ down: "download", download: "download", up: "upload", upload: "upload" } as const)[which];
      if (!key || size === undefined) throw new UsageError(`usage: ${COMMANDS.limit!.usage}`);
      const off = ["off", "none", "0"].includes(size.toLowerCase());
      this.session.setLimits({ [key]: off ? 0 : parseSize(size, `${key} limit`) });
    }
    const show = (n: number) => n === 0 ? "none" : `${formatBytes(n)}/s`;
    const { download, upload } = this.session.limits();
    this.write(`download limit ${show(download)} (all downloads together), upload limit ${show(upload)}`);
  }

  #status(): void {
    const all = this.session.transfers();
    if (all.length === 0) return this.write("no downloads (start one with: download <file>)");
    for (const t of all) this.write(describeTransfer(transferInfo(t)));
  }

  #why(t: Transfer): void {
    const head = `#${t.number} ${t.name}`;
    if (t.state === "done") return this.write(`${head} is complete: ${t.out}`);
    if (t.state !== "downloading") this.write(`${head} ${t.state}: ${t.error}`);
    const s = t.status();
    if (!s) {
      if (t.state === "downloading") this.write(`${head}: starting, no chunk asked for yet`);
      return; // it ended before it asked for any chunk: the line above says why
    }
    const missing = s.totalChunks - s.doneChunks;
    this.write(`${head}: ${missing} of ${s.totalChunks} chunk(s) missing: ${listIndexes(s.missing)}`);
    if (s.unavailable.length > 0) {
      this.write(`  no connected peer has ${s.unavailable.length} of them: ${listIndexes(s.unavailable)}`);
    }
    if (s.peers.length === 0) this.write("  no peer is connected");
    for (const p of s.peers) this.write(`  ${describePeer(p)}`);
    if (s.waiting > 0) {
      this.write(`  ${s.waiting} more source(s) wait for a turn (${s.maxPeers} connected at most)`);
    }
    for (const d of s.dropped) {
      if (!s.peers.some((p) => p.peer === d.peer)) this.write(`  dropped ${d.peer}: ${d.reason}`);
    }
  }

  /**
   * Completions for the text before the cursor, as node:readline wants
   * them: the candidates and the part of the line they replace.
   */
  async complete(line: string): Promise<[string[], string]> {
    let words: string[];
    try {
      words = splitWords(line);
    } catch {
      return [[], line]; // inside an open quote: nothing sensible to offer
    }
    const open = line.length === 0 || /\s$/.test(line);
    if (words.length === 0 || (words.length === 1 && !open)) {
      const word = words[0] ?? "";
      return [Object.keys(COMMANDS).filter((c) => c.startsWith(word)).map((c) => c + " "), word];
    }
    const spec = COMMANDS[words[0]!];
    if (!spec?.complete) return [[], ""];
    const word = open ? "" : words.at(-1)!;
    const typed = open ? "" : line.slice(line.lastIndexOf(" ") + 1);
    const argIndex = words.length - (open ? 1 : 2);
    if (argIndex > 0 && spec.complete !== "catalog") return [[], typed];
    let candidates: string[];
    switch (spec.complete) {
      case "commands":
        candidates = Object.keys(COMMANDS);
        break;
      case "path":
        return [await completePath(word), typed];
      case "shared":
        candidates = names(this.session.shared(), word);
        break;
      case "transfers":
        candidates = [...new Set(this.session.transfers().flatMap((t) => [t.name, `#${t.number}`]))];
        break;
      case "catalog":
        if (argIndex > 0) return words[0] === "download" ? [await completePath(word), typed] : [[], typed];
        candidates = names(await this.#cachedCatalog(), word);
        break;
    }
    return [candidates.filter((c) => c.startsWith(word)).map(quoteWord), typed];
  }

  /** The network's catalog, at most {@link CATALOG_CACHE_MS} old when the tracker answers in time. */
  async #cachedCatalog(): Promise<FileSummary[]> {
    const src = this.session.source;
    if (src === null) return [];
    if (performance.now() - this.#catalog.at > CATALOG_CACHE_MS) {
      this.#refreshing ??= catalog(src).then(
        (files) => void (this.#catalog = { at: performance.now(), files }),
        () => {}, // keep the old list; the tracker may be back next time
      ).finally(() => this.#refreshing = null);
      await settledWithin(this.#refreshing, COMPLETION_TIMEOUT_MS);
    }
    return this.#catalog.files;
  }
}

/** Names, and ids once the word looks like the start of one. */
function names(files: FileSummary[], word: string): string[] {
  const out = files.map((f) => f.name);
  if (word.length >= ID_COMPLETION_MIN && /^[0-9a-f]+$/.test(word)) out.push(...files.map((f) => f.id));
  return [...new Set(out)].sort();
}

/** Local paths starting with `word`; directories end with `/` so Tab can go on into them. */
async function completePath(word: string): Promise<string[]> {
  const slash = word.lastIndexOf("/");
  const dirPart = slash >= 0 ? word.slice(0, slash + 1) : "";
  const base = word.slice(slash + 1);
  const dir = resolve(expandHome(dirPart || "."));
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.name.startsWith(base) || (e.name.startsWith(".") && !base.startsWith("."))) continue;
      let isDir = e.isDirectory;
      if (e.isSymlink) isDir = (await Deno.stat(join(dir, e.name)).catch(() => null))?.isDirectory ?? false;
      out.push(dirPart + e.name + (isDir ? "/" : ""));
      if (out.length >= MAX_PATH_COMPLETIONS) break;
    }
  } catch {
    return []; // no such directory, or not readable
  }
  return out.sort().map(quoteWord);
}

function describePeer(p: DownloadStatus["peers"][number]): string {
  const state = p.ready ? `${p.inflight} in flight, ${formatBytes(p.rate)}/s` : "connecting";
  return `${p.peer} has ${p.hasMissing} of them (${state}, ${formatBytes(p.bytes)} received)`;
}

/** A download that ended, as one line (for the shell and for a peer without one). */
export function describeSessionEvent(e: SessionEvent): string {
  const t = e.transfer;
  if (e.kind === "done") {
    const how = t.summary!.alreadyComplete
      ? `it was there already (${formatBytes(t.size)}, every chunk checked)`
      : `${formatBytes(t.size)} in ${t.summary!.seconds.toFixed(1)} s`;
    return `#${t.number} ${t.name}: done, ${how} -> ${t.out}`;
  }
  return `#${t.number} ${t.name}: ${e.kind}: ${t.error}`;
}

/** Options for {@link runTerminal}. */
export interface TerminalOptions {
  input: Readable;
  output: Writable;
  /** Line editing, Tab completion, history and a prompt (else: plain lines, e.g. from a pipe). */
  terminal: boolean;
  /** History file (kept to {@link HISTORY_MAX_LINES} lines, mode 0600); none when omitted. */
  historyPath?: string;
  /** Ends the loop like `quit` (e.g. on SIGTERM). */
  signal?: AbortSignal;
  prompt?: string;
}

/**
 * Runs the shell on a terminal (or a pipe) until `quit`, end of input,
 * Ctrl-C on an empty line, or `signal`. Commands run one at a time; output
 * that arrives between them (a download that ended) is printed above the
 * prompt.
 */
export async function runTerminal(session: PeerSession, o: TerminalOptions): Promise<void> {
  let rl: Interface | null = null;
  let busy = false;
  const print = (line: string) => {
    if (rl && o.terminal && !busy) {
      o.output.write(`\r\x1b[2K${line}\n`); // above the prompt, which is drawn again with what was typed
      rl.prompt(true);
    } else o.output.write(`${line}\n`);
  };
  const shell = new Shell(session, print);
  const history = o.historyPath ? await readHistory(o.historyPath) : [];
  rl = createInterface({
    input: o.input,
    output: o.output,
    terminal: o.terminal,
    completer: (line: string, cb: (err: Error | null, result: [string[], string]) => void) => {
      shell.complete(line).then((r) => cb(null, r), () => cb(null, [[], line]));
    },
    history,
    historySize: HISTORY_MAX_LINES,
    removeHistoryDuplicates: true,
  });
  let saving: Promise<void> = Promise.resolve();
  if (o.historyPath) {
    const path = o.historyPath;
    rl.on("history", (lines: string[]) => {
      saving = saving.then(() => writeHistory(path, lines)).catch(() => {}); // history is a convenience
    });
  }
  const end = () => rl?.close();
  rl.on("SIGINT", () => {
    // Ctrl-C clears a half-typed line; on an empty line it quits, like the signal it stands for.
    if (rl!.line.length > 0) {
      rl!.write(null, { ctrl: true, name: "e" }); // to the end of the line,
      rl!.write(null, { ctrl: true, name: "u" }); // then delete all of it
    } else end();
  });
  o.signal?.addEventListener("abort", end, { once: true });
  rl.setPrompt(o.prompt ?? "shoal> ");
  try {
    if (o.terminal) {
      print("Type help for the commands, Tab to complete, quit or Ctrl-D to leave.");
      rl.prompt();
    }
    for await (const line of rl) {
      busy = true;
      await shell.run(line);
      busy = false;
      if (shell.quitting) break;
      if (o.terminal) rl.prompt();
    }
  } finally {
    o.signal?.removeEventListener("abort", end);
    rl.close();
    shell.close();
    await saving;
  }
}

/** The history file's lines, newest first as node:readline wants them; none when it is missing or unreadable. */
async function readHistory(path: string): Promise<string[]> {
  try {
    const lines = (await Deno.readTextFile(path)).split("\n").filter((l) => l.trim() !== "");
    return lines.slice(-HISTORY_MAX_LINES).reverse();
  } catch {
    return [];
  }
}

/** Replaces the history file (oldest line first), private to the user. */
async function writeHistory(path: string, newestFirst: string[]): Promise<void> {
  // Completion leaves a space after a word; it has no meaning in the history.
  const lines = newestFirst.slice(0, HISTORY_MAX_LINES).reverse().map((l) => l.trimEnd());
  await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, lines.join("\n") + "\n", { mode: 0o600 });
  await Deno.chmod(tmp, 0o600);
  await Deno.rename(tmp, path);
}
