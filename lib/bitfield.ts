/**
 * Which chunks a peer has: one bit per chunk, most significant bit of
 * byte 0 first (chunk 0), as in BitTorrent. Spare bits at the end are zero.
 *
 * @module
 */

/** A fixed-size set of chunk indexes. */
export class Bitfield {
  readonly bytes: Uint8Array<ArrayBuffer>;
  #count = 0;

  constructor(readonly size: number, bytes?: Uint8Array) {
    this.bytes = new Uint8Array(Math.ceil(size / 8));
    if (bytes) {
      if (bytes.length !== this.bytes.length) {
        throw new RangeError(`Bitfield of ${size} bits needs ${this.bytes.length} bytes, got ${bytes.length}`);
      }
      this.bytes.set(bytes);
      // spare bits past `size` must not count
      const spare = this.bytes.length * 8 - size;
      if (spare > 0) this.bytes[this.bytes.length - 1]! &= (0xff << spare) & 0xff;
      for (let i = 0; i < size; i++) if (this.has(i)) this.#count++;
    }
  }

  /** A bitfield with every bit set. */
  static full(size: number): Bitfield {
    const b = new Bitfield(size);
    for (let i = 0; i < size; i++) b.set(i);
    return b;
  }

  /** How many bits are set. */
  get count(): number {
    return this.#count;
  }

  get complete(): boolean {
    return this.#count === this.size;
  }

  has(i: number): boolean {
    return Number.isInteger(i) && i >= 0 && i < this.size && (this.bytes[i >> 3]! & (0x80 >> (i & 7))) !== 0;
  }

  /** Sets bit `i`; returns true if it was not set before. */
  set(i: number): boolean {
    if (!Number.isInteger(i) || i < 0 || i >= this.size) throw new RangeError(`Bit ${i} is outside [0, ${this.size})`);
    if (this.has(i)) return false;
    this.bytes[i >> 3]! |= 0x80 >> (i & 7);
    this.#count++;
    return true;
  }

  /** Clears bit `i`. */
  clear(i: number): void {
    if (!this.has(i)) return;
    this.bytes[i >> 3]! &= ~(0x80 >> (i & 7));
    this.#count--;
  }

  /** Indexes of the bits not set. */
  missing(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.size; i++) if (!this.has(i)) out.push(i);
    return out;
  }
}
