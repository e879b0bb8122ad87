/**
 * A fixed number of bytes that concurrent tasks share: a peer's chunk
 * buffers in use at once, over all its connections.
 *
 * @module
 */

interface Waiter {
  bytes: number;
  grant: () => void;
}

/** Hands out bytes from a fixed total, first come first served. */
export class ByteBudget {
  #free: number;
  #waiting: Waiter[] = [];

  constructor(readonly total: number) {
    if (!(total > 0)) throw new RangeError(`A budget of ${total} bytes must be positive`);
    this.#free = total;
  }

  /** Bytes not handed out. */
  get free(): number {
    return this.#free;
  }

  /** Tasks waiting for their bytes. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Resolves once `bytes` are the caller's, to {@link give} back. Callers
   * are served in order; one asking for more than the total gets it when
   * nothing else is out. Rejects with the signal's reason if it aborts first.
   */
  take(bytes: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#waiting.length === 0 && this.#fits(bytes)) {
      this.#free -= bytes;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.#waiting.splice(this.#waiting.indexOf(waiter), 1);
        this.#grantWaiting(); // the ones behind it may fit now
        reject(signal!.reason);
      };
      const waiter: Waiter = {
        bytes,
        grant: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiting.push(waiter);
    });
  }

  /** Gives back bytes taken. */
  give(bytes: number): void {
    this.#free += bytes;
    this.#grantWaiting();
  }

  #fits(bytes: number): boolean {
    return bytes <= this.#free || this.#free === this.total;
  }

  #grantWaiting(): void {
    while (this.#waiting.length > 0 && this.#fits(this.#waiting[0]!.bytes)) {
      const w = this.#waiting.shift()!;
      this.#free -= w.bytes;
      w.grant();
    }
  }
}
