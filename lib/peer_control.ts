/**
 * The local control channel of a `peer.ts --shared` peer, so that
 * `client.ts register-file` and `request-file` can ask a running peer to
 * share a file or to download one, and `request-status` and `request-stop`
 * can follow and stop its downloads.
 *
 * It is the background peer's machinery (daemon.ts), at another path: a
 * Unix socket `<home>/peers/<host>_<port>.sock`, named from the address the
 * peer listens on, mode 0600 inside the user's state directory (0700), so
 * only the user who started the peer (and root) can connect. It carries the
 * usual frames and HELLO handshake; the requests are the `ctl_*` messages
 * CTL_REGISTER_FILE, CTL_REQUEST_FILE, CTL_LIST_DOWNLOADS and
 * CTL_STOP_DOWNLOAD (docs/PROTOCOL.md §13.6). The
 * socket is removed when the peer stops; one left by a crash is removed by
 * the next peer that starts with the same state directory.
 *
 * @module
 */

import { join } from "node:path";
import { type Address, type Connection, connectUnix } from "./connection.ts";
import { answers } from "./daemon.ts";
import { describeError, ProtocolError, ShoalError, UnreachableError } from "./errors.ts";
import type { Home } from "./home.ts";
import { MAX_CTL_DOWNLOADS, type Message, type MessageName, type MessageOf } from "./messages.ts";
import { type PeerSession, transferInfo } from "./peer_session.ts";
import { FrameServer } from "./server.ts";
import { utf8Encoder } from "./bytes.ts";

/** A control connection silent this long is closed. */
export const CONTROL_IDLE_TIMEOUT_MS = 60_000;
/** Longest Unix socket path Linux accepts (`sun_path` is 108 bytes with its NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;
/**
 * How long a request waits for its answer: CTL_REGISTER_FILE hashes the whole
 * file first (minutes for a very large one), CTL_REQUEST_FILE asks the tracker.
 */
export const CONTROL_REPLY_TIMEOUT_MS = 10 * 60_000;
/** Most stale sockets looked at when a peer starts (the directory holds one per peer that crashed). */
const MAX_STALE_CHECKS = 64;

/** The control socket of the peer listening on `addr`. */
export function peerSocketPath(home: Home, addr: Address): string {
  // Hosts like "::1" or "fe80::1%eth0" hold characters that are awkward in a file name.
  return join(home.peersDir, `${addr.host.replace(/[^A-Za-z0-9.-]/g, "_")}_${addr.port}.sock`);
}

/** A `--shared` peer's control socket, listening. */
export class PeerControl implements AsyncDisposable {
  #server: FrameServer;

