/**
 * A token bucket for byte rates. Upload limits wait in `take(n)` until `n`
 * bytes fit in the rate; one bucket is shared by every connection of a peer.
 * A download limit paces its requests instead, without waiting: it asks
 * `ready` before each and `spend`s the chunk's length.
 *
 * @module
 */

import { delay } from "./async.ts";

/** Limits a byte rate. */
export class RateLimiter {
  #tokens: number;
  #last = performance.now();
  #chain: Promise<void> = Promise.resolve();

  /** `bytesPerSecond` > 0; the burst is one second's worth (at least `minBurst`). */
  constructor(readonly bytesPerSecond: number, readonly minBurst = 0) {
    if (!(bytesPerSecond > 0)) throw new RangeError(`Rate ${bytesPerSecond} must be positive`);
    this.#tokens = this.#burst;
  }

  get #burst(): number {
    return Math.max(this.bytesPerSecond, this.minBurst);
  }

  /** Resolves when `n` bytes may be sent. Callers are served in order. */
  take(n: number, signal?: AbortSignal): Promise<void> {
    const next = this.#chain.then(async () => {
      this.#refill();
      this.#tokens -= n;
      if (this.#tokens < 0) await delay((-this.#tokens / this.bytesPerSecond) * 1000, signal);
    });
    this.#chain = next.catch(() => {});
    return next;
  }

  /** Whether a caller that does not wait may go ahead now: the bucket is not in debt. */
  get ready(): boolean {
    this.#refill();
    return this.#tokens > 0;
  }

  /**
   * Spends `n` bytes at once, into debt if need be: a whole chunk is asked
   * for even when less than its length is left, and `ready` stays false
   * until the rate has paid it back, so the average holds.
   */
  spend(n: number): void {
    this.#refill();
    this.#tokens -= n;
  }

  #refill(): void {
    const now = performance.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) / 1000) * this.bytesPerSecond);
    this.#last = now;
  }
}
