/**
 * A TCP server that speaks frames: accepts, runs the server side of the
 * HELLO handshake, then hands each message to a handler. A connection that
 * breaks the protocol gets an ERROR frame naming the reason and is closed;
 * every other connection keeps being served.
 *
 * @module
 */

import {
  type Address,
  checkHello,
  Connection,
  type ConnectionOptions,
  formatAddress,
  HANDSHAKE_TIMEOUT_MS,
} from "./connection.ts";
import {
  BusyError,
  ConnectionClosedError,
  ProtocolError,
  ShoalError,
  TimeoutError,
  TruncatedFrameError,
} from "./errors.ts";
import { helloMessage, type Message } from "./messages.ts";

/**
 * Largest payload a server takes in a frame of a type that is never large
 * (all but the tracker's ANNOUNCE and HEARTBEAT, which carry manifests and
 * bitfields): refused with the header, before it is read or parsed.
 */
export const SMALL_FRAME_BYTES = 64 * 1024;

/**
 * Bytes of large frames (above {@link SMALL_FRAME_BYTES}) one address
 * ({@link hostGroup}) may have on their way in at once, over all its
 * connections: four of the largest manifests. Without it, 64 connections of
 * one address could each make a tracker hold a 16 MiB ANNOUNCE.
 */
export const DEFAULT_LARGE_FRAME_BYTES_PER_HOST = 64 * 1024 * 1024;
/** Bytes of large frames a server has on their way in at once, from all addresses. */
export const DEFAULT_LARGE_FRAME_BYTES = 512 * 1024 * 1024;

/** Most connections served at once; more are closed on accept. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/**
 * Most connections from one address ({@link hostGroup}) at once: a
 * downloader holds one per fetch worker, so a few hosts cannot take every
 * slot with idle connections.
 */
export const DEFAULT_MAX_CONNECTIONS_PER_HOST = 64;
/** A connection silent this long is closed. */
export const DEFAULT_IDLE_TIMEOUT_MS = 120_000;
/**
 * A connection that takes none of what it is sent for this long is closed.
 * Shorter than the idle timeout: a reply waiting on it holds a buffer (a
 * peer's chunks share a budget), and a few clients that ask and never read
 * held every chunk buffer of a peer for two minutes at a time.
 */
export const DEFAULT_SEND_STALL_MS = 30_000;

/**
 * Handles one message. It may return a reply (sent for it) or send on
 * `conn` itself. A thrown ShoalError is answered with an ERROR frame and the
 * connection stays open, unless it is a ProtocolError.
 */
export type Handler = (msg: Message, conn: Connection) => Promise<Message | void> | Message | void;

/** Options for {@link FrameServer.listen}. */
export interface ServerOptions {
  hostname?: string;
  port?: number;
  /** Listen on this Unix socket path instead of TCP (a local control channel). */
  path?: string;
  maxFrameBytes?: number;
  /**
   * Largest payload of each frame type it takes on a connection (see
   * FrameDecoderOptions.maxPayloadFor): the connection says what it has
   * earned, e.g. a tracker takes large frames only once it registered.
   */
  maxPayloadFor?: (type: number, conn: Connection) => number;
  /** Bytes of large frames one address may have on their way in at once (default {@link DEFAULT_LARGE_FRAME_BYTES_PER_HOST}). */
  largeFrameBytesPerHost?: number;
  /** Bytes of large frames the server has on their way in at once (default {@link DEFAULT_LARGE_FRAME_BYTES}). */
  largeFrameBytes?: number;
  maxConnections?: number;
  /** Most connections from one address at once (default {@link DEFAULT_MAX_CONNECTIONS_PER_HOST}). */
  maxConnectionsPerHost?: number;
  idleTimeoutMs?: number;
  /** The time a new connection has for its whole HELLO (default {@link HANDSHAKE_TIMEOUT_MS}). */
  handshakeTimeoutMs?: number;
  /** How long a write may wait for the other side to take something (default {@link DEFAULT_SEND_STALL_MS}). */
  sendStallMs?: number;
  /** Called when a connection ends because of an error (for logs and counters). */
  onConnectionError?: (remote: string, err: unknown) => void;
  /** Called once each connection has ended, however it ended: for whoever keeps something per connection. */
  onClosed?: (conn: Connection) => void;
  /**
   * Called when the other side has finished sending (a half-close) and the
   * connection is still open for replies: resolves once everything it asked
   * for has been sent, and the connection is closed then. Replies the
   * handler returns are sent before the next message is read, so a server
   * without queued work needs none.
   */
  drain?: (conn: Connection) => Promise<void>;
}

/** Counters a server keeps. */
export interface ServerStats {
  accepted: number;
  active: number;
  protocolErrors: number;
  refused: number;
}

