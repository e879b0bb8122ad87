/**
 * SHA-256 of four equal-length inputs at once, in WebAssembly SIMD.
 *
 * `node:crypto` hashes one input at a time. On a CPU with the SHA
 * extensions (`sha_ni`) that runs at well over 1 GB/s a core and nothing
 * here can beat it; on one without them it runs at 200-400 MB/s, and a
 * download that checks every byte is bound by it. There, four inputs
 * hashed side by side in the four 32-bit lanes of 128-bit vectors ("multi-
 * buffer" hashing) go about 1.6 times as fast per core: every step of the
 * compression function is one vector instruction for all four.
 *
 * The WebAssembly module is generated here, when a hasher is made, from the
 * description of SHA-256 (FIPS 180-4): the 64 rounds are unrolled with the
 * eight working variables renamed instead of moved. Inputs are copied into
 * the module's memory a segment at a time, so it stays small whatever the
 * input size. chunk_hasher.ts says whether to use it at all.
 *
 * @module
 */

/** Round constants (FIPS 180-4, 4.2.2). */
// deno-fmt-ignore
const K = [
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/** Initial hash value (FIPS 180-4, 5.3.3). */
const IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/** Inputs hashed side by side: the 32-bit lanes of a 128-bit vector. */
export const LANES = 4;
const BLOCK = 64;
/** Bytes of each input copied into the module's memory per call of the compression loop. */
const SEGMENT = 64 * 1024;
/**
 * Memory layout: the state (8 vectors, word i of lane l at 16 i + 4 l), the
 * round constants (64 vectors, each K[t] in every lane), then one segment
 * per lane.
 */
const STATE_AT = 0;
const K_AT = 256;
const LANE_AT = 2048;
/** Each lane's segment, with room for two blocks of padding after it. */
const LANE_BYTES = SEGMENT + 2 * BLOCK;
const LANE_ADDRESSES = Array.from({ length: LANES }, (_, lane) => LANE_AT + lane * LANE_BYTES);
const MEMORY_BYTES = LANE_AT + LANES * LANE_BYTES;
/** Reverses the bytes of each 32-bit lane. */
const BYTE_SWAP = [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12];
const WASM_PAGE = 64 * 1024;

// WebAssembly opcodes used below (core spec; the SIMD ones follow the 0xfd prefix).
const OP = {
  loop: 0x03,
  brIf: 0x0d,
  end: 0x0b,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  i32Load: 0x28,
  i32Const: 0x41,
  i32Add: 0x6a,
  i32Sub: 0x6b,
  simd: 0xfd,
  typeI32: 0x7f,
  typeV128: 0x7b,
  voidBlock: 0x40,
} as const;
const SIMD = {
  load: 0x00,
  store: 0x0b,
  const: 0x0c,
  shuffle: 0x0d,
  splat: 0x11,
  load32Lane: 0x56,
  xor: 0x51,
  and: 0x4e,
  or: 0x50,
  bitselect: 0x52,
  shl: 0xab,
  shrU: 0xad,
  add: 0xae,
} as const;

/**
 * WebAssembly bytes being written. Straight into one buffer: the module is
 * about 18 kB, and building it from arrays of numbers left megabytes of
 * garbage in a fetch worker's heap.
 */
class Writer {
  #buf = new Uint8Array(32 * 1024);
  #at = 0;

  get length(): number {
    return this.#at;
  }

  byte(b: number): void {
    if (this.#at === this.#buf.length) {
      const bigger = new Uint8Array(2 * this.#buf.length);
      bigger.set(this.#buf);
      this.#buf = bigger;
    }
    this.#buf[this.#at++] = b;
  }

  bytes(bs: ArrayLike<number>): void {
    for (let i = 0; i < bs.length; i++) this.byte(bs[i]!);
  }

  uleb(n: number): void {
    do {
      const b = n & 0x7f;
      n >>>= 7;
      this.byte(n === 0 ? b : b | 0x80);
    } while (n !== 0);
  }

  sleb(n: number): void {
    for (;;) {
      const b = n & 0x7f;
      n >>= 7;
      if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) return this.byte(b);
      this.byte(b | 0x80);
    }
  }

  /** A section: its id, its length, then what `write` writes. */
  section(id: number, write: (w: Writer) => void): void {
    const content = new Writer();
    write(content);
    this.byte(id);
    this.uleb(content.length);
    this.bytes(content.done());
  }

  name(s: string): void {
    const utf8 = new TextEncoder().encode(s);
    this.uleb(utf8.length);
    this.bytes(utf8);
  }

  done(): Uint8Array<ArrayBuffer> {
    return this.#buf.slice(0, this.#at);
  }
}

/** A function body being written, one instruction at a time. */
class Body extends Writer {
  get(local: number): void {
    this.byte(OP.localGet);
    this.uleb(local);
  }
  set(local: number): void {
    this.byte(OP.localSet);
    this.uleb(local);
  }
  tee(local: number): void {
    this.byte(OP.localTee);
    this.uleb(local);
  }
  i32(n: number): void {
    this.byte(OP.i32Const);
    this.sleb(n | 0);
  }
  /** A 32-bit load at the address on the stack plus `offset`, 4-byte aligned. */
  load32(offset: number): void {
    this.byte(OP.i32Load);
    this.byte(2);
    this.uleb(offset);
  }
  simd(code: number): void {
    this.byte(OP.simd);
    this.uleb(code);
  }
  /** A v128 memory access at the address on the stack plus `offset`, 16-byte aligned. */
  vmem(code: number, offset: number): void {
    this.simd(code);
    this.byte(4);
    this.uleb(offset);
  }
  /** Replaces lane `lane` of the vector on the stack with the 32 bits at the address under it plus `offset`. */
  load32Lane(offset: number, lane: number): void {
    this.simd(SIMD.load32Lane);
    this.byte(2);
    this.uleb(offset);
    this.byte(lane);
  }
  /** Rearranges the bytes of the two vectors on the stack: byte i of the result is byte `lanes[i]` of the pair. */
  shuffle(lanes: readonly number[]): void {
    this.simd(SIMD.shuffle);
    this.bytes(lanes);
  }
  /** Pushes `local` rotated right by `n` in each lane (no rotate instruction: two shifts and an or). */
  rotr(local: number, n: number): void {
    this.get(local);
    this.i32(n);
    this.simd(SIMD.shrU);
    this.get(local);
    this.i32(32 - n);
    this.simd(SIMD.shl);
    this.simd(SIMD.or);
  }
  /** Pushes rotr(x, r1) ^ rotr(x, r2) ^ (rotr or shr)(x, r3): the Σ and σ functions. */
  sigma(local: number, r1: number, r2: number, r3: number, lastIsShift: boolean): void {
    this.rotr(local, r1);
    this.rotr(local, r2);
    this.simd(SIMD.xor);
    if (lastIsShift) {
      this.get(local);
      this.i32(r3);
      this.simd(SIMD.shrU);
    } else {
      this.rotr(local, r3);
    }
    this.simd(SIMD.xor);
  }
}

/**
 * `compress(p0, p1, p2, p3, blocks)`: runs `blocks` 64-byte blocks of each
 * lane (lane l's at address pl) through the compression function, updating
 * the state in memory.
 */
function writeCompress(b: Body): void {
  const ptr = [0, 1, 2, 3];
  const blocks = 4;
  const v = 5; // a..h: locals 5-12
  const w = 13; // the message schedule's 16-word window: locals 13-28
  const t1 = 29, t2 = 30;
  let ab = 31, bc = 32;
  b.uleb(1); // one group of locals: 28 v128
  b.uleb(28);
  b.byte(OP.typeV128);

  b.byte(OP.loop);
  b.byte(OP.voidBlock);
  for (let i = 0; i < 8; i++) {
    b.i32(STATE_AT);
    b.vmem(SIMD.load, 16 * i);
    b.set(v + i);
  }
  for (let j = 0; j < 16; j++) {
    // Word j of each lane, gathered into one vector, then its bytes swapped: SHA-256 words are big-endian.
    b.get(ptr[0]!);
    b.load32(4 * j);
    b.simd(SIMD.splat);
    for (let lane = 1; lane < LANES; lane++) {
      b.set(w + j);
      b.get(ptr[lane]!);
      b.get(w + j);
      b.load32Lane(4 * j, lane);
    }
    b.tee(w + j);
    b.get(w + j);
    b.shuffle(BYTE_SWAP);
    b.set(w + j);
  }
  let [a, bb, c, d, e, f, g, h] = [v, v + 1, v + 2, v + 3, v + 4, v + 5, v + 6, v + 7];
  for (let t = 0; t < 64; t++) {
    const wt = w + (t % 16);
    if (t >= 16) {
      // W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16], the last in wt's slot already.
      b.sigma(w + ((t - 2) % 16), 17, 19, 10, true);
      b.get(w + ((t - 7) % 16));
      b.simd(SIMD.add);
      b.sigma(w + ((t - 15) % 16), 7, 18, 3, true);
      b.simd(SIMD.add);
      b.get(wt);
      b.simd(SIMD.add);
      b.set(wt);
    }
    // T1 = h + Σ1(e) + Ch(e, f, g) + K[t] + W[t]; Ch picks f's bits where e has ones, g's elsewhere.
    b.get(h);
    b.sigma(e, 6, 11, 25, false);
    b.simd(SIMD.add);
    b.get(f);
    b.get(g);
    b.get(e);
    b.simd(SIMD.bitselect);
    b.simd(SIMD.add);
    b.i32(K_AT);
    b.vmem(SIMD.load, 16 * t);
    b.simd(SIMD.add);
    b.get(wt);
    b.simd(SIMD.add);
    b.set(t1);
    // T2 = Σ0(a) + Maj(a, b, c), with Maj = b ^ ((a ^ b) & (b ^ c)): this round's a ^ b is the next one's b ^ c.
    b.sigma(a, 2, 13, 22, false);
    if (t === 0) {
      b.get(bb);
      b.get(c);
      b.simd(SIMD.xor);
      b.set(bc);
    }
    b.get(bb);
    b.get(a);
    b.get(bb);
    b.simd(SIMD.xor);
    b.tee(ab);
    b.get(bc);
    b.simd(SIMD.and);
    b.simd(SIMD.xor);
    b.simd(SIMD.add);
    b.set(t2);
    [ab, bc] = [bc, ab];
    // d += T1; the new a is T1 + T2, written over h; then rename instead of moving.
    b.get(d);
    b.get(t1);
    b.simd(SIMD.add);
    b.set(d);
    b.get(t1);
    b.get(t2);
    b.simd(SIMD.add);
    b.set(h);
    [a, bb, c, d, e, f, g, h] = [h, a, bb, c, d, e, f, g];
  }
  // After 64 renamings the names are back where they started: add them into the state.
  const order = [a, bb, c, d, e, f, g, h];
  for (let i = 0; i < 8; i++) {
    b.i32(STATE_AT);
    b.i32(STATE_AT);
    b.vmem(SIMD.load, 16 * i);
    b.get(order[i]!);
    b.simd(SIMD.add);
    b.vmem(SIMD.store, 16 * i);
  }
  for (const p of ptr) {
    b.get(p);
    b.i32(BLOCK);
    b.byte(OP.i32Add);
    b.set(p);
  }
  b.get(blocks);
  b.i32(1);
  b.byte(OP.i32Sub);
  b.tee(blocks);
  b.byte(OP.brIf);
  b.byte(0); // to the loop's start
  b.byte(OP.end); // loop
  b.byte(OP.end); // function
}

/** The module: memory "memory" (exported) and function "compress". */
export function laneModuleBytes(): Uint8Array<ArrayBuffer> {
  const m = new Writer();
  m.bytes([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]); // "\0asm", version 1
  m.section(1, (s) => s.bytes([1, 0x60, 5, OP.typeI32, OP.typeI32, OP.typeI32, OP.typeI32, OP.typeI32, 0])); // (i32 x5) -> ()
  m.section(3, (s) => s.bytes([1, 0])); // function 0 has type 0
  m.section(5, (s) => { // one memory, no maximum
    s.bytes([1, 0]);
    s.uleb(Math.ceil(MEMORY_BYTES / WASM_PAGE));
  });
  m.section(7, (s) => { // exports
    s.uleb(2);
    s.name("memory");
    s.bytes([2, 0]);
    s.name("compress");
    s.bytes([0, 0]);
  });
  m.section(10, (s) => { // code
    const body = new Body();
    writeCompress(body);
    s.uleb(1);
    s.uleb(body.length);
    s.bytes(body.done());
  });
  return m.done();
}

/** The module's function; `blocks` is at least 1. */
type Compress = (p0: number, p1: number, p2: number, p3: number, blocks: number) => void;

/**
 * Hashes four inputs of the same length at a time. One per thread: it
 * keeps its state in its own WebAssembly memory.
 *
 * @example
 * ```ts
 * const hasher = new LaneHasher();
 * const inputs = [1, 2, 3, 4].map((n) => new Uint8Array(1000).fill(n));
 * const digests = inputs.map(() => new Uint8Array(32));
 * hasher.digest(inputs, digests); // digests[i] is the SHA-256 of inputs[i]
 * ```
 */
export class LaneHasher {
  readonly lanes = LANES;
  /** Fewer than four cost as much as four; the batching was measured with four (docs/PERFORMANCE.md, session 29). */
  readonly minBatch = LANES;
  readonly batchWaitMs = 10;
  readonly #memory: WebAssembly.Memory;
  readonly #compress: Compress;

  constructor() {
    const instance = new WebAssembly.Instance(new WebAssembly.Module(laneModuleBytes()), {});
    this.#memory = instance.exports.memory as WebAssembly.Memory;
    this.#compress = instance.exports.compress as Compress;
    const view = new DataView(this.#memory.buffer);
    for (let t = 0; t < 64; t++) {
      for (let lane = 0; lane < LANES; lane++) view.setUint32(K_AT + 16 * t + 4 * lane, K[t]!, true);
    }
  }

  /**
   * Writes the SHA-256 of each of `inputs` (exactly {@link LANES}, all the
   * same length) into the matching 32 bytes of `out`.
   */
  digest(inputs: readonly Uint8Array[], out: readonly Uint8Array[]): void {
    if (inputs.length !== LANES || out.length !== LANES) {
      throw new RangeError(`Cannot hash in lanes: expected ${LANES} inputs and outputs, got ${inputs.length}`);
    }
    const length = inputs[0]!.length;
    if (inputs.some((x) => x.length !== length)) throw new RangeError("Cannot hash in lanes: inputs differ in length");
    if (out.some((x) => x.length < 32)) {
      throw new RangeError("Cannot hash in lanes: an output is shorter than 32 bytes");
    }
    const bytes = new Uint8Array(this.#memory.buffer);
    const view = new DataView(this.#memory.buffer);
    for (let i = 0; i < 8; i++) {
      for (let lane = 0; lane < LANES; lane++) view.setUint32(STATE_AT + 16 * i + 4 * lane, IV[i]!, true);
    }
    const lanes = LANE_ADDRESSES;
    const whole = length - (length % BLOCK);
    for (let at = 0; at < whole; at += SEGMENT) {
      const n = Math.min(SEGMENT, whole - at);
      for (let lane = 0; lane < LANES; lane++) bytes.set(inputs[lane]!.subarray(at, at + n), lanes[lane]!);
      this.#compress(lanes[0]!, lanes[1]!, lanes[2]!, lanes[3]!, n / BLOCK);
    }
    // The padding (FIPS 180-4, 5.1.1): 0x80, zeros, the length in bits as 64 bits big-endian; one block or two.
    const tail = length - whole;
    const padded = tail < BLOCK - 8 ? BLOCK : 2 * BLOCK;
    for (let lane = 0; lane < LANES; lane++) {
      const at = lanes[lane]!;
      bytes.set(inputs[lane]!.subarray(whole), at);
      bytes.fill(0, at + tail, at + padded);
      bytes[at + tail] = 0x80;
      view.setUint32(at + padded - 8, Math.floor(length / 0x20000000), false);
      view.setUint32(at + padded - 4, (length * 8) >>> 0, false);
    }
    this.#compress(lanes[0]!, lanes[1]!, lanes[2]!, lanes[3]!, padded / BLOCK);
    for (let lane = 0; lane < LANES; lane++) {
      const o = new DataView(out[lane]!.buffer, out[lane]!.byteOffset, 32);
      for (let i = 0; i < 8; i++) o.setUint32(4 * i, view.getUint32(STATE_AT + 16 * i + 4 * lane, true), false);
    }
  }

  /** Nothing to let go of: the module's memory is the garbage collector's. */
  close(): void {}
}
