/**
 * A framed, typed connection over TCP: reads with a deadline, writes in
 * order with a deadline, and the HELLO version handshake both ways.
 *
 * @module
 */

import {
  ConnectionClosedError,
  ProtocolError,
  RemoteError,
  TimeoutError,
  UnreachableError,
  VersionMismatchError,
} from "./errors.ts";
import { type Frame, FrameDecoder, type FrameDecoderOptions } from "./framing.ts";
import {
  decodeMessage,
  encodeMessage,
  helloMessage,
  type Message,
  type MessageName,
  type MessageOf,
  PROTOCOL_NAME,
  PROTOCOL_VERSION,
} from "./messages.ts";

/** How long a connect may take. */
export const CONNECT_TIMEOUT_MS = 10_000;
/** How long the HELLO exchange may take. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Default deadline for any single read or write. */
export const DEFAULT_IO_TIMEOUT_MS = 30_000;
/** Payloads at least this large are read straight into their frame buffer, to the last byte: no copy. */
const DIRECT_READ_MIN = 64 * 1024;
/**
 * Everything else is read into a scratch buffer and copied out: headers and
 * small frames, many per read. After a large frame the next is likely large
 * too, so its header is read with a small read, and only the few payload
 * bytes that come along are copied (a full-size read there copied about a
 * quarter of a 1 MiB chunk stream twice; docs/PERFORMANCE.md).
 */
const SCRATCH_BYTES = 256 * 1024;
const READ_AFTER_LARGE = 4 * 1024;

/** Host and port of a TCP endpoint. */
export interface Address {
  host: string;
  port: number;
}

/** Options for a {@link Connection}. */
export interface ConnectionOptions {
  maxFrameBytes?: number;
  /** Deadline for each read and write; 0 disables it (never for network peers). */
  ioTimeoutMs?: number;
  /** Deadline for each write, when not `ioTimeoutMs`: a server waits long for requests but not on a reader that stopped. */
  writeTimeoutMs?: number;
  /** Payload buffers for received frames (see FrameDecoderOptions.allocate). */
  allocate?: (length: number) => Uint8Array<ArrayBuffer>;
  /** Largest payload of each frame type received (see FrameDecoderOptions.maxPayloadFor). */
  maxPayloadFor?: (type: number) => number;
  /**
   * At the end of the stream, stop reading but keep the socket open for
   * sending until {@link Connection.close}: a client that sends its
   * requests and then shuts down its sending side (a half-close) still gets
   * the answers. A server's connections do this; without it the end of the
   * stream closes the socket.
   */
  writeAfterEnd?: boolean;
  signal?: AbortSignal;
}

