/**
 * Length-prefixed binary frames: the only thing that crosses a TCP connection.
 *
 * ```
 * <length: u32 big-endian><type: u8><payload: length bytes>
 * ```
 *
 * `length` counts the payload only (not the 5 header bytes). The decoder is
 * pure: bytes in, whole frames out. It caps the frame length before it
 * buffers anything, so a peer cannot make us hold more than one frame of at
 * most `maxFrameBytes`.
 *
 * @module
 */

import { FrameTooLargeError, ProtocolError, TruncatedFrameError } from "./errors.ts";

/** Bytes in a frame header: u32 length + u8 type. */
export const FRAME_HEADER_BYTES = 5;

/** Largest chunk size a manifest may declare (16 MiB). */
export const MAX_CHUNK_SIZE = 16 * 1024 * 1024;

/**
 * Default cap on a frame's payload: one largest chunk plus room for the
 * PIECE header. Servers that never carry chunk data may set a lower cap.
 */
export const DEFAULT_MAX_FRAME_BYTES = MAX_CHUNK_SIZE + 64;

/** One decoded frame. `payload` is owned by the receiver (never reused). */
export interface Frame {
  type: number;
  payload: Uint8Array<ArrayBuffer>;
}

/**
 * Encodes a frame: `<len u32 BE><type u8><payload>`.
 *
 * @example
 * ```ts
 * const bytes = encodeFrame(3, new Uint8Array([1, 2]));
 * // bytes = 00 00 00 02 03 01 02
 * ```
 */
export function encodeFrame(type: number, payload: Uint8Array): Uint8Array<ArrayBuffer> {
  if (!Number.isInteger(type) || type < 0 || type > 255) {
    throw new RangeError(`Cannot encode frame: type ${type} is not a u8`);
  }
  const out = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
  writeFrameHeader(out, type, payload.length);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

/** Writes a frame header into the first 5 bytes of `out`. */
export function writeFrameHeader(out: Uint8Array, type: number, length: number): void {
  if (!Number.isInteger(type) || type < 0 || type > 255) {
    throw new RangeError(`Cannot encode frame: type ${type} is not a u8`);
  }
  if (length < 0 || length > 0xffffffff) {
    throw new RangeError(`Cannot encode frame: length ${length} is not a u32`);
  }
  new DataView(out.buffer, out.byteOffset, FRAME_HEADER_BYTES).setUint32(0, length);
  out[4] = type;
}

/** Options for {@link FrameDecoder}. */
export interface FrameDecoderOptions {
  /** Largest payload accepted; larger lengths throw FrameTooLargeError. */
  maxFrameBytes?: number;
  /**
   * Largest payload accepted for a frame of `type`, checked with its header
   * (a server refuses a large frame of a type that is never large before
   * reading or parsing it); at most `maxFrameBytes`.
   */
  maxPayloadFor?: (type: number) => number;
  /** Where payload buffers come from (a pool, say); contents may be stale, every byte is overwritten. */
  allocate?: (length: number) => Uint8Array<ArrayBuffer>;
}

/**
 * Incremental frame decoder. Feed it any slices of a byte stream with
 * {@link push}; it returns every frame completed by those bytes.
 *
 * @example
 * ```ts
 * const d = new FrameDecoder({ maxFrameBytes: 1024 });
 * d.push(new Uint8Array([0, 0, 0])); // [] (need more bytes)
 * d.push(new Uint8Array([1, 9, 42])); // [{ type: 9, payload: [42] }]
 * ```
 */
export class FrameDecoder {
  readonly maxFrameBytes: number;
  #header = new Uint8Array(FRAME_HEADER_BYTES);
  #headerFill = 0;
  #type = 0;
  #payload: Uint8Array<ArrayBuffer> | null = null;
  #payloadFill = 0;
  #error: ProtocolError | null = null;
  #allocate: (length: number) => Uint8Array<ArrayBuffer>;
  #maxFor: ((type: number) => number) | undefined;

  constructor(options: FrameDecoderOptions = {}) {
    this.maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.#allocate = options.allocate ?? ((n) => new Uint8Array(n));
    this.#maxFor = options.maxPayloadFor;
  }

  /** Bytes held toward the frame being assembled. */
  get buffered(): number {
    return this.#headerFill + this.#payloadFill;
  }

  /** Length of the payload being assembled; 0 when none is. */
  get payloadBytes(): number {
    return this.#payload?.length ?? 0;
  }

  /**
   * Where the rest of the current frame's payload goes, so a reader can
   * read straight into it (no copy), then call {@link advance}. Null when
   * no payload is being assembled.
   */
  payloadTarget(): Uint8Array | null {
    if (this.#payload === null) return null;
    return this.#payload.subarray(this.#payloadFill);
  }

  /** Records `n` bytes written into {@link payloadTarget}; returns the frame if now whole. */
  advance(n: number): Frame | null {
    if (this.#payload === null || n < 0 || this.#payloadFill + n > this.#payload.length) {
      throw new RangeError(`Cannot advance decoder by ${n} bytes`);
    }
    this.#payloadFill += n;
    return this.#takeIfWhole();
  }

  /**
   * Consumes `bytes`; returns the frames they complete. Throws ProtocolError
   * on a bad length; frames completed before it in the same bytes are
   * returned first and the error is thrown by the next call.
   */
  push(bytes: Uint8Array): Frame[] {
    if (this.#error) throw this.#error;
    const frames: Frame[] = [];
    try {
      this.#consume(bytes, frames);
    } catch (err) {
      if (frames.length === 0 || !(err instanceof ProtocolError)) throw err;
      this.#error = err;
    }
    return frames;
  }

  /** Throws the error held back by {@link push}, if any. */
  check(): void {
    if (this.#error) throw this.#error;
  }

  #consume(bytes: Uint8Array, frames: Frame[]): void {
    let at = 0;
    while (at < bytes.length) {
      if (this.#payload === null) {
        const take = Math.min(FRAME_HEADER_BYTES - this.#headerFill, bytes.length - at);
        this.#header.set(bytes.subarray(at, at + take), this.#headerFill);
        this.#headerFill += take;
        at += take;
        if (this.#headerFill < FRAME_HEADER_BYTES) break;
        this.#startPayload();
      } else {
        const take = Math.min(this.#payload.length - this.#payloadFill, bytes.length - at);
        this.#payload.set(bytes.subarray(at, at + take), this.#payloadFill);
        this.#payloadFill += take;
        at += take;
      }
      const frame = this.#takeIfWhole();
      if (frame) frames.push(frame);
    }
  }

  /** Call at end of stream: throws TruncatedFrameError if a frame was cut short. */
  finish(): void {
    if (this.#headerFill === 0 && this.#payload === null) return;
    const missing = this.#payload === null
      ? FRAME_HEADER_BYTES - this.#headerFill
      : this.#payload.length - this.#payloadFill;
    throw new TruncatedFrameError(missing);
  }

  #startPayload(): void {
    const view = new DataView(this.#header.buffer);
    const length = view.getUint32(0);
    const type = this.#header[4]!;
    const max = Math.min(this.maxFrameBytes, this.#maxFor?.(type) ?? Infinity);
    if (length > max) throw new FrameTooLargeError(length, max);
    this.#type = type;
    this.#payload = this.#allocate(length);
    this.#payloadFill = 0;
  }

  #takeIfWhole(): Frame | null {
    if (this.#payload === null || this.#payloadFill < this.#payload.length) return null;
    const frame = { type: this.#type, payload: this.#payload };
    this.#payload = null;
    this.#payloadFill = 0;
    this.#headerFill = 0;
    return frame;
  }
}
