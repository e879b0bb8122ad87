/**
 * A token bucket for byte rates. Upload limits wait in `take(n)` until `n`
 * bytes fit in the rate; one bucket is shared by every connection of a peer.
 * A download limit paces its requests instead, without waiting: it asks
 * `ready` before each and `spend`s the chunk's length (see {@link PACING}).
 *
 * @module
 */

import { delay } from "./async.ts";

/** How a bucket saves up. */
export interface BucketShape {
  /** The most it saves while unused, in seconds of its rate (a burst). */
  burstSeconds: number;
  /** Whether it starts empty, and starts so again when a lifted limit is set, instead of full. */
  startEmpty: boolean;
}

/** An upload limit's bucket: a second's worth, full from the start, as `tc tbf` shapes a link. */
export const SHAPING: BucketShape = { burstSeconds: 1, startEmpty: false };

/**
 * A download limit's bucket. It starts empty, so a download's average from its
 * first request stays within a chunk of the limit, as curl's and aria2's limits
 * hold theirs (a full second's worth at the start made `--download-limit 5m`
 * fetch 20 MiB at 6.5 MiB/s). It saves a quarter second, what one 250 ms tick
 * of the download's timer can leave unspent, so a download that waited on
 * slow peers catches up by little and an idle peer's shared bucket gives its
 * next download no head start.
 */
export const PACING: BucketShape = { burstSeconds: 0.25, startEmpty: true };

/** Limits a byte rate. */
export class RateLimiter {
  #rate: number;
  #tokens: number;
  #last = performance.now();
  #chain: Promise<void> = Promise.resolve();

  /** A rate of 0 limits nothing until {@link setRate}. */
  constructor(bytesPerSecond: number, readonly shape: BucketShape = SHAPING) {
    checkRate(bytesPerSecond);
    this.#rate = bytesPerSecond;
    this.#tokens = shape.startEmpty ? 0 : this.#burst;
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
    if (wasUnlimited) this.#tokens = this.shape.startEmpty ? 0 : this.#burst;
    else this.#tokens = Math.min(this.#tokens, this.#burst);
  }

  get #burst(): number {
    return this.#rate * this.shape.burstSeconds;
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
    return this.#tokens >= 0;
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