  private constructor(readonly path: string, readonly session: PeerSession, log: (line: string) => void) {
    this.#server = FrameServer.listen({
      path,
      idleTimeoutMs: CONTROL_IDLE_TIMEOUT_MS,
      onConnectionError: (_remote, err) => log(`control request failed: ${describeError(err)}`),
    }, (msg) => this.#handle(msg));
  }

  /**
   * Creates the socket for `session`'s peer in `home` (mode 0600, the
   * directories 0700). Throws ShoalError when the path is too long or
   * another live peer holds it.
   */
  static async listen(home: Home, session: PeerSession, log: (line: string) => void = () => {}): Promise<PeerControl> {
    const path = peerSocketPath(home, session.node.address);
    if (utf8Encoder.encode(path).length > MAX_SOCKET_PATH_BYTES) {
      throw new ShoalError(
        "usage",
        `The control socket path ${path} is longer than ${MAX_SOCKET_PATH_BYTES} bytes; choose a shorter --home`,
      );
    }
    await home.ensure();
    await Deno.mkdir(home.peersDir, { recursive: true, mode: 0o700 });
    await Deno.chmod(home.peersDir, 0o700);
    await removeStaleSockets(home.peersDir);
    if (await answers(path)) throw new ShoalError("already_running", `Another peer answers on ${path}`);
    await Deno.remove(path).catch(() => {});
    const control = new PeerControl(path, session, log);
    await Deno.chmod(path, 0o600);
    return control;
  }

  async #handle(msg: Message): Promise<Message> {
    try {
      switch (msg.type) {
        case "ctl_register_file": {
          const f = await this.session.share(msg.path);
          return { type: "ctl_file_registered", fileId: f.id, name: f.manifest.name, size: f.size, path: f.path };
        }
        case "ctl_request_file": {
          const t = await this.session.download(msg.fileId, msg.out === undefined ? {} : { out: msg.out });
          return { type: "ctl_file_requested", fileId: t.fileId, name: t.name, size: t.size, out: t.out };
        }
        case "ctl_list_downloads": {
          const now = Date.now();
          const newest = this.session.transfers().slice(-MAX_CTL_DOWNLOADS);
          return { type: "ctl_downloads", downloads: newest.map((t) => transferInfo(t, now)) };
        }
        case "ctl_stop_download":
          return { type: "ctl_downloads", downloads: [transferInfo(await this.session.stop(msg.file))] };
        default:
          throw new ShoalError("unsupported", `This peer's control channel does not handle ${msg.type} messages`);
      }
    } catch (err) {
      // The asker gets an ERROR with the reason and the channel stays open: a failed request is not a broken protocol.
      if (err instanceof ShoalError && !(err instanceof ProtocolError)) throw err;
      throw new ShoalError(err instanceof ShoalError ? err.code : "failed", describeError(err));
    }
  }

  /** Stops listening and removes the socket. Safe to call twice. */
  async close(): Promise<void> {
    await this.#server.close();
    await Deno.remove(this.path).catch(() => {});
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Removes sockets in `dir` that nothing listens on any more (their peer crashed). */
async function removeStaleSockets(dir: string): Promise<void> {
  let checked = 0;
  for await (const e of Deno.readDir(dir)) {
    if (!e.name.endsWith(".sock")) continue;
    if (++checked > MAX_STALE_CHECKS) break;
    const path = join(dir, e.name);
    try {
      (await Deno.connect({ transport: "unix", path })).close();
    } catch (err) {
      if (err instanceof Deno.errors.ConnectionRefused) await Deno.remove(path).catch(() => {});
    }
  }
}

/**
 * The control socket of the local peer that listens on `addr`: the one
 * named after it, else the only one with that port (a peer listening on
 * 0.0.0.0 is asked as 127.0.0.1). Throws UnreachableError naming the socket.
 */
export async function findPeerSocket(home: Home, addr: Address): Promise<string> {
  const exact = peerSocketPath(home, addr);
  if (await Deno.lstat(exact).then(() => true, () => false)) return exact;
  const samePort: string[] = [];
  try {
    for await (const e of Deno.readDir(home.peersDir)) {
      if (e.name.endsWith(`_${addr.port}.sock`)) samePort.push(join(home.peersDir, e.name));
    }
  } catch {
    // no peers directory: no peer ever ran with this state directory
  }
  if (samePort.length === 1) return samePort[0]!;
  throw new UnreachableError(
    `No local peer listens on ${addr.host}:${addr.port}: there is no control socket ${exact} ` +
      `(is peer.ts running with --home ${home.dir}?)`,
  );
}

/** One request to the local peer that listens on `addr`, over its control socket. */
export async function peerRequest<T extends MessageName>(
  home: Home,
  addr: Address,
  msg: Message,
  expect: T,
  timeoutMs = CONTROL_REPLY_TIMEOUT_MS,
): Promise<MessageOf<T>> {
  const path = await findPeerSocket(home, addr);
  let conn: Connection;
  try {
    conn = await connectUnix(path);
  } catch (err) {
    throw new UnreachableError(
      `The peer on ${addr.host}:${addr.port} does not answer on ${path} (it may have stopped): ${describeError(err)}`,
      { cause: err },
    );
  }
  try {
    return await conn.request(msg, expect, timeoutMs);
  } finally {
    conn.close();
  }
}