/**
 * The unit a server counts connections and registrations by: an IPv4
 * address, or the /64 prefix of an IPv6 one (what one site is usually given,
 * so one host cannot pass for thousands). An IPv4-mapped IPv6 address counts
 * as its IPv4 address; anything else (a Unix socket's "local") as itself.
 */
export function hostGroup(host: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host);
  if (mapped) return mapped[1]!;
  if (!host.includes(":")) return host;
  const bare = host.split("%")[0]!; // a zone index names an interface, not an address
  const groups = (part: string) => (part === "" ? [] : part.split(":"));
  const width = (gs: string[]) => gs.reduce((n, g) => n + (g.includes(".") ? 2 : 1), 0);
  const gap = bare.indexOf("::");
  let all: string[];
  if (gap < 0) all = groups(bare);
  else {
    const head = groups(bare.slice(0, gap)), tail = groups(bare.slice(gap + 2));
    all = [...head, ...Array<string>(Math.max(0, 8 - width(head) - width(tail))).fill("0"), ...tail];
  }
  const prefix = all.slice(0, 4).map((g) => (/^[0-9a-f]{1,4}$/i.test(g) ? parseInt(g, 16).toString(16) : g));
  return `${prefix.join(":")}::/64`;
}

/** What one connection's frames hold of a {@link LargeFrames} budget. */
interface FrameCharges {
  /** The decoder's allocator: charges a large frame, or refuses it with BusyError. */
  allocate(length: number): Uint8Array<ArrayBuffer>;
  /** The oldest frame received has been handled: what it held goes back. */
  handled(): void;
  /** The connection ended: everything it held goes back. */
  release(): void;
}

/**
 * The bytes of large frames (above {@link SMALL_FRAME_BYTES}) a server has
 * taken in and not yet handled, per address and in all. A frame holds its
 * length from its header until its handler returns, so the bound covers a
 * whole frame waiting in a connection's queue as well as one being read.
 */
class LargeFrames {
  #perHost = new Map<string, number>();
  #total = 0;

  constructor(readonly maxPerHost: number, readonly max: number) {}

  forConnection(group: string): FrameCharges {
    const held: number[] = []; // one entry per frame received and not handled, in order; 0 for a small one
    const give = (bytes: number) => {
      if (bytes === 0) return;
      this.#total -= bytes;
      const left = this.#perHost.get(group)! - bytes;
      if (left === 0) this.#perHost.delete(group);
      else this.#perHost.set(group, left);
    };
    return {
      allocate: (length) => {
        if (length > SMALL_FRAME_BYTES) {
          const host = this.#perHost.get(group) ?? 0;
          if (host + length > this.maxPerHost) throw new BusyError(length, "address");
          if (this.#total + length > this.max) throw new BusyError(length, "server");
          this.#perHost.set(group, host + length);
          this.#total += length;
        }
        held.push(length > SMALL_FRAME_BYTES ? length : 0);
        return new Uint8Array(length);
      },
      handled: () => give(held.shift() ?? 0),
      release: () => held.splice(0).forEach(give),
    };
  }
}

/**
 * The ERROR reply to a message whose handling threw `err`, which the
 * connection survives; rethrows `err` when it must end the connection (a
 * ProtocolError, or anything that is not a ShoalError).
 */
export function errorReply(err: unknown): Message {
  if (err instanceof ProtocolError || !(err instanceof ShoalError)) throw err;
  return { type: "error", code: err.code, message: err.message };
}

/**
 * Ends `conn` after `err`: a ProtocolError is named in an ERROR frame (not
 * a frame the end of the stream cut off),
 * anything unexpected gets ERROR "internal" (not while the server is
 * `closing`), a closed or silent peer gets nothing; then the socket closes.
 */
export async function endConnection(conn: Connection, err: unknown, closing: boolean): Promise<void> {
  // A frame cut off by the end of the stream: the other side has finished sending, and PROTOCOL §3 sends it nothing.
  if (err instanceof TruncatedFrameError) conn.close();
  else if (err instanceof ProtocolError) await conn.fail(err.code, err.message);
  else if (!(err instanceof ConnectionClosedError) && !(err instanceof TimeoutError) && !closing) {
    await conn.fail("internal", "Internal error");
  }
  conn.close();
}

/** A listening frame server. */
export class FrameServer {
  readonly address: Address;
  readonly stats: ServerStats = { accepted: 0, active: 0, protocolErrors: 0, refused: 0 };
  #listener: Deno.Listener;
  #conns = new Set<Connection>();
  /** live connections per {@link hostGroup} */
  #perHost = new Map<string, number>();
  #tasks = new Set<Promise<void>>();
  #largeFrames: LargeFrames;
  #accepting: Promise<void>;
  #closed = false;

