/**
 * A user's local Shoal state (`SHOAL_HOME`, default `~/.shoal`), private to
 * them (directory 0700, files 0600):
 *
 * - `session.json`: who is logged in, to which tracker, with which token;
 * - `daemon.json`, `peer.sock`, `peer.log`: the background peer that serves
 *   the user's group files while they are logged in (daemon.ts);
 * - `shares.json`: what that peer shares into which group, so sharing
 *   resumes at the next login;
 * - `downloads.json`: group downloads, for `show_downloads`;
 * - `peers/<host>_<port>.sock`: the control sockets of the user's
 *   `peer.ts --shared` peers (peer_control.ts);
 * - `shell_history`: the peer shell's history (shell.ts).
 *
 * Files are replaced whole (temp file, then rename), so a crash never
 * leaves half a file.
 *
 * @module
 */

import { join } from "node:path";
import { AccountError, ShoalError, UsageError } from "./errors.ts";
import type { ConfigValues } from "./config.ts";
import type { Manifest } from "./manifest.ts";

/** The logged-in session. */
export interface SessionFile {
  user: string;
  /** tracker address, host:port */
  tracker: string;
  token: string;
  expiresAt: number;
}

/** What the running daemon wrote about itself. */
export interface DaemonFile {
  pid: number;
  user: string;
  tracker: string;
  /** the daemon's peer address, host:port */
  address: string;
  socket: string;
  /** the config file's "peer" section as it read it at start; absent from a daemon older than this field */
  peerConfig?: ConfigValues;
}

/** One file the daemon shares into a group. */
export interface ShareRecord {
  /**
   * Who shared it: a daemon serves only its user's records (another user
   * logged in on the same home must not share them as their own). Absent
   * from records older than this field, which go with whoever logs in.
   */
  user?: string;
  group: string;
  path: string;
  size: number;
  mtimeMs: number;
  manifest: Manifest;
  fileId: string;
}

/** One group download. */
export interface DownloadRecord {
  /** Who downloaded it (absent in records written before users were kept apart). */
  user?: string;
  group: string;
  name: string;
  fileId: string;
  dest: string;
  /** D: in progress, C: complete, F: failed or interrupted (run it again to resume) */
  state: "D" | "C" | "F";
  pid: number;
  startedAt: number;
  updatedAt: number;
  error?: string;
}

/** Longest local state file read (they hold small JSON). */
const MAX_STATE_BYTES = 64 * 1024 * 1024;

/** The state directory and its files. */
export class Home {
  constructor(readonly dir: string) {}

  /** `--home`, else `SHOAL_HOME`, else `~/.shoal`. */
  static resolve(flag?: string): Home {
    const dir = flag ?? Deno.env.get("SHOAL_HOME") ?? join(Deno.env.get("HOME") ?? ".", ".shoal");
    return new Home(dir);
  }

  get sessionPath(): string {
    return join(this.dir, "session.json");
  }
  get daemonPath(): string {
    return join(this.dir, "daemon.json");
  }
  get socketPath(): string {
    return join(this.dir, "peer.sock");
  }
  get logPath(): string {
    return join(this.dir, "peer.log");
  }
  get sharesPath(): string {
    return join(this.dir, "shares.json");
  }
  get downloadsPath(): string {
    return join(this.dir, "downloads.json");
  }
  get peersDir(): string {
    return join(this.dir, "peers");
  }
  get shellHistoryPath(): string {
    return join(this.dir, "shell_history");
  }

  /**
   * Creates the directory, private to this user. One that is there already
   * keeps its mode (`--home` may name a directory that holds other things),
   * but it must be one that no one else can write to: another user could
   * put a link where a session is about to be written.
   */
  async ensure(): Promise<void> {
    const st = await Deno.stat(this.dir).catch((err) => {
      if (err instanceof Deno.errors.NotFound) return null;
      throw err;
    });
    if (st === null) {
      await Deno.mkdir(this.dir, { recursive: true, mode: 0o700 });
      return await Deno.chmod(this.dir, 0o700); // the umask may have taken bits off
    }
    if (!st.isDirectory) throw new UsageError(`${this.dir} is not a directory; choose another home (--home)`);
    if (st.mode !== null && (st.mode & 0o022) !== 0) {
      throw new UsageError(
        `${this.dir} can be written by other users (mode ${(st.mode & 0o7777).toString(8)}); choose a home only you ` +
          "can write to (--home or SHOAL_HOME)",
      );
    }
  }

  async readSession(): Promise<SessionFile | null> {
    const s = await this.#read<SessionFile>(this.sessionPath);
    if (s === null) return null;
    const ok = typeof s.user === "string" && typeof s.tracker === "string" && typeof s.token === "string" &&
      Number.isSafeInteger(s.expiresAt);
    if (!ok) throw new ShoalError("bad_state", `${this.sessionPath} is damaged; log in again`);
    return s;
  }

  /** The session, or a not_logged_in error. */
  async session(): Promise<SessionFile> {
    const s = await this.readSession();
    if (!s) throw new AccountError("not_logged_in", `Not logged in (no session in ${this.dir}); run login first`);
    return s;
  }

  writeSession(s: SessionFile): Promise<void> {
    return this.#write(this.sessionPath, s);
  }

  async removeSession(): Promise<void> {
    await Deno.remove(this.sessionPath).catch(() => {});
  }

  readDaemon(): Promise<DaemonFile | null> {
    return this.#read<DaemonFile>(this.daemonPath);
  }

  writeDaemon(d: DaemonFile): Promise<void> {
    return this.#write(this.daemonPath, d);
  }

  async readShares(): Promise<ShareRecord[]> {
    return (await this.#read<ShareRecord[]>(this.sharesPath)) ?? [];
  }

  writeShares(s: ShareRecord[]): Promise<void> {
    return this.#write(this.sharesPath, s);
  }

  async readDownloads(): Promise<DownloadRecord[]> {
    return (await this.#read<DownloadRecord[]>(this.downloadsPath)) ?? [];
  }

  /**
   * Adds or replaces `r.user`'s record for `r.dest` (several clients may
   * run: read, change, replace); returns the record it replaced.
   */
  async putDownload(r: DownloadRecord): Promise<DownloadRecord | null> {
    const all = await this.readDownloads();
    const at = all.findIndex((d) => d.dest === r.dest && (d.user ?? r.user) === r.user);
    const replaced = at < 0 ? null : all.splice(at, 1)[0]!;
    all.push(r);
    await this.#write(this.downloadsPath, all);
    return replaced;
  }

  async #read<T>(path: string): Promise<T | null> {
    let text: string;
    try {
      const st = await Deno.stat(path);
      if (st.size > MAX_STATE_BYTES) {
        throw new ShoalError("bad_state", `${path} is larger than ${MAX_STATE_BYTES} bytes`);
      }
      text = await Deno.readTextFile(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw err;
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ShoalError("bad_state", `${path} is not valid JSON; remove it or log in again`);
    }
  }

  async #write(path: string, value: unknown): Promise<void> {
    await this.ensure();
    const tmp = `${path}.${Deno.pid}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(value, null, 2) + "\n", { mode: 0o600 });
    await Deno.chmod(tmp, 0o600);
    await Deno.rename(tmp, path);
  }
}
