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
  #rate: number;
  #tokens: number;
  #last = performance.now();
  #chain: Promise<void> = Promise.resolve();

  /** The burst is one second's worth (at least `minBurst`); a rate of 0 limits nothing until {@link setRate}. */
  constructor(bytesPerSecond: number, readonly minBurst = 0) {
    checkRate(bytesPerSecond);
    this.#rate = bytesPerSecond;
    this.#tokens = this.#burst;
  }

  /** The rate; 0 once {@link setRate} lifted the limit. */
  get bytesPerSecond(): number {
    return this.#rate;
  }

  /**
   * Changes the rate for everyone sharing the bucket (the peer shell's
   * `limit`); 0 lifts the limit until a rate is set again. A debt stays to
   * be paid at the new rate; savings above the new burst are dropped.
   */
  setRate(bytesPerSecond: number): void {
    checkRate(bytesPerSecond);
    this.#refill();
    const wasUnlimited = this.#rate === 0;
    this.#rate = bytesPerSecond;
    if (bytesPerSecond === 0) return;
    this.#tokens = wasUnlimited ? this.#burst : Math.min(this.#tokens, this.#burst);
  }

  get #burst(): number {
    return Math.max(this.#rate, this.minBurst);
  }

  /** Resolves when `n` bytes may be sent. Callers are served in order. */
  take(n: number, signal?: AbortSignal): Promise<void> {
    const next = this.#chain.then(async () => {
      if (this.#rate === 0) return;
      this.#refill();
      this.#tokens -= n;
      if (this.#tokens < 0) await delay((-this.#tokens / this.#rate) * 1000, signal);
    });
    this.#chain = next.catch(() => {});
    return next;
  }

  /** Whether a caller that does not wait may go ahead now: the bucket is not in debt. */
  get ready(): boolean {
    if (this.#rate === 0) return true;
    this.#refill();
    return this.#tokens > 0;
  }

  /**
   * Spends `n` bytes at once, into debt if need be: a whole chunk is asked
   * for even when less than its length is left, and `ready` stays false
   * until the rate has paid it back, so the average holds.
   */
  spend(n: number): void {
    if (this.#rate === 0) return;
    this.#refill();
    this.#tokens -= n;
  }

  #refill(): void {
    const now = performance.now();
    if (this.#rate > 0) this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) / 1000) * this.#rate);
    this.#last = now;
  }
}

function checkRate(bytesPerSecond: number): void {
  if (!(bytesPerSecond >= 0 && Number.isFinite(bytesPerSecond))) {
    throw new RangeError(`Rate ${bytesPerSecond} must be a number of bytes a second, 0 or more`);
  }
}