  private constructor(listener: Deno.Listener, readonly handler: Handler, readonly options: ServerOptions) {
    this.#listener = listener;
    const addr = listener.addr;
    this.address = addr.transport === "unix"
      ? { host: addr.path, port: 0 }
      : { host: (addr as Deno.NetAddr).hostname, port: (addr as Deno.NetAddr).port };
    this.#largeFrames = new LargeFrames(
      options.largeFrameBytesPerHost ?? DEFAULT_LARGE_FRAME_BYTES_PER_HOST,
      options.largeFrameBytes ?? DEFAULT_LARGE_FRAME_BYTES,
    );
    this.#accepting = this.#acceptLoop();
  }

  /** Starts listening (port 0 picks a free port; see {@link address}). */
  static listen(options: ServerOptions, handler: Handler): FrameServer {
    const hostname = options.hostname ?? "127.0.0.1", port = options.port ?? 0;
    let listener: Deno.Listener;
    try {
      listener = options.path !== undefined
        ? Deno.listen({ transport: "unix", path: options.path })
        : Deno.listen({ hostname, port });
    } catch (err) {
      // Deno's own message ("Address already in use (os error 98)") does not say which address.
      const where = options.path ?? formatAddress({ host: hostname, port });
      throw new ShoalError("listen", `Cannot listen on ${where}: ${(err as Error).message}`, undefined, { cause: err });
    }
    return new FrameServer(listener, handler, options);
  }

  async #acceptLoop(): Promise<void> {
    const max = this.options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    const maxPerHost = this.options.maxConnectionsPerHost ?? DEFAULT_MAX_CONNECTIONS_PER_HOST;
    while (!this.#closed) {
      let raw: Deno.Conn;
      try {
        raw = await this.#listener.accept();
      } catch {
        if (this.#closed) return;
        continue; // a failed accept (e.g. too many open files) must not stop the server
      }
      const group = hostGroup(
        raw.remoteAddr.transport === "unix" ? "local" : (raw.remoteAddr as Deno.NetAddr).hostname,
      );
      const fromHost = this.#perHost.get(group) ?? 0;
      // A Unix socket is the local user's own control channel: only the total applies.
      if (this.#conns.size >= max || (group !== "local" && fromHost >= maxPerHost)) {
        this.stats.refused++;
        raw.close();
        continue;
      }
      this.#perHost.set(group, fromHost + 1);
      if (raw.remoteAddr.transport === "tcp") (raw as Deno.TcpConn).setNoDelay(true);
      this.stats.accepted++;
      const opts: ConnectionOptions = {
        ioTimeoutMs: this.options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
        writeTimeoutMs: this.options.sendStallMs ?? DEFAULT_SEND_STALL_MS,
        writeAfterEnd: true,
      };
      if (this.options.maxFrameBytes !== undefined) opts.maxFrameBytes = this.options.maxFrameBytes;
      const maxFor = this.options.maxPayloadFor;
      if (maxFor !== undefined) opts.maxPayloadFor = (type) => maxFor(type, conn); // asked once bytes come, after this
      const charges = this.#largeFrames.forConnection(group);
      opts.allocate = charges.allocate;
      const conn: Connection = new Connection(raw, opts);
      this.#conns.add(conn);
      const task = this.#serve(conn, charges).finally(() => {
        charges.release();
        this.#conns.delete(conn);
        const left = this.#perHost.get(group)! - 1;
        if (left === 0) this.#perHost.delete(group);
        else this.#perHost.set(group, left);
        this.#tasks.delete(task);
        this.stats.active = this.#conns.size;
      });
      this.#tasks.add(task);
      this.stats.active = this.#conns.size;
    }
  }

  async #serve(conn: Connection, charges: FrameCharges): Promise<void> {
    try {
      // The whole HELLO within the time, not each byte of it: a byte every few seconds must not hold a slot for good.
      const hello = await conn.receive(this.options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS, "frame");
      charges.handled();
      if (hello.type !== "hello") throw new ProtocolError("The other side did not open with a Shoal HELLO", "no_hello");
      checkHello(hello);
      await conn.send(helloMessage());
      while (!conn.closed) {
        const msg = await conn.receive();
        let reply: Message | void;
        try {
          reply = await this.handler(msg, conn);
        } catch (err) {
          reply = errorReply(err);
        } finally {
          charges.handled();
        }
        if (reply) await conn.send(reply);
      }
    } catch (err) {
      // A half-close: answer what was asked before the end (each write bounded by the send stall time).
      if (conn.readEnded) await this.options.drain?.(conn);
      if (err instanceof ProtocolError) this.stats.protocolErrors++;
      await endConnection(conn, err, this.#closed);
      if (!(err instanceof ConnectionClosedError)) this.options.onConnectionError?.(conn.remote, err);
    } finally {
      conn.close();
      this.options.onClosed?.(conn);
    }
  }

  /** Stops accepting, closes every connection, and waits for their handlers. Safe to call twice. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.#listener.close();
      } catch {
        // already closed
      }
      for (const c of this.#conns) c.close();
    }
    await this.#accepting;
    await Promise.allSettled([...this.#tasks]);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
