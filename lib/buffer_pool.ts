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
  /** The fewest free buffers since the last {@link trim}: that many sat unused all along. */
  #fewestFree = 0;

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
    this.#fewestFree = Math.min(this.#fewestFree, this.#free.length);
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

  /**
   * Lets go of the free buffers that none of the takes since the last call
   * needed, so a pool that grew for a burst shrinks back to what the load
   * after it uses (to none once idle). Called every few seconds by an
   * owner that lives long (a peer); returns how many it let go.
   */
  trim(): number {
    const idle = Math.min(this.#fewestFree, this.#free.length);
    this.#free.splice(0, idle); // the longest unused
    this.#fewestFree = this.#free.length;
    return idle;
  }

  /** Free buffers held for reuse. */
  get free(): number {
    return this.#free.length;
  }

  /** How many buffers of the pool's size it has made, and how many came back to a full pool and were let go. */
  get stats(): PoolStats {
    return { made: this.#made, dropped: this.#dropped };
  }
}
