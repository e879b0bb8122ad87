/**
 * Reuses large buffers (chunk frames) instead of allocating a fresh, zeroed
 * megabyte per chunk: fewer page faults, less garbage to collect.
 *
 * @module
 */

/** A pool's buffer counts: each one dropped is garbage that V8 collects only when it gets round to it. */
export interface PoolStats {
  made: number;
  dropped: number;
}

/** The counts of several pools together. */
export function sumPoolStats(all: Iterable<PoolStats>): PoolStats {
  const total = { made: 0, dropped: 0 };
  for (const s of all) {
    total.made += s.made;
    total.dropped += s.dropped;
  }
  return total;
}

/** A bounded pool of equally sized byte buffers. */
export class BufferPool {
  #free: Uint8Array<ArrayBuffer>[] = [];
  /** Each buffer this pool made, by its ArrayBuffer: only those come back. */
  #own = new WeakMap<ArrayBuffer, Uint8Array<ArrayBuffer>>();
  #made = 0;
  #dropped = 0;

  /**
   * `allocate` makes the pool's buffers (a view into a larger buffer is
   * fine: see direct_io.ts's `alignedBytes`).
   */
  constructor(
    readonly size: number,
    readonly maxFree = 16,
    private readonly allocate: (size: number) => Uint8Array<ArrayBuffer> = (n) => new Uint8Array(n),
  ) {}

  /** A buffer of exactly `length` bytes: pooled when `length` is the pool's size. Contents are stale. */
  take(length: number): Uint8Array<ArrayBuffer> {
    if (length !== this.size) return new Uint8Array(length);
    const reused = this.#free.pop();
    if (reused) return reused;
    const made = this.allocate(this.size);
    this.#own.set(made.buffer, made);
    this.#made++;
    return made;
  }

  /** Gives back the pool buffer that `bytes` lies in (any view of it) once nothing refers to it any more. */
  give(bytes: Uint8Array<ArrayBuffer>): void {
    const own = this.#own.get(bytes.buffer);
    if (!own) return;
    if (this.#free.length < this.maxFree) this.#free.push(own);
    else this.#dropped++;
  }

  /** How many buffers of the pool's size it has made, and how many came back to a full pool and were let go. */
  get stats(): PoolStats {
    return { made: this.#made, dropped: this.#dropped };
  }
}