/** Formats an address as `host:port` (IPv6 hosts in brackets). */
export function formatAddress(a: Address): string {
  return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** A typed connection. Close it with `await using` or {@link close}; closing twice is safe. */
export class Connection {
  readonly remote: string;
  readonly ioTimeoutMs: number;
  readonly writeTimeoutMs: number;
  #conn: Deno.Conn;
  #decoder: FrameDecoder;
  #queue: Frame[] = [];
  #scratch = new Uint8Array(SCRATCH_BYTES);
  /** Whether the last frame received was large (see {@link READ_AFTER_LARGE}). */
  #lastLarge = false;
  #writing: Promise<void> = Promise.resolve();
  #closed = false;
  /** The other side has finished sending (see ConnectionOptions.writeAfterEnd). */
  #readEnded = false;
  readonly #writeAfterEnd: boolean;
  #largePayloadBytesIn = 0;
  #onAbort = () => this.close();
  #signal: AbortSignal | undefined;

  constructor(conn: Deno.Conn, options: ConnectionOptions = {}) {
    this.#conn = conn;
    const decoderOptions: FrameDecoderOptions = {};
    if (options.maxFrameBytes !== undefined) decoderOptions.maxFrameBytes = options.maxFrameBytes;
    if (options.allocate !== undefined) decoderOptions.allocate = options.allocate;
    if (options.maxPayloadFor !== undefined) decoderOptions.maxPayloadFor = options.maxPayloadFor;
    this.#decoder = new FrameDecoder(decoderOptions);
    this.ioTimeoutMs = options.ioTimeoutMs ?? DEFAULT_IO_TIMEOUT_MS;
    this.writeTimeoutMs = options.writeTimeoutMs ?? this.ioTimeoutMs;
    this.#writeAfterEnd = options.writeAfterEnd ?? false;
    const addr = conn.remoteAddr;
    this.remote = addr.transport === "unix"
      ? `unix:${addr.path || "local"}`
      : formatAddress({ host: (addr as Deno.NetAddr).hostname, port: (addr as Deno.NetAddr).port });
    this.#signal = options.signal;
    if (this.#signal?.aborted) this.close();
    else this.#signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** The remote IP address ("local" on a Unix socket). */
  get remoteHost(): string {
    const addr = this.#conn.remoteAddr;
    return addr.transport === "unix" ? "local" : (addr as Deno.NetAddr).hostname;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Whether the other side has finished sending while this one may still send (see ConnectionOptions.writeAfterEnd). */
  get readEnded(): boolean {
    return this.#readEnded && !this.#closed;
  }

  /**
   * Bytes read so far into payloads of large frames (a chunk on its way),
   * give or take the headers read with them: progress that shows before
   * the frame is whole, for a stall watch that must not take a slow peer
   * for a silent one. Small frames do not count: a peer sending HAVEs is
   * not delivering what it owes.
   */
  get largePayloadBytesIn(): number {
    return this.#largePayloadBytesIn;
  }

  /**
   * Next whole frame. `timeoutMs` bounds each wait for data (an idle
   * timeout: a large frame on a slow link may take longer as a whole), or
   * with `scope` "frame" the whole frame, so that a peer sending a byte now
   * and then cannot stretch it (the HELLO). Throws ConnectionClosedError,
   * TimeoutError or ProtocolError.
   */
  async receiveFrame(timeoutMs = this.ioTimeoutMs, scope: "read" | "frame" = "read"): Promise<Frame> {
    const deadline = scope === "frame" && timeoutMs > 0 ? performance.now() + timeoutMs : 0;
    const wait = () => deadline === 0 ? timeoutMs : Math.max(1, deadline - performance.now());
    while (this.#queue.length === 0) {
      if (this.#closed || this.#readEnded) throw new ConnectionClosedError();
      this.#decoder.check();
      const target = this.#decoder.payloadTarget();
      if (target !== null && this.#decoder.payloadBytes >= DIRECT_READ_MIN) {
        const n = await this.#read(target, wait());
        if (n === null) this.#eof();
        this.#largePayloadBytesIn += n!;
        const frame = this.#decoder.advance(n!);
        if (frame) this.#queue.push(frame);
      } else {
        const into = this.#lastLarge ? this.#scratch.subarray(0, READ_AFTER_LARGE) : this.#scratch;
        const n = await this.#read(into, wait());
        if (n === null) this.#eof();
        const frames = this.#decoder.push(into.subarray(0, n!));
        this.#queue.push(...frames);
        // A large frame's header comes this way with the first of its payload (all of a chunk's first slice from a
        // peer under an upload limit): those bytes count too, or the chunk seems to start a slice late.
        if (this.#decoder.payloadBytes >= DIRECT_READ_MIN || frames.some((f) => f.payload.length >= DIRECT_READ_MIN)) {
          this.#largePayloadBytesIn += n!;
        }
      }
    }
    const frame = this.#queue.shift()!;
    this.#lastLarge = frame.payload.length >= DIRECT_READ_MIN;
    return frame;
  }

  /** Next message (see {@link receiveFrame}). */
  async receive(timeoutMs = this.ioTimeoutMs, scope: "read" | "frame" = "read"): Promise<Message> {
    return decodeMessage(await this.receiveFrame(timeoutMs, scope));
  }

  /** Sends a message. Writes go out whole and in call order. */
  send(msg: Message): Promise<void> {
    return this.sendBytes(encodeMessage(msg));
  }

  /** Sends `msgs` back to back, without waiting for an answer between them. */
  async sendAll(msgs: readonly Message[]): Promise<void> {
    await Promise.all(msgs.map((m) => this.send(m)));
  }

  /** Sends pre-encoded frame bytes. */
  sendBytes(bytes: Uint8Array): Promise<void> {
    const next = this.#writing.then(() => this.#writeAll(bytes));
    this.#writing = next.catch(() => {});
    return next;
  }

  /**
   * Sends pre-encoded frame bytes as {@link sendBytes} does, but only the
   * first `first` bytes at once: the rest goes `slice` bytes at a time, each
   * once `pace(n)` resolves, and nothing else is sent in between. An upload
   * limit lets a chunk trickle out this way instead of holding it back
   * whole, which a downloader watching for stalls would take for silence.
   * The pacing does not wait for the writes: a slow reader slows only itself.
   */
  sendPaced(bytes: Uint8Array, first: number, slice: number, pace: (n: number) => Promise<void>): Promise<void> {
    const next = this.#writing.then(async () => {
      let written = this.#writeAll(bytes.subarray(0, first));
      written.catch(() => {}); // awaited below; meanwhile a failure must not count as unhandled
      for (let at = first; at < bytes.length; at += slice) {
        const part = bytes.subarray(at, Math.min(bytes.length, at + slice));
        await pace(part.length);
        if (this.#closed) throw new ConnectionClosedError();
        written = written.then(() => this.#writeAll(part));
        written.catch(() => {});
      }
      await written;
    });
    this.#writing = next.catch(() => {});
    return next;
  }

  /**
   * Sends `msg` and waits for the reply of type `expect`. An ERROR reply
   * throws RemoteError; any other type throws ProtocolError.
   */
  async request<T extends MessageName>(msg: Message, expect: T, timeoutMs = this.ioTimeoutMs): Promise<MessageOf<T>> {
    await this.send(msg);
    const reply = await this.receive(timeoutMs);
    return expectMessage(reply, expect);
  }

  /** Closes the socket; pending reads fail with ConnectionClosedError. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    try {
      this.#conn.close();
    } catch {
      // already closed by the other side
    }
  }

  /** Sends ERROR {code, message} if the socket still takes it, then closes. */
  async fail(code: string, message: string): Promise<void> {
    try {
      await this.send({ type: "error", code, message });
    } catch {
      // best effort: the connection may be gone
    }
    this.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  #eof(): never {
    // A cut-off frame throws TruncatedFrameError with the socket still open, so a server can answer it.
    this.#decoder.finish();
    if (this.#writeAfterEnd) this.#readEnded = true;
    else this.close();
    throw new ConnectionClosedError();
  }

  async #read(into: Uint8Array, timeoutMs: number): Promise<number | null> {
    try {
      if (timeoutMs <= 0) return await this.#conn.read(into); // no deadline: skip the timer and the race
      return await this.#deadline(this.#conn.read(into), timeoutMs, "waiting for data from " + this.remote);
    } catch (err) {
      if (err instanceof TimeoutError) throw err;
      if (this.#closed) throw new ConnectionClosedError();
      if (err instanceof Deno.errors.ConnectionReset || err instanceof Deno.errors.BadResource) {
        this.close();
        throw new ConnectionClosedError(`Connection to ${this.remote} was reset`);
      }
      throw err;
    }
  }

  async #writeAll(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.length) {
      if (this.#closed) throw new ConnectionClosedError();
      try {
        const wrote = this.#conn.write(at === 0 ? bytes : bytes.subarray(at));
        at += this.writeTimeoutMs <= 0
          ? await wrote
          : await this.#deadline(wrote, this.writeTimeoutMs, "sending to " + this.remote);
      } catch (err) {
        if (err instanceof TimeoutError) throw err;
        this.close();
        throw new ConnectionClosedError(`Connection to ${this.remote} broke while sending`);
      }
    }
  }

  /** Races `p` against a timer; on timeout the connection is closed (its stream state is unknown). */
  async #deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
    if (ms <= 0) return await p;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(what, ms)), ms);
    });
    try {
      return await Promise.race([p, timeout]);
    } catch (err) {
      if (err instanceof TimeoutError) {
        p.catch(() => {});
        this.close();
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Narrows a reply to the expected type, turning ERROR into RemoteError. */
export function expectMessage<T extends MessageName>(reply: Message, expect: T): MessageOf<T> {
  if (reply.type === expect) return reply as MessageOf<T>;
  if (reply.type === "error") throw new RemoteError(reply.code, reply.message);
  throw new ProtocolError(`Expected a ${expect} message, got ${reply.type}`, "unexpected");
}

/** Checks a HELLO; throws VersionMismatchError or ProtocolError. */
export function checkHello(msg: Message): void {
  if (msg.type === "error") throw new RemoteError(msg.code, msg.message);
  if (msg.type !== "hello" || msg.protocol !== PROTOCOL_NAME) {
    throw new ProtocolError("The other side did not open with a Shoal HELLO", "no_hello");
  }
  if (msg.version !== PROTOCOL_VERSION) throw new VersionMismatchError(PROTOCOL_VERSION, msg.version);
}

/** Options for {@link connect}. */
export interface ConnectOptions extends ConnectionOptions {
  connectTimeoutMs?: number;
  /**
   * Messages sent right behind the HELLO, before its answer is read: their
   * answers come after the HELLO's, a round trip sooner than if each waited.
   */
  pipelined?: Message[];
  /**
   * Called once the HELLO and the pipelined messages are written, before
   * their answer is read: a fetch worker does its own set-up in that wait.
   */
  onSent?: () => void;
}

/** Opens a TCP connection and runs the client side of the handshake. */
export async function connect(addr: Address, options: ConnectOptions = {}): Promise<Connection> {
  const ms = options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
  const { signal } = options;
  // The timeout and the caller's signal cancel the dial itself: left running, it held a socket for minutes.
  const dial = new AbortController();
  const timer = setTimeout(() => dial.abort(new TimeoutError(`connecting to ${formatAddress(addr)}`, ms)), ms);
  const onAbort = () => dial.abort(new UnreachableError(`Stopped connecting to ${formatAddress(addr)}`));
  if (signal?.aborted) onAbort();
  else signal?.addEventListener("abort", onAbort, { once: true });
  let raw: Deno.TcpConn;
  try {
    raw = await Deno.connect({ hostname: addr.host, port: addr.port, signal: dial.signal });
  } catch (err) {
    const reason = dial.signal.aborted ? dial.signal.reason : null;
    if (reason instanceof TimeoutError) throw new UnreachableError(reason.message);
    if (reason instanceof UnreachableError) throw reason;
    throw new UnreachableError(`Cannot reach ${formatAddress(addr)}: ${(err as Error).message}`, { cause: err });
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
  raw.setNoDelay(true);
  return await handshake(new Connection(raw, options), options.pipelined, options.onSent);
}

/** Connects to a local Unix socket (a peer daemon's control channel) and does the HELLO exchange. */
export async function connectUnix(path: string, options: ConnectOptions = {}): Promise<Connection> {
  let raw: Deno.UnixConn;
  try {
    raw = await Deno.connect({ transport: "unix", path });
  } catch (err) {
    throw new UnreachableError(`Cannot reach ${path}: ${(err as Error).message}`, { cause: err });
  }
  return await handshake(new Connection(raw, options));
}

async function handshake(conn: Connection, pipelined: Message[] = [], onSent?: () => void): Promise<Connection> {
  try {
    await conn.sendAll([helloMessage(), ...pipelined]);
    onSent?.();
    checkHello(await conn.receive(HANDSHAKE_TIMEOUT_MS, "frame"));
  } catch (err) {
    conn.close();
    // Garbage for a first frame is something else listening there (an HTTP server: "HTTP" read as a length): say so.
    if (err instanceof ProtocolError && !(err instanceof VersionMismatchError)) {
      throw new ProtocolError(`${conn.remote} did not answer as a Shoal node (${err.message})`, err.code, {
        cause: err,
      });
    }
    throw err;
  }
  return conn;
}
